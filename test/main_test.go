// Package test runs the built meshgate binary against real processes: the
// proxy emulator on loopback, the test app behind the gate, real signals,
// PID namespaces, and runc pods. Set MESHGATE_BIN to test a given binary;
// otherwise one is built for the run.
package test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/meshgate/meshgate/test/app/report"
	"github.com/meshgate/meshgate/test/sidecar"
	"github.com/meshgate/meshgate/test/testkit"
)

// Paths of the binaries under test, set once by TestMain.
var bins struct{ meshgate, inject, app, emulator string }

func TestMain(m *testing.M) {
	if os.Getenv("MESHGATE_TEST_LAUNCH") != "" {
		launch() // does not return
	}
	var errs [4]error
	bins.meshgate, errs[0] = testkit.Binary("MESHGATE_BIN", "./cmd/meshgate")
	bins.inject, errs[1] = testkit.Binary("MESHGATE_INJECT_BIN", "./cmd/meshgate-inject")
	bins.app, errs[2] = testkit.Build("./test/app")
	bins.emulator, errs[3] = testkit.Build("./test/emulator")
	testkit.Main(m, errors.Join(errs[:]...))
}

// launch execs its arguments the way a careless C parent might: SIGHUP,
// SIGINT, SIGUSR1 and signals 32 and 40 ignored, SIGTERM and SIGUSR2
// blocked, which all survive execve. A Go program does not keep all of
// it: its runtime keeps an inherited SIG_IGN only for SIGHUP, SIGINT and
// the signals it leaves alone (32 here) and puts handlers of its own on
// the others (SIGUSR1 and 40 here), and it unblocks some signals (SIGTERM
// here, not SIGUSR2). The app behind meshgate is a Go program too, so what
// it reports shows the ignored and blocked signals that meshgate failed to
// reset among SIGHUP, SIGINT, 32 and SIGUSR2.
func launch() {
	for _, s := range []syscall.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGUSR1, 32, 40} {
		ignore(s)
	}
	runtime.LockOSThread()
	mask := uint64(1)<<(syscall.SIGTERM-1) | uint64(1)<<(syscall.SIGUSR2-1)
	if _, _, e := syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, 0 /* SIG_BLOCK */, uintptr(unsafe.Pointer(&mask)), 0, 8, 0, 0); e != 0 {
		fmt.Fprintln(os.Stderr, "launch: sigprocmask:", e)
		os.Exit(1)
	}
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MESHGATE_TEST_LAUNCH=") {
			env = append(env, kv)
		}
	}
	err := syscall.Exec(os.Args[1], os.Args[1:], env)
	fmt.Fprintln(os.Stderr, "launch:", err)
	os.Exit(1)
}

// ignore sets a signal's disposition to SIG_IGN with a raw sigaction, as a
// C parent would, so that it survives execve.
func ignore(s syscall.Signal) {
	type sigaction struct {
		handler  uintptr
		flags    uint64
		restorer uintptr
		mask     uint64
	}
	act := sigaction{handler: 1 /* SIG_IGN */}
	if _, _, e := syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(s), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0); e != 0 {
		fmt.Fprintln(os.Stderr, "launch: sigaction:", e)
		os.Exit(1)
	}
}

// proxy runs e as the mesh proxy on a free loopback port through the
// phases until the test ends, and returns its readiness and quit URLs. The
// first phase is in place when it returns, so that a "closed" start is
// closed.
func proxy(t *testing.T, e *sidecar.Emulator, phases string) (ready, quit string) {
	t.Helper()
	e.Path, e.QuitPath = "/healthz/ready", "/quitquitquit"
	ps, err := sidecar.ParsePhases(phases)
	if err != nil {
		t.Fatal(err)
	}
	for try := 0; ; try++ {
		e.Addr, err = sidecar.FreeAddr()
		if err == nil {
			err = e.Set(ps[0].State)
		}
		if err == nil {
			break
		}
		// Another process took the port since FreeAddr looked: take
		// another.
		if !errors.Is(err, syscall.EADDRINUSE) || try == 10 {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.Run(ctx, ps)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + e.Addr + e.Path, "http://" + e.Addr + e.QuitPath
}

// ready is a proxy that is ready and stays up after a quit.
func ready(t *testing.T) (e *sidecar.Emulator, ready, quit string) {
	e = &sidecar.Emulator{QuitStays: true}
	ready, quit = proxy(t, e, "200")
	return e, ready, quit
}

// gate is one run of the meshgate binary, or of a command that runs it,
// over the test app.
type gate struct {
	*testkit.Proc
	t      *testing.T
	report string // the app's APP_REPORT
}

// start runs meshgate with args and extra environment.
func start(t *testing.T, args []string, env ...string) *gate {
	t.Helper()
	return startCmd(t, exec.Command(bins.meshgate, args...), env...)
}

// startCmd starts cmd with the app reporting to a file, and the given
// environment only: the test run's own MESHGATE_* variables stay out.
func startCmd(t *testing.T, cmd *exec.Cmd, env ...string) *gate {
	t.Helper()
	g := &gate{t: t, report: filepath.Join(t.TempDir(), "report.json")}
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "APP_REPORT=" + g.report, "GORACE=atexit_sleep_ms=0"}, env...)
	g.Proc = testkit.Start(t, cmd)
	return g
}

// appReport reads what the app saw, or nil if it never ran.
func (g *gate) appReport() *report.Report {
	g.t.Helper()
	return testkit.ReadReport(g.t, g.report)
}

// appPID waits for the app's first line and reads its PID from it.
func (g *gate) appPID() int {
	g.t.Helper()
	g.Expect("app: started as PID ")
	_, rest, _ := strings.Cut(g.Stdout.String(), "app: started as PID ")
	pid, err := strconv.Atoi(strings.Fields(rest)[0])
	if err != nil {
		g.t.Fatalf("no PID in %q", rest)
	}
	return pid
}

// poll waits for cond, looking every millisecond: for what /proc shows
// (a new child, a zombie reaped, a write blocked) no event tells.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testkit.Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, testkit.Timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// childOf finds the one child of pid, as the kernel lists it.
func childOf(t *testing.T, pid int) (child int) {
	t.Helper()
	poll(t, fmt.Sprintf("a child of %d", pid), func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		f := strings.Fields(string(b))
		if len(f) == 1 {
			child, _ = strconv.Atoi(f[0])
		}
		return len(f) == 1
	})
	return child
}

// procStat reads the fields of /proc/PID/stat after the command name:
// state, ppid, pgrp, ... (the name may hold spaces and parentheses).
func procStat(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	return strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
}

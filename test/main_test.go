// Package test runs the built meshgate binary against real processes: the
// proxy emulator on loopback, a static app behind the gate, real signals,
// PID namespaces. Set MESHGATE_BIN to test a given binary; otherwise one is
// built for the run.
package test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/meshgate/meshgate/test/app/report"
	"github.com/meshgate/meshgate/test/pod"
	"github.com/meshgate/meshgate/test/sidecar"
)

// Paths of the binaries under test, set once by TestMain.
var bins struct{ meshgate, inject, app, emulator string }

// images builds the container image once for the pod tests.
var images *pod.Cache

func TestMain(m *testing.M) {
	if os.Getenv("MESHGATE_TEST_LAUNCH") != "" {
		launch() // does not return
	}
	dir, err := os.MkdirTemp("", "meshgate-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		bins.meshgate = os.Getenv("MESHGATE_BIN")
		if bins.meshgate == "" {
			bins.meshgate = filepath.Join(dir, "meshgate")
			if err := build(bins.meshgate, "../cmd/meshgate"); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		bins.inject = os.Getenv("MESHGATE_INJECT_BIN")
		if bins.inject == "" {
			bins.inject = filepath.Join(dir, "meshgate-inject")
			if err := build(bins.inject, "../cmd/meshgate-inject"); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		bins.app = filepath.Join(dir, "app")
		bins.emulator = filepath.Join(dir, "emulator")
		for out, pkg := range map[string]string{bins.app: "./app", bins.emulator: "./emulator"} {
			if err := build(out, pkg); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		if images, err = pod.NewCache(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer images.Close()
		return m.Run()
	}()
	os.Exit(code)
}

func build(out, pkg string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// launch starts meshgate the way a careless parent might: SIGHUP, SIGINT,
// SIGUSR1 and signals 32 and 40 (which the Go runtime leaves alone)
// ignored, SIGTERM and SIGUSR2 blocked. Both survive execve.
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

// emulator starts a proxy emulator on a free loopback port, going through
// the phases; it stops when the test ends.
func emulator(t *testing.T, phases string) (*sidecar.Emulator, string) {
	t.Helper()
	e := &sidecar.Emulator{Path: "/healthz/ready"}
	run(t, e, phases)
	return e, "http://" + e.Addr + "/healthz/ready"
}

// run gives e a free loopback port and runs it through the phases until
// the test ends. The first phase is in place when it returns, so that a
// "closed" start is closed.
func run(t *testing.T, e *sidecar.Emulator, phases string) {
	t.Helper()
	ps, err := sidecar.ParsePhases(phases)
	if err != nil {
		t.Fatal(err)
	}
	for try := 0; ; try++ {
		e.Addr = freeAddr(t)
		err := e.Set(ps[0].State)
		if err == nil {
			break
		}
		// Another process took the port since freeAddr looked: take
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
}

// nextPort hands out ports below the kernel's ephemeral range (32768 and
// up by default), so that no client connection of a parallel test takes
// the port of an emulator that is in its "closed" phase. Each test
// process starts at a random place, away from other processes' ports.
var nextPort atomic.Int32

// freeAddr finds a loopback port that nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	nextPort.CompareAndSwap(0, int32(20000+rand.IntN(10000)))
	for range 100 {
		addr := "127.0.0.1:" + strconv.Itoa(int(nextPort.Add(1)))
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
}

// gate is one run of the meshgate binary.
type gate struct {
	t      *testing.T
	cmd    *exec.Cmd
	report string
	stdout strings.Builder
	stderr *logTail
	waited bool
	code   int
}

// start runs meshgate with args and extra environment, the app reporting
// to a file.
func start(t *testing.T, args []string, env ...string) *gate {
	t.Helper()
	g := &gate{t: t, report: filepath.Join(t.TempDir(), "report.json"), stderr: newLogTail()}
	g.cmd = exec.Command(bins.meshgate, args...)
	g.cmd.Env = append([]string{"PATH=/usr/bin:/bin", "APP_REPORT=" + g.report, "GORACE=atexit_sleep_ms=0"}, env...)
	g.cmd.Stdout = &g.stdout
	g.cmd.Stderr = g.stderr
	g.spawn()
	return g
}

// spawn starts g.cmd, failing the test if it cannot, and kills it when
// the test ends if the test has not waited for it.
func (g *gate) spawn() {
	g.t.Helper()
	if err := g.cmd.Start(); err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() {
		if !g.waited {
			_ = g.cmd.Process.Kill()
			_ = g.cmd.Wait()
		}
	})
}

// wait returns meshgate's exit code (or the app's, after exec).
func (g *gate) wait() int {
	g.t.Helper()
	if g.waited {
		return g.code
	}
	done := make(chan error, 1)
	go func() { done <- g.cmd.Wait() }()
	select {
	case err := <-done:
		g.waited = true
		g.code = exitCode(g.t, err)
	case <-time.After(30 * time.Second):
		g.t.Fatalf("meshgate still running after 30s\n%s", g.stderr)
	}
	return g.code
}

func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	ee, ok := err.(*exec.ExitError)
	if !ok {
		t.Fatal(err)
	}
	if ws := ee.Sys().(syscall.WaitStatus); ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ee.ExitCode()
}

// appReport reads what the app saw, or nil if it never ran.
func (g *gate) appReport() *report.Report {
	g.t.Helper()
	b, err := os.ReadFile(g.report)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		g.t.Fatal(err)
	}
	var r report.Report
	if err := json.Unmarshal(b, &r); err != nil {
		g.t.Fatalf("report %s: %v", b, err)
	}
	return &r
}

// logs returns meshgate's log lines with the given message.
func (g *gate) logs(msg string) []map[string]any {
	g.t.Helper()
	var out []map[string]any
	for _, l := range g.stderr.lines() {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			g.t.Fatalf("stderr line %q is not a JSON log line", l)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// waitLog blocks until meshgate has logged msg.
func (g *gate) waitLog(msg string) {
	g.t.Helper()
	if !g.stderr.waitFor(`"msg":"`+msg+`"`, 30*time.Second) {
		g.t.Fatalf("meshgate did not log %q within 30s\n%s", msg, g.stderr)
	}
}

// logTail collects stderr and lets a test wait for a line.
type logTail struct {
	mu   sync.Mutex
	buf  strings.Builder
	cond *sync.Cond
}

func newLogTail() *logTail {
	l := &logTail{}
	l.cond = sync.NewCond(&l.mu)
	return l
}

func (l *logTail) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	l.cond.Broadcast()
	return len(p), nil
}

func (l *logTail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logTail) lines() []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(l.String()))
	for sc.Scan() {
		if sc.Text() != "" {
			out = append(out, sc.Text())
		}
	}
	return out
}

func (l *logTail) waitFor(s string, within time.Duration) bool {
	timer := time.AfterFunc(within, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.cond.Broadcast()
	})
	defer timer.Stop()
	deadline := time.Now().Add(within)
	l.mu.Lock()
	defer l.mu.Unlock()
	for !strings.Contains(l.buf.String(), s) {
		if time.Now().After(deadline) {
			return false
		}
		l.cond.Wait()
	}
	return true
}

var _ io.Writer = (*logTail)(nil)

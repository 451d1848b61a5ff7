package test

import (
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/meshgate/meshgate/test/pty"
	"github.com/meshgate/meshgate/test/sidecar"
	"github.com/meshgate/meshgate/test/testkit"
)

// supervise starts meshgate --quit-url over the app catching signals.
// GODEBUG: no SIGURG of the app's own runtime.
func supervise(t *testing.T, cmd *exec.Cmd, env ...string) *gate {
	t.Helper()
	return startCmd(t, cmd, append([]string{"APP_SIGNALS=1", "GODEBUG=asyncpreemptoff=1"}, env...)...)
}

// received ends the app with SIGTERM and checks that it got exactly want
// before it, and that its exit code 0 came through.
func (g *gate) received(want ...string) {
	g.t.Helper()
	g.Signal(syscall.SIGTERM)
	if code := g.Wait(); code != 0 {
		g.t.Fatalf("exit %d, want the app's 0\n%s", code, &g.Stderr)
	}
	if r := g.appReport(); r == nil || !slices.Equal(r.Signals, append(want, "SIGTERM")) {
		g.t.Errorf("the app received %+v, want exactly %v and SIGTERM\n%s", r, want, &g.Stderr)
	}
}

func TestSuperviseExitCodesPassThrough(t *testing.T) {
	t.Parallel()
	e, ok, quit := ready(t)
	var envs []string
	for code := range 256 {
		envs = append(envs, "APP_EXIT="+strconv.Itoa(code))
	}
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGSEGV} {
		envs = append(envs, "APP_KILL="+strconv.Itoa(int(sig)))
	}
	got := make([]int, len(envs))
	var wg sync.WaitGroup
	slots := make(chan struct{}, 4)
	for i, env := range envs {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			cmd := exec.Command(bins.meshgate, "--probe", ok, "--quit-url", quit, "--", bins.app)
			cmd.Env = []string{env}
			got[i] = testkit.ExitCode(cmd.Run())
		})
	}
	wg.Wait()
	for i, env := range envs {
		want, _ := strconv.Atoi(env[strings.IndexByte(env, '=')+1:])
		if strings.HasPrefix(env, "APP_KILL=") {
			want += 128
		}
		if got[i] != want {
			t.Errorf("%s: exit %d, want %d", env, got[i], want)
		}
	}
	if got := e.Quits(); got != int64(len(envs)) {
		t.Errorf("%d quit requests for %d runs, want one each", got, len(envs))
	}
}

func TestSuperviseForwardsSignals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		forward string // --forward-signals, if not "default"
		dropped []syscall.Signal
		passed  []syscall.Signal
	}{
		// Not forwarded by default: Go's preemption signal, and SIGCHLD.
		{"default", []syscall.Signal{syscall.SIGURG, syscall.SIGCHLD},
			[]syscall.Signal{syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH}},
		{"TERM,URG,ALRM", nil, []syscall.Signal{syscall.SIGURG, syscall.SIGALRM}},
		// An empty list forwards the stop signals only, not every signal.
		{"", []syscall.Signal{syscall.SIGUSR1, syscall.SIGWINCH, syscall.SIGALRM}, []syscall.Signal{syscall.SIGINT}},
		{",", []syscall.Signal{syscall.SIGUSR1, syscall.SIGWINCH, syscall.SIGALRM}, []syscall.Signal{syscall.SIGINT}},
	}
	for _, tc := range tests {
		t.Run(tc.forward, func(t *testing.T) {
			t.Parallel()
			_, ok, quit := ready(t)
			args := []string{"--probe", ok, "--quit-url", quit, "--", bins.app}
			if tc.forward != "default" {
				args = append([]string{"--forward-signals", tc.forward}, args...)
			}
			g := supervise(t, exec.Command(bins.meshgate, args...))
			g.Expect("ready")
			for _, sig := range tc.dropped {
				g.Signal(sig)
			}
			var want []string
			for _, sig := range tc.passed {
				g.Signal(sig)
				want = append(want, sigNames[sig])
				g.Expect("got " + want[len(want)-1])
			}
			g.received(want...)
		})
	}
}

// sigNames are the names the app prints for the signals it catches.
var sigNames = map[syscall.Signal]string{syscall.SIGINT: "SIGINT", syscall.SIGHUP: "SIGHUP", syscall.SIGQUIT: "SIGQUIT",
	syscall.SIGUSR1: "SIGUSR1", syscall.SIGUSR2: "SIGUSR2", syscall.SIGWINCH: "SIGWINCH", syscall.SIGURG: "SIGURG", syscall.SIGALRM: "SIGALRM"}

// A signal sent to meshgate's whole process group reaches the command
// once: the command has a group of its own, and meshgate forwards.
func TestGroupSignalReachesTheCommandOnce(t *testing.T) {
	t.Parallel()
	_, ok, quit := ready(t)
	cmd := exec.Command(bins.meshgate, "--probe", ok, "--quit-url", quit, "--", bins.app)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	g := supervise(t, cmd)
	app := g.appPID()
	g.Expect("ready")
	if got := procStat(app)[2]; got != strconv.Itoa(app) {
		t.Errorf("the app (PID %d) is in process group %s, want its own", app, got)
	}
	if err := syscall.Kill(-g.Cmd.Process.Pid, syscall.SIGINT); err != nil { // a session leader leads its group
		t.Fatal(err)
	}
	g.Expect("got SIGINT")
	g.received("SIGINT")
}

// At a terminal the command's group is the foreground one: Ctrl-C reaches
// the command once, from the terminal, and not meshgate.
func TestTerminalForegroundIsTheCommands(t *testing.T) {
	t.Parallel()
	leader, follower := pty.Open(t)
	_, ok, quit := ready(t)
	cmd := exec.Command(bins.meshgate, "--probe", ok, "--quit-url", quit, "--", bins.app)
	cmd.Stdin, cmd.Stdout = follower, follower
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	g := supervise(t, cmd)
	follower.Close()
	go func() { _, _ = io.Copy(&g.Stdout, leader) }()
	app := g.appPID()
	g.Expect("ready")
	var fg int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, leader.Fd(), syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&fg))); e != 0 {
		t.Fatal(e)
	}
	if int(fg) != app {
		t.Errorf("the terminal's foreground group is %d, want the app's own (%d)", fg, app)
	}
	if _, err := leader.Write([]byte{3}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	g.Expect("got SIGINT")
	g.received("SIGINT")
}

// A signal that does not stop the wait is dropped, with a log line naming
// it, not held for a command that has not set up its handlers yet.
func TestSignalDuringTheWaitIsDropped(t *testing.T) {
	t.Parallel()
	e := &sidecar.Emulator{QuitStays: true}
	ok, quit := proxy(t, e, "503")
	g := supervise(t, exec.Command(bins.meshgate, "--probe", ok, "--quit-url", quit, "--timeout", "0", "--", bins.app))
	g.WaitLog("waiting for proxy")
	g.Signal(syscall.SIGUSR1)
	g.WaitLog("dropping signal: the command is not running yet")
	if err := e.Set("200"); err != nil {
		t.Fatal(err)
	}
	g.Expect("ready")
	g.received()
	if dropped := g.Logs("dropping signal: the command is not running yet"); len(dropped) != 1 || dropped[0]["signal"] != "SIGUSR1" {
		t.Errorf("drop lines %v, want one naming SIGUSR1", dropped)
	}
}

func TestSuperviseQuit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		args   []string // between the probe/quit flags and --
		env    []string
		app    string // the command, if not the app
		code   int
		quits  int64
		phases string
	}{
		{"after success", nil, nil, "", 0, 1, "200"},
		{"after failure", nil, []string{"APP_EXIT=3"}, "", 3, 1, "200"},
		{"command not found", nil, nil, "no-such-app", 127, 1, "200"},
		{"command not executable", nil, nil, "/", 126, 1, "200"},
		{"not ready in time", []string{"--timeout", "100ms"}, nil, "", 69, 1, "503"},
		{"success only, failed", []string{"--quit-on", "success"}, []string{"APP_EXIT=3"}, "", 3, 0, "200"},
		{"success only, not found", []string{"--quit-on", "success"}, nil, "no-such-app", 127, 0, "200"},
		{"success only, succeeded", []string{"--quit-on=success"}, nil, "", 0, 1, "200"},
		// The readiness port is closed; the quit goes to the other proxy.
		{"wait disabled", nil, []string{"MESHGATE_DISABLED=true"}, "", 0, 1, "closed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, other := &sidecar.Emulator{}, &sidecar.Emulator{}
			ok, quit := proxy(t, e, tc.phases)
			_, otherQuit := proxy(t, other, "200")
			args := append([]string{"--probe", ok, "--quit-url", otherQuit}, tc.args...)
			if tc.phases != "closed" {
				args = append(args, "--quit-url", quit)
			}
			app := bins.app
			if tc.app != "" {
				app = tc.app
			}
			g := start(t, append(append(args, "--"), app), tc.env...)
			if code := g.Wait(); code != tc.code {
				t.Errorf("exit %d, want %d\n%s", code, tc.code, &g.Stderr)
			}
			if other.Quits() != tc.quits || tc.phases != "closed" && e.Quits() != tc.quits {
				t.Errorf("quit requests %d and %d, want %d each\n%s", e.Quits(), other.Quits(), tc.quits, &g.Stderr)
			}
		})
	}
}

// meshgate (host PID pid) is left with orphans that exit at once: it
// reaps them, and the app's status is not stolen by the reaper.
func checkReaped(t *testing.T, g *gate, pid int) {
	t.Helper()
	g.Expect("orphans:")
	g.Expect("ready")
	poll(t, "orphans reaped", func() bool {
		entries, _ := filepath.Glob("/proc/[0-9]*/stat")
		for _, e := range entries {
			n, _ := strconv.Atoi(strings.Split(e, "/")[2])
			if f := procStat(n); len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(pid) {
				return false
			}
		}
		return true
	})
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := g.Wait(); code != 0 {
		t.Errorf("exit %d, want the app's 0\n%s", code, &g.Stderr)
	}
}

func TestReapsOrphans(t *testing.T) {
	t.Parallel()
	_, ok, quit := ready(t)
	args := []string{bins.meshgate, "--probe", ok, "--quit-url", quit, "--", bins.app}
	t.Run("as subreaper", func(t *testing.T) {
		t.Parallel()
		g := supervise(t, exec.Command(args[0], args[1:]...), "APP_ORPHANS=5")
		checkReaped(t, g, g.Cmd.Process.Pid)
	})
	t.Run("as PID 1", func(t *testing.T) {
		t.Parallel()
		root(t)
		g := supervise(t, exec.Command("unshare", append([]string{"--pid", "--fork", "--kill-child"}, args...)...), "APP_ORPHANS=5")
		checkReaped(t, g, childOf(t, g.Cmd.Process.Pid))
	})
}

// A stop signal during the quit leaves it at most a second more, and the
// command's status stands: the pod is being deleted, the kubelet stops the
// proxy anyway.
func TestSignalDuringTheQuit(t *testing.T) {
	t.Parallel()
	e := &sidecar.Emulator{QuitAnswer: sidecar.Hang, QuitStays: true}
	ok, quit := proxy(t, e, "200")
	g := start(t, []string{"--probe", ok, "--quit-url", quit, "--quit-timeout", "50s", "--", bins.app}, "APP_EXIT=6")
	select {
	case <-e.QuitAsked(): // the first quit request hangs
	case <-time.After(testkit.Timeout):
		t.Fatalf("no quit request\n%s", &g.Stderr)
	}
	g.Signal(syscall.SIGTERM)
	if code := g.Wait(); code != 6 {
		t.Errorf("exit %d, want the app's 6\n%s", code, &g.Stderr)
	}
	// Each request may hang for 2s, and three are made without the
	// signal; with one more second after it, at most two.
	if n := e.Quits(); n > 2 || len(g.Logs("stop signal during the quit; giving it at most 1s more")) != 1 {
		t.Errorf("%d quit requests, want at most 2, and a line saying the quit was cut short\n%s", n, &g.Stderr)
	}
}

func TestNoOrphanWhenMeshgateIsKilled(t *testing.T) {
	t.Parallel()
	_, ok, quit := ready(t)
	g := supervise(t, exec.Command(bins.meshgate, "--probe", ok, "--quit-url", quit, "--", bins.app))
	pid := g.appPID()
	g.Expect("ready")
	_ = g.Cmd.Process.Kill() // SIGKILL: no chance to clean up
	g.Wait()
	defer syscall.Kill(pid, syscall.SIGKILL)
	poll(t, fmt.Sprintf("the app (PID %d) ends after meshgate was killed", pid), func() bool {
		f := procStat(pid)
		return f == nil || f[0] == "Z" || f[0] == "X"
	})
}

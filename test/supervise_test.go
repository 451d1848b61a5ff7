package test

import (
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/meshgate/meshgate/test/app/report"
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
	// Every code that means something to meshgate or a shell, and the
	// ends of the range.
	var envs []string
	for _, code := range []int{0, 1, 2, 3, 69, 125, 126, 127, 128, 129, 143, 254, 255} {
		envs = append(envs, "APP_EXIT="+strconv.Itoa(code))
	}
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGSEGV} {
		envs = append(envs, "APP_KILL="+strconv.Itoa(int(sig)))
	}
	t.Run("runs", func(t *testing.T) {
		for _, env := range envs {
			t.Run(env, func(t *testing.T) {
				t.Parallel()
				want, _ := strconv.Atoi(env[strings.IndexByte(env, '=')+1:])
				if strings.HasPrefix(env, "APP_KILL=") {
					want += 128
				}
				cmd := exec.Command(bins.meshgate, "--probe", ok, "--quit-url", quit, "--", bins.app)
				cmd.Env = []string{env}
				if got := testkit.ExitCode(cmd.Run()); got != want {
					t.Errorf("exit %d, want %d", got, want)
				}
			})
		}
	})
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
				want = append(want, report.Signals[sig])
				g.Expect("got " + want[len(want)-1])
			}
			g.received(want...)
		})
	}
}

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
		app    string // the command
		code   int
		quits  int64
		phases string
	}{
		{"after success", nil, nil, bins.app, 0, 1, "200"},
		{"after failure", nil, []string{"APP_EXIT=3"}, bins.app, 3, 1, "200"},
		{"command not found", nil, nil, "no-such-app", 127, 1, "200"},
		{"command not executable", nil, nil, "/", 126, 1, "200"},
		{"not ready in time", []string{"--timeout", "100ms"}, nil, bins.app, 69, 1, "503"},
		{"success only, failed", []string{"--quit-on", "success"}, []string{"APP_EXIT=3"}, bins.app, 3, 0, "200"},
		{"success only, not found", []string{"--quit-on", "success"}, nil, "no-such-app", 127, 0, "200"},
		{"success only, succeeded", []string{"--quit-on=success"}, nil, bins.app, 0, 1, "200"},
		// The readiness port is closed; the quit goes to the other proxy.
		{"wait disabled", nil, []string{"MESHGATE_DISABLED=true"}, bins.app, 0, 1, "closed"},
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
			g := start(t, append(append(args, "--"), tc.app), tc.env...)
			if code := g.Wait(); code != tc.code {
				t.Errorf("exit %d, want %d\n%s", code, tc.code, &g.Stderr)
			}
			if other.Quits() != tc.quits || tc.phases != "closed" && e.Quits() != tc.quits {
				t.Errorf("quit requests %d and %d, want %d each\n%s", e.Quits(), other.Quits(), tc.quits, &g.Stderr)
			}
		})
	}
}

// The app leaves orphans that exit at once: meshgate, as a subreaper or as
// process 1 of a PID namespace, reaps them, and the app's status is not
// stolen by the reaper.
func TestReapsOrphans(t *testing.T) {
	t.Parallel()
	_, ok, quit := ready(t)
	args := []string{bins.meshgate, "--probe", ok, "--quit-url", quit, "--", bins.app}
	for _, pid1 := range []bool{false, true} {
		t.Run(map[bool]string{false: "as subreaper", true: "as PID 1"}[pid1], func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(args[0], args[1:]...)
			if pid1 {
				testkit.Need(t, "unshare")
				cmd = exec.Command("unshare", append([]string{"--pid", "--fork", "--kill-child"}, args...)...)
			}
			g := supervise(t, cmd, "APP_ORPHANS=5")
			pid := g.Cmd.Process.Pid
			if pid1 {
				pid = childOf(t, pid)
			}
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
		})
	}
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

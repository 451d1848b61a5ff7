package test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshgate/meshgate/test/sidecar"
)

// proxy starts an emulator that is ready and takes quit requests; it
// stays up after a quit unless exits is set.
func proxy(t *testing.T, phases string, answer sidecar.State, exits bool) (e *sidecar.Emulator, ready, quit string) {
	t.Helper()
	e = &sidecar.Emulator{Path: "/healthz/ready", QuitPath: "/quitquitquit", QuitAnswer: answer, QuitStays: !exits}
	run(t, e, phases)
	return e, "http://" + e.Addr + "/healthz/ready", "http://" + e.Addr + "/quitquitquit"
}

func TestSuperviseExitCodesPassThrough(t *testing.T) {
	t.Parallel()
	e, ready, quit := proxy(t, "200", "200", false)
	codes := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var wrong []string
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for code := range codes {
				cmd := exec.Command(bins.meshgate, "--probe", ready, "--quit-url", quit, "--", bins.app)
				cmd.Env = []string{"APP_EXIT=" + strconv.Itoa(code)}
				got := exitCodeOf(cmd.Run())
				if got != code {
					mu.Lock()
					wrong = append(wrong, fmt.Sprintf("%d→%d", code, got))
					mu.Unlock()
				}
			}
		}()
	}
	for code := range 256 {
		codes <- code
	}
	close(codes)
	wg.Wait()
	if len(wrong) > 0 {
		t.Errorf("exit codes not passed through (want→got): %v", wrong)
	}
	if got := e.Quits(); got != 256 {
		t.Errorf("%d quit requests for 256 runs, want one each", got)
	}
}

func TestSuperviseKilledBySignal(t *testing.T) {
	t.Parallel()
	_, ready, quit := proxy(t, "200", "200", false)
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGSEGV} {
		cmd := exec.Command(bins.meshgate, "--probe", ready, "--quit-url", quit, "--", bins.app)
		cmd.Env = []string{"APP_KILL=" + strconv.Itoa(int(sig))}
		if got, want := exitCodeOf(cmd.Run()), 128+int(sig); got != want {
			t.Errorf("command killed by %v: exit %d, want %d", sig, got, want)
		}
	}
}

// supervised runs meshgate --quit over the app in APP_SIGNALS mode and
// reads the app's stdout line by line.
type supervised struct {
	*gate
	lines chan string
}

func startSupervised(t *testing.T, bin string, args []string, env ...string) *supervised {
	t.Helper()
	return startSupervisedAttr(t, nil, bin, args, env...)
}

// startSupervisedAttr is startSupervised with the process attributes of
// meshgate's start (a session of its own, say).
func startSupervisedAttr(t *testing.T, attr *syscall.SysProcAttr, bin string, args []string, env ...string) *supervised {
	t.Helper()
	g := &gate{t: t, report: filepath.Join(t.TempDir(), "report.json"), stderr: newLogTail()}
	g.cmd = exec.Command(bin, args...)
	g.cmd.SysProcAttr = attr
	g.cmd.Env = append([]string{"APP_REPORT=" + g.report, "APP_SIGNALS=1", "GODEBUG=asyncpreemptoff=1"}, env...)
	g.cmd.Stderr = g.stderr
	out, err := g.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	g.spawn()
	return readLines(g, out, nil)
}

// readLines reads the app's output from out, a line at a time, each
// through clean if not nil, for expect to wait on.
func readLines(g *gate, out io.Reader, clean func(string) string) *supervised {
	s := &supervised{gate: g, lines: make(chan string, 64)}
	go func() {
		defer close(s.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l := sc.Text()
			if clean != nil {
				l = clean(l)
			}
			s.lines <- l
		}
	}()
	return s
}

// expect waits for the app to print a line that starts with prefix.
func (s *supervised) expect(prefix string) string {
	s.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				s.t.Fatalf("the app's output ended before %q\n%s", prefix, s.stderr)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timeout:
			s.t.Fatalf("the app did not print %q\n%s", prefix, s.stderr)
		}
	}
}

func TestSuperviseForwardsSignals(t *testing.T) {
	t.Parallel()
	e, ready, quit := proxy(t, "200", "200", false)
	s := startSupervised(t, bins.meshgate, []string{"--probe", ready, "--quit-url", quit, "--log-level", "debug", "--", bins.app})
	s.expect("ready")
	// Not forwarded: Go's preemption signal, and SIGCHLD.
	for _, sig := range []syscall.Signal{syscall.SIGURG, syscall.SIGCHLD} {
		_ = s.cmd.Process.Signal(sig)
	}
	forwarded := []syscall.Signal{syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH}
	for _, sig := range forwarded {
		if err := s.cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		s.expect("got " + sigName(sig))
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	if code := s.wait(); code != 0 {
		t.Fatalf("exit %d, want the app's 0\n%s", code, s.stderr)
	}
	r := s.appReport()
	want := []string{"SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGTERM"}
	if r == nil || !slices.Equal(r.Signals, want) {
		t.Errorf("the app received %v, want exactly %v", r, want)
	}
	if e.Quits() != 1 {
		t.Errorf("%d quit requests, want 1", e.Quits())
	}
}

func sigName(s syscall.Signal) string {
	return map[syscall.Signal]string{syscall.SIGINT: "SIGINT", syscall.SIGHUP: "SIGHUP", syscall.SIGQUIT: "SIGQUIT",
		syscall.SIGUSR1: "SIGUSR1", syscall.SIGUSR2: "SIGUSR2", syscall.SIGWINCH: "SIGWINCH", syscall.SIGTERM: "SIGTERM"}[s]
}

func TestSuperviseForwardListIsConfigurable(t *testing.T) {
	t.Parallel()
	_, ready, quit := proxy(t, "200", "200", false)
	s := startSupervised(t, bins.meshgate, []string{"--probe", ready, "--quit-url", quit, "--forward-signals", "TERM,URG,ALRM", "--", bins.app})
	s.expect("ready")
	_ = s.cmd.Process.Signal(syscall.SIGURG)
	s.expect("got SIGURG")
	_ = s.cmd.Process.Signal(syscall.SIGALRM)
	s.expect("got SIGALRM")
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	if code := s.wait(); code != 0 {
		t.Fatalf("exit %d\n%s", code, s.stderr)
	}
}

// A signal that does not stop the wait is dropped, with a log line naming
// it, not held for a command that has not set up its handlers yet.
func TestSignalDuringTheWaitIsDropped(t *testing.T) {
	t.Parallel()
	e, ready, quit := proxy(t, "503", "200", false)
	s := startSupervised(t, bins.meshgate, []string{"--probe", ready, "--quit-url", quit, "--timeout", "0", "--", bins.app})
	s.waitLog("waiting for proxy")
	_ = s.cmd.Process.Signal(syscall.SIGUSR1)
	s.waitLog("dropping signal: the command is not running yet")
	if err := e.Set("200"); err != nil {
		t.Fatal(err)
	}
	s.expect("ready")
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	if code := s.wait(); code != 0 {
		t.Fatalf("exit %d, want the app's 0\n%s", code, s.stderr)
	}
	r := s.appReport()
	if r == nil || !slices.Equal(r.Signals, []string{"SIGTERM"}) {
		t.Errorf("the app received %+v, want only SIGTERM\n%s", r, s.stderr)
	}
	dropped := s.logs("dropping signal: the command is not running yet")
	if len(dropped) != 1 || dropped[0]["signal"] != "SIGUSR1" {
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
		{"after success", nil, nil, "", 0, 1, "200"},
		{"after failure", nil, []string{"APP_EXIT=3"}, "", 3, 1, "200"},
		{"command not found", nil, nil, "no-such-app", 127, 1, "200"},
		{"command not executable", nil, nil, "/", 126, 1, "200"},
		{"not ready in time", []string{"--timeout", "100ms"}, nil, "", 69, 1, "503"},
		{"success only, failed", []string{"--quit-on", "success"}, []string{"APP_EXIT=3"}, "", 3, 0, "200"},
		{"success only, not found", []string{"--quit-on", "success"}, nil, "no-such-app", 127, 0, "200"},
		{"success only, succeeded", []string{"--quit-on=success"}, nil, "", 0, 1, "200"},
		{"wait disabled", nil, []string{"MESHGATE_DISABLED=true"}, "", 0, 1, "closed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e, ready, quit := proxy(t, tc.phases, "200", true)
			other, _, otherQuit := proxy(t, "200", "200", true)
			if tc.phases == "closed" {
				// The quit port must be open although readiness is not:
				// use the other emulator's.
				e = nil
			}
			app := bins.app
			if tc.app != "" {
				app = tc.app
			}
			args := append([]string{"--probe", ready, "--quit-url", otherQuit}, tc.args...)
			if e != nil {
				args = append(args, "--quit-url", quit)
			}
			g := start(t, append(append(args, "--"), app), tc.env...)
			if code := g.wait(); code != tc.code {
				t.Errorf("exit %d, want %d\n%s", code, tc.code, g.stderr)
			}
			for _, em := range []*sidecar.Emulator{e, other} {
				if em != nil && em.Quits() != tc.quits {
					t.Errorf("emulator %s got %d quit requests, want %d\n%s", em.Addr, em.Quits(), tc.quits, g.stderr)
				}
			}
		})
	}
}

func TestQuitBounded(t *testing.T) {
	t.Parallel()
	for _, answer := range []sidecar.State{sidecar.Hang, "503"} {
		t.Run(string(answer), func(t *testing.T) {
			t.Parallel()
			e, ready, quit := proxy(t, "200", answer, false)
			g := start(t, []string{"--probe", ready, "--quit-url", quit, "--quit-timeout", "600ms", "--", bins.app}, "APP_EXIT=4")
			began := time.Now()
			code := g.wait()
			if code != 4 {
				t.Errorf("exit %d, want the app's 4\n%s", code, g.stderr)
			}
			// Generous: the point is that the limit holds, not its precision.
			if took := time.Since(began); took > 5*time.Second {
				t.Errorf("took %v with a 600ms quit limit", took)
			}
			if n := e.Quits(); n < 1 || n > 3 {
				t.Errorf("%d quit requests, want 1 to 3 (bounded retries)", n)
			}
			if len(g.logs("proxy did not take the quit")) != 1 {
				t.Errorf("want one warning about the quit\n%s", g.stderr)
			}
		})
	}
}

func TestQuitExplainsLinkerd404(t *testing.T) {
	t.Parallel()
	e, ready, quit := proxy(t, "200", "404", false)
	g := start(t, []string{"--probe", ready, "--quit-url", quit, "--", bins.app})
	if code := g.wait(); code != 0 {
		t.Fatalf("exit %d\n%s", code, g.stderr)
	}
	refused := g.logs("proxy refused to quit")
	if len(refused) != 1 || !strings.Contains(refused[0]["error"].(string), "config.linkerd.io/proxy-admin-shutdown: enabled") {
		t.Errorf("refusal lines %v, want one naming the annotation", refused)
	}
	if e.Quits() != 1 {
		t.Errorf("%d quit requests, want 1: a 404 is not retried", e.Quits())
	}
}

func TestQuitCommand(t *testing.T) {
	t.Parallel()
	e, _, quit := proxy(t, "200", "200", true)
	if out, err := exec.Command(bins.meshgate, "quit", "--quit-url", quit).CombinedOutput(); err != nil {
		t.Fatalf("quit: %v\n%s", err, out)
	}
	select {
	case <-e.Quitted():
	default:
		t.Error("the emulator was not told to quit")
	}
	// Now the port is closed: the quit cannot be taken.
	cmd := exec.Command(bins.meshgate, "quit", "--quit-url", quit, "--quit-timeout", "1s")
	if code := exitCodeOf(cmd.Run()); code != 1 {
		t.Errorf("quit of a closed port: exit %d, want 1", code)
	}
	cmd = exec.Command(bins.meshgate, "quit", "--quit-url", "http://10.0.0.1:15020/quitquitquit")
	if out, err := cmd.CombinedOutput(); exitCodeOf(err) != 2 || !strings.Contains(string(out), "not loopback") {
		t.Errorf("quit of a remote host: %v %s, want exit 2 naming it", err, out)
	}
}

// zombiesOf lists the zombie children of pid.
func zombiesOf(pid int) []int {
	var z []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if state, ppid, ok := procStat(n); ok && state == "Z" && ppid == pid {
			z = append(z, n)
		}
	}
	return z
}

// procStat reads a process's state letter and parent from /proc.
func procStat(pid int) (state string, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", 0, false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 2 {
		return "", 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return f[0], ppid, err == nil
}

// checkReaped waits for meshgate (host PID pid) to have no zombie
// children: the app has left orphans that exit at once.
func checkReaped(t *testing.T, s *supervised, pid int) {
	t.Helper()
	s.expect("orphans:")
	s.expect("ready")
	deadline := time.Now().Add(10 * time.Second)
	for len(zombiesOf(pid)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("zombies %v of meshgate not reaped", zombiesOf(pid))
		}
		time.Sleep(5 * time.Millisecond) // polling /proc: reaping has no event to wait for
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := s.wait(); code != 0 {
		t.Errorf("exit %d, want the app's 0 (its status not stolen by the reaper)\n%s", code, s.stderr)
	}
}

func TestReapsOrphansAsSubreaper(t *testing.T) {
	t.Parallel()
	_, ready, quit := proxy(t, "200", "200", false)
	s := startSupervised(t, bins.meshgate, []string{"--probe", ready, "--quit-url", quit, "--", bins.app}, "APP_ORPHANS=5")
	checkReaped(t, s, s.cmd.Process.Pid)
}

func TestReapsOrphansAsPID1(t *testing.T) {
	t.Parallel()
	root(t)
	_, ready, quit := proxy(t, "200", "200", false)
	s := startSupervised(t, "unshare", []string{"--pid", "--fork", "--kill-child",
		bins.meshgate, "--probe", ready, "--quit-url", quit, "--", bins.app}, "APP_ORPHANS=5")
	checkReaped(t, s, childOf(t, s.cmd.Process.Pid))
}

func TestProxyDiesWhileTheCommandRuns(t *testing.T) {
	t.Parallel()
	e, ready, quit := proxy(t, "200", "200", false)
	s := startSupervised(t, bins.meshgate, []string{"--probe", ready, "--quit-url", quit, "--quit-timeout", "1s", "--", bins.app}, "APP_EXIT=5")
	s.expect("ready")
	e.Close() // the proxy is gone
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	if code := s.wait(); code != 5 {
		t.Errorf("exit %d, want the app's 5\n%s", code, s.stderr)
	}
	if len(s.logs("proxy did not take the quit")) != 1 {
		t.Errorf("want one warning that the quit found no proxy\n%s", s.stderr)
	}
}

// A stop signal during the quit leaves it at most a second more, and the
// command's status stands: the pod is being deleted, the kubelet stops the
// proxy anyway.
func TestSignalDuringTheQuit(t *testing.T) {
	t.Parallel()
	e, ready, quit := proxy(t, "200", sidecar.Hang, false)
	g := start(t, []string{"--probe", ready, "--quit-url", quit, "--quit-timeout", "50s", "--", bins.app}, "APP_EXIT=6")
	select {
	case <-e.QuitAsked(): // the first quit request hangs
	case <-time.After(30 * time.Second):
		t.Fatalf("no quit request\n%s", g.stderr)
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	if code := g.wait(); code != 6 {
		t.Errorf("exit %d, want the app's 6\n%s", code, g.stderr)
	}
	// Each request may hang for 2s, and three are made without the
	// signal; with one more second after it, at most two.
	if n := e.Quits(); n > 2 || len(g.logs("stop signal during the quit; giving it at most 1s more")) != 1 {
		t.Errorf("%d quit requests, want at most 2, and a line saying the quit was cut short\n%s", n, g.stderr)
	}
}

func TestNoOrphanWhenMeshgateIsKilled(t *testing.T) {
	t.Parallel()
	_, ready, quit := proxy(t, "200", "200", false)
	s := startSupervised(t, bins.meshgate, []string{"--probe", ready, "--quit-url", quit, "--", bins.app})
	line := s.expect("app: started as PID ")
	pid, err := strconv.Atoi(strings.Fields(strings.TrimPrefix(line, "app: started as PID "))[0])
	if err != nil {
		t.Fatalf("no PID in %q", line)
	}
	s.expect("ready")
	_ = s.cmd.Process.Kill() // SIGKILL: no chance to clean up
	s.wait()
	deadline := time.Now().Add(10 * time.Second)
	for running(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the app (PID %d) still runs after meshgate was killed", pid)
		}
		time.Sleep(5 * time.Millisecond) // polling /proc: a stranger's exit has no event
	}
}

// running reports whether pid is a live process (not gone, not a zombie).
func running(pid int) bool {
	state, _, ok := procStat(pid)
	return ok && state != "Z" && state != "X"
}

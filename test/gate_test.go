package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshgate/meshgate/test/sidecar"
)

func TestExecKeepsPIDArgvAndEnv(t *testing.T) {
	t.Parallel()
	_, url := emulator(t, "200")
	argv := []string{bins.app, "--port", "8080", "", "two words", "--timeout", "ünïcode", "--"}
	g := start(t, append([]string{"--probe", url, "--"}, argv...), "CUSTOM=a=b", "EMPTY=", "MESHGATE_LOG_LEVEL=info")
	if code := g.wait(); code != 0 {
		t.Fatalf("exit %d\n%s", code, g.stderr)
	}
	r := g.appReport()
	if r == nil {
		t.Fatal("the app did not run")
	}
	if r.PID != g.cmd.Process.Pid {
		t.Errorf("app PID %d, meshgate PID %d: want the same (exec, not fork)", r.PID, g.cmd.Process.Pid)
	}
	if !reflect.DeepEqual(r.Argv, argv) {
		t.Errorf("app argv %q, want %q", r.Argv, argv)
	}
	if want := g.cmd.Env; !reflect.DeepEqual(r.Env, want) {
		t.Errorf("app env %q, want %q", r.Env, want)
	}
	wantOut := "app: started as PID " + strconv.Itoa(r.PID) + " with argv " + quoteAll(argv) + "\n"
	if got := g.stdout.String(); got != wantOut {
		t.Errorf("stdout %q, want only the app's line %q", got, wantOut)
	}
	ex := g.logs("exec")
	if len(ex) != 1 || ex[0]["path"] != bins.app {
		t.Errorf("exec log lines %v, want one naming %s", ex, bins.app)
	}
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, " ") + "]"
}

func TestCommandWaitsForReady(t *testing.T) {
	t.Parallel()
	e, url := emulator(t, "closed")
	g := start(t, []string{"--probe", url, "--log-level", "debug", "--", bins.app}, "APP_FETCH="+url)
	for _, step := range []struct {
		seen string
		next sidecar.State
	}{{"connection refused", "503"}, {"answered 503", "200"}} {
		if !g.stderr.waitFor(step.seen, 30*time.Second) {
			t.Fatalf("meshgate never saw %q\n%s", step.seen, g.stderr)
		}
		if err := e.Set(step.next); err != nil {
			t.Fatal(err)
		}
	}
	if code := g.wait(); code != 0 {
		t.Fatalf("exit %d\n%s", code, g.stderr)
	}
	r := g.appReport()
	readyAt := e.ReadyAt()
	if r == nil || readyAt.IsZero() {
		t.Fatalf("report %v, ready at %v: want both", r, readyAt)
	}
	if started := time.Unix(0, r.StartNano); started.Before(readyAt) {
		t.Errorf("the app started at %v, before the proxy was ready at %v", started, readyAt)
	}
	if r.Fetch != "200 OK" {
		t.Errorf("the app's own request to the proxy got %q, want 200 OK", r.Fetch)
	}
	ready := g.logs("proxy ready")
	if len(ready) != 1 || ready[0]["attempts"].(float64) < 2 {
		t.Errorf("proxy ready lines %v, want one after several attempts", ready)
	}
	if len(g.logs("waiting for proxy")) != 1 {
		t.Errorf("want one start line\n%s", g.stderr)
	}
}

func TestAlreadyReadyStartsOnFirstAttempt(t *testing.T) {
	t.Parallel()
	e, url := emulator(t, "200")
	g := start(t, []string{"--probe", url, "--", bins.app})
	if code := g.wait(); code != 0 {
		t.Fatalf("exit %d\n%s", code, g.stderr)
	}
	ready := g.logs("proxy ready")
	if len(ready) != 1 || ready[0]["attempts"] != float64(1) {
		t.Errorf("proxy ready lines %v, want attempts 1", ready)
	}
	if e.Requests() != 1 {
		t.Errorf("the proxy answered %d requests, want 1", e.Requests())
	}
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	badInterp := filepath.Join(dir, "script")
	if err := os.WriteFile(badInterp, []byte("#!/no/such/interpreter\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, ready := emulator(t, "200")
	_, closed := emulator(t, "closed")
	tests := []struct {
		name string
		args []string
		env  []string
		want int
		app  bool // whether the app must have run
	}{
		{"command exits 0", []string{"--probe", ready, "--", bins.app}, nil, 0, true},
		{"command exits 3", []string{"--probe", ready, "--", bins.app}, []string{"APP_EXIT=3"}, 3, true},
		{"command exits 255", []string{"--probe", ready, "--", bins.app}, []string{"APP_EXIT=255"}, 255, true},
		{"usage", []string{"--probe", "nope", "--", bins.app}, nil, 2, false},
		{"bad env", []string{"--", bins.app}, []string{"MESHGATE_TIMEOUT=soon"}, 2, false},
		{"not ready in time", []string{"--probe", closed, "--timeout", "200ms", "--", bins.app}, nil, 69, false},
		{"directory", []string{"--probe", ready, "--", dir}, nil, 126, false},
		{"not executable", []string{"--probe", ready, "--", plain}, nil, 126, false},
		{"bad interpreter", []string{"--probe", ready, "--", badInterp}, nil, 127, false},
		{"not found", []string{"--probe", ready, "--", "no-such-app"}, nil, 127, false},
		{"check not ready", []string{"check", "--probe", closed}, nil, 1, false},
		{"check ready", []string{"check", "--probe", ready}, nil, 0, false},
		{"wait ready", []string{"wait", "--probe", ready}, nil, 0, false},
		{"wait not ready", []string{"wait", "--probe", closed, "--timeout", "100ms"}, nil, 69, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := start(t, tc.args, tc.env...)
			if got := g.wait(); got != tc.want {
				t.Errorf("exit %d, want %d\n%s", got, tc.want, g.stderr)
			}
			if ran := g.appReport() != nil; ran != tc.app {
				t.Errorf("app ran: %v, want %v", ran, tc.app)
			}
			if tc.want != 0 && !tc.app {
				lines := g.stderr.lines()
				if len(lines) == 0 || !strings.Contains(lines[len(lines)-1], strconv.Itoa(tc.want)) && tc.want != 2 {
					t.Errorf("last stderr line does not report the exit code %d:\n%s", tc.want, g.stderr)
				}
			}
		})
	}
}

func TestSignalWhileWaiting(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			_, url := emulator(t, "503")
			g := start(t, []string{"--probe", url, "--timeout", "0", "--", bins.app})
			g.waitLog("waiting for proxy")
			if err := g.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if got, want := g.wait(), 128+int(sig); got != want {
				t.Errorf("exit %d, want %d\n%s", got, want, g.stderr)
			}
			if g.appReport() != nil {
				t.Error("the app started after the signal")
			}
		})
	}
}

func TestSignalCutsHangingAttempt(t *testing.T) {
	t.Parallel()
	_, url := emulator(t, "hang")
	g := start(t, []string{"--probe", url, "--attempt-timeout", "1h", "--timeout", "0", "--", bins.app})
	g.waitLog("waiting for proxy")
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	if got := g.wait(); got != 143 {
		t.Errorf("exit %d, want 143\n%s", got, g.stderr)
	}
}

func TestOnTimeoutStart(t *testing.T) {
	t.Parallel()
	_, closed := emulator(t, "closed")
	// The deadline that ends the wait may cut a dial: the warning must
	// still carry the last real outcome, not the cut dial's.
	g := start(t, []string{"--probe", closed, "--timeout", "300ms", "--on-timeout", "start", "--", bins.app}, "APP_EXIT=7")
	if got := g.wait(); got != 7 {
		t.Fatalf("exit %d, want the app's 7\n%s", got, g.stderr)
	}
	if g.appReport() == nil {
		t.Fatal("the app did not run")
	}
	warn := g.logs("proxy not ready; going on as --on-timeout=start asks")
	if len(warn) != 1 || warn[0]["level"] != "warn" || !strings.Contains(warn[0]["error"].(string), "connection refused") {
		t.Errorf("warning lines %v, want one with the last error", warn)
	}
}

func TestDisabledSkipsTheWait(t *testing.T) {
	t.Parallel()
	e, closed := emulator(t, "closed")
	g := start(t, []string{"--probe", closed, "--timeout", "0", "--", bins.app}, "MESHGATE_DISABLED=true")
	if got := g.wait(); got != 0 || g.appReport() == nil {
		t.Fatalf("exit %d, app ran %v; want 0 and the app run\n%s", got, g.appReport() != nil, g.stderr)
	}
	if n := len(g.logs("wait disabled; not waiting for the proxy")); n != 1 {
		t.Errorf("%d 'wait disabled' lines, want 1", n)
	}
	if len(g.logs("waiting for proxy")) != 0 || e.Requests() != 0 {
		t.Error("meshgate probed the proxy although disabled")
	}
}

func TestHangingEndpointCutByAttemptTimeout(t *testing.T) {
	t.Parallel()
	e, url := emulator(t, "hang")
	g := start(t, []string{"--probe", url, "--attempt-timeout", "100ms", "--log-level", "debug", "--", bins.app})
	if !g.stderr.waitFor("no answer within the attempt timeout (100ms)", 30*time.Second) {
		t.Fatalf("no attempt was cut by the attempt timeout:\n%s", g.stderr)
	}
	if err := e.Set("200"); err != nil {
		t.Fatal(err)
	}
	if got := g.wait(); got != 0 {
		t.Fatalf("exit %d, want 0 once the endpoint answers\n%s", got, g.stderr)
	}
}

func TestSignalStateNotInherited(t *testing.T) {
	t.Parallel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	_, ready, quit := proxy(t, "200", "200", false)
	for name, args := range map[string][]string{
		"exec":      {"--probe", ready, "--", bins.app},
		"supervise": {"--probe", ready, "--quit-url", quit, "--", bins.app},
	} {
		t.Run(name, func(t *testing.T) {
			// The test binary, in launch mode, ignores and blocks signals,
			// then execs meshgate; the app must start with none ignored
			// or blocked.
			report := filepath.Join(t.TempDir(), "report.json")
			cmd := exec.Command(self, append([]string{bins.meshgate}, args...)...)
			cmd.Env = []string{"MESHGATE_TEST_LAUNCH=1", "APP_REPORT=" + report, "GORACE=atexit_sleep_ms=0"}
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			r := (&gate{t: t, report: report}).appReport()
			if r == nil {
				t.Fatal("the app did not run")
			}
			if r.SigIgn != "0000000000000000" || r.SigBlk != "0000000000000000" {
				t.Errorf("app SigIgn %s, SigBlk %s; want none ignored or blocked", r.SigIgn, r.SigBlk)
			}
		})
	}
}

// root skips a test that needs root, except in CI, where it must run.
func root(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root, and CI runs as root")
	}
	t.Skip("needs root (for namespaces): run `sudo make test`, as CI does")
}

// childOf finds the one child of pid, as the kernel lists it.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(pid) + "/children")
		if f := strings.Fields(string(b)); len(f) == 1 {
			n, _ := strconv.Atoi(f[0])
			return n
		}
		time.Sleep(time.Millisecond) // polling /proc: there is no event for a new child
	}
	t.Fatalf("process %d has no child", pid)
	return 0
}

func TestAsPID1OfANamespace(t *testing.T) {
	t.Parallel()
	root(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatal("unshare (util-linux) is needed")
	}
	t.Run("SIGTERM while waiting", func(t *testing.T) {
		t.Parallel()
		_, url := emulator(t, "503")
		g := &gate{t: t, report: filepath.Join(t.TempDir(), "r.json"), stderr: newLogTail()}
		g.cmd = exec.Command(unshare, "--pid", "--fork", "--kill-child", bins.meshgate, "--probe", url, "--timeout", "0", "--", bins.app)
		g.cmd.Env = []string{"APP_REPORT=" + g.report}
		g.cmd.Stderr = g.stderr
		if err := g.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		g.waitLog("waiting for proxy")
		// PID 1 gets no default signal actions: only a handler makes
		// SIGTERM from outside the namespace do anything.
		if err := syscall.Kill(childOf(t, g.cmd.Process.Pid), syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if got := g.wait(); got != 143 {
			t.Errorf("exit %d, want 143\n%s", got, g.stderr)
		}
	})
	t.Run("exec keeps PID 1", func(t *testing.T) {
		t.Parallel()
		_, url := emulator(t, "200")
		report := filepath.Join(t.TempDir(), "r.json")
		cmd := exec.Command(unshare, "--pid", "--fork", "--kill-child", bins.meshgate, "--probe", url, "--", bins.app)
		cmd.Env = []string{"APP_REPORT=" + report}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		r := (&gate{t: t, report: report}).appReport()
		if r == nil || r.PID != 1 {
			t.Errorf("app report %+v, want PID 1", r)
		}
	})
}

func TestLocalhostWithoutHostsFile(t *testing.T) {
	t.Parallel()
	root(t)
	_, url := emulator(t, "200")
	local := strings.Replace(url, "127.0.0.1", "localhost", 1)
	// A private mount namespace where /etc/hosts and /etc/resolv.conf are
	// empty: any lookup of "localhost" would fail.
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	script := `mount --make-rprivate / && mount --bind "$1" /etc/hosts && mount --bind "$1" /etc/resolv.conf && shift && exec "$@"`
	for _, spec := range []string{local, "tcp://localhost:" + url[len("http://127.0.0.1:"):strings.LastIndex(url, "/healthz")]} {
		cmd := exec.Command("unshare", "--mount", "sh", "-c", script, "sh", empty, bins.meshgate, "check", "--probe", spec)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("check %s without /etc/hosts: %v\n%s", spec, err, out)
		}
	}
	// The same lookup through the resolver fails there, so the test can
	// fail: a probe of a name that must be looked up.
	cmd := exec.Command("unshare", "--mount", "sh", "-c", script, "sh", empty, bins.meshgate, "check",
		"--probe", strings.Replace(local, "localhost", "localhost.invalid-name", 1), "--attempt-timeout", "2s")
	if err := cmd.Run(); exitCodeOf(err) != 1 {
		t.Errorf("a looked-up name passed without /etc/hosts (%v): the test proves nothing", err)
	}
	_ = slices.Contains[[]string]
}

func exitCodeOf(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// maxBinarySize is the budget for the static, stripped binary: it is
// copied into every pod.
const maxBinarySize = 7 << 20

func TestBinarySizeBudget(t *testing.T) {
	if os.Getenv("MESHGATE_BIN") == "" {
		t.Skip("measures the binary of make build (MESHGATE_BIN); this one was built for the test, unstripped")
	}
	fi, err := os.Stat(bins.meshgate)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > maxBinarySize {
		t.Errorf("%s is %.2f MiB, over the %d MiB budget", bins.meshgate, float64(fi.Size())/(1<<20), maxBinarySize>>20)
	}
}

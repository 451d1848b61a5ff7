package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/meshgate/meshgate/test/sidecar"
	"github.com/meshgate/meshgate/test/testkit"
)

func TestExecKeepsPIDArgvAndEnv(t *testing.T) {
	t.Parallel()
	_, url, _ := ready(t)
	argv := []string{bins.app, "--port", "8080", "", "two words", "--timeout", "ünïcode", "--"}
	g := start(t, append([]string{"--probe", url, "--"}, argv...), "CUSTOM=a=b", "EMPTY=", "MESHGATE_LOG_LEVEL=info")
	if code := g.Wait(); code != 0 {
		t.Fatalf("exit %d\n%s", code, &g.Stderr)
	}
	r := g.appReport()
	if r == nil {
		t.Fatal("the app did not run")
	}
	if r.PID != g.Cmd.Process.Pid {
		t.Errorf("app PID %d, meshgate PID %d: want the same (exec, not fork)", r.PID, g.Cmd.Process.Pid)
	}
	if !slices.Equal(r.Argv, argv) || !slices.Equal(r.Env, g.Cmd.Env) {
		t.Errorf("app argv %q, env %q; want %q, %q", r.Argv, r.Env, argv, g.Cmd.Env)
	}
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = strconv.Quote(a)
	}
	wantOut := "app: started as PID " + strconv.Itoa(r.PID) + " with argv [" + strings.Join(quoted, " ") + "]\n"
	if got := g.Stdout.String(); got != wantOut {
		t.Errorf("stdout %q, want only the app's line %q", got, wantOut)
	}
	if ex := g.Logs("exec"); len(ex) != 1 || ex[0]["path"] != bins.app {
		t.Errorf("exec log lines %v, want one naming %s", ex, bins.app)
	}
}

func TestCommandWaitsForReady(t *testing.T) {
	t.Parallel()
	e := &sidecar.Emulator{}
	url, _ := proxy(t, e, "closed")
	g := start(t, []string{"--probe", url, "--log-level", "debug", "--", bins.app}, "APP_FETCH="+url)
	for _, step := range []struct {
		seen string
		next sidecar.State
	}{{"connection refused", "503"}, {"answered 503", "200"}} {
		if !g.Stderr.WaitFor(step.seen, testkit.Timeout, nil) {
			t.Fatalf("meshgate never saw %q\n%s", step.seen, &g.Stderr)
		}
		if err := e.Set(step.next); err != nil {
			t.Fatal(err)
		}
	}
	if code := g.Wait(); code != 0 {
		t.Fatalf("exit %d\n%s", code, &g.Stderr)
	}
	r := g.appReport()
	if r == nil || r.StartNano < e.ReadyAt().UnixNano() || r.Fetch != "200 OK" {
		t.Errorf("the app saw %+v; want it started after the proxy was ready at %v, and reaching it", r, e.ReadyAt())
	}
	if ready := g.Logs("proxy ready"); len(ready) != 1 || ready[0]["attempts"].(float64) < 2 || len(g.Logs("waiting for proxy")) != 1 {
		t.Errorf("want one start line, and one proxy ready line after several attempts\n%s", &g.Stderr)
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
	_, ok, quit := ready(t)
	closed, gone := proxy(t, &sidecar.Emulator{}, "closed")
	tests := []struct {
		name string
		args []string
		env  []string
		want int
		app  bool // whether the app must have run
	}{
		{"command exits 0", []string{"--probe", ok, "--", bins.app}, nil, 0, true},
		{"command exits 3", []string{"--probe", ok, "--", bins.app}, []string{"APP_EXIT=3"}, 3, true},
		{"command exits 255", []string{"--probe", ok, "--", bins.app}, []string{"APP_EXIT=255"}, 255, true},
		{"wait disabled", []string{"--probe", closed, "--", bins.app}, []string{"MESHGATE_DISABLED=true"}, 0, true},
		{"usage", []string{"--probe", "nope", "--", bins.app}, nil, 2, false},
		{"bad env", []string{"--", bins.app}, []string{"MESHGATE_TIMEOUT=soon"}, 2, false},
		{"not ready in time", []string{"--probe", closed, "--timeout", "200ms", "--", bins.app}, nil, 69, false},
		{"directory", []string{"--probe", ok, "--", dir}, nil, 126, false},
		{"not executable", []string{"--probe", ok, "--", plain}, nil, 126, false},
		{"bad interpreter", []string{"--probe", ok, "--", badInterp}, nil, 127, false},
		{"not found", []string{"--probe", ok, "--", "no-such-app"}, nil, 127, false},
		{"check not ready", []string{"check", "--probe", closed}, nil, 1, false},
		{"wait not ready", []string{"wait", "--probe", closed, "--timeout", "100ms"}, nil, 69, false},
		{"quit", []string{"quit", "--quit-url", quit}, nil, 0, false},
		{"quit of a closed port", []string{"quit", "--quit-url", gone, "--quit-timeout", "1s"}, nil, 1, false},
		{"quit of a remote host", []string{"quit", "--quit-url", "http://10.0.0.1:15020/quitquitquit"}, nil, 2, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := start(t, tc.args, tc.env...)
			if got := g.Wait(); got != tc.want {
				t.Errorf("exit %d, want %d\n%s", got, tc.want, &g.Stderr)
			}
			if ran := g.appReport() != nil; ran != tc.app {
				t.Errorf("app ran: %v, want %v", ran, tc.app)
			}
			// The last line says why, and with what code, but for usage
			// errors, which are one plain line.
			lines := strings.Split(strings.TrimSpace(g.Stderr.String()), "\n")
			if last := lines[len(lines)-1]; tc.want != 0 && !tc.app && tc.want != 2 && !strings.Contains(last, strconv.Itoa(tc.want)) {
				t.Errorf("last stderr line does not report the exit code %d:\n%s", tc.want, &g.Stderr)
			}
		})
	}
}

func TestSignalWhileWaiting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sig    syscall.Signal
		phases string
		args   []string
	}{
		{syscall.SIGTERM, "503", nil},
		{syscall.SIGINT, "503", nil},
		{syscall.SIGHUP, "503", nil},
		{syscall.SIGQUIT, "503", nil},
		// The signal cuts an attempt that would hang for an hour.
		{syscall.SIGTERM, "hang", []string{"--attempt-timeout", "1h"}},
	} {
		t.Run(tc.sig.String()+" "+tc.phases, func(t *testing.T) {
			t.Parallel()
			url, _ := proxy(t, &sidecar.Emulator{}, tc.phases)
			g := start(t, append([]string{"--probe", url, "--timeout", "0", "--", bins.app}, tc.args...))
			g.WaitLog("waiting for proxy")
			g.Signal(tc.sig)
			if got, want := g.Wait(), 128+int(tc.sig); got != want || g.appReport() != nil {
				t.Errorf("exit %d, app ran %v; want %d and no app\n%s", got, g.appReport() != nil, want, &g.Stderr)
			}
		})
	}
}

// As process 1 of a PID namespace a process gets no default signal
// actions: only a handler makes a SIGTERM from outside do anything.
func TestSignalAsPID1WhileWaiting(t *testing.T) {
	t.Parallel()
	root(t)
	url, _ := proxy(t, &sidecar.Emulator{}, "503")
	g := startCmd(t, exec.Command("unshare", "--pid", "--fork", "--kill-child", bins.meshgate, "--probe", url, "--timeout", "0", "--", bins.app))
	g.WaitLog("waiting for proxy")
	if err := syscall.Kill(childOf(t, g.Cmd.Process.Pid), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := g.Wait(); got != 143 {
		t.Errorf("exit %d, want 143\n%s", got, &g.Stderr)
	}
}

func TestSignalStateNotInherited(t *testing.T) {
	t.Parallel()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	_, ok, quit := ready(t)
	for name, args := range map[string][]string{
		"exec":      {"--probe", ok, "--", bins.app},
		"supervise": {"--probe", ok, "--quit-url", quit, "--", bins.app},
	} {
		t.Run(name, func(t *testing.T) {
			// The test binary, in launch mode, ignores and blocks signals,
			// then execs meshgate; the app must start with none ignored
			// or blocked.
			g := startCmd(t, exec.Command(self, append([]string{bins.meshgate}, args...)...), "MESHGATE_TEST_LAUNCH=1")
			if code := g.Wait(); code != 0 {
				t.Fatalf("exit %d\n%s", code, &g.Stderr)
			}
			if r := g.appReport(); r == nil || r.SigIgn != "0000000000000000" || r.SigBlk != "0000000000000000" {
				t.Errorf("the app saw %+v; want no signal ignored or blocked", r)
			}
		})
	}
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

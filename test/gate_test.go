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
		name   string
		sig    syscall.Signal
		phases string
		args   []string
		pid1   bool // meshgate runs as process 1 of a PID namespace
	}{
		{"TERM", syscall.SIGTERM, "503", nil, false},
		{"INT", syscall.SIGINT, "503", nil, false},
		{"HUP", syscall.SIGHUP, "503", nil, false},
		{"QUIT", syscall.SIGQUIT, "503", nil, false},
		// The signal cuts an attempt that would hang for an hour.
		{"TERM cuts an attempt", syscall.SIGTERM, "hang", []string{"--attempt-timeout", "1h"}, false},
		// Process 1 of a PID namespace gets no default signal actions:
		// only a handler makes a SIGTERM from outside do anything.
		{"TERM to PID 1", syscall.SIGTERM, "503", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url, _ := proxy(t, &sidecar.Emulator{}, tc.phases)
			args := append(append([]string{bins.meshgate, "--probe", url, "--timeout", "0"}, tc.args...), "--", bins.app)
			if tc.pid1 {
				testkit.Need(t, "unshare")
				args = append([]string{"unshare", "--pid", "--fork", "--kill-child"}, args...)
			}
			g := startCmd(t, exec.Command(args[0], args[1:]...))
			g.WaitLog("waiting for proxy")
			pid := g.Cmd.Process.Pid
			if tc.pid1 {
				pid = childOf(t, pid)
			}
			if err := syscall.Kill(pid, tc.sig); err != nil {
				t.Fatal(err)
			}
			if got, want := g.Wait(), 128+int(tc.sig); got != want || g.appReport() != nil {
				t.Errorf("exit %d, app ran %v; want %d and no app\n%s", got, g.appReport() != nil, want, &g.Stderr)
			}
		})
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

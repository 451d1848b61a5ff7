package gate

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// recorder stands in for execve; with vanish, the file is gone by then.
type recorder struct {
	path      string
	argv, env []string
	calls     int
	err       error
	vanish    bool
	defaulted bool // what execve tells last
}

func (r *recorder) execve(path string, argv, env []string, last func(defaulted bool) error) error {
	if err := last(r.defaulted); err != nil {
		return err
	}
	r.calls++
	r.path, r.argv, r.env = path, argv, env
	if r.vanish {
		_ = os.Remove(path)
	}
	return r.err
}

func writeFile(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), mode); err != nil {
		t.Fatal(err)
	}
}

func TestExecPassesArgvAndEnvVerbatim(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "server")
	writeFile(t, bin, 0o755)
	rec := &recorder{}
	log, logs := logged(zap.InfoLevel)
	g := &Gate{Execve: rec.execve, Log: log}
	argv := []string{"server", "--port", "8080", "", "a b", "--", "-h"}
	env := []string{"PATH=/nowhere:" + dir, "A=1=2", "MESHGATE_TIMEOUT=1s", "EMPTY="}
	if err := g.Exec(argv, env); err != nil {
		t.Fatal(err)
	}
	if rec.path != bin || !reflect.DeepEqual(rec.argv, argv) || !reflect.DeepEqual(rec.env, env) {
		t.Errorf("execve(%q, %q, %q), want (%q, %q, %q)", rec.path, rec.argv, rec.env, bin, argv, env)
	}
	lines := logs.FilterMessage("exec").All()
	if len(lines) != 1 || lines[0].ContextMap()["path"] != bin {
		t.Errorf("exec log lines = %v, want one with the path", lines)
	}
}

func TestExecErrors(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "plain"), 0o644)
	writeFile(t, filepath.Join(dir, "ok"), 0o755)
	writeFile(t, filepath.Join(dir, "gone"), 0o755)
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, argv0 string
		execve      error
		code        int
		msg         string
	}{
		{"missing with slash", filepath.Join(dir, "nope"), nil, 127, "not found"},
		{"missing in PATH", "nope", nil, 127, `command "nope" not found in PATH`},
		{"directory", filepath.Join(dir, "adir"), nil, 126, "is a directory"},
		{"directory in PATH", "adir", nil, 126, "is a directory"},
		{"not executable", filepath.Join(dir, "plain"), nil, 126, "not executable"},
		{"not executable in PATH", "plain", nil, 126, "not executable"},
		{"under a file", filepath.Join(dir, "ok", "x"), nil, 127, "not found"},
		{"bad interpreter", filepath.Join(dir, "ok"), syscall.ENOENT, 127, "interpreter"},
		{"exec format", filepath.Join(dir, "ok"), syscall.ENOEXEC, 126, "exec format error"},
		{"permission", filepath.Join(dir, "ok"), syscall.EACCES, 126, "permission denied"},
		{"vanished", filepath.Join(dir, "gone"), syscall.ENOENT, 127, "vanished after it was found"},
		{"empty", "", nil, 2, "empty command"},
	}
	for _, tc := range tests {
		rec := &recorder{err: tc.execve, vanish: tc.name == "vanished"}
		err := (&Gate{Execve: rec.execve}).Exec([]string{tc.argv0}, []string{"PATH=" + dir})
		if got := ExitCode(err); got != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: Exec = %v (code %d), want code %d saying %q", tc.name, err, got, tc.code, tc.msg)
		}
		if tc.execve == nil && rec.calls != 0 {
			t.Errorf("%s: execve was called for a command that cannot run", tc.name)
		}
	}
}

func TestLookPath(t *testing.T) {
	first, second := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(first, "app"), 0o644)
	writeFile(t, filepath.Join(second, "app"), 0o755)
	got, err := LookPath("app", "relative:"+first+"::"+second)
	if want := filepath.Join(second, "app"); err != nil || got != want {
		t.Errorf("LookPath = %q, %v; want %q, the first that runs", got, err, want)
	}
	t.Chdir(second)
	if _, err := LookPath("app", ".::bin"); ExitCode(err) != ExitNotFound {
		t.Errorf("LookPath with only relative dirs = %v, want not found", err)
	}
	// The last PATH counts, as getenv sees it.
	if a, b := pathOf([]string{"HOME=/"}), pathOf([]string{"PATH=/a", "PATH=/b"}); a != DefaultPath || b != "/b" {
		t.Errorf("pathOf = %q without PATH, %q with two; want %q and /b", a, b, DefaultPath)
	}
}

// The log line is written before the last look at the signals, and the
// signals are handed back before it: a stop signal that comes while the
// line is written stops the command, and nothing blocks after the look.
// The hand-back is Release (signal.Stop), or only Settle when execve has
// set the kernel's default action already.
func TestExecLooksAtSignalsAfterItsLogLine(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "ok"), 0o755)
	for _, defaulted := range []bool{false, true} {
		sigs := make(chan os.Signal, 2)
		var order []string
		log, _ := logged(zap.InfoLevel)
		log = log.WithOptions(zap.Hooks(func(zapcore.Entry) error {
			order = append(order, "log")
			if len(order) == 1 {
				sigs <- syscall.SIGUSR1 // dropped, not a reason to stay
				sigs <- syscall.SIGTERM // comes while the line is written
			}
			return nil
		}))
		rec := &recorder{defaulted: defaulted}
		g := &Gate{Execve: rec.execve, Signals: sigs, Log: log,
			Release: func() { order = append(order, "release") }, Settle: func() { order = append(order, "settle") }}
		err := g.Exec([]string{filepath.Join(dir, "ok")}, nil)
		if ExitCode(err) != 143 || rec.calls != 0 {
			t.Errorf("defaulted %v: Exec with SIGTERM during its log line = %v, execve calls %d; want 143 and no exec", defaulted, err, rec.calls)
		}
		want := map[bool]string{false: "release", true: "settle"}[defaulted]
		if !reflect.DeepEqual(order, []string{"log", want, "log"}) {
			t.Errorf("defaulted %v: order %v, want the exec line, the %s, and the line that drops SIGUSR1", defaulted, order, want)
		}
	}
}

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
	"go.uber.org/zap/zaptest/observer"
)

// recorder stands in for execve.
type recorder struct {
	path      string
	argv, env []string
	calls     int
	err       error
}

func (r *recorder) execve(path string, argv, env []string, last func() error) error {
	if err := last(); err != nil {
		return err
	}
	r.calls++
	r.path, r.argv, r.env = path, argv, env
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
	core, logs := observer.New(zap.InfoLevel)
	g := &Gate{Execve: rec.execve, Log: zap.New(core)}
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
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		argv0  string
		path   string
		execve error
		code   int
		msg    string
	}{
		{"missing with slash", filepath.Join(dir, "nope"), dir, nil, 127, "not found"},
		{"missing in PATH", "nope", dir, nil, 127, `command "nope" not found in PATH`},
		{"directory", filepath.Join(dir, "adir"), dir, nil, 126, "is a directory"},
		{"directory in PATH", "adir", dir, nil, 126, "is a directory"},
		{"not executable", filepath.Join(dir, "plain"), dir, nil, 126, "not executable"},
		{"not executable in PATH", "plain", dir, nil, 126, "not executable"},
		{"under a file", filepath.Join(dir, "ok", "x"), dir, nil, 127, "not found"},
		{"bad interpreter", filepath.Join(dir, "ok"), dir, syscall.ENOENT, 127, "interpreter"},
		{"exec format", filepath.Join(dir, "ok"), dir, syscall.ENOEXEC, 126, "exec format error"},
		{"permission", filepath.Join(dir, "ok"), dir, syscall.EACCES, 126, "permission denied"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{err: tc.execve}
			err := (&Gate{Execve: rec.execve}).Exec([]string{tc.argv0}, []string{"PATH=" + tc.path})
			if got := ExitCode(err); got != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Exec = %v (code %d), want code %d saying %q", err, got, tc.code, tc.msg)
			}
			if tc.execve == nil && rec.calls != 0 {
				t.Errorf("execve was called for a command that cannot run")
			}
		})
	}
}

func TestExecFileVanishes(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "app")
	writeFile(t, bin, 0o755)
	// Found, then gone by the time of the execve.
	vanish := func(path string, argv, env []string, _ func() error) error {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		return syscall.ENOENT
	}
	err := (&Gate{Execve: vanish}).Exec([]string{bin}, nil)
	if ExitCode(err) != ExitNotFound || !strings.Contains(err.Error(), "vanished") {
		t.Errorf("Exec = %v, want 127 saying the file vanished", err)
	}
}

func TestLookPathSkipsToRunnable(t *testing.T) {
	first, second := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(first, "app"), 0o644)
	writeFile(t, filepath.Join(second, "app"), 0o755)
	got, err := LookPath("app", "relative:"+first+"::"+second)
	if want := filepath.Join(second, "app"); err != nil || got != want {
		t.Errorf("LookPath = %q, %v; want %q", got, err, want)
	}
}

func TestLookPathIgnoresRelativeDirs(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "app"), 0o755)
	t.Chdir(dir)
	if _, err := LookPath("app", ".::bin"); ExitCode(err) != ExitNotFound {
		t.Errorf("LookPath with only relative dirs = %v, want not found", err)
	}
}

func TestExecDefaultPath(t *testing.T) {
	if got := pathOf([]string{"HOME=/"}); got != DefaultPath {
		t.Errorf("pathOf without PATH = %q, want %q", got, DefaultPath)
	}
	if got := pathOf([]string{"PATH=/a", "PATH=/b"}); got != "/b" {
		t.Errorf("pathOf with two PATHs = %q, want the last, as getenv sees it", got)
	}
}

func TestExecTakesQueuedSignal(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "ok"), 0o755)
	sigs := make(chan os.Signal, 1)
	sigs <- syscall.SIGTERM
	rec := &recorder{}
	err := (&Gate{Execve: rec.execve, Signals: sigs}).Exec([]string{filepath.Join(dir, "ok")}, nil)
	if ExitCode(err) != 143 || rec.calls != 0 {
		t.Errorf("Exec with SIGTERM queued = %v, execve calls %d; want 143 and no exec", err, rec.calls)
	}
}

// The log line is written before the last look at the signals, and the
// signals are released (signal.Stop) before it: a stop signal that comes
// while the line is written stops the command, and nothing blocks after
// the look.
func TestExecLooksAtSignalsAfterItsLogLine(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "ok"), 0o755)
	sigs := make(chan os.Signal, 2)
	var order []string
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.AddSync(writerFunc(func(p []byte) (int, error) {
			order = append(order, "log")
			if len(order) == 1 {
				sigs <- syscall.SIGUSR1 // dropped, not a reason to stay
				sigs <- syscall.SIGTERM // comes while the line is written
			}
			return len(p), nil
		})), zap.InfoLevel))
	rec := &recorder{}
	g := &Gate{Execve: rec.execve, Signals: sigs, Log: log, Release: func() { order = append(order, "release") }}
	err := g.Exec([]string{filepath.Join(dir, "ok")}, nil)
	if ExitCode(err) != 143 || rec.calls != 0 {
		t.Errorf("Exec with SIGTERM during its log line = %v, execve calls %d; want 143 and no exec", err, rec.calls)
	}
	if !reflect.DeepEqual(order, []string{"log", "release", "log"}) {
		t.Errorf("order %v, want the exec line, the release, and the line that drops SIGUSR1", order)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestExecEmptyCommand(t *testing.T) {
	for _, argv := range [][]string{nil, {""}} {
		if err := (&Gate{}).Exec(argv, nil); ExitCode(err) != ExitUsage {
			t.Errorf("Exec(%q) = %v, want a usage error", argv, err)
		}
	}
}

// Package testkit is what meshgate's tests share: the binaries under test,
// built once per test binary; processes started with their output watched;
// their exit codes; meshgate's JSON log lines; what the test app reports.
//
// A test binary that builds anything runs its tests through Main, which
// removes the builds when they are done.
package testkit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshgate/meshgate/test/app/report"
)

// Timeout bounds every wait of a test on a process: generous, as CI runs
// on a busy machine. BuildTimeout bounds go build and buildah, slow on a
// cold cache.
const (
	Timeout      = 30 * time.Second
	BuildTimeout = 5 * time.Minute
)

var builds struct {
	mu   sync.Mutex
	dir  string
	done map[string]*built
}

type built struct {
	once sync.Once
	path string
	err  error
}

// Main runs the tests of m, removes what Once built for them, and exits.
// A setup error given, from builds made before, fails the run instead.
func Main(m *testing.M, setup ...error) {
	code := 1
	if err := errors.Join(setup...); err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	RemoveBuilds()
	os.Exit(code)
}

// RemoveBuilds removes what Once made, for a TestMain that does not end
// in Main.
func RemoveBuilds() {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.dir != "" {
		_ = os.RemoveAll(builds.dir)
		builds.dir = ""
	}
}

// Once runs make once per key for the whole test binary, in a new
// directory of its own, and gives every caller, parallel ones too, the
// path it returned or its error.
func Once(key string, build func(dir string) (string, error)) (string, error) {
	builds.mu.Lock()
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "meshgate-test-")
		if err != nil {
			builds.mu.Unlock()
			return "", err
		}
		builds.dir, builds.done = dir, map[string]*built{}
	}
	b, ok := builds.done[key]
	if !ok {
		b = &built{}
		builds.done[key] = b
	}
	dir := filepath.Join(builds.dir, strconv.Itoa(len(builds.done)))
	builds.mu.Unlock()
	b.once.Do(func() {
		if b.err = os.Mkdir(dir, 0o755); b.err == nil {
			b.path, b.err = build(dir)
		}
	})
	return b.path, b.err
}

// Build returns the path of the main package pkg (relative to the module
// root, "./cmd/meshgate", or an import path), built once per test binary.
// The build is static: it runs in scratch root filesystems, without libc.
func Build(pkg string, flags ...string) (string, error) {
	key := strings.Join(append([]string{"go build", pkg}, flags...), "\x00")
	return Once(key, func(dir string) (string, error) {
		root, err := ModuleRoot()
		if err != nil {
			return "", err
		}
		out := filepath.Join(dir, filepath.Base(pkg))
		ctx, cancel := context.WithTimeout(context.Background(), BuildTimeout)
		defer cancel()
		args := append([]string{"build", "-trimpath", "-o", out}, flags...)
		cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
		}
		return out, nil
	})
}

// Binary is the binary that the variable env names (make test sets
// MESHGATE_BIN and MESHGATE_INJECT_BIN to the binaries of make build), or
// else pkg built by Build.
func Binary(env, pkg string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return filepath.Abs(p)
	}
	return Build(pkg)
}

// must turns a path or its error into the path, or the test's failure.
func must(t testing.TB) func(string, error) string {
	return func(path string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return path
	}
}

// Inject returns the injector under test: MESHGATE_INJECT_BIN, or a build.
func Inject(t testing.TB) string {
	t.Helper()
	return must(t)(Binary("MESHGATE_INJECT_BIN", "./cmd/meshgate-inject"))
}

// Tool returns a static build of a program of the module, such as
// "./test/app" or "./test/emulator".
func Tool(t testing.TB, pkg string) string {
	t.Helper()
	return must(t)(Build(pkg))
}

// Need skips t unless it runs as root with the given tools installed. With
// CI=true it fails t instead: CI runs as root with every tool, and a
// skipped end-to-end test there would hide a broken pipeline.
func Need(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("needs %s: run the tests as root with the tools .ci/run installs (sudo make test)", strings.Join(missing, ", "))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true, so this fails instead of skipping")
	}
	t.Skip(msg)
}

// ModuleRoot finds the directory of go.mod above the working directory,
// which for a test is its package directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// ExitCode is the exit code a shell would give for how a process ended, as
// exec's Wait or Run returned it: 0, the process's own code, or 128+N when
// signal N killed it; -1 if the process never ran.
func ExitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case !errors.As(err, &ee):
		return -1
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ee.ExitCode()
}

// LogLines decodes meshgate's JSON log lines in text, one object a line;
// blank lines are skipped, and any other line fails t.
func LogLines(t testing.TB, text string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for l := range strings.Lines(text) {
		if strings.TrimSpace(l) == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

// Logs returns the log lines of text with the message msg.
func Logs(t testing.TB, text, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range LogLines(t, text) {
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// ReadReport reads what the test app wrote to APP_REPORT=path, or nil if
// it never wrote it.
func ReadReport(t testing.TB, path string) *report.Report {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var r report.Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("report %s: %v", b, err)
	}
	return &r
}

// Output collects a stream and lets readers wait for what it will hold.
type Output struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed at the next write
}

func (o *Output) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(b)
	if o.changed != nil {
		close(o.changed)
		o.changed = nil
	}
	return len(b), nil
}

func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// Snapshot returns the output so far and a channel closed at the next write.
func (o *Output) Snapshot() (string, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.changed == nil {
		o.changed = make(chan struct{})
	}
	return o.buf.String(), o.changed
}

// WaitFor waits until one of outs contains s, and reports whether one did
// before timeout passed or done was closed.
func WaitFor(s string, timeout time.Duration, done <-chan struct{}, outs ...*Output) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		// Snapshots, each with the channel its next write closes: a write
		// after the look wakes the select below, and the loop looks again.
		cases := []reflect.SelectCase{recv(done), recv(timer.C)}
		for _, o := range outs {
			text, changed := o.Snapshot()
			if strings.Contains(text, s) {
				return true
			}
			cases = append(cases, recv(changed))
		}
		switch i, _, _ := reflect.Select(cases); i {
		case 0:
			return slices.ContainsFunc(outs, func(o *Output) bool { return strings.Contains(o.String(), s) })
		case 1:
			return false
		}
	}
}

func recv(c any) reflect.SelectCase {
	return reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c)}
}

// Proc is a process started by Start, its output watched.
type Proc struct {
	Cmd            *exec.Cmd
	Stdout, Stderr Output

	t    testing.TB
	done chan struct{} // closed once err is set
	err  error
}

// Start starts cmd with its standard output and error collected, unless
// the caller set them, and kills it when the test ends.
func Start(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{Cmd: cmd, t: t, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = &p.Stdout
	}
	if cmd.Stderr == nil {
		cmd.Stderr = &p.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-p.done })
	return p
}

// Wait waits for the process to end and returns its ExitCode.
func (p *Proc) Wait() int {
	p.t.Helper()
	select {
	case <-p.done:
		return ExitCode(p.err)
	case <-time.After(Timeout):
		p.t.Fatalf("%s still running after %v\n%s", p.Cmd.Path, Timeout, &p.Stderr)
		return 0
	}
}

func (p *Proc) Signal(sig os.Signal) {
	p.t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

func (p *Proc) Expect(s string) {
	p.t.Helper()
	if !WaitFor(s, Timeout, p.done, &p.Stdout) {
		p.t.Fatalf("no %q on stdout of %s\nstdout:\n%s\nstderr:\n%s", s, p.Cmd.Path, &p.Stdout, &p.Stderr)
	}
}

// WaitLog waits for meshgate to log a line with the message msg.
func (p *Proc) WaitLog(msg string) {
	p.t.Helper()
	if !WaitFor(`"msg":"`+msg+`"`, Timeout, p.done, &p.Stderr) {
		p.t.Fatalf("%s did not log %q\n%s", p.Cmd.Path, msg, &p.Stderr)
	}
}

func (p *Proc) Logs(msg string) []map[string]any {
	p.t.Helper()
	return Logs(p.t, p.Stderr.String(), msg)
}

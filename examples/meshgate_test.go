package examples_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The examples are checked against the real meshgate: the binary named by
// MESHGATE_BIN, or one built from ../cmd/meshgate. What the test knows of
// meshgate's modes, flags and variables it reads from the binary's help,
// and every meshgate command line of a manifest is run by the binary
// itself, so the examples cannot drift from the code.

// scratch is a directory for the built binary and the installs, made and
// removed by TestMain.
var scratch string

// loadBinary builds (or finds) meshgate and reads its help, once for all
// tests.
var loadBinary = sync.OnceValues(func() (*binary, error) { return newBinary(scratch) })

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "meshgate-examples-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	scratch = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// meshgate returns the binary the examples are checked against.
func meshgate(t *testing.T) *binary {
	t.Helper()
	b, err := loadBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// binary is a meshgate executable and what its help says.
type binary struct {
	path  string
	dir   string              // scratch space for installs
	modes map[string]bool     // subcommands that take flags ("" is the wrap)
	flags map[string]flagHelp // the flags of every mode, by name
	vars  map[string]string   // MESHGATE_* variable → flag name
	runs  sync.Map            // memo key → *memo: each distinct run happens once
}

// flagHelp is one flag as the help shows it.
type flagHelp struct {
	value bool   // takes a value; false for booleans
	def   string // the default, unquoted; "" if the help shows none
	env   string // the variable that stands for it
}

// needed are the flags whose meaning the structural checks rely on.
var needed = []string{"preset", "disabled", "attempt-timeout", "quit", "quit-url", "quit-on", "quit-timeout", "quit-allow-remote"}

// buildTimeout bounds "go build", which may have to compile everything.
const buildTimeout = 5 * time.Minute

func newBinary(dir string) (*binary, error) {
	b := &binary{path: os.Getenv("MESHGATE_BIN"), dir: dir, modes: map[string]bool{}, flags: map[string]flagHelp{}, vars: map[string]string{}}
	if b.path == "" {
		b.path = filepath.Join(dir, "meshgate")
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.path, "github.com/meshgate/meshgate/cmd/meshgate")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build ./cmd/meshgate: %v\n%s", err, out)
		}
	} else if abs, err := filepath.Abs(b.path); err == nil {
		b.path = abs
	}
	top, err := b.help("")
	if err != nil {
		return nil, err
	}
	b.modes[""] = true
	for _, m := range synopsis.FindAllStringSubmatch(top, -1) {
		b.modes[m[1]] = true
	}
	for mode := range b.modes {
		text := top
		if mode != "" {
			if text, err = b.help(mode); err != nil {
				return nil, err
			}
		}
		for _, m := range flagLine.FindAllStringSubmatch(text, -1) {
			f := flagHelp{value: m[2] != ""}
			if d := defaultValue.FindStringSubmatch(m[3]); d != nil {
				f.def = d[1]
				if s, err := strconv.Unquote(f.def); err == nil {
					f.def = s
				}
			}
			if v := variable.FindStringSubmatch(m[3]); v != nil {
				f.env = v[1]
				b.vars[f.env] = m[1]
			}
			b.flags[m[1]] = f
		}
	}
	for _, name := range needed {
		if f, ok := b.flags[name]; !ok || f.env == "" {
			return nil, fmt.Errorf("%s --help: got no --%s with its variable, which this test relies on (did the help's format change?)", b.path, name)
		}
	}
	return b, nil
}

var (
	// synopsis finds the subcommands that take flags in the usage lines.
	synopsis = regexp.MustCompile(`(?m)^\s*(?:Usage: )?meshgate ([a-z]+) \[flags\]`)
	// flagLine is one line of pflag's list of flags: the name, the type
	// (none for a boolean), then at least two spaces and the usage.
	flagLine     = regexp.MustCompile(`(?m)^ +(?:-[a-zA-Z], )?--([a-z][a-z0-9-]*)(?: ([a-zA-Z0-9]+))?  +(.*)$`)
	defaultValue = regexp.MustCompile(`\(default (.+)\)\s*$`)
	variable     = regexp.MustCompile(`\[\$([A-Z][A-Z0-9_]*)\]`)
)

// help returns the help of a mode.
func (b *binary) help(mode string) (string, error) {
	args := []string{"--help"}
	if mode != "" {
		args = []string{mode, "--help"}
	}
	r := b.exec(args, []string{"PATH=/usr/bin:/bin"})
	if r.err != nil || r.code != 0 {
		return "", fmt.Errorf("%s %s: exit %d, %v: %s", b.path, strings.Join(args, " "), r.code, r.err, r.line())
	}
	return r.stdout + r.stderr, nil
}

// result is how one run of the binary ended.
type result struct {
	code           int
	stdout, stderr string
	err            error // the run itself went wrong: no exit code to judge
}

// line is the binary's own message: its one-line usage error if there is
// one, else the last line it logged.
func (r result) line() string {
	lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
	for _, l := range lines {
		if strings.HasPrefix(l, "meshgate: ") {
			return l
		}
		// Not at a terminal, a usage error is a JSON log line.
		var usage struct {
			Code  int
			Error string
		}
		if json.Unmarshal([]byte(l), &usage) == nil && usage.Code == 2 && usage.Error != "" {
			return "meshgate: " + usage.Error
		}
	}
	return lines[len(lines)-1]
}

// runTimeout bounds one run; a harmless run takes milliseconds.
const runTimeout = 20 * time.Second

// exec runs the binary with exactly env as its environment, in the
// scratch directory.
func (b *binary) exec(args, env []string) result {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.path, args...)
	cmd.Env = env
	cmd.Dir = b.dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	r := result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		r.err = fmt.Errorf("still running after %s", runTimeout)
	case errors.As(err, &exit) && r.code >= 0:
	case err != nil:
		r.err = err
	}
	return r
}

type memo struct {
	once sync.Once
	res  result
}

// memoize runs f once per key: many checks run the same command line.
func (b *binary) memoize(key string, f func() result) result {
	v, _ := b.runs.LoadOrStore(key, new(memo))
	m := v.(*memo)
	m.once.Do(func() { m.res = f() })
	return m.res
}

// run runs the binary with args and env, once per distinct pair.
func (b *binary) run(args, env []string) result {
	key := strings.Join(args, "\x00") + "\x01" + strings.Join(env, "\x00")
	return b.memoize(key, func() result { return b.exec(args, env) })
}

// install runs "install" with args whose last one, the destination, is
// replaced by a fresh directory, and checks that the binary landed there.
func (b *binary) install(args, env []string) result {
	key := "install\x01" + strings.Join(args[:len(args)-1], "\x00") + "\x01" + strings.Join(env, "\x00")
	return b.memoize(key, func() result {
		dest, err := os.MkdirTemp(b.dir, "install-")
		if err != nil {
			return result{err: err}
		}
		defer os.RemoveAll(dest)
		r := b.exec(append(args[:len(args)-1:len(args)-1], dest), env)
		if r.err == nil && r.code == 0 {
			if !isExecutable(filepath.Join(dest, "meshgate")) {
				r.err = errors.New("exited 0 but left no executable meshgate in the destination")
			}
		}
		return r
	})
}

// isExecutable tells whether p is a file that can be run.
func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// TestBinary checks what the other tests take from the binary: that it
// runs, that its help gave the flags and variables, and that a command
// line it rejects comes back with its message.
func TestBinary(t *testing.T) {
	b := meshgate(t)
	if !isExecutable(b.path) {
		t.Fatalf("%s: not an executable file", b.path)
	}
	for _, mode := range []string{"", "wait", "check"} {
		if !b.modes[mode] {
			t.Errorf("modes: got %v, want %q among them", slices.Sorted(maps.Keys(b.modes)), mode)
		}
	}
	if f := b.flags["attempt-timeout"]; !f.value || f.def == "" || f.env == "" {
		t.Errorf("--attempt-timeout: got %+v, want a value, its default and its variable", f)
	}
	if f := b.flags["disabled"]; f.value {
		t.Errorf("--disabled: got a flag that takes a value, want a boolean")
	}
	r := b.run([]string{"--no-such-flag", "--", "true"}, []string{"PATH=/usr/bin:/bin"})
	if r.code != 2 || !strings.Contains(r.line(), "no-such-flag") {
		t.Errorf("meshgate --no-such-flag -- true: got exit %d %q, want exit 2 and a message naming the flag", r.code, r.line())
	}
}

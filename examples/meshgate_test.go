package examples_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshgate/meshgate/test/testkit"
)

// The examples are checked against the real meshgate: the binary named by
// MESHGATE_BIN, or one built from ../cmd/meshgate. What the test knows of
// meshgate's modes, flags and variables it reads from the binary's help,
// and every meshgate command line of a manifest is run by the binary
// itself, so the examples cannot drift from the code.

// scratch holds the installs; it goes with testkit's builds.
var scratch string

// loadBinary builds (or finds) meshgate and reads its help, once.
var loadBinary = sync.OnceValues(newBinary)

func TestMain(m *testing.M) {
	var err error
	scratch, err = testkit.Once("scratch", func(dir string) (string, error) { return dir, nil })
	testkit.Main(m, err)
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
	modes map[string]bool     // subcommands that take flags
	flags map[string]flagHelp // the flags of every mode, by name
	vars  map[string]string   // MESHGATE_* variable → flag name
}

// flagHelp is one flag as the help shows it.
type flagHelp struct {
	value bool   // takes a value; false for booleans
	def   string // the default, unquoted; "" if the help shows none
	env   string // the variable that stands for it
}

func newBinary() (*binary, error) {
	b := &binary{modes: map[string]bool{}, flags: map[string]flagHelp{}, vars: map[string]string{}}
	var err error
	if b.path, err = testkit.Binary("MESHGATE_BIN", "./cmd/meshgate"); err != nil {
		return nil, err
	}
	// The help lists the modes in its usage lines, then the flags of all.
	r := b.exec([]string{"--help"}, environ(nil))
	for _, m := range synopsis.FindAllStringSubmatch(r.output, -1) {
		b.modes[m[1]] = true
	}
	for _, m := range flagLine.FindAllStringSubmatch(r.output, -1) {
		f := flagHelp{value: m[2] != ""}
		if d := defaultValue.FindStringSubmatch(m[3]); d != nil {
			f.def = strings.Trim(d[1], `"`)
		}
		if v := variable.FindStringSubmatch(m[3]); v != nil {
			f.env, b.vars[v[1]] = v[1], m[1]
		}
		b.flags[m[1]] = f
	}
	// TestCheckPodFindsMistakes tries each flag the checks rely on.
	if r.code != 0 || !b.modes["check"] || b.flags["quit"].env == "" {
		return nil, fmt.Errorf("%s --help: got exit %d, modes %v and --quit %+v, want 0, check among them and --quit with its variable (did the help change?)",
			b.path, r.code, slices.Sorted(maps.Keys(b.modes)), b.flags["quit"])
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

// environ is the environment of a run: a PATH, and vars.
func environ(vars map[string]string) []string {
	env := []string{"PATH=/usr/bin:/bin"}
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		env = append(env, k+"="+vars[k])
	}
	return env
}

// result is how one run of the binary ended. code is -1 if it did not
// exit on its own, and output (stdout and stderr) then ends with why.
type result struct {
	code   int
	output string
}

// line is the binary's own message: its one-line usage error if there is
// one, else the last line it wrote.
func (r result) line() string {
	lines := strings.Split(strings.TrimSpace(r.output), "\n")
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

// exec runs the binary with exactly env as its environment, in scratch.
func (b *binary) exec(args, env []string) result {
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.path, args...)
	var out strings.Builder
	cmd.Env, cmd.Dir, cmd.WaitDelay, cmd.Stdout, cmd.Stderr = env, scratch, time.Second, &out, &out
	err := cmd.Run()
	if cmd.ProcessState.ExitCode() < 0 {
		fmt.Fprintf(&out, "\nno exit status (each run may take %s): %v", runTimeout, err)
	}
	return result{cmd.ProcessState.ExitCode(), out.String()}
}

// install runs "install" with args whose last one, the destination, is
// replaced by a fresh directory, and checks that the binary landed there.
func (b *binary) install(args, env []string) result {
	dest, err := os.MkdirTemp(scratch, "install-")
	if err != nil {
		return result{-1, err.Error()}
	}
	defer os.RemoveAll(dest)
	r := b.exec(append(slices.Clip(args[:len(args)-1]), dest), env)
	if r.code == 0 && !isExecutable(filepath.Join(dest, "meshgate")) {
		r.code, r.output = -1, "exited 0 but left no executable meshgate in the destination"
	}
	return r
}

// isExecutable tells whether p is a file that can be run.
func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

package gate

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"go.uber.org/zap"
)

// steps reads first, then calls mid, then reads rest; an error from mid
// is the read's. mid runs inside a Read, so a test acts at a known point
// of the copy: after the destination was checked and the temporary file
// created, before the rename.
func steps(first string, mid func() error, rest string) io.Reader {
	return io.MultiReader(strings.NewReader(first), onRead(mid), strings.NewReader(rest))
}

type onRead func() error

func (f onRead) Read([]byte) (int, error) { return 0, cmp.Or(f(), io.EOF) }

// installFrom makes an Installer that copies r.
func installFrom(r io.Reader) *Installer {
	return &Installer{Self: func() (io.ReadCloser, error) { return io.NopCloser(r), nil }}
}

// names lists a directory.
func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func checkInstalled(t *testing.T, path, content string) {
	t.Helper()
	got, err := os.ReadFile(path)
	fi, lerr := os.Lstat(path)
	if err != nil || lerr != nil || string(got) != content || fi.Mode() != 0o755 {
		t.Errorf("%s holds %q (%v), mode %v; want %q, a regular file, mode 0755", path, got, err, fi, content)
	}
}

func TestInstall(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := os.Mkdir("sub", 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ dest, want string }{
		{".", "meshgate"}, {"./", "meshgate"}, {"sub", "sub/meshgate"}, {"sub/", "sub/meshgate"},
		{"./sub//", "sub/meshgate"}, {"mg", "mg"}, {"sub/mg", "sub/mg"}, {"mg", "mg"},
	}
	for i, tc := range tests {
		content := fmt.Sprintf("binary v%d", i)
		log, logs := logged(zap.InfoLevel)
		in := installFrom(strings.NewReader(content))
		in.Log = log
		res, err := in.Install(context.Background(), tc.dest)
		sum := sha256.Sum256([]byte(content))
		want := Installed{Path: tc.want, Size: int64(len(content)), SHA256: hex.EncodeToString(sum[:])}
		if err != nil || res != want {
			t.Errorf("Install(%q) = %+v, %v; want %+v", tc.dest, res, err, want)
		}
		checkInstalled(t, tc.want, content)
		if l := logs.FilterMessage("installed").All(); len(l) != 1 || l[0].ContextMap()["sha256"] != want.SHA256 {
			t.Errorf("log lines %v, want one with the sha256", l)
		}
	}
	if got := slices.Concat(names(t, "."), names(t, "sub")); !slices.Equal(got, []string{"meshgate", "mg", "sub", "meshgate", "mg"}) {
		t.Errorf("files %q, want the installed ones and nothing left over", got)
	}
}

func TestInstallRefusals(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	linkDir, subdir := filepath.Join(dir, "linkdir"), filepath.Join(dir, "sub")
	for _, err := range []error{
		os.WriteFile(victim, []byte("keep"), 0o644),
		os.Mkdir(linkDir, 0o755),
		os.Symlink(victim, filepath.Join(linkDir, "meshgate")),
		os.Symlink(victim, filepath.Join(dir, "link")),
		os.Symlink(t.TempDir(), filepath.Join(dir, "dirlink")),
		os.MkdirAll(filepath.Join(subdir, "meshgate"), 0o755),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		dest, want string
	}{
		{"", "empty destination"},
		{filepath.Join(dir, "link"), "is a symlink; refusing to write through it"},
		{filepath.Join(dir, "dirlink"), "is a symlink"},
		// lstat(2) follows a symlink named with a trailing slash.
		{filepath.Join(dir, "dirlink") + "/", "is a symlink"},
		{filepath.Join(dir, "dirlink") + "//", "is a symlink"},
		{linkDir, "is a symlink; refusing to write through it"},
		{subdir, "exists and is not a regular file"},
		{filepath.Join(dir, "nope", "meshgate"), "does not exist"},
		{filepath.Join(dir, "nope") + "/", "does not exist"},
		{filepath.Join(victim, "meshgate"), "not a directory"},
		{"/dev/null", "not a directory or a regular file"},
	}
	for _, tc := range tests {
		_, err := installFrom(strings.NewReader("new")).Install(context.Background(), tc.dest)
		if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Install(%q) = %v, want a usage error saying %q", tc.dest, err, tc.want)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("the symlink's target was written: %q", b)
	}
}

// An install interrupted in mid-copy leaves no temporary file. What is
// swapped in for the target meanwhile is replaced by the rename, never
// written through (a symlink), or makes the rename fail and stays as it
// was (a directory); a failed read or a cancel leaves the earlier install.
func TestInstallInterrupted(t *testing.T) {
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	symlink := func(target string, _ context.CancelCauseFunc) error {
		return errors.Join(os.Remove(target), os.Symlink(victim, target))
	}
	stop := Usagef("stopped") // any cause: the signal's, in meshgate
	tests := []struct {
		name, file string // file "": into the directory
		mid        func(target string, cancel context.CancelCauseFunc) error
		err, want  string // want: the target's content after, "" for a directory
	}{
		{"symlink swapped in", "", symlink, "", "new binary"},
		{"symlink swapped in for a file", "mg", symlink, "", "new binary"},
		{"directory swapped in", "", func(target string, _ context.CancelCauseFunc) error {
			return errors.Join(os.Remove(target), os.Mkdir(target, 0o755))
		}, "install: rename to", ""},
		{"read error", "", func(string, context.CancelCauseFunc) error { return syscall.EIO }, "install: write", "old"},
		{"cancelled", "", func(_ string, cancel context.CancelCauseFunc) error { cancel(stop); return nil }, "stopped", "old"},
	}
	for _, tc := range tests {
		dir := t.TempDir()
		dest, target := filepath.Join(dir, tc.file), filepath.Join(dir, cmp.Or(tc.file, InstallName))
		// An earlier install: a regular file, so the checks before the copy pass.
		if _, err := installFrom(strings.NewReader("old")).Install(context.Background(), dest); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancelCause(context.Background())
		_, err := installFrom(steps("new ", func() error { return tc.mid(target, cancel) }, "binary")).Install(ctx, dest)
		cancel(nil)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: Install = %v, want %q", tc.name, err, tc.err)
		}
		if fi, _ := os.Lstat(target); tc.want != "" {
			checkInstalled(t, target, tc.want)
		} else if fi == nil || !fi.IsDir() || len(names(t, target)) != 0 {
			t.Errorf("%s: %s is %v, want the empty directory swapped in", tc.name, target, fi)
		}
		if b, _ := os.ReadFile(victim); string(b) != "keep" {
			t.Errorf("%s: victim holds %q: written through the symlink", tc.name, b)
		}
		if got := names(t, dir); len(got) != 1 {
			t.Errorf("%s: directory holds %q, want only %s", tc.name, got, filepath.Base(target))
		}
	}
}

func TestInstallConcurrently(t *testing.T) {
	const n = 8
	dir := t.TempDir()
	// Every install stops halfway until all are halfway, so the copies
	// overlap for certain.
	var halfway, done sync.WaitGroup
	halfway.Add(n)
	release := make(chan struct{})
	contents := make([]string, n)
	for i := range n {
		contents[i] = strings.Repeat(string(rune('a'+i)), 1000*(i+1))
		var once sync.Once
		arrive := func() { once.Do(halfway.Done) }
		half := len(contents[i]) / 2
		r := steps(contents[i][:half], func() error { arrive(); <-release; return nil }, contents[i][half:])
		done.Go(func() {
			defer arrive() // an install that fails early must not hold up the others
			if _, err := installFrom(r).Install(context.Background(), dir); err != nil {
				t.Errorf("install %d: %v", i, err)
			}
		})
	}
	halfway.Wait()
	got := names(t, dir)
	close(release)
	done.Wait()
	if len(got) != n || slices.Contains(got, InstallName) {
		t.Errorf("halfway through, the directory holds %q, want %d temporary files and no %s", got, n, InstallName)
	}
	b, _ := os.ReadFile(filepath.Join(dir, InstallName))
	if !slices.Contains(contents, string(b)) {
		t.Errorf("%s holds %d bytes starting %q, want exactly one of the %d copies", InstallName, len(b), b[:min(len(b), 8)], n)
	}
	checkInstalled(t, filepath.Join(dir, InstallName), string(b))
	if got := names(t, dir); !slices.Equal(got, []string{InstallName}) {
		t.Errorf("directory holds %q after the installs, want only %s", got, InstallName)
	}
}

func TestOpenSelf(t *testing.T) {
	f, err := openSelf("ignored", "")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	exe, _ := os.Executable()
	a, _ := f.Stat()
	if b, _ := os.Stat(exe); !os.SameFile(a, b) {
		t.Errorf("openSelf opened %s, want the test binary %s", f.Name(), exe)
	}
}

package gate

import (
	"bytes"
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
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// fakeSelf makes an Installer that copies content instead of the running
// binary.
func fakeSelf(t *testing.T, content []byte) *Installer {
	t.Helper()
	src := filepath.Join(t.TempDir(), "self")
	if err := os.WriteFile(src, content, 0o700); err != nil {
		t.Fatal(err)
	}
	return &Installer{Self: func() (io.ReadCloser, error) { return os.Open(src) }}
}

// stepReader serves first, then calls mid once, then serves rest and ends
// with err (io.EOF if nil). mid runs inside Read, so a test acts at a known
// point of the copy: after the destination was checked and the temporary
// file created, before the rename.
type stepReader struct {
	first, rest []byte
	mid         func()
	err         error
}

func (r *stepReader) Read(p []byte) (int, error) {
	if len(r.first) > 0 {
		n := copy(p, r.first)
		r.first = r.first[n:]
		return n, nil
	}
	if r.mid != nil {
		r.mid()
		r.mid = nil
	}
	if len(r.rest) > 0 {
		n := copy(p, r.rest)
		r.rest = r.rest[n:]
		return n, nil
	}
	if r.err != nil {
		return 0, r.err
	}
	return 0, io.EOF
}

func (r *stepReader) Close() error { return nil }

// installFrom makes an Installer that copies r.
func installFrom(r io.ReadCloser) *Installer {
	return &Installer{Self: func() (io.ReadCloser, error) { return r, nil }}
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

func checkInstalled(t *testing.T, path string, content []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("%s holds %q (%v), want %q", path, got, err, content)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("%s mode %v, want 0755", path, fi.Mode().Perm())
	}
}

func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	var tmp []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			tmp = append(tmp, e.Name())
		}
	}
	return tmp
}

func TestInstallIntoDirectory(t *testing.T) {
	content := []byte("binary v1")
	dir := t.TempDir()
	core, logs := observer.New(zap.InfoLevel)
	in := fakeSelf(t, content)
	in.Log = zap.New(core)
	res, err := in.Install(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(content)
	want := Installed{Path: filepath.Join(dir, "meshgate"), Size: int64(len(content)), SHA256: hex.EncodeToString(sum[:])}
	if res != want {
		t.Errorf("Install = %+v, want %+v", res, want)
	}
	checkInstalled(t, want.Path, content)
	l := logs.FilterMessage("installed").All()
	if len(l) != 1 || l[0].ContextMap()["sha256"] != want.SHA256 || l[0].ContextMap()["size"] != want.Size {
		t.Errorf("log lines %v, want one with path, size and sha256", l)
	}
}

func TestInstallToFilePathAndRerun(t *testing.T) {
	dir := t.TempDir()
	dest := filepath.Join(dir, "mg")
	for _, content := range [][]byte{[]byte("v1"), []byte("version two")} {
		if _, err := fakeSelf(t, content).Install(context.Background(), dest); err != nil {
			t.Fatal(err)
		}
		checkInstalled(t, dest, content)
	}
	if tmp := leftovers(t, dir); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
}

func TestInstallRefusals(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	linkDir := filepath.Join(dir, "linkdir")
	if err := os.Mkdir(linkDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(linkDir, "meshgate")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(t.TempDir(), filepath.Join(dir, "dirlink")); err != nil {
		t.Fatal(err)
	}
	subdir := filepath.Join(dir, "sub")
	if err := os.MkdirAll(filepath.Join(subdir, "meshgate"), 0o755); err != nil {
		t.Fatal(err)
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
		_, err := fakeSelf(t, []byte("new")).Install(context.Background(), tc.dest)
		if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Install(%q) = %v, want a usage error saying %q", tc.dest, err, tc.want)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("the symlink's target was written: %q", b)
	}
}

func TestInstallIOFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	// A source that fails mid-read: a directory opened as a file.
	in := &Installer{Self: func() (io.ReadCloser, error) { return os.Open(t.TempDir()) }}
	_, err := in.Install(context.Background(), dir)
	if ExitCode(err) != ExitFailure || !strings.Contains(err.Error(), "install: write") {
		t.Errorf("Install = %v, want an I/O error (exit 1)", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("files left after a failed install: %v", entries)
	}
}

func TestInstallSourceFailsMidReadKeepsEarlierInstall(t *testing.T) {
	dir := t.TempDir()
	old := []byte("binary v1")
	if _, err := fakeSelf(t, old).Install(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	errRead := errors.New("input/output error")
	_, err := installFrom(&stepReader{first: []byte("binary v2, first half"), err: errRead}).Install(context.Background(), dir)
	if ExitCode(err) != ExitFailure || !errors.Is(err, errRead) {
		t.Errorf("Install = %v, want the read error, exit 1", err)
	}
	checkInstalled(t, filepath.Join(dir, "meshgate"), old)
	if got := names(t, dir); !slices.Equal(got, []string{"meshgate"}) {
		t.Errorf("directory holds %q after a failed install, want only the earlier meshgate", got)
	}
}

func TestInstallSymlinkSwappedInMidCopy(t *testing.T) {
	for _, name := range []string{"", "mg"} {
		dir := t.TempDir()
		dest := filepath.Join(dir, name)
		target := filepath.Join(dir, InstallName)
		if name != "" {
			target = dest
		}
		victim := filepath.Join(t.TempDir(), "victim")
		if err := os.WriteFile(victim, []byte("keep"), 0o600); err != nil {
			t.Fatal(err)
		}
		// An earlier install: a regular file, so the checks before the
		// copy pass.
		if _, err := fakeSelf(t, []byte("old")).Install(context.Background(), dest); err != nil {
			t.Fatal(err)
		}
		swapped := false
		content := []byte("new binary")
		r := &stepReader{first: content[:4], rest: content[4:], mid: func() {
			if err := os.Remove(target); err != nil {
				t.Error(err)
			}
			if err := os.Symlink(victim, target); err != nil {
				t.Error(err)
			}
			swapped = true
		}}
		if _, err := installFrom(r).Install(context.Background(), dest); err != nil {
			t.Fatalf("Install(%q) = %v, want success", dest, err)
		}
		if !swapped {
			t.Fatal("the symlink was never swapped in")
		}
		b, _ := os.ReadFile(victim)
		fi, _ := os.Stat(victim)
		if string(b) != "keep" || fi.Mode().Perm() != 0o600 {
			t.Errorf("victim holds %q mode %v, want %q mode 0600: written through the symlink", b, fi.Mode().Perm(), "keep")
		}
		if fi, err := os.Lstat(target); err != nil || !fi.Mode().IsRegular() {
			t.Errorf("%s: %v, %v; want a regular file in place of the symlink", target, fi.Mode(), err)
		}
		checkInstalled(t, target, content)
		if tmp := leftovers(t, dir); len(tmp) != 0 {
			t.Errorf("temporary files left: %v", tmp)
		}
	}
}

func TestInstallRenameFailureLeavesNoTemporaryFile(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, InstallName)
	// A directory swapped in after the checks makes the rename fail.
	r := &stepReader{first: []byte("new "), rest: []byte("binary"), mid: func() {
		if err := os.MkdirAll(filepath.Join(target, "x"), 0o755); err != nil {
			t.Error(err)
		}
	}}
	_, err := installFrom(r).Install(context.Background(), dir)
	if ExitCode(err) != ExitFailure || !strings.Contains(err.Error(), "install: rename to") {
		t.Errorf("Install = %v, want a rename error, exit 1", err)
	}
	if got := names(t, dir); !slices.Equal(got, []string{InstallName}) {
		t.Errorf("directory holds %q, want only the swapped-in directory %q", got, InstallName)
	}
	if fi, err := os.Stat(filepath.Join(target, "x")); err != nil || !fi.IsDir() {
		t.Errorf("the swapped-in directory was touched: %v", err)
	}
}

func TestInstallConcurrently(t *testing.T) {
	const n = 8
	dir := t.TempDir()
	target := filepath.Join(dir, InstallName)
	// Every install stops halfway until all are halfway, so the copies
	// overlap for certain.
	var halfway sync.WaitGroup
	halfway.Add(n)
	release := make(chan struct{})
	contents := make([][]byte, n)
	errs := make([]error, n)
	var done sync.WaitGroup
	for i := range n {
		contents[i] = bytes.Repeat([]byte{byte('a' + i)}, 1000*(i+1))
		var once sync.Once
		arrive := func() { once.Do(halfway.Done) }
		half := len(contents[i]) / 2
		r := &stepReader{first: contents[i][:half], rest: contents[i][half:], mid: func() { arrive(); <-release }}
		done.Add(1)
		go func() {
			defer done.Done()
			defer arrive() // an install that fails early must not hold up the others
			_, errs[i] = installFrom(r).Install(context.Background(), dir)
		}()
	}
	halfway.Wait()
	got := names(t, dir)
	close(release)
	done.Wait()
	if len(got) != n || slices.Contains(got, InstallName) {
		t.Errorf("halfway through, the directory holds %q, want %d temporary files and no %s", got, n, InstallName)
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("install %d: %v", i, err)
		}
	}
	b, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(contents, func(c []byte) bool { return bytes.Equal(c, b) }) {
		t.Errorf("%s holds %d bytes starting %q, want exactly one of the %d copies", target, len(b), b[:min(len(b), 8)], n)
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o755 {
		t.Errorf("%s mode %v, want 0755", target, fi.Mode().Perm())
	}
	if got := names(t, dir); !slices.Equal(got, []string{InstallName}) {
		t.Errorf("directory holds %q after the installs, want only %s", got, InstallName)
	}
}

func TestInstallRelativeDestination(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := os.Mkdir("sub", 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ dest, want string }{
		{".", "meshgate"},
		{"./", "meshgate"},
		{"sub", "sub/meshgate"},
		{"sub/", "sub/meshgate"},
		{"./sub//", "sub/meshgate"},
		{"mg", "mg"},
		{"sub/mg", "sub/mg"},
	}
	for i, tc := range tests {
		content := fmt.Appendf(nil, "binary v%d", i)
		res, err := fakeSelf(t, content).Install(context.Background(), tc.dest)
		if err != nil || res.Path != tc.want {
			t.Errorf("Install(%q) = %q, %v; want %q", tc.dest, res.Path, err, tc.want)
			continue
		}
		checkInstalled(t, tc.want, content)
	}
	for _, dir := range []string{".", "sub"} {
		if tmp := leftovers(t, dir); len(tmp) != 0 {
			t.Errorf("temporary files left in %s: %v", dir, tmp)
		}
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
	b, _ := os.Stat(exe)
	if !os.SameFile(a, b) {
		t.Errorf("openSelf opened %s, want the test binary %s", f.Name(), exe)
	}
}

// A cancelled install stops in mid-copy, removes its temporary file and
// leaves the earlier install as it was; the error is the cancel's cause.
func TestInstallCancelledMidCopy(t *testing.T) {
	dir := t.TempDir()
	if _, err := fakeSelf(t, []byte("v1")).Install(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := Usagef("stopped") // any cause: the signal's, in meshgate
	src := &cancelReader{chunk: []byte("binary v2, first part"), cancel: func() { cancel(stop) }}
	_, err := installFrom(src).Install(ctx, dir)
	if err != stop {
		t.Errorf("Install = %v, want the cause %v", err, stop)
	}
	entries, _ := os.ReadDir(dir)
	got, _ := os.ReadFile(filepath.Join(dir, InstallName))
	if len(entries) != 1 || string(got) != "v1" {
		t.Errorf("after the cancel: %d entries, %s = %q; want only the earlier install", len(entries), InstallName, got)
	}
}

// cancelReader gives one chunk, cancels, and would then go on for ever.
type cancelReader struct {
	chunk  []byte
	cancel func()
	n      int
}

func (c *cancelReader) Read(p []byte) (int, error) {
	c.n++
	if c.n == 2 {
		c.cancel()
	}
	return copy(p, c.chunk), nil
}

func (c *cancelReader) Close() error { return nil }

package gate

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
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
	return &Installer{Self: func() (*os.File, error) { return os.Open(src) }}
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
	res, err := in.Install(dir)
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
		if _, err := fakeSelf(t, content).Install(dest); err != nil {
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
		{linkDir, "is a symlink; refusing to write through it"},
		{subdir, "exists and is not a regular file"},
		{filepath.Join(dir, "nope", "meshgate"), "does not exist"},
		{filepath.Join(dir, "nope") + "/", "does not exist"},
		{filepath.Join(victim, "meshgate"), "not a directory"},
		{"/dev/null", "not a directory or a regular file"},
	}
	for _, tc := range tests {
		_, err := fakeSelf(t, []byte("new")).Install(tc.dest)
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
	in := &Installer{Self: func() (*os.File, error) { return os.Open(t.TempDir()) }}
	_, err := in.Install(dir)
	if ExitCode(err) != ExitFailure || !strings.Contains(err.Error(), "install: write") {
		t.Errorf("Install = %v, want an I/O error (exit 1)", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("files left after a failed install: %v", entries)
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

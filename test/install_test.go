package test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstallCopiesTheRunningBinary(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out, err := exec.Command(bins.meshgate, "install", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	installed := filepath.Join(dir, "meshgate")
	want, _ := os.ReadFile(bins.meshgate)
	got, _ := os.ReadFile(installed)
	if !bytes.Equal(got, want) {
		t.Fatalf("installed %d bytes, want the %d of the binary", len(got), len(want))
	}
	if v, err := exec.Command(installed, "version").Output(); err != nil || !strings.HasPrefix(string(v), "meshgate ") {
		t.Errorf("installed binary: version = %q, %v", v, err)
	}
	if !strings.Contains(string(out), `"msg":"installed"`) || !strings.Contains(string(out), `"sha256":"`) {
		t.Errorf("install log %s, want an installed line with the checksum", out)
	}
}

func TestInstallReadOnlyDirectory(t *testing.T) {
	t.Parallel()
	root(t)
	dir := t.TempDir()
	cmd := exec.Command("unshare", "--mount", "sh", "-c",
		`mount --make-rprivate / && mount -t tmpfs -o ro tmpfs "$1" && exec "$2" install "$1"`, "sh", dir, bins.meshgate)
	out, err := cmd.CombinedOutput()
	if code := exitCodeOf(err); code != 1 || !strings.Contains(string(out), "read-only file system") {
		t.Errorf("install into a read-only mount: exit %d, %s; want 1 saying read-only", code, out)
	}
}

func TestInstallWithoutProc(t *testing.T) {
	t.Parallel()
	root(t)
	dir := t.TempDir()
	// /proc hidden by an empty tmpfs: /proc/self/exe is gone, argv[0] is
	// all there is.
	cmd := exec.Command("unshare", "--mount", "sh", "-c",
		`mount --make-rprivate / && mount -t tmpfs tmpfs /proc && exec "$2" install "$1"`, "sh", dir, bins.meshgate)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("install without /proc: %v\n%s", err, out)
	}
	want, _ := os.ReadFile(bins.meshgate)
	if got, _ := os.ReadFile(filepath.Join(dir, "meshgate")); !bytes.Equal(got, want) {
		t.Errorf("installed %d bytes without /proc, want %d", len(got), len(want))
	}
}

package test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
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

// installInMount runs meshgate install into a fresh tmpfs mounted with
// opts in a private mount namespace. An earlier install holding old is
// written first if old is not empty, and the mount is made read-only if
// readOnly. It returns meshgate's exit code and stderr, and the entries
// left in the mount as "name size", listed inside the namespace since the
// mount goes with it.
func installInMount(t *testing.T, opts, old string, readOnly bool) (code int, stderr string, left []string) {
	t.Helper()
	ro := ""
	if readOnly {
		ro = "ro"
	}
	var stdout, errb bytes.Buffer
	cmd := exec.Command("unshare", "--mount", "sh", "-c", `set -e
mount --make-rprivate /
mount -t tmpfs -o "$3" tmpfs "$1"
if [ -n "$4" ]; then printf %s "$4" >"$1/meshgate"; chmod 755 "$1/meshgate"; fi
if [ -n "$5" ]; then mount -o remount,ro "$1"; fi
code=0; "$2" install "$1" >&2 || code=$?
echo "$code"
find "$1" -mindepth 1 -maxdepth 1 -printf '%f %s\n'`, "sh", t.TempDir(), bins.meshgate, opts, old, ro)
	// No MESHGATE_* variables from the test run: stderr is the error alone.
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Stdout, cmd.Stderr = &stdout, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("unshare: %v\n%s", err, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	code, err := strconv.Atoi(lines[0])
	if err != nil {
		t.Fatalf("script printed %q, want the exit code first", stdout.String())
	}
	return code, errb.String(), lines[1:]
}

func TestInstallOntoFailingMount(t *testing.T) {
	t.Parallel()
	root(t)
	tests := []struct {
		name, opts, old string
		readOnly        bool
		want            string
	}{
		// The binary is several MiB: it cannot fit.
		{"full disk", "size=1m", "", false, "no space left on device"},
		{"full disk over an earlier install", "size=1m", "old", false, "no space left on device"},
		{"read-only", "size=1m", "", true, "read-only file system"},
		{"read-only over an earlier install", "size=1m", "old", true, "read-only file system"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, stderr, left := installInMount(t, tc.opts, tc.old, tc.readOnly)
			if lines := strings.Split(strings.TrimSpace(stderr), "\n"); code != 1 || len(lines) != 1 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %s; want exit 1 and one line saying %q", code, stderr, tc.want)
			}
			// The earlier install, untouched, or nothing.
			var want []string
			if tc.old != "" {
				want = []string{"meshgate " + strconv.Itoa(len(tc.old))}
			}
			if !slices.Equal(left, want) {
				t.Errorf("mount holds %q after the failed install, want %q", left, want)
			}
		})
	}
}

func TestInstallRefusesSymlinks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	linked := filepath.Join(dir, "linked")
	if err := os.Mkdir(linked, 0o755); err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(dir, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	for link, to := range map[string]string{filepath.Join(linked, "meshgate"): victim, filepath.Join(dir, "link"): victim, filepath.Join(dir, "dirlink"): real} {
		if err := os.Symlink(to, link); err != nil {
			t.Fatal(err)
		}
	}
	for _, dest := range []string{linked, filepath.Join(dir, "link"), filepath.Join(dir, "dirlink") + "/"} {
		out, err := exec.Command(bins.meshgate, "install", dest).CombinedOutput()
		if code := exitCodeOf(err); code != 2 || !strings.Contains(string(out), "is a symlink; refusing to write through it") {
			t.Errorf("install %s: exit %d, %s; want 2 saying it refuses the symlink", dest, code, out)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("victim holds %q, want %q", b, "keep")
	}
	if fi, err := os.Lstat(filepath.Join(linked, "meshgate")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("%s/meshgate is no longer the symlink: %v", linked, err)
	}
	for d, want := range map[string]int{dir: 5, linked: 1, real: 0} {
		if entries, _ := os.ReadDir(d); len(entries) != want {
			t.Errorf("%s holds %v, want %d entries as before", d, entries, want)
		}
	}
}

func TestInstallTwoAtOnce(t *testing.T) {
	t.Parallel()
	// Two different binaries: bytes after the ELF image are never loaded,
	// so a tail tells the copies apart and both still run.
	bin, err := os.ReadFile(bins.meshgate)
	if err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	sources := [][]byte{bin, append(slices.Clip(bin), bytes.Repeat([]byte("tail"), 1<<18)...)}
	paths := []string{filepath.Join(src, "a"), filepath.Join(src, "b")}
	for i, p := range paths {
		if err := os.WriteFile(p, sources[i], 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	target := filepath.Join(dir, "meshgate")
	for round := range 3 {
		cmds := make([]*exec.Cmd, len(paths))
		outs := make([]bytes.Buffer, len(paths))
		for i, p := range paths {
			cmds[i] = exec.Command(p, "install", dir)
			cmds[i].Stdout, cmds[i].Stderr = &outs[i], &outs[i]
			if err := cmds[i].Start(); err != nil {
				t.Fatal(err)
			}
		}
		for i, cmd := range cmds {
			if err := cmd.Wait(); err != nil {
				t.Errorf("round %d: install from %s: %v\n%s", round, paths[i], err, outs[i].String())
			}
		}
		got, err := os.ReadFile(target)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, sources[0]) && !bytes.Equal(got, sources[1]) {
			t.Errorf("round %d: %s holds %d bytes, want exactly one of the copies (%d or %d bytes)", round, target, len(got), len(sources[0]), len(sources[1]))
		}
		if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o755 {
			t.Errorf("round %d: %s mode %v, want 0755", round, target, fi.Mode().Perm())
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 1 {
			t.Errorf("round %d: %s holds %v, want only meshgate", round, dir, entries)
		}
	}
}

func TestInstallUnwritableDirectory(t *testing.T) {
	t.Parallel()
	root(t)
	// Not t.TempDir: its parents are 0700, closed to the other user.
	base, err := os.MkdirTemp("", "meshgate-install-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	bin, err := os.ReadFile(bins.meshgate)
	if err != nil {
		t.Fatal(err)
	}
	self := filepath.Join(base, "meshgate")
	dest := filepath.Join(base, "dest")
	if err := os.WriteFile(self, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{base, self, dest} {
		if err := os.Chmod(p, 0o755); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
	out, err := exec.Command("setpriv", "--reuid=65532", "--regid=65532", "--clear-groups", self, "install", dest).CombinedOutput()
	if code := exitCodeOf(err); code != 1 || !strings.Contains(string(out), "permission denied") {
		t.Errorf("install into a root-owned 0755 directory as UID 65532: exit %d, %s; want 1 saying permission denied", code, out)
	}
	if entries, _ := os.ReadDir(dest); len(entries) != 0 {
		t.Errorf("%s holds %v after a failed install, want nothing", dest, entries)
	}
}

func TestInstallRelativeDestination(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(bins.meshgate)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ dest, file string }{{".", "meshgate"}, {"sub/", "sub/meshgate"}, {"mg", "mg"}} {
		cmd := exec.Command(bins.meshgate, "install", tc.dest)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("install %s: %v\n%s", tc.dest, err, out)
			continue
		}
		if got, _ := os.ReadFile(filepath.Join(dir, tc.file)); !bytes.Equal(got, want) {
			t.Errorf("install %s: %s holds %d bytes, want the %d of the binary", tc.dest, tc.file, len(got), len(want))
		}
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

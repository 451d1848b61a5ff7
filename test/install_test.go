package test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/test/testkit"
)

// Install into a fresh tmpfs, mounted with the options given in a private
// mount namespace, where things fail as they do on a real node: a full
// disk, a read-only volume. Without /proc, argv[0] is all there is to find
// the running binary by.
func TestInstallInAMountNamespace(t *testing.T) {
	t.Parallel()
	testkit.Need(t, "unshare")
	bin, err := os.ReadFile(bins.meshgate)
	if err != nil {
		t.Fatal(err)
	}
	installed := fmt.Sprintf(`"sha256":"%x"`, sha256.Sum256(bin))
	tests := []struct {
		name, opts, old  string
		readOnly, noProc bool
		code             int
		stderr           string
		left             string // the entry left in the mount, "name size"
	}{
		// The binary is several MiB: it cannot fit.
		{"full disk", "size=1m", "", false, false, 1, "no space left on device", ""},
		{"full disk over an earlier install", "size=1m", "old", false, false, 1, "no space left on device", "meshgate 3"},
		{"read-only", "size=1m", "", true, false, 1, "read-only file system", ""},
		{"read-only over an earlier install", "size=1m", "old", true, false, 1, "read-only file system", "meshgate 3"},
		{"with /proc", "size=64m", "old", false, false, 0, installed, "meshgate " + strconv.Itoa(len(bin))},
		{"without /proc", "size=64m", "", false, true, 0, installed, "meshgate " + strconv.Itoa(len(bin))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			cmd := exec.Command("unshare", "--mount", "sh", "-c", `set -e
mount --make-rprivate /
mount -t tmpfs -o "$3" tmpfs "$1"
if [ -n "$4" ]; then printf %s "$4" >"$1/meshgate"; chmod 755 "$1/meshgate"; fi
if [ -n "$5" ]; then mount -o remount,ro "$1"; fi
if [ -n "$6" ]; then mount -t tmpfs tmpfs /proc; fi
code=0; "$2" install "$1" >&2 || code=$?
echo "$code"
find "$1" -mindepth 1 -maxdepth 1 -printf '%f %s\n'`, "sh", t.TempDir(), bins.meshgate, tc.opts, tc.old,
				map[bool]string{true: "ro"}[tc.readOnly], map[bool]string{true: "noproc"}[tc.noProc])
			// No MESHGATE_* variables from the test run: stderr is meshgate's alone.
			cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("unshare: %v\n%s", err, &stderr)
			}
			lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
			code, err := strconv.Atoi(lines[0])
			if err != nil || code != tc.code || strings.Count(strings.TrimSpace(stderr.String()), "\n") != 0 || !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("exit %s, stderr %s; want exit %d and one line saying %q", lines[0], &stderr, tc.code, tc.stderr)
			}
			// The new install, the earlier one untouched, or nothing.
			want := []string{}
			if tc.left != "" {
				want = []string{tc.left}
			}
			if left := lines[1:]; !slices.Equal(left, want) {
				t.Errorf("the mount holds %q, want %q", left, tc.left)
			}
		})
	}
}

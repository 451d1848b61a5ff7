package pod_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshgate/meshgate/test/app/report"
	"github.com/meshgate/meshgate/test/pod"
	"github.com/meshgate/meshgate/test/testkit"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// appRoot returns a scratch root filesystem holding only the test app, as
// /app.
func appRoot(t *testing.T) string {
	t.Helper()
	pod.Available(t)
	return pod.Scratch(t, map[string]string{"/app": testkit.Tool(t, "./test/app")})
}

const noCaps = "0000000000000000"

func TestContainers(t *testing.T) {
	t.Parallel()
	rootfs := appRoot(t)
	p := pod.New(t)
	out := pod.Mount{Volume: "out", Path: "/out"} // the app reports to /out/NAME.json
	ro := []pod.Mount{out, {Volume: "data", Path: "/data", ReadOnly: true}}
	for _, tc := range []struct {
		c      pod.Container
		report string // where the app reports, if not /out/NAME.json
		code   int
		stderr string
		check  func(r *report.Report) bool
	}{
		{c: pod.Container{Name: "env", Args: []string{"two words"}, Env: []string{"A=1", "PATH=/bin", "A=2", "APP_EXIT=7"}}, code: 7,
			check: func(r *report.Report) bool {
				// Later entries replace earlier ones in place.
				return r.PID == 1 && slices.Equal(r.Argv, []string{"/app", "two words"}) &&
					len(r.Env) > 4 && slices.Equal(r.Env[:4], []string{"PATH=/bin", "HOSTNAME=" + p.Name, "A=2", "APP_EXIT=7"})
			}},
		{c: pod.Container{Name: "nonroot", User: "65532:65532"},
			check: func(r *report.Report) bool {
				return r.UID == 65532 && r.GID == 65532 && r.CapBnd == noCaps && r.CapEff == noCaps
			}},
		{c: pod.Container{Name: "uid-only", User: "1000"},
			check: func(r *report.Report) bool { return r.UID == 1000 && r.GID == 0 }},
		{c: pod.Container{Name: "root"},
			check: func(r *report.Report) bool { return r.UID == 0 && r.CapBnd == noCaps && r.CapEff == noCaps }},
		{c: pod.Container{Name: "ro-volume", Mounts: ro}, report: "/data/r.json", code: 1, stderr: "read-only file system"},
		{c: pod.Container{Name: "ro-root", ReadOnly: true}, report: "/r.json", code: 1, stderr: "read-only file system"},
		{c: pod.Container{Name: "ro-file", Files: map[string]string{"/etc/app/conf": "x"}}, report: "/etc/app/conf", code: 1, stderr: "read-only file system"},
		{c: pod.Container{Name: "rw-root"}, report: "/r.json"},
	} {
		c := tc.c
		if c.Mounts == nil {
			c.Mounts = []pod.Mount{out}
		}
		if tc.report == "" {
			tc.report = "/out/" + c.Name + ".json"
		}
		c.Rootfs, c.Command, c.Env = rootfs, []string{"/app"}, append(c.Env, "APP_REPORT="+tc.report)
		got := p.Run(c)
		if got.Code != tc.code || !strings.Contains(got.Stderr, tc.stderr) {
			t.Errorf("%s: exit %d, stderr %q; want %d and %q", c.Name, got.Code, got.Stderr, tc.code, tc.stderr)
		}
		if r := testkit.ReadReport(t, filepath.Join(p.Volume("out"), c.Name+".json")); tc.check != nil && (r == nil || !tc.check(r)) {
			t.Errorf("%s: the app saw %+v", c.Name, r)
		}
	}
	// Each container writes to a copy of its root, as to a snapshot of its
	// image; a volume's files belong to who wrote them.
	if _, err := os.Stat(filepath.Join(rootfs, "r.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("/r.json in the original rootfs: got %v, want it not to exist", err)
	}
	if fi, err := os.Stat(filepath.Join(p.Volume("out"), "nonroot.json")); err != nil || fi.Sys().(*syscall.Stat_t).Uid != 65532 {
		t.Errorf("the nonroot container's report on the host: %v, want it owned by 65532", err)
	}
}

// The process 1 of a container gets the signal and its own exit code comes
// back; a pod leaves nothing behind: its containers' processes, its
// network namespace.
func TestKillAndCleanup(t *testing.T) {
	t.Parallel()
	rootfs := appRoot(t)
	var name string
	var pid int
	t.Run("pod", func(t *testing.T) {
		p := pod.New(t)
		name = p.Name
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL, 0} {
			c := p.Start(pod.Container{Name: fmt.Sprintf("sig%d", sig), Rootfs: rootfs, Command: []string{"/app"},
				Env: []string{"APP_SIGNALS=1", "APP_EXIT=3"}})
			if err := c.WaitOutput("ready", 10*time.Second); err != nil {
				t.Fatal(err)
			}
			var err error
			if pid, err = c.PID(); err != nil || pid <= 1 {
				t.Fatalf("%s: host PID %d, %v; want > 1", c.Name, pid, err)
			}
			if sig == 0 {
				return // with the container running, as a failing test would
			}
			if err := c.Kill(sig); err != nil {
				t.Fatal(err)
			}
			want := map[syscall.Signal]int{syscall.SIGTERM: 3, syscall.SIGKILL: 137}[sig]
			if code := c.Wait(); code != want {
				t.Errorf("exit code after %v: got %d, want %d\n%s", sig, code, want, c.Stdout())
			}
			if err := c.Kill(syscall.SIGTERM); err == nil {
				t.Errorf("%s: Kill after exit: got no error, want one", c.Name)
			}
		}
	})
	if _, err := os.Stat(filepath.Join("/run/netns", name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns %s after cleanup: got %v, want it not to exist", name, err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("container process %d after cleanup: got %v, want ESRCH", pid, err)
	}
}

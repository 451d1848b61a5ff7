// Package pod runs Kubernetes-like pods under runc, for end-to-end tests.
//
// A Pod is what a kubelet would give a pod, built by hand: one network
// namespace shared by all its containers (so localhost is the same address
// for the app and its proxy), emptyDir volumes shared by bind mounts, and
// containers with their own root filesystems, run to completion (init
// containers, Run) or in the background (Start). A container's root is
// either a directory of static binaries (Scratch) or an OCI image layout
// (BuildImage, DockerfileImage) unpacked with umoci.
//
// Everything a pod creates is removed when its test ends, also when the
// test fails: its containers (runc delete --force), its network namespace
// and its directories. Each pod has its own runc state directory and
// random names, so tests may run in parallel.
//
// Pods need root, runc and ip (iproute2); images also need buildah and
// umoci. Without them tests are skipped, except under CI=true, where a
// skipped end-to-end test would hide a broken pipeline: there they fail.
package pod

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshgate/meshgate/test/testkit"
)

// toolTimeout bounds each short helper command (ip, runc spec, runc kill,
// umoci), so a wedged tool fails the test instead of hanging it.
const toolTimeout = 30 * time.Second

// Available skips t unless it runs as root with runc, ip and the given
// extra tools (such as "buildah" or "umoci") installed, as testkit.Need
// does.
func Available(t testing.TB, tools ...string) {
	t.Helper()
	testkit.Need(t, append([]string{"runc", "ip"}, tools...)...)
}

// Pod is a set of containers sharing a network namespace and volumes.
// Its methods must be called from the test goroutine, like t.Fatal.
type Pod struct {
	// Name names the network namespace (/run/netns/Name), prefixes the
	// runc container IDs and is the containers' hostname.
	Name string

	t    testing.TB
	dir  string // host side: bundles, volumes, files, runc logs
	root string // runc --root

	mu      sync.Mutex
	volumes map[string]string // name → host directory
	procs   []*Process        // in start order, for cleanup
}

// New creates an empty pod whose network namespace has only loopback, up.
// It skips t as Available does.
func New(t testing.TB) *Pod {
	t.Helper()
	Available(t)
	dir := t.TempDir()
	p := &Pod{
		// Random: parallel tests, and earlier runs killed before their
		// cleanup, won't collide on it.
		Name:    "pod-" + strings.ToLower(rand.Text()[:8]),
		t:       t,
		dir:     dir,
		root:    filepath.Join(dir, "runc"),
		volumes: map[string]string{},
	}
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	if _, err := command(ctx, "ip", "netns", "add", p.Name); err != nil {
		t.Fatal(err)
	}
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(p.cleanup)
	if _, err := command(ctx, "ip", "-n", p.Name, "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	t.Logf("pod %s in %s", p.Name, dir)
	return p
}

// Volume returns the host directory of the pod's emptyDir volume name,
// creating it on first use. Like an emptyDir it is world-writable, so
// containers running as any user can write to it.
func (p *Pod) Volume(name string) string {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if dir, ok := p.volumes[name]; ok {
		return dir
	}
	if !validName(name) {
		p.t.Fatalf("volume %q: want lower-case letters, digits and inner dashes", name)
	}
	dir := filepath.Join(p.dir, "volumes", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Fatal(err)
	}
	// Explicitly, because the umask would have taken the bits away.
	if err := os.Chmod(dir, 0o777); err != nil {
		p.t.Fatal(err)
	}
	p.volumes[name] = dir
	return dir
}

// validName reports whether name is a DNS label, as Kubernetes wants for
// container and volume names; that keeps them usable in runc container IDs
// and paths.
func validName(name string) bool {
	if len(name) == 0 || len(name) > 63 || name[0] == '-' || name[len(name)-1] == '-' {
		return false
	}
	for _, r := range name {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return false
		}
	}
	return true
}

// cleanup stops and deletes every container, then the network namespace.
// It reports what it could not remove as test errors, so leaks are seen.
func (p *Pod) cleanup() {
	p.mu.Lock()
	procs := slices.Clone(p.procs)
	p.mu.Unlock()

	for _, pr := range procs {
		pr.stop()
	}
	if p.t.Failed() {
		for _, pr := range procs {
			if !pr.ended() {
				continue // stop reported it
			}
			p.t.Logf("container %s: %s\nstdout:\n%s\nstderr:\n%s", pr.Name, pr.status(), pr.Stdout(), pr.Stderr())
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	if out, err := command(ctx, "runc", "--root", p.root, "list", "--quiet"); err != nil {
		p.t.Errorf("pod %s: %v", p.Name, err)
	} else if left := strings.Fields(string(out)); len(left) > 0 {
		p.t.Errorf("pod %s: containers left after cleanup: %v", p.Name, left)
	}
	if _, err := command(ctx, "ip", "netns", "del", p.Name); err != nil {
		p.t.Errorf("pod %s: %v", p.Name, err)
	}
}

// command runs a short helper tool, as run does.
func command(ctx context.Context, name string, args ...string) ([]byte, error) {
	return run(exec.CommandContext(ctx, name, args...))
}

// run runs cmd and returns its standard output. The error carries the
// command line and the standard error, where these tools explain themselves.
func run(cmd *exec.Cmd) ([]byte, error) {
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

package pod_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshgate/meshgate/test/pod"
)

// cache holds the hello binary and its image for all tests of this run; it
// lives as long as the test binary, which is what TestMain is for.
var cache *pod.Cache

func TestMain(m *testing.M) {
	c, err := pod.NewCache()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cache = c
	code := m.Run()
	if err := c.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	os.Exit(code)
}

// hello returns a scratch root filesystem holding only the hello program,
// as /hello.
func hello(t *testing.T) string {
	t.Helper()
	pod.Available(t)
	return pod.Scratch(t, map[string]string{"/hello": cache.Binary(t, "./test/pod/internal/hello")})
}

// wantOutput fails t unless out contains every one of want.
func wantOutput(t *testing.T, name, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: got output\n%s\nwant it to contain %q", name, out, w)
		}
	}
}

// helloServer starts a new pod whose container "server" runs hello
// listening on 127.0.0.1:8080, and waits until it listens. A fixed port is
// safe: each pod has a network namespace of its own.
func helloServer(t *testing.T) (p *pod.Pod, rootfs string, server *pod.Process) {
	t.Helper()
	rootfs = hello(t)
	p = pod.New(t)
	server = p.Start(pod.Container{Name: "server", Rootfs: rootfs,
		Command: []string{"/hello", "-listen", "127.0.0.1:8080"}})
	if err := server.WaitOutput("listening=", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return p, rootfs, server
}

func TestRunExitCodeAndEnvironment(t *testing.T) {
	t.Parallel()
	rootfs := hello(t)
	p := pod.New(t)
	got := p.Run(pod.Container{
		Name:    "job",
		Rootfs:  rootfs,
		Command: []string{"/hello", "-exit", "7", "two words"},
		Env:     []string{"A=1", "PATH=/bin", "A=2"},
	})
	if got.Code != 7 {
		t.Errorf("exit code: got %d, want 7", got.Code)
	}
	wantOutput(t, "job", got.Stdout,
		"pid=1\n",
		`args=["/hello","-exit","7","two words"]`,
		// Later entries replace earlier ones in place.
		fmt.Sprintf(`env=["PATH=/bin","HOSTNAME=%s","A=2","HOME=/"]`, p.Name),
	)
}

func TestLocalhostIsShared(t *testing.T) {
	t.Parallel()
	p, rootfs, server := helloServer(t)
	client := p.Run(pod.Container{Name: "client", Rootfs: rootfs,
		Command: []string{"/hello", "-connect", "127.0.0.1:8080"}})
	if client.Code != 0 {
		t.Errorf("client exit code: got %d, want 0\n%s", client.Code, client.Stdout)
	}
	wantOutput(t, "client", client.Stdout, `connect="hello"`)
	if code := server.Wait(); code != 0 {
		t.Errorf("server exit code: got %d, want 0\n%s", code, server.Stdout())
	}
}

func TestHosts(t *testing.T) {
	t.Parallel()
	p, rootfs, server := helloServer(t)

	// Without /etc/hosts a static Go program asks DNS for "localhost" and
	// fails at once: there is no DNS server in the pod.
	without := p.Run(pod.Container{Name: "without", Rootfs: rootfs,
		Command: []string{"/hello", "-connect", "localhost:8080"}})
	if without.Code != 1 {
		t.Errorf("without /etc/hosts, exit code: got %d, want 1\n%s", without.Code, without.Stdout)
	}
	wantOutput(t, "without", without.Stdout, "hosts=false", "lookup localhost")

	with := p.Run(pod.Container{Name: "with", Rootfs: rootfs, Hosts: true, ReadOnly: true,
		Command: []string{"/hello", "-connect", "localhost:8080", "-read", "/etc/hosts"}})
	if with.Code != 0 {
		t.Errorf("with /etc/hosts, exit code: got %d, want 0\n%s", with.Code, with.Stdout)
	}
	wantOutput(t, "with", with.Stdout, "hosts=true", `127.0.0.1\tlocalhost\n`, `connect="hello"`)
	if code := server.Wait(); code != 0 {
		t.Errorf("server exit code: got %d, want 0", code)
	}
}

func TestFiles(t *testing.T) {
	t.Parallel()
	rootfs := hello(t)
	p := pod.New(t)
	files := map[string]string{"/etc/app/config": "x=1\n"}
	got := p.Run(pod.Container{Name: "app", Rootfs: rootfs, ReadOnly: true, Files: files,
		Command: []string{"/hello", "-read", "/etc/app/config", "-write", "/etc/app/config"}})
	if got.Code != 1 {
		t.Errorf("exit code: got %d, want 1 (read-only file)", got.Code)
	}
	wantOutput(t, "app", got.Stdout, `read="x=1\n"`, "write=open /etc/app/config: read-only file system")
	if len(files) != 1 {
		t.Errorf("caller's files: got %v, want them untouched", files)
	}
}

func TestVolumeIsShared(t *testing.T) {
	t.Parallel()
	rootfs := hello(t)
	p := pod.New(t)
	writer := p.Run(pod.Container{Name: "writer", Rootfs: rootfs, User: "65532:65532",
		Command: []string{"/hello", "-write", "/shared/note"},
		Mounts:  []pod.Mount{{Volume: "data", Path: "/shared"}}})
	if writer.Code != 0 {
		t.Fatalf("writer exit code: got %d, want 0\n%s", writer.Code, writer.Stdout)
	}
	// The same volume, elsewhere and read-only, in another container.
	reader := p.Run(pod.Container{Name: "reader", Rootfs: rootfs,
		Command: []string{"/hello", "-read", "/data/note", "-write", "/data/other"},
		Mounts:  []pod.Mount{{Volume: "data", Path: "/data", ReadOnly: true}}})
	if reader.Code != 1 {
		t.Errorf("reader exit code: got %d, want 1 (read-only volume)", reader.Code)
	}
	wantOutput(t, "reader", reader.Stdout, `read="hello\n"`, "read-only file system")

	fi, err := os.Stat(filepath.Join(p.Volume("data"), "note"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Sys().(*syscall.Stat_t).Uid; got != 65532 {
		t.Errorf("owner of the file on the host: got %d, want 65532", got)
	}
}

func TestReadOnlyRoot(t *testing.T) {
	t.Parallel()
	rootfs := hello(t)
	p := pod.New(t)
	for _, tc := range []struct {
		name     string
		readOnly bool
		code     int
		out      string
	}{
		{name: "ro", readOnly: true, code: 1, out: "write=open /note: read-only file system"},
		{name: "rw", readOnly: false, code: 0, out: "write=ok"},
	} {
		got := p.Run(pod.Container{Name: tc.name, Rootfs: rootfs, ReadOnly: tc.readOnly,
			Command: []string{"/hello", "-write", "/note"}})
		if got.Code != tc.code {
			t.Errorf("%s: exit code: got %d, want %d", tc.name, got.Code, tc.code)
		}
		wantOutput(t, tc.name, got.Stdout, tc.out)
	}
	// Each container writes to a copy, as to a snapshot of its image.
	if _, err := os.Stat(filepath.Join(rootfs, "note")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("/note in the original rootfs: got %v, want it not to exist", err)
	}
}

func TestUserAndCapabilities(t *testing.T) {
	t.Parallel()
	rootfs := hello(t)
	p := pod.New(t)
	for _, tc := range []struct {
		name string
		c    pod.Container
		want []string
	}{
		{
			name: "nonroot",
			c:    pod.Container{User: "65532:65532"},
			want: []string{"uid=65532 gid=65532", "capbnd=0000000000000000 capeff=0000000000000000"},
		},
		{
			name: "uid-only",
			c:    pod.Container{User: "1000"},
			want: []string{"uid=1000 gid=0"},
		},
		{
			name: "root",
			c:    pod.Container{},
			want: []string{"uid=0 gid=0", "capbnd=0000000000000000 capeff=0000000000000000"},
		},
		{
			name: "root-bind-service",
			c:    pod.Container{Capabilities: []string{"CAP_NET_BIND_SERVICE"}},
			want: []string{"uid=0 gid=0", "capbnd=0000000000000400 capeff=0000000000000400"},
		},
		{
			// As in Kubernetes: bounded, but lost at exec by a non-root
			// process.
			name: "nonroot-bind-service",
			c:    pod.Container{User: "65532", Capabilities: []string{"CAP_NET_BIND_SERVICE"}},
			want: []string{"uid=65532 gid=0", "capbnd=0000000000000400 capeff=0000000000000000"},
		},
	} {
		tc.c.Name, tc.c.Rootfs, tc.c.Command = tc.name, rootfs, []string{"/hello"}
		got := p.Run(tc.c)
		if got.Code != 0 {
			t.Errorf("%s: exit code: got %d, want 0", tc.name, got.Code)
		}
		wantOutput(t, tc.name, got.Stdout, tc.want...)
	}
}

func TestKill(t *testing.T) {
	t.Parallel()
	rootfs := hello(t)
	p := pod.New(t)
	for _, tc := range []struct {
		name string
		args []string
		sig  syscall.Signal
		code int
	}{
		// The process 1 of the container gets the signal and its own
		// exit code comes back.
		{name: "trapped", args: []string{"-trap"}, sig: syscall.SIGTERM, code: 143},
		{name: "killed", args: []string{"-sleep", "1m"}, sig: syscall.SIGKILL, code: 137},
		// A Go process 1 that does not ask for SIGTERM: the runtime's
		// handler re-raises it, the kernel drops it (a namespace's init
		// gets only signals it handles), and the runtime exits 2. Hence
		// meshgate must catch the signals it wants to pass on.
		{name: "untrapped", args: []string{"-sleep", "1m"}, sig: syscall.SIGTERM, code: 2},
	} {
		c := p.Start(pod.Container{Name: tc.name, Rootfs: rootfs,
			Command: append([]string{"/hello"}, tc.args...)})
		if err := c.WaitOutput("hosts=", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if tc.args[0] == "-trap" {
			if err := c.WaitOutput("ready", 5*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		pid, err := c.PID()
		if err != nil {
			t.Fatal(err)
		}
		if pid <= 1 {
			t.Errorf("%s: host PID: got %d, want > 1", tc.name, pid)
		}
		if err := c.Kill(tc.sig); err != nil {
			t.Fatal(err)
		}
		if code := c.Wait(); code != tc.code {
			t.Errorf("%s: exit code after %v: got %d, want %d\n%s", tc.name, tc.sig, code, tc.code, c.Stdout())
		}
		if tc.code == 143 {
			wantOutput(t, tc.name, c.Stdout(), "term\n")
		}
		if err := c.Kill(syscall.SIGTERM); err == nil {
			t.Errorf("%s: Kill after exit: got no error, want one", tc.name)
		}
	}
}

// TestCleanup checks that a pod leaves nothing behind: its containers'
// processes, its network namespace.
func TestCleanup(t *testing.T) {
	t.Parallel()
	rootfs := hello(t)
	var name string
	var pid int
	t.Run("pod", func(t *testing.T) {
		p := pod.New(t)
		name = p.Name
		c := p.Start(pod.Container{Name: "sleeper", Rootfs: rootfs,
			Command: []string{"/hello", "-trap"}})
		if err := c.WaitOutput("ready", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		var err error
		if pid, err = c.PID(); err != nil {
			t.Fatal(err)
		}
		// Ends with the container running, as a failing test would.
	})
	if _, err := os.Stat(filepath.Join("/run/netns", name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("netns %s after cleanup: got %v, want it not to exist", name, err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("container process %d after cleanup: got %v, want ESRCH", pid, err)
	}
}

func TestImage(t *testing.T) {
	t.Parallel()
	pod.Available(t, "buildah", "umoci")
	bin := cache.Binary(t, "./test/pod/internal/hello")
	start := time.Now()
	img := cache.Image(t, bin)
	t.Logf("image built in %v", time.Since(start))
	p := pod.New(t)

	// The image's entrypoint and user apply: hello stands in for meshgate
	// and installs itself into the shared volume, as an init container.
	install := p.Run(pod.Container{Name: "install", Image: img, ReadOnly: true,
		Args:   []string{"-install", "/meshgate"},
		Mounts: []pod.Mount{{Volume: "bin", Path: "/meshgate"}}})
	if install.Code != 0 {
		t.Fatalf("install exit code: got %d, want 0\n%s", install.Code, install.Stdout)
	}
	wantOutput(t, "install", install.Stdout,
		`args=["/usr/local/bin/meshgate","-install","/meshgate"]`,
		"uid=65532 gid=65532",
		`"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"`,
		"install=/meshgate/meshgate")

	// The app container has nothing of its own: it runs the installed copy.
	app := p.Run(pod.Container{Name: "app", Rootfs: pod.Scratch(t, nil), ReadOnly: true, User: "65532:65532",
		Command: []string{"/meshgate/meshgate", "-exit", "3"},
		Mounts:  []pod.Mount{{Volume: "bin", Path: "/meshgate", ReadOnly: true}}})
	if app.Code != 3 {
		t.Errorf("app exit code: got %d, want 3\n%s", app.Code, app.Stdout)
	}

	// Command replaces the entrypoint and drops the image's command.
	cmd := p.Run(pod.Container{Name: "command", Image: img, Command: []string{"/usr/local/bin/meshgate", "-exit", "4"}})
	if cmd.Code != 4 {
		t.Errorf("command exit code: got %d, want 4\n%s", cmd.Code, cmd.Stdout)
	}

	// A second test asking for the same image gets the cached one.
	start = time.Now()
	if again := cache.Image(t, bin); *again != *img {
		t.Errorf("image again: got %v, want %v", again, img)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("cached image took %v", d)
	}
}

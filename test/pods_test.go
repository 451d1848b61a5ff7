package test

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshgate/meshgate/test/app/report"
	"github.com/meshgate/meshgate/test/pod"
	"github.com/meshgate/meshgate/test/testkit"
)

// The proxy's readiness endpoint inside every pod: its own network namespace.
const podReady = "http://localhost:15020/healthz/ready"

// meshPod is a pod as the examples describe it: the emulator as the mesh
// proxy, and meshgate installed into an emptyDir by an init container run
// from the image.
type meshPod struct {
	*pod.Pod
	t     *testing.T
	proxy *pod.Process
}

func newMeshPod(t *testing.T, phases string, proxyArgs ...string) *meshPod {
	t.Helper()
	mp, img := startProxy(t, phases, proxyArgs...)
	install := mp.Run(pod.Container{Name: "meshgate-install", Image: img, ReadOnly: true,
		Args:   []string{"install", "/meshgate"},
		Mounts: []pod.Mount{{Volume: "meshgate", Path: "/meshgate"}}})
	if install.Code != 0 || len(testkit.Logs(t, install.Stderr, "installed")) != 1 {
		t.Fatalf("init container: exit %d\n%s%s", install.Code, install.Stdout, install.Stderr)
	}
	return mp
}

// startProxy builds the meshgate image and starts a pod whose proxy
// container runs the emulator through phases, and waits until it serves.
func startProxy(t *testing.T, phases string, proxyArgs ...string) (*meshPod, *pod.Image) {
	t.Helper()
	pod.Available(t, "buildah", "umoci")
	img := pod.DockerfileImage(t, bins.meshgate)
	mp := &meshPod{Pod: pod.New(t), t: t}
	mp.proxy = mp.Start(pod.Container{Name: "proxy", User: "1337:1337", ReadOnly: true,
		Rootfs: pod.Scratch(t, map[string]string{"/emulator": bins.emulator}),
		Command: append([]string{"/emulator", "--listen", "127.0.0.1:15020", "--phases", phases,
			"--ready-file", "/out/ready"}, proxyArgs...),
		Mounts: []pod.Mount{{Volume: "out", Path: "/out"}}})
	if err := mp.proxy.WaitOutput("emulator ", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return mp, img
}

// app describes the app container: a scratch root holding only the static
// app, read-only, as a non-root user, running meshgate from the volume
// with args.
func (mp *meshPod) app(name string, hosts bool, args []string, env ...string) pod.Container {
	return pod.Container{Name: name, User: "65532:65532", ReadOnly: true, Hosts: hosts,
		Rootfs:  pod.Scratch(mp.t, map[string]string{"/app": bins.app}),
		Command: append([]string{"/meshgate/meshgate"}, args...),
		Env:     append([]string{"APP_REPORT=/out/" + name + ".json"}, env...),
		Mounts: []pod.Mount{{Volume: "meshgate", Path: "/meshgate", ReadOnly: true},
			{Volume: "out", Path: "/out"}}}
}

// report reads what the app of container name saw, or nil if it never ran.
func (mp *meshPod) report(name string) *report.Report {
	return testkit.ReadReport(mp.t, filepath.Join(mp.Volume("out"), name+".json"))
}

// readyAt is when the emulator turned ready.
func (mp *meshPod) readyAt() time.Time {
	b, err := os.ReadFile(filepath.Join(mp.Volume("out"), "ready"))
	if err != nil {
		mp.t.Fatalf("the proxy never turned ready: %v", err)
	}
	n, _ := strconv.ParseInt(string(b), 10, 64)
	return time.Unix(0, n)
}

// attempts reads "attempts" from meshgate's "proxy ready" line.
func attempts(t *testing.T, stderr string) int {
	t.Helper()
	ready := testkit.Logs(t, stderr, "proxy ready")
	if len(ready) != 1 {
		t.Fatalf("want one proxy ready line in\n%s", stderr)
	}
	return int(ready[0]["attempts"].(float64))
}

func TestPodHappyPath(t *testing.T) {
	t.Parallel()
	mp := newMeshPod(t, "closed,503,200") // each SIGUSR1 moves on
	argv := []string{"/app", "--port", "8080", "two words"}
	app := mp.Start(mp.app("app", true, append([]string{"--log-level", "debug", "--"}, argv...),
		"APP_FETCH="+podReady, "GREETING=hello world"))
	for _, seen := range []string{"connection refused", "answered 503"} {
		if err := app.WaitOutput(seen, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := mp.proxy.Kill(syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
	}
	if code := app.Wait(); code != 0 {
		t.Fatalf("app container: exit %d\n%s%s", code, app.Stdout(), app.Stderr())
	}
	r := mp.report("app")
	if r == nil {
		t.Fatal("the app never ran")
	}
	if r.PID != 1 {
		t.Errorf("app PID %d, want 1: exec'd in place of meshgate", r.PID)
	}
	if !slices.Equal(r.Argv, argv) || !slices.Contains(r.Env, "GREETING=hello world") || r.UID != 65532 {
		t.Errorf("app saw argv %q, uid %d, env %q", r.Argv, r.UID, r.Env)
	}
	if r.Fetch != "200 OK" {
		t.Errorf("the app's own request to the proxy on localhost got %q, want 200 OK", r.Fetch)
	}
	if started := time.Unix(0, r.StartNano); started.Before(mp.readyAt()) {
		t.Errorf("the app started at %v, before the proxy turned ready at %v", started, mp.readyAt())
	}
	if n := attempts(t, app.Stderr()); n < 2 {
		t.Errorf("ready after %d attempts, want several", n)
	}
}

// One proxy that is not ready until the test says so, and meshgate in
// every role that waits for it.
func TestPodNotReadyYet(t *testing.T) {
	t.Parallel()
	mp := newMeshPod(t, "503,200") // ready on SIGUSR1
	res := mp.Run(mp.app("fail", true, []string{"--timeout", "1s", "--", "/app"}))
	if res.Code != 69 || mp.report("fail") != nil || !strings.Contains(res.Stderr, `answered 503 Service Unavailable`) {
		t.Errorf("exit %d, app ran %v: want 69, no app, and the last error in the log\n%s", res.Code, mp.report("fail") != nil, res.Stderr)
	}
	res = mp.Run(mp.app("start", true, []string{"--timeout", "1s", "--on-timeout", "start", "--", "/app"}))
	if res.Code != 0 || mp.report("start") == nil {
		t.Errorf("--on-timeout start: exit %d, app ran %v: want 0 and the app run\n%s", res.Code, mp.report("start") != nil, res.Stderr)
	}
	// As an exec startup probe.
	probe := mp.app("probe", true, []string{"check"})
	if res := mp.Run(probe); res.Code != 1 {
		t.Errorf("check before ready: exit %d, want 1\n%s", res.Code, res.Stderr)
	}
	app := mp.Start(mp.app("deleted", true, []string{"--timeout", "0", "--", "/app"}))
	if err := app.WaitOutput(`"msg":"waiting for proxy"`, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	if err := app.Kill(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// A deleted pod must not sit out its grace period; typical is tens of
	// milliseconds.
	if code, took := app.Wait(), time.Since(sent); code != 143 || took > time.Second || mp.report("deleted") != nil {
		t.Errorf("SIGTERM: exit %d after %v, app ran %v; want 143 well within a second, and no app\n%s", code, took, mp.report("deleted") != nil, app.Stderr())
	}
	// As a postStart hook: waits until ready. Not "waiting for proxy":
	// that line comes before the first attempt; once this one is logged
	// an attempt has been answered "not ready".
	hook := mp.Start(mp.app("hook", true, []string{"wait", "--timeout", "20s", "--log-level", "debug"}))
	if err := hook.WaitOutput(`"msg":"proxy not ready"`, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := mp.proxy.Kill(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if code := hook.Wait(); code != 0 || attempts(t, hook.Stderr()) < 2 {
		t.Errorf("wait: exit %d, want 0 after several attempts\n%s", code, hook.Stderr())
	}
	probe.Name = "probe-again"
	if res := mp.Run(probe); res.Code != 0 {
		t.Errorf("check after ready: exit %d, want 0\n%s", res.Code, res.Stderr)
	}
}

// A Job: meshgate supervises the task and tells the proxy to quit. No
// /etc/hosts: meshgate still finds the proxy on "localhost", which the
// task itself cannot resolve.
func TestPodJobCompletes(t *testing.T) {
	t.Parallel()
	mp := newMeshPod(t, "closed:200ms,503:300ms,200", "--quit-path", "/quitquitquit")
	res := mp.Run(mp.app("job", false, []string{"--quit", "--", "/app", "migrate"}, "APP_EXIT=3", "APP_FETCH="+podReady))
	r := mp.report("job")
	if res.Code != 3 || r == nil || len(testkit.Logs(t, res.Stderr, "proxy told to quit")) != 1 {
		t.Fatalf("job: exit %d, want the app's 3, and the proxy told to quit\n%s", res.Code, res.Stderr)
	}
	if r.Hosts || !strings.Contains(r.Fetch, "lookup localhost") {
		t.Errorf("the task saw an /etc/hosts (%v), or resolved localhost (%q)", r.Hosts, r.Fetch)
	}
	// The proxy was told to quit, and its container ends: the pod completes.
	select {
	case <-mp.proxy.Done():
	case <-time.After(testkit.Timeout):
		t.Fatalf("the proxy still runs after the job\n%s", mp.proxy.Stderr())
	}
	if code := mp.proxy.Wait(); code != 0 || !strings.Contains(mp.proxy.Stderr(), "told to quit") {
		t.Errorf("proxy container: exit %d\n%s", code, mp.proxy.Stderr())
	}
}

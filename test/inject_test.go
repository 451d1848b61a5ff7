package test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/meshgate/meshgate/test/pod"
	"github.com/meshgate/meshgate/test/registry"
)

// The plain Deployment and Job of examples/inject go through the built
// meshgate-inject (reading the Job's ENTRYPOINT from a registry), and the
// pods it describes run under runc: the init
// container it added (from the meshgate image), and the app container with
// the command, args, mounts, user and read-only root it was given. The
// mesh's proxy is the emulator, as the mesh would add it.

// injectExamples runs meshgate-inject --resolve over the plain examples
// and returns the injected Deployment and Job, decoded strictly. The Job's
// image is served by a registry on loopback that asks for basic auth,
// with the credentials in a Docker config file: its ENTRYPOINT is
// /app/server.
func injectExamples(t *testing.T) (*appsv1.Deployment, *batchv1.Job) {
	t.Helper()
	job, err := os.ReadFile("../examples/inject/plain/job.yaml")
	if err != nil {
		t.Fatal(err)
	}
	image, dockerConfig := privateImage(t, []string{"/app/server"}, []string{"serve"})
	if !bytes.Contains(job, []byte("image: example.com/app:1.0")) {
		t.Fatal("examples/inject/plain/job.yaml: no image example.com/app:1.0 to replace")
	}
	jobFile := filepath.Join(t.TempDir(), "job.yaml")
	if err := os.WriteFile(jobFile, bytes.Replace(job, []byte("example.com/app:1.0"), []byte(image), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bins.inject, "--resolve", "../examples/inject/plain/deployment.yaml", jobFile)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+dockerConfig)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("meshgate-inject: %v\n%s", err, stderr.String())
	}
	docs := strings.Split(stdout.String(), "\n---\n")
	if len(docs) != 2 {
		t.Fatalf("got %d documents, want 2:\n%s", len(docs), stdout.String())
	}
	var d appsv1.Deployment
	var j batchv1.Job
	if err := yaml.UnmarshalStrict([]byte(docs[0]), &d); err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict([]byte(docs[1]), &j); err != nil {
		t.Fatal(err)
	}
	if want := "image " + image + ` has ENTRYPOINT ["/app/server"] and CMD ["serve"]`; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
	}
	return &d, &j
}

// privateImage serves an image with this ENTRYPOINT and CMD from a
// registry on a loopback port, behind basic auth, and returns its
// reference and a Docker config directory that holds the credentials, as
// docker login writes them.
func privateImage(t *testing.T, entrypoint, cmd []string) (string, string) {
	t.Helper()
	reg := registry.Start(t, "puller", "s3cret")
	ref, _ := reg.Push(t, "team/app:1.0", entrypoint, cmd)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, reg.Host, base64.StdEncoding.EncodeToString([]byte("puller:s3cret")))
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return ref, dir
}

// injectedPod starts the proxy emulator, then runs the pod spec's init
// containers to completion, as the kubelet would.
func injectedPod(t *testing.T, spec corev1.PodSpec, phases string, proxyArgs ...string) *meshPod {
	t.Helper()
	if len(spec.InitContainers) != 1 || spec.InitContainers[0].Name != "meshgate-install" {
		t.Fatalf("init containers %+v, want meshgate-install only", spec.InitContainers)
	}
	mp, img := startProxy(t, phases, proxyArgs...)
	p := mp.Pod
	ic := spec.InitContainers[0]
	c := fromManifest(t, spec, ic)
	c.Image = img // the meshgate image, built here, stands for ic.Image
	if !strings.HasPrefix(ic.Image, "ghcr.io/meshgate/meshgate:") {
		t.Errorf("install image %s, want meshgate's", ic.Image)
	}
	res := p.Run(c)
	if res.Code != 0 || !strings.Contains(res.Stderr, `"msg":"installed"`) {
		t.Fatalf("init container: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	return mp
}

// fromManifest turns a container of a pod spec into a pod.Container: its
// command and args, env, mounts of emptyDir volumes, user and read-only
// root. An app container gets a scratch root holding the test app at the
// path its command names after "--", and reports to /out.
func fromManifest(t *testing.T, spec corev1.PodSpec, c corev1.Container) pod.Container {
	t.Helper()
	pc := pod.Container{Name: c.Name, Command: c.Command, Args: c.Args, Hosts: true}
	for _, e := range c.Env {
		pc.Env = append(pc.Env, e.Name+"="+e.Value)
	}
	for _, m := range c.VolumeMounts {
		if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name && v.EmptyDir != nil }) {
			t.Fatalf("container %s mounts %s, not an emptyDir of the pod", c.Name, m.Name)
		}
		pc.Mounts = append(pc.Mounts, pod.Mount{Volume: m.Name, Path: m.MountPath, ReadOnly: m.ReadOnly})
	}
	sc := c.SecurityContext
	if sc == nil || sc.RunAsUser == nil || sc.RunAsGroup == nil || sc.ReadOnlyRootFilesystem == nil {
		t.Fatalf("container %s: securityContext %+v lacks a user, group or read-only root", c.Name, sc)
	}
	pc.User = strings.Join([]string{itoa(*sc.RunAsUser), itoa(*sc.RunAsGroup)}, ":")
	pc.ReadOnly = *sc.ReadOnlyRootFilesystem
	if cut := slices.Index(c.Command, "--"); cut >= 0 && cut+1 < len(c.Command) {
		pc.Rootfs = pod.Scratch(t, map[string]string{c.Command[cut+1]: bins.app})
		pc.Env = append(pc.Env, "APP_REPORT=/out/"+c.Name+".json", "APP_FETCH="+podReady)
		pc.Mounts = append(pc.Mounts, pod.Mount{Volume: "out", Path: "/out"})
	}
	return pc
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestPodInjectedDeployment(t *testing.T) {
	t.Parallel()
	d, _ := injectExamples(t)
	spec := d.Spec.Template.Spec
	mp := injectedPod(t, spec, "closed,503,200") // each SIGUSR1 moves on
	c := spec.Containers[0]
	if path.Base(c.Command[0]) != "meshgate" {
		t.Fatalf("command %q: not wrapped", c.Command)
	}
	app := mp.Start(fromManifest(t, spec, c))
	for _, seen := range []string{"connection refused", "answered 503"} {
		if err := app.WaitOutput(seen, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if mp.report(c.Name) != nil {
			t.Fatal("the app started before the proxy was ready")
		}
		if err := mp.proxy.Kill(syscall.SIGUSR1); err != nil {
			t.Fatal(err)
		}
	}
	if code := app.Wait(); code != 0 {
		t.Fatalf("app container: exit %d\n%s%s", code, app.Stdout(), app.Stderr())
	}
	r := mp.report(c.Name)
	if r == nil {
		t.Fatal("the app never ran")
	}
	if want := []string{"/app/server", "--port", "8080"}; !slices.Equal(r.Argv, want) || r.PID != 1 || r.UID != 65532 {
		t.Errorf("the app ran as %q, PID %d, UID %d; want %q as PID 1, UID 65532: its own command, exec'd", r.Argv, r.PID, r.UID, want)
	}
	if r.Fetch != "200 OK" {
		t.Errorf("the app's request to the proxy got %q, want 200 OK", r.Fetch)
	}
	if started := time.Unix(0, r.StartNano); started.Before(mp.readyAt()) {
		t.Errorf("the app started at %v, before the proxy turned ready at %v", started, mp.readyAt())
	}
}

func TestPodInjectedJob(t *testing.T) {
	t.Parallel()
	_, j := injectExamples(t)
	spec := j.Spec.Template.Spec
	mp := injectedPod(t, spec, "closed:200ms,503:300ms,200", "--quit-path", "/quitquitquit")
	c := spec.Containers[0]
	if !slices.Contains(c.Command, "--quit") {
		t.Fatalf("command %q: want --quit for a Job", c.Command)
	}
	res := mp.Run(fromManifest(t, spec, c))
	if res.Code != 0 {
		t.Fatalf("job container: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	r := mp.report(c.Name)
	if want := []string{"/app/server", "migrate", "--to", "latest"}; r == nil || !slices.Equal(r.Argv, want) {
		t.Fatalf("the task ran as %+v, want argv %q: the image's ENTRYPOINT (read from the registry) and the manifest's args", r, want)
	}
	if started := time.Unix(0, r.StartNano); started.Before(mp.readyAt()) {
		t.Errorf("the task started at %v, before the proxy turned ready at %v", started, mp.readyAt())
	}
	// The pod, and the Job, complete.
	mp.proxyQuits(t, "task")
}

// proxyQuits checks that the proxy was told to quit after what ran, and
// that its container ended with 0.
func (mp *meshPod) proxyQuits(t *testing.T, what string) {
	t.Helper()
	select {
	case <-mp.proxy.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("the proxy still runs after the %s\n%s", what, mp.proxy.Stderr())
	}
	if code := mp.proxy.Wait(); code != 0 || !strings.Contains(mp.proxy.Stderr(), "told to quit") {
		t.Errorf("proxy container: exit %d\n%s", code, mp.proxy.Stderr())
	}
}

// TestInjectBinaryExitCodes: the built meshgate-inject's exit codes, and
// nothing on stdout unless it succeeded.
func TestInjectBinaryExitCodes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args  []string
		stdin string
		code  int
		want  string // on stderr
	}{
		{[]string{"--help"}, "", 0, ""},
		{[]string{"--bogus"}, "", 2, "meshgate-inject: unknown flag: --bogus"},
		{nil, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: a: b\n", 1, "meshgate-inject: <stdin>:5: mapping values are not allowed in this context"},
		{nil, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: app\n      image: x\n", 1,
			"meshgate-inject: <stdin>: document 1: Pod/p: container app sets no command"},
		{[]string{"-q"}, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: app\n      command: [/app]\n", 0, ""},
	} {
		cmd := exec.Command(bins.inject, tc.args...)
		cmd.Stdin = strings.NewReader(tc.stdin)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := cmd.ProcessState.ExitCode()
		if err != nil && code < 0 {
			t.Fatal(err)
		}
		if code != tc.code || !strings.Contains(stderr.String(), tc.want) || (code != 0) != (stdout.Len() == 0) {
			t.Errorf("%q: exit %d, stdout %d bytes, stderr %q; want exit %d, output only on success, and %q",
				tc.args, code, stdout.Len(), stderr.String(), tc.code, tc.want)
		}
	}
}

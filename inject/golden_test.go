package inject

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden/out")

// images stands in for a registry in the golden tests (registry_test.go
// has the real one): image → ENTRYPOINT, CMD.
type images map[string][2][]string

func (m images) ImageConfig(_ context.Context, image string) ([]string, []string, error) {
	c, ok := m[image]
	if !ok {
		return nil, nil, fmt.Errorf("image %s: not found", image)
	}
	return c[0], c[1], nil
}

var corpusImages = images{
	"registry.example/app:1":      {{"/app/server"}, {"--port", "8080"}},
	"registry.example/web:1":      {{"/web"}, {"--listen", ":80"}},
	"registry.example/db:1":       {{"docker-entrypoint.sh"}, {"postgres"}},
	"registry.example/report:1":   {{"/report"}, nil},
	"registry.example/cmd-only:1": {nil, {"/app/server", "--port", "8080"}},
	"registry.example/agent:1":    {{"/agent"}, nil},
	"registry.example/task:1":     {{"/task"}, nil},
}

// corpusOptions are the options each golden input is injected with.
func corpusOptions(name string) Options {
	o := Options{Resolver: corpusImages, Image: "ghcr.io/meshgate/meshgate:v1.0.0"}
	if name == "chosen.yaml" {
		o.GateFlags = []string{"--timeout=5m", "--log-level=debug"}
	}
	return o
}

// TestGolden injects every manifest of the corpus and compares the result
// with its golden file; then checks that the output decodes strictly into
// the Kubernetes API types, that each wrapped container runs what it ran
// before behind the gate, that a second injection changes nothing, and
// that uninjecting gives the input back, byte for byte.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/golden/*.*")
	if err != nil || len(files) < 10 {
		t.Fatalf("corpus: %v, %d files", err, len(files))
	}
	for _, file := range files {
		name := filepath.Base(file)
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var notes []string
			s := &Stream{Options: corpusOptions(name), Note: func(n string) { notes = append(notes, n) }}
			out, err := s.Process(t.Context(), name, in)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata/golden/out", name)
			if *update {
				if err := os.WriteFile(golden, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, want) {
				t.Errorf("output differs from %s (go test ./inject -update rewrites it):\n%s", golden, out)
			}
			checkDocuments(t, name, in, out)

			again, err := s.Process(t.Context(), name, out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, out) {
				t.Errorf("a second injection changed the output:\n%s", again)
			}
			un := &Stream{Uninject: true}
			back, err := un.Process(t.Context(), name, out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back, in) {
				t.Errorf("uninject did not give the input back:\n%s", back)
			}
			if len(notes) == 0 && !bytes.Equal(in, out) {
				t.Error("no notes")
			}
		})
	}
}

// checkDocuments decodes every document of in and out strictly and
// compares their containers.
func checkDocuments(t *testing.T, name string, in, out []byte) {
	t.Helper()
	if strings.HasSuffix(name, ".json") {
		compareObjects(t, in, out)
		return
	}
	ins, outs := splitDocuments(in), splitDocuments(out)
	if len(ins) != len(outs) {
		t.Fatalf("%d documents in, %d out", len(ins), len(outs))
	}
	for i := range ins {
		if bytes.Equal(ins[i].body, outs[i].body) {
			continue
		}
		compareObjects(t, ins[i].body, outs[i].body)
	}
}

func compareObjects(t *testing.T, in, out []byte) {
	t.Helper()
	var meta struct{ Kind string }
	if err := sigsyaml.Unmarshal(out, &meta); err != nil {
		t.Fatal(err)
	}
	if meta.Kind == "List" {
		var lin, lout corev1.List
		strict(t, in, &lin)
		strict(t, out, &lout)
		for i := range lout.Items {
			compareObjects(t, lin.Items[i].Raw, lout.Items[i].Raw)
		}
		return
	}
	a, b := podSpec(t, meta.Kind, in), podSpec(t, meta.Kind, out)
	if b == nil {
		return
	}
	if len(a.Containers) != len(b.Containers) {
		t.Fatalf("containers: %d in, %d out", len(a.Containers), len(b.Containers))
	}
	wrappedAny := false
	for i, c := range b.Containers {
		orig := a.Containers[i]
		image := corpusImages[c.Image]
		if len(c.Command) == 0 || c.Command[0] != Gate || slices.Contains(orig.Command, Gate) {
			if !slices.Equal(c.Command, orig.Command) || !slices.Equal(c.Args, orig.Args) {
				t.Errorf("container %s not wrapped, yet changed", c.Name)
			}
			continue
		}
		wrappedAny = true
		cut := slices.Index(c.Command, "--")
		got := argv(c, image)
		want := append(slices.Clone(c.Command[:cut+1]), argv(orig, image)...)
		if !slices.Equal(got, want) {
			t.Errorf("container %s runs %q, want %q: the gate, then what it ran before", c.Name, got, want)
		}
		if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.Name == Volume && m.MountPath == MountPath && m.ReadOnly
		}) {
			t.Errorf("container %s: no read-only mount of the volume", c.Name)
		}
	}
	if !wrappedAny {
		return
	}
	install := b.InitContainers[len(b.InitContainers)-1]
	sc := install.SecurityContext
	if install.Name != InstallContainer || !slices.Equal(install.Args, []string{"install", MountPath}) ||
		sc == nil || !*sc.RunAsNonRoot || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault ||
		install.Resources.Limits.Memory().IsZero() {
		t.Errorf("install container: %+v", install)
	}
	v := b.Volumes[len(b.Volumes)-1]
	if v.Name != Volume || v.EmptyDir == nil {
		t.Errorf("volume: %+v", v)
	}
}

// argv is what the kubelet runs for c in an image with that ENTRYPOINT
// and CMD.
func argv(c corev1.Container, image [2][]string) []string {
	switch {
	case len(c.Command) > 0:
		return slices.Concat(c.Command, c.Args)
	case len(c.Args) > 0:
		return slices.Concat(image[0], c.Args)
	default:
		return slices.Concat(image[0], image[1])
	}
}

// podSpec decodes a workload strictly into its API type and returns its
// pod spec; nil for other kinds (which are decoded strictly too, where the
// type is at hand).
func podSpec(t *testing.T, kind string, doc []byte) *corev1.PodSpec {
	t.Helper()
	switch {
	case kind == "Deployment" && strings.Contains(string(doc), "example.com/v1"):
		return nil // a custom resource of the same kind
	case kind == "Service":
		decodeStrict[corev1.Service](t, doc)
	case kind == "ConfigMap":
		decodeStrict[corev1.ConfigMap](t, doc)
	case podSpecs[kind] != nil:
		return podSpecs[kind](t, doc)
	}
	return nil
}

// podSpecs decode each workload kind strictly and find its pod spec.
var podSpecs = map[string]func(*testing.T, []byte) *corev1.PodSpec{
	"Pod":                   specOf(func(o *corev1.Pod) *corev1.PodSpec { return &o.Spec }),
	"Deployment":            specOf(func(o *appsv1.Deployment) *corev1.PodSpec { return &o.Spec.Template.Spec }),
	"StatefulSet":           specOf(func(o *appsv1.StatefulSet) *corev1.PodSpec { return &o.Spec.Template.Spec }),
	"DaemonSet":             specOf(func(o *appsv1.DaemonSet) *corev1.PodSpec { return &o.Spec.Template.Spec }),
	"ReplicaSet":            specOf(func(o *appsv1.ReplicaSet) *corev1.PodSpec { return &o.Spec.Template.Spec }),
	"ReplicationController": specOf(func(o *corev1.ReplicationController) *corev1.PodSpec { return &o.Spec.Template.Spec }),
	"Job":                   specOf(func(o *batchv1.Job) *corev1.PodSpec { return &o.Spec.Template.Spec }),
	"CronJob":               specOf(func(o *batchv1.CronJob) *corev1.PodSpec { return &o.Spec.JobTemplate.Spec.Template.Spec }),
}

// specOf decodes a document strictly into a T and finds its pod spec with
// spec.
func specOf[T any](spec func(*T) *corev1.PodSpec) func(*testing.T, []byte) *corev1.PodSpec {
	return func(t *testing.T, doc []byte) *corev1.PodSpec { return spec(decodeStrict[T](t, doc)) }
}

// decodeStrict decodes doc strictly into a new T.
func decodeStrict[T any](t *testing.T, doc []byte) *T {
	t.Helper()
	var o T
	strict(t, doc, &o)
	return &o
}

func strict(t *testing.T, doc []byte, v any) {
	t.Helper()
	if err := sigsyaml.UnmarshalStrict(doc, v); err != nil {
		t.Fatalf("strict decode into %T: %v\n%s", v, err, doc)
	}
}

package inject

import (
	"context"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// TestUninjectKeepsLaterAdditions injects a pod that has no init
// containers, volumes or annotations, lets a later admission webhook (a
// mesh injector) add its own, and takes the wiring out again: the mesh's
// additions stay, meshgate's go.
func TestUninjectKeepsLaterAdditions(t *testing.T) {
	pod, err := yaml.Parse(`apiVersion: v1
kind: Pod
spec:
  containers:
    - name: app
      image: example.com/app:1
      command: ["/app/server"]
`)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Template(context.Background(), pod, false, Options{Preset: "istio"})
	if err != nil || !res.Changed {
		t.Fatalf("Template: changed %v, %v", res.Changed, err)
	}
	for _, f := range []yaml.Filter{
		yaml.Tee(yaml.LookupCreate(yaml.MappingNode, "metadata", "annotations"), yaml.SetField("sidecar.istio.io/status", yaml.NewStringRNode("{}"))),
		yaml.Tee(yaml.Lookup("spec", "initContainers"), yaml.Append(yaml.MustParse("name: istio-proxy\nimage: proxyv2\nrestartPolicy: Always\n").YNode())),
		yaml.Tee(yaml.Lookup("spec", "volumes"), yaml.Append(yaml.MustParse("name: istio-envoy\nemptyDir: {}\n").YNode())),
	} {
		if _, err := pod.Pipe(f); err != nil {
			t.Fatal(err)
		}
	}
	if res, err = Uninject(pod); err != nil || !res.Changed {
		t.Fatalf("Uninject: changed %v, %v", res.Changed, err)
	}
	got := pod.MustString()
	for _, want := range []string{"sidecar.istio.io/status", "name: istio-proxy", "name: istio-envoy"} {
		if !strings.Contains(got, want) {
			t.Errorf("Uninject lost %q, which a later webhook added:\n%s", want, got)
		}
	}
	for _, gone := range []string{InstallContainer, AnnotationInjected, Gate, "name: " + Volume + "\n"} {
		if strings.Contains(got, gone) {
			t.Errorf("Uninject left %q:\n%s", gone, got)
		}
	}
}

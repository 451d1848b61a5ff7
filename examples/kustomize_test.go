package examples_test

import (
	"os"
	"path"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"
)

// overlays lists the kustomizations that no other one uses: the ones a
// user builds. A base has no meshgate yet, and a component cannot be
// built on its own.
func overlays(t *testing.T, dirs []string) []string {
	t.Helper()
	used := map[string]bool{}
	for _, dir := range dirs {
		// kustomize reads the file strictly when it builds it.
		var k struct{ Resources, Components []string }
		data, err := os.ReadFile(path.Join(dir, "kustomization.yaml"))
		if err == nil {
			err = yaml.Unmarshal(data, &k)
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range slices.Concat(k.Resources, k.Components) {
			used[path.Join(dir, r)] = true
		}
	}
	return slices.DeleteFunc(slices.Clone(dirs), func(dir string) bool { return used[dir] })
}

// TestKustomizeOverlays builds each overlay with the real kustomize and
// checks every workload as TestExamples does: the component must add the
// emptyDir, the init container that installs meshgate into it, the
// read-only mount and meshgate in front of the app's command, hardened.
// kustomize rejects unknown fields and patches that do not apply, and what
// it builds decodes strictly, so a mistake in any file of the overlay, its
// base or its component fails here.
func TestKustomizeOverlays(t *testing.T) {
	kustomize := tool(t, "kustomize")
	_, dirs := walkExamples(t)
	top := overlays(t, dirs)
	if len(top) == 0 {
		t.Fatalf("found no overlay among the kustomizations %q", dirs)
	}
	for _, dir := range top {
		t.Run(dir, func(t *testing.T) {
			out := runTool(t, nil, kustomize, "build", dir)
			if kinds := checkInjected(t, out); len(kinds) == 0 {
				t.Errorf("kustomize build %s: got no workload:\n%s", dir, out)
			}
		})
	}
}

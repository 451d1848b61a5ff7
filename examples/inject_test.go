package examples_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/meshgate/meshgate/test/testkit"
)

// The examples under inject/ have no meshgate in them: these tests run
// meshgate-inject over them the three ways the README shows (a filter, a
// Helm post-renderer, a kustomize function), with the real helm and
// kustomize, and check what comes out as TestExamples checks the other
// examples.

// injector returns meshgate-inject: MESHGATE_INJECT_BIN, or one built for
// the run.
func injector(t *testing.T) string {
	t.Helper()
	return testkit.Inject(t)
}

// tool finds helm or kustomize on the PATH or where go install puts it.
// Missing, it skips the test, or fails it under CI=true: .ci/run installs
// both, and a skipped test there would hide a broken pipeline.
func tool(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			if p := filepath.Join(dir, "bin", name); isExecutable(p) {
				return p
			}
		}
	}
	msg := fmt.Sprintf("%s is not installed (neither on the PATH nor in $(go env GOPATH)/bin); .ci/run installs it with go install", name)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI=true, so this fails instead of skipping")
	}
	t.Skip(msg)
	return ""
}

// runTool runs a command and returns its stdout; it fails t on any exit
// but 0.
func runTool(t *testing.T, env []string, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// checkInjected checks every workload of a YAML stream as TestExamples
// does, and returns the kinds of the workloads it found.
func checkInjected(t *testing.T, out []byte) []string {
	t.Helper()
	b := meshgate(t)
	var kinds []string
	for i, part := range separator.Split(string(out), -1) {
		js, err := yaml.YAMLToJSONStrict([]byte(part))
		if err != nil {
			t.Fatalf("document %d: %v", i, err)
		}
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(js, &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "", "Service", "Kustomization":
			continue // comments only, or not a workload
		}
		obj, err := decodeObject(js)
		if err != nil {
			t.Fatalf("document %d: %v\n%s", i, err, part)
		}
		tmpl := podTemplate(obj)
		if len(tmpl.Spec.Containers) == 0 {
			continue
		}
		kinds = append(kinds, fmt.Sprintf("%T", obj))
		for _, err := range checkPod(b, tmpl) {
			t.Errorf("document %d: %v", i, err)
		}
	}
	slices.Sort(kinds)
	return kinds
}

var wantKinds = []string{"*v1.Deployment", "*v1.Job"}

// TestInjectFilter: meshgate-inject DIR, then --uninject gives the files
// back.
func TestInjectFilter(t *testing.T) {
	bin := injector(t)
	out := runTool(t, nil, bin, "-q", "--entrypoint", `migrate=["/app/server"]`, "inject/plain/")
	if kinds := checkInjected(t, out); !slices.Equal(kinds, wantKinds) {
		t.Errorf("workloads %q, want %q", kinds, wantKinds)
	}
	if !bytes.Contains(out, []byte("- --quit\n")) || !bytes.Contains(out, []byte("- /app/server\n")) {
		t.Errorf("the Job lacks --quit or its ENTRYPOINT:\n%s", out)
	}
	var in []byte
	for i, f := range []string{"deployment.yaml", "job.yaml", "kustomization.yaml"} {
		b, err := os.ReadFile(filepath.Join("inject/plain", f))
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			in = append(in, "---\n"...)
		}
		in = append(in, b...)
	}
	cmd := exec.Command(bin, "-q", "--uninject")
	cmd.Stdin = bytes.NewReader(out)
	back, err := cmd.Output()
	if err != nil || !bytes.Equal(back, in) {
		t.Errorf("--uninject: %v; want the files as they are, got:\n%s", err, back)
	}
	again := exec.Command(bin, "-q", "--entrypoint", `migrate=["/app/server"]`)
	again.Stdin = bytes.NewReader(out)
	if twice, err := again.Output(); err != nil || !bytes.Equal(twice, out) {
		t.Errorf("injecting twice: %v; want the same bytes, got:\n%s", err, twice)
	}
}

// TestInjectHelmPostRenderer: helm template --post-renderer meshgate-inject.
func TestInjectHelmPostRenderer(t *testing.T) {
	helm := tool(t, "helm")
	bin := injector(t)
	env := []string{"HELM_CACHE_HOME=" + t.TempDir(), "HELM_CONFIG_HOME=" + t.TempDir(), "HELM_DATA_HOME=" + t.TempDir()}
	plain := runTool(t, env, helm, "template", "demo", "inject/chart")
	out := runTool(t, env, helm, "template", "demo", "inject/chart", "--post-renderer", bin,
		"--post-renderer-args", "--gate-flag=--timeout=5m")
	if kinds := checkInjected(t, out); !slices.Equal(kinds, wantKinds) {
		t.Errorf("workloads %q, want %q", kinds, wantKinds)
	}
	if !bytes.Contains(out, []byte(`"--timeout=5m"`)) {
		t.Errorf("--post-renderer-args did not reach meshgate-inject:\n%s", out)
	}
	cmd := exec.Command(bin, "-q", "--uninject")
	cmd.Stdin = bytes.NewReader(out)
	back, err := cmd.Output()
	if err != nil || !bytes.Equal(back, plain) {
		t.Errorf("--uninject of the post-rendered chart: %v; want helm's own output, got:\n%s", err, back)
	}
}

// TestInjectKustomizeFunction: kustomize build with meshgate-inject as an
// exec KRM function, its options in a ConfigMap.
func TestInjectKustomizeFunction(t *testing.T) {
	kustomize := tool(t, "kustomize")
	bin := injector(t)
	// The function's path is "meshgate-inject", found on the PATH.
	dir := t.TempDir()
	if err := os.Symlink(bin, filepath.Join(dir, "meshgate-inject")); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + dir + string(os.PathListSeparator) + os.Getenv("PATH")}
	out := runTool(t, env, kustomize, "build", "--enable-alpha-plugins", "--enable-exec", "inject/kustomize")
	if kinds := checkInjected(t, out); !slices.Equal(kinds, wantKinds) {
		t.Errorf("workloads %q, want %q", kinds, wantKinds)
	}
	for _, want := range []string{"- --timeout=5m\n", "- /app/server\n", "- --quit\n"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

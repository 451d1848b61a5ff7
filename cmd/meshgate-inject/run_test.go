package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// oneImage stands in for the registry (inject's tests use a real one): it
// knows example.com/app:1 and nothing else.
type oneImage struct{}

func (oneImage) ImageConfig(_ context.Context, image string) ([]string, []string, error) {
	if image != "example.com/app:1" {
		return nil, nil, fmt.Errorf("image %s: MANIFEST_UNKNOWN", image)
	}
	return []string{"/app/server"}, []string{"--port", "8080"}, nil
}

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
      annotations:
        linkerd.io/inject: enabled
    spec:
      containers:
        - name: app
          image: example.com/app:1
`

const service = `apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  ports:
    - port: 80
`

type result struct {
	code           int
	stdout, stderr string
}

func runWith(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(t.Context(), args, strings.NewReader(stdin), &out, &errb, oneImage{})
	return result{code, out.String(), errb.String()}
}

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	f := write(t, dir, "d.yaml", deployment)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--presett", "istio", f}, "unknown flag: --presett"},
		{[]string{"--preset", "nginx", f}, `preset "nginx": want one of istio, linkerd, envoy, consul, kuma`},
		{[]string{"--entrypoint", "app", f}, `--entrypoint "app": want CONTAINER=JSON-ARRAY`},
		{[]string{"--entrypoint", "app=/app/server", f}, `--entrypoint "app=/app/server": /app/server is not a JSON array of strings`},
		{[]string{"--entrypoint", `app=["/a"]`, "--entrypoint", `app=["/b"]`, f}, `--entrypoint: container "app" given twice`},
		{[]string{"--cmd", `app={}`, f}, `--cmd "app={}"`},
		{[]string{"--gate-flag", "timeout=5m", f}, `gate flag "timeout=5m": not a flag`},
		{[]string{"--gate-flag=--", f}, `gate flag "--"`},
		{[]string{"--gate-flag=--timout=5m", f}, `gate flag "--timout=5m": meshgate has no flag --timout`},
		{[]string{"--gate-flag=--timeout", "--gate-flag=5m", f}, `gate flag "--timeout": give the value in the same flag, as --timeout=VALUE`},
		{[]string{"--gate-flag=--preset=kuma", f}, `use --preset`},
		{[]string{"--platform", "linux/arm64", f}, "--platform needs --resolve"},
		{[]string{filepath.Join(dir, "missing.yaml")}, "missing.yaml: no such file or directory"},
		{[]string{"-", "-"}, `"-" (standard input) given more than once`},
	} {
		r := runWith(t, "", tc.args...)
		if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, tc.want) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2, nothing, one line with %q", tc.args, r.code, r.stdout, r.stderr, tc.want)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	r := runWith(t, "", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "--uninject") || !strings.Contains(r.stdout, "--resolve") {
		t.Errorf("--help: exit %d\n%s", r.code, r.stdout)
	}
	r = runWith(t, "", "--version")
	if r.code != 0 || r.stdout != "meshgate-inject dev\n" {
		t.Errorf("--version: exit %d, %q", r.code, r.stdout)
	}
}

// TestBadInput: nothing on stdout, exit 1, one line naming the place.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	// A good file first: its output must not be written either.
	good := write(t, dir, "a.yaml", strings.Replace(deployment, "image: example.com/app:1", "image: example.com/app:1\n          command: [/app/server]", 1))
	for _, tc := range []struct {
		name, content string
		args          []string
		want          string
	}{
		{"bad.yaml", service + "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  labels: a: b\n", nil, "bad.yaml:13: mapping values are not allowed in this context"},
		{"bad.json", "{\n  \"kind\": \"Pod\",\n  \"metadata\": {,\n}\n", nil, "bad.json:3: invalid character ','"},
		{"scalar.yaml", "just text\n", nil, "scalar.yaml:1: a manifest must be a mapping"},
		{"noentry.yaml", service + "---\n" + deployment, nil,
			"noentry.yaml: document 2: Deployment/web: container app sets no command, so it runs its image's ENTRYPOINT and CMD, which the manifest does not show: pass --entrypoint app='[\"/path/to/app\"]' and --cmd app='[...]' (or '[]'), or --resolve to read them from the registry"},
		{"unknown-image.yaml", strings.Replace(deployment, "example.com/app:1", "example.com/other:2", 1), []string{"--resolve"},
			"unknown-image.yaml: document 1: Deployment/web: container app: image example.com/other:2: MANIFEST_UNKNOWN"},
		{"nocontainer.yaml", strings.Replace(deployment, "annotations:", "annotations:\n        meshgate.io/containers: app,sidecar", 1), []string{"--resolve"},
			`nocontainer.yaml: document 1: Deployment/web: container "sidecar" (from annotation meshgate.io/containers): no such container; the pod has app`},
		{"notemplate.yaml", "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: j\nspec: {}\n", nil, "notemplate.yaml: document 1: Job/j: no pod template"},
	} {
		f := write(t, dir, tc.name, tc.content)
		r := runWith(t, "", append(append([]string{}, tc.args...), good, f)...)
		if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, tc.want) || strings.Count(r.stderr, "meshgate-inject: "+f) != 1 {
			t.Errorf("%s: exit %d, stdout %q, stderr:\n%s\nwant exit 1, nothing on stdout, and %q", tc.name, r.code, r.stdout, r.stderr, tc.want)
		}
	}
}

func TestFilesDirectoriesAndStdin(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "b/svc.yml", service)
	write(t, dir, "a/deploy.yaml", deployment)
	write(t, dir, "a/README.md", "not a manifest")
	r := runWith(t, "", "--resolve", dir)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	docs := strings.Split(r.stdout, "\n---\n")
	if len(docs) != 2 || !strings.Contains(docs[0], "/meshgate/meshgate") || docs[1] != service {
		t.Errorf("want the injected Deployment, then the Service as it was:\n%s", r.stdout)
	}
	for _, want := range []string{
		"deploy.yaml: document 1: Deployment/web: preset linkerd (annotation linkerd.io/inject: \"enabled\")",
		"container app: image example.com/app:1 has ENTRYPOINT [\"/app/server\"] and CMD [\"--port\",\"8080\"]",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	// Standard input, as Helm hands it over, gives the same.
	in := service + "---\n" + deployment
	r2 := runWith(t, in, "--resolve", "-q")
	if r2.code != 0 || r2.stderr != "" || !strings.HasPrefix(r2.stdout, service+"---\n") || !strings.Contains(r2.stdout, "- /app/server") {
		t.Errorf("stdin: exit %d\n%s%s", r2.code, r2.stdout, r2.stderr)
	}
	// And back.
	r3 := runWith(t, r2.stdout, "--uninject", "-q")
	if r3.code != 0 || r3.stdout != in {
		t.Errorf("uninject: exit %d\n%s%s", r3.code, r3.stdout, r3.stderr)
	}
	// An empty directory is an error, not silence.
	empty := filepath.Join(dir, "empty")
	os.Mkdir(empty, 0o755)
	if r := runWith(t, "", empty); r.code != 2 || !strings.Contains(r.stderr, "no *.yaml, *.yml or *.json files") {
		t.Errorf("empty dir: exit %d %s", r.code, r.stderr)
	}
}

// TestResourceList: as a kustomize function, options from the ConfigMap.
func TestResourceList(t *testing.T) {
	rl := `apiVersion: config.kubernetes.io/v1
kind: ResourceList
items:
` + indentYAML(service, "- ", "  ") + indentYAML(deployment, "- ", "  ") + `functionConfig:
  apiVersion: v1
  kind: ConfigMap
  metadata:
    name: meshgate
  data:
    preset: kuma
    image: registry.example/meshgate:v9
    entrypoint: app=["/srv"]
    cmd: |
      app=["--fast"]
    gate-flag: --timeout=5m --log-format=console
`
	r := runWith(t, rl, "-q")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	for _, want := range []string{"kind: ResourceList", "image: registry.example/meshgate:v9",
		"- --preset\n          - kuma\n          - --timeout=5m\n          - --log-format=console\n          - --\n          - /srv",
		"args:\n          - --fast", "functionConfig:"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	bad := strings.Replace(rl, "preset: kuma", "presett: kuma", 1)
	if r := runWith(t, bad); r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, `functionConfig: data key "presett": want one of image, containers, preset`) {
		t.Errorf("typo in functionConfig: exit %d, %q", r.code, r.stderr)
	}
	un := strings.Replace(r.stdout, "preset: kuma", "preset: kuma\n    uninject: \"true\"", 1)
	if r2 := runWith(t, un, "-q"); r2.code != 0 || strings.Contains(r2.stdout, "meshgate") && strings.Contains(r2.stdout, "/meshgate/meshgate") {
		t.Errorf("uninject through functionConfig: exit %d\n%s%s", r2.code, r2.stdout, r2.stderr)
	}
}

func indentYAML(s, first, rest string) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	for i := range lines {
		if i == 0 {
			lines[i] = first + lines[i]
		} else {
			lines[i] = rest + lines[i]
		}
	}
	return strings.Join(lines, "\n") + "\n"
}

package inject

import (
	"bytes"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// roundTrip injects tmpl (a pod template as YAML), checks that a second
// injection and an uninjection behave, and returns the injected YAML and
// the result.
func roundTrip(t *testing.T, tmpl string, jobLike bool, opts Options) (string, Result) {
	t.Helper()
	n, err := yaml.Parse(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Template(t.Context(), n, jobLike, opts)
	if err != nil {
		t.Fatalf("Template: %v", err)
	}
	out := text(n)
	again, err := Template(t.Context(), n, jobLike, opts)
	if err != nil || again.Changed || text(n) != out {
		t.Errorf("a second Template changed it (%v):\n%s", err, text(n))
	}
	un, err := Uninject(n)
	if err != nil {
		t.Fatalf("Uninject: %v", err)
	}
	if un.Changed != res.Changed || text(n) != tmpl {
		t.Errorf("Uninject gave\n%s\nwant\n%s", text(n), tmpl)
	}
	return out, res
}

func TestTemplateShapes(t *testing.T) {
	for _, tc := range []struct {
		name, tmpl string
		jobLike    bool
		opts       Options
		want       []string // in the output
		note       string
	}{
		{"no metadata", "spec:\n  containers:\n    - name: app\n      command: [/app]\n", false, Options{},
			[]string{"metadata:\n  annotations:\n    meshgate.io/injected:"}, "meshgate's default probe"},
		{"null annotations", "metadata:\n  annotations:\nspec:\n  containers:\n    - name: app\n      command: [/app]\n", false, Options{},
			[]string{"meshgate.io/injected"}, "wrapped container app"},
		{"nulls everywhere", "metadata:\nspec:\n  volumes: ~\n  initContainers: null\n  containers:\n    - name: app\n      image: x\n      command:\n      args:\n      volumeMounts:\n",
			false, Options{Entrypoints: map[string][]string{"app": {"/srv"}}, Cmds: map[string][]string{"app": {"-v"}}},
			[]string{"command:\n        - /meshgate/meshgate\n        - --\n        - /srv\n      args:\n        - -v\n      volumeMounts:\n        - name: meshgate"}, "wrapped"},
		{"flow annotations", "metadata:\n  annotations: {a: b}\nspec:\n  containers: [{name: app, command: [/app]}]\n", false, Options{},
			[]string{`command: [/meshgate/meshgate, --, /app]`}, "wrapped container app"},
		{"linkerd job, shutdown disabled", "metadata:\n  annotations:\n    linkerd.io/inject: enabled\n    config.linkerd.io/proxy-admin-shutdown: \"disabled\"\nspec:\n  containers:\n    - name: app\n      command: [/app]\n",
			true, Options{}, []string{`config.linkerd.io/proxy-admin-shutdown: "enabled"`, "--quit"}, `was "disabled"`},
		{"linkerd deployment", "metadata:\n  annotations:\n    linkerd.io/inject: enabled\nspec:\n  containers:\n    - name: app\n      command: [/app]\n",
			false, Options{}, []string{"[/meshgate/meshgate, --preset, linkerd, --, /app]"}, "preset linkerd"},
		{"pod restartPolicy Never", "spec:\n  restartPolicy: Never\n  containers:\n    - name: app\n      command: [/app]\n",
			false, Options{Preset: "envoy"}, []string{"[/meshgate/meshgate, --preset, envoy, --quit, --, /app]"}, "preset envoy (--preset)"},
		{"kuma job: no quit endpoint", "spec:\n  restartPolicy: Never\n  containers:\n    - name: app\n      command: [/app]\n",
			false, Options{Preset: "kuma"}, []string{"[/meshgate/meshgate, --preset, kuma, --, /app]"}, "native sidecar"},
		{"explicit containers", "spec:\n  containers:\n    - name: istio-proxy\n      command: [/envoy]\n    - name: app\n      command: [/app]\n",
			false, Options{Containers: []string{"istio-proxy"}}, []string{"[/meshgate/meshgate, --preset, istio, --, /envoy]", "command: [/app]"}, "wrapped container istio-proxy"},
		{"preset annotation beats flag", "metadata:\n  annotations:\n    meshgate.io/preset: envoy\nspec:\n  containers:\n    - name: app\n      command: [/app]\n",
			false, Options{Preset: "istio"}, []string{"--preset, envoy"}, "annotation meshgate.io/preset"},
		{"flag against the pod's mesh", "metadata:\n  annotations:\n    linkerd.io/inject: enabled\nspec:\n  containers:\n    - name: app\n      command: [/app]\n",
			false, Options{Preset: "istio"}, []string{"--preset, istio"}, `the pod template says linkerd (annotation linkerd.io/inject: "enabled"), but --preset says istio`},
		{"entrypoint and cmd flags", "spec:\n  containers:\n    - name: app\n      image: x\n",
			false, Options{Entrypoints: map[string][]string{"app": {"/srv"}}, Cmds: map[string][]string{"app": {"-v"}}},
			[]string{"command:\n        - /meshgate/meshgate\n        - --\n        - /srv\n      args:\n        - -v"}, "wrapped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, res := roundTrip(t, tc.tmpl, tc.jobLike, tc.opts)
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if !strings.Contains(strings.Join(res.Notes, "\n"), tc.note) {
				t.Errorf("notes %q lack %q", res.Notes, tc.note)
			}
		})
	}
}

func TestTemplateUnchanged(t *testing.T) {
	for _, tc := range []struct{ name, tmpl, note string }{
		{"native init container", "spec:\n  initContainers:\n    - name: linkerd-proxy\n      restartPolicy: Always\n  containers:\n    - name: app\n      command: [/app]\n",
			"init container linkerd-proxy has restartPolicy: Always"},
		{"linkerd alpha annotation", "metadata:\n  annotations:\n    config.alpha.linkerd.io/proxy-enable-native-sidecar: \"true\"\nspec:\n  containers:\n    - name: app\n      command: [/app]\n",
			"config.alpha.linkerd.io/proxy-enable-native-sidecar"},
		{"opted out", "metadata:\n  annotations:\n    meshgate.io/inject: \"false\"\nspec:\n  containers:\n    - name: app\n      command: [/app]\n", "left alone"},
		{"istio off, even with --preset", "metadata:\n  labels:\n    sidecar.istio.io/inject: \"false\"\nspec:\n  containers:\n    - name: app\n      command: [/app]\n", "no mesh proxy"},
		{"linkerd disabled", "metadata:\n  annotations:\n    linkerd.io/inject: disabled\nspec:\n  containers:\n    - name: app\n      command: [/app]\n", "no mesh proxy"},
		{"only a proxy", "spec:\n  containers:\n    - name: istio-proxy\n      args: [proxy]\n", "no container left to wrap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := yaml.MustParse(tc.tmpl)
			var opts Options
			if strings.Contains(tc.name, "--preset") {
				opts.Preset = "istio"
			}
			res, err := Template(t.Context(), n, false, opts)
			if err != nil || res.Changed || text(n) != tc.tmpl {
				t.Errorf("changed: %v %v\n%s", res.Changed, err, text(n))
			}
			if !strings.Contains(strings.Join(res.Notes, "\n"), tc.note) {
				t.Errorf("notes %q lack %q", res.Notes, tc.note)
			}
		})
	}
	// A native sidecar of another kind (a log shipper) is not the proxy.
	if native, why := NativeSidecar(yaml.MustParse("spec:\n  initContainers:\n    - name: logs\n      restartPolicy: Always\n")); native {
		t.Errorf("a log shipper counted as a native proxy: %s", why)
	}
	if native, _ := NativeSidecar(yaml.MustParse("metadata:\n  annotations:\n    sidecar.istio.io/nativeSidecar: \"false\"\nspec: {}\n")); native {
		t.Error(`nativeSidecar "false" counted as native`)
	}
}

// TestTemplateErrors: each error leaves the template as it was.
func TestTemplateErrors(t *testing.T) {
	for _, tc := range []struct {
		name, tmpl string
		opts       Options
		want       string
	}{
		{"no spec", "metadata: {}\n", Options{}, "pod template has no spec"},
		{"no containers", "spec: {}\n", Options{}, "pod template has no containers"},
		{"bad preset", "spec:\n  containers: [{name: app, command: [/a]}]\n", Options{Preset: "nginx"}, `preset "nginx"`},
		{"bad preset annotation", "metadata:\n  annotations: {meshgate.io/preset: nginx}\nspec:\n  containers: [{name: app, command: [/a]}]\n", Options{}, `annotation meshgate.io/preset: preset "nginx"`},
		{"empty command", "spec:\n  containers: [{name: app, command: []}]\n", Options{}, "container app: command is an empty list"},
		{"command not strings", "spec:\n  containers: [{name: app, command: [{a: b}]}]\n", Options{}, "container app: command is not a list of strings"},
		{"hand volume", "spec:\n  containers: [{name: app, command: [/a]}]\n  volumes: [{name: meshgate, emptyDir: {}}]\n", Options{}, `already has a volume "meshgate"`},
		{"hand init container", "spec:\n  containers: [{name: app, command: [/a]}]\n  initContainers: [{name: meshgate-install, image: x}]\n", Options{}, `already has an init container "meshgate-install"`},
		{"no entrypoint", "spec:\n  containers: [{name: app, image: x, args: [-v]}]\n", Options{}, "container app sets no command, so it runs its image's ENTRYPOINT, which the manifest does not show: pass --entrypoint app="},
		{"second container fails", "spec:\n  containers: [{name: a, command: [/a]}, {name: b, image: x}]\n", Options{}, "container b sets no command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := yaml.MustParse(tc.tmpl)
			_, err := Template(t.Context(), n, false, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
			if text(n) != tc.tmpl {
				t.Errorf("changed on error:\n%s", text(n))
			}
		})
	}
}

func TestUninjectErrors(t *testing.T) {
	n := yaml.MustParse("spec:\n  containers:\n    - name: app\n      command: [/app]\n")
	if _, err := Template(t.Context(), n, false, Options{}); err != nil {
		t.Fatal(err)
	}
	injected := text(n)
	edited := strings.Replace(injected, "command: [/meshgate/meshgate, --, /app]", "command: [/app]", 1)
	if edited == injected {
		t.Fatalf("test setup: no command to edit in\n%s", injected)
	}
	e := yaml.MustParse(edited)
	if _, err := Uninject(e); err == nil || !strings.Contains(err.Error(), "changed since the injection") || text(e) != edited {
		t.Errorf("uninject of an edited command: %v\n%s", err, text(e))
	}
	renamed := yaml.MustParse(strings.Replace(injected, "name: app", "name: web", 1))
	if _, err := Uninject(renamed); err == nil || !strings.Contains(err.Error(), "container app, which meshgate.io/injected names, is gone") {
		t.Errorf("uninject of a renamed container: %v", err)
	}
	bad := yaml.MustParse(strings.Replace(injected, `{"containers"`, `{"containers`, 1))
	if _, err := Uninject(bad); err == nil || !strings.Contains(err.Error(), "annotation meshgate.io/injected") {
		t.Errorf("uninject of a broken annotation: %v", err)
	}
}

// text writes n as Stream does: wide list indentation, as the templates
// here are written.
func text(n *yaml.RNode) string {
	var b bytes.Buffer
	if err := yaml.NewEncoderWithOptions(&b, &yaml.EncoderOptions{SeqIndent: yaml.WideSequenceStyle}).Encode(n.Document()); err != nil {
		return err.Error()
	}
	return b.String()
}

func TestDefaultImage(t *testing.T) {
	defer func(v string) { version = v }(version)
	for v, want := range map[string]string{
		"":                  "ghcr.io/meshgate/meshgate:latest",
		"dev":               "ghcr.io/meshgate/meshgate:latest",
		"v1.2.3":            "ghcr.io/meshgate/meshgate:v1.2.3",
		"v1.2.3-rc.1":       "ghcr.io/meshgate/meshgate:v1.2.3-rc.1",
		"v1.2.3-dirty":      "ghcr.io/meshgate/meshgate:latest",
		"v1.2.3-4-gabcdef0": "ghcr.io/meshgate/meshgate:latest",
		"bc823ba":           "ghcr.io/meshgate/meshgate:latest",
	} {
		version = v
		if got := DefaultImage(); got != want {
			t.Errorf("version %q: %s, want %s", v, got, want)
		}
	}
}

// TestStreamCRLF: a file written on Windows keeps its line ends, and comes
// back as it was.
func TestStreamCRLF(t *testing.T) {
	in := strings.ReplaceAll("# crlf\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n\nspec:\n  containers:\n    - name: app\n      command: [/app]\n", "\n", "\r\n")
	s := &Stream{}
	out, err := s.Process(t.Context(), "crlf.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(out), "\n") != strings.Count(string(out), "\r\n") || !strings.Contains(string(out), "/meshgate/meshgate") {
		t.Errorf("line ends not kept, or not injected:\n%q", out)
	}
	back, err := (&Stream{Uninject: true}).Process(t.Context(), "crlf.yaml", out)
	if err != nil || string(back) != in {
		t.Errorf("uninject: %v\n%q\nwant\n%q", err, back, in)
	}
}

// TestStreamMixed: a YAML stream whose documents are JSON and YAML, as
// kubectl takes it.
func TestStreamMixed(t *testing.T) {
	in := "{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"s\"}}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: app\n      command: [/app]\n"
	out, err := (&Stream{}).Process(t.Context(), "mixed.yaml", []byte(in))
	if err != nil || !strings.HasPrefix(string(out), "{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"s\"}}\n---\n") || !strings.Contains(string(out), "/meshgate/meshgate") {
		t.Errorf("%v\n%s", err, out)
	}
}

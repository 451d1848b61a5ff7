package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	jsonpatch4 "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// wrap stands in for the inject package in the handler's unit tests: it
// prefixes each container's command with /meshgate/meshgate (and --quit
// for pods that run to completion), reading the entrypoint of containers
// without one from the resolver. The webhook's tests against the API
// server use the real transformation.
type wrap struct{}

const gate = "/meshgate/meshgate"

func podOf(n *yaml.RNode) (*corev1.Pod, error) {
	js, err := n.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var p corev1.Pod
	return &p, json.Unmarshal(js, &p)
}

func replace(n *yaml.RNode, p *corev1.Pod) error {
	js, err := json.Marshal(p)
	if err != nil {
		return err
	}
	m, err := yaml.Parse(string(js))
	if err != nil {
		return err
	}
	*n.YNode() = *m.YNode()
	return nil
}

func (wrap) Inject(ctx context.Context, n *yaml.RNode, jobLike bool, r Resolver) (bool, []string, error) {
	changed, err := editContainers(n, func(c *corev1.Container) (bool, error) {
		if c.Name == "istio-proxy" || slices.Contains(c.Command, gate) {
			return false, nil
		}
		prefix := []string{gate}
		if jobLike {
			prefix = append(prefix, "--quit")
		}
		prefix = append(prefix, "--")
		cmd := c.Command
		if cmd == nil {
			ep, imgCmd, err := r.ImageConfig(ctx, c.Image)
			if err != nil {
				return false, err
			}
			cmd = ep
			if c.Args == nil {
				c.Args = imgCmd
			}
		}
		c.Command = append(prefix, cmd...)
		return true, nil
	})
	if !changed {
		return false, nil, err
	}
	return true, []string{"wrapped"}, err
}

func (wrap) Uninject(n *yaml.RNode) (bool, []string, error) {
	changed, err := editContainers(n, func(c *corev1.Container) (bool, error) {
		if i := slices.Index(c.Command, "--"); len(c.Command) > 0 && c.Command[0] == gate && i > 0 {
			c.Command = c.Command[i+1:]
			return true, nil
		}
		return false, nil
	})
	return changed, nil, err
}

// editContainers applies edit to each container of n's pod and, where it
// changed one, writes the pod back into n: Inject and Uninject differ only
// in what they do to a container.
func editContainers(n *yaml.RNode, edit func(*corev1.Container) (bool, error)) (bool, error) {
	p, err := podOf(n)
	if err != nil {
		return false, err
	}
	changed := false
	for i := range p.Spec.Containers {
		ok, err := edit(&p.Spec.Containers[i])
		if err != nil {
			return false, err
		}
		changed = changed || ok
	}
	if !changed {
		return false, nil
	}
	return true, replace(n, p)
}

func (wrap) NativeSidecar(n *yaml.RNode) (bool, string) {
	p, err := podOf(n)
	if err != nil {
		return false, ""
	}
	for _, c := range p.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			return true, "init container " + c.Name + " has restartPolicy Always"
		}
	}
	return false, ""
}

// images answers look-ups from a map; a missing image is an error.
type images map[string][2][]string

func (m images) For(string, []string) Resolver { return m }

func (m images) ImageConfig(ctx context.Context, image string) ([]string, []string, error) {
	c, ok := m[image]
	if !ok {
		return nil, nil, errors.New("MANIFEST_UNKNOWN: manifest unknown")
	}
	return c[0], c[1], nil
}

// hang answers no look-up before its context ends.
type hang struct{}

func (hang) For(string, []string) Resolver { return hang{} }
func (hang) ImageConfig(ctx context.Context, _ string) ([]string, []string, error) {
	<-ctx.Done()
	return nil, nil, ctx.Err()
}

func request(t *testing.T, pod *corev1.Pod) *admissionv1.AdmissionRequest {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return &admissionv1.AdmissionRequest{
		UID:       types.UID("uid-1"),
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: "apps",
		Operation: admissionv1.Create,
		Object:    runtimeRaw(raw),
	}
}

// apply applies the response's patch to the request's pod, as the API
// server does.
func apply(t *testing.T, req *admissionv1.AdmissionRequest, resp *admissionv1.AdmissionResponse) *corev1.Pod {
	t.Helper()
	raw := req.Object.Raw
	if resp.Patch != nil {
		if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("got patch type %v, want JSONPatch", resp.PatchType)
		}
		p, err := jsonpatch4.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatalf("decode patch: %v", err)
		}
		if raw, err = p.Apply(raw); err != nil {
			t.Fatalf("apply patch %s: %v", resp.Patch, err)
		}
	}
	var pod corev1.Pod
	if err := json.Unmarshal(raw, &pod); err != nil {
		t.Fatal(err)
	}
	return &pod
}

func app(name string, mods ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "apps"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "app", Image: "registry.example/app:1", Command: []string{"/server"}, Args: []string{"--port", "8080"}},
		}},
	}
	for _, m := range mods {
		m(p)
	}
	return p
}

func TestReview(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	native := func(p *corev1.Pod) {
		p.Spec.InitContainers = []corev1.Container{{Name: "istio-proxy", Image: "proxyv2", RestartPolicy: &always}}
	}
	tests := []struct {
		name    string
		pod     *corev1.Pod
		lookups Lookups
		want    []string // command of the container "app"
		args    []string // its args
		warn    string   // part of the only warning; "" for none
	}{
		{"wired", app("a"), nil, []string{gate, "--", "/server"}, []string{"--port", "8080"}, ""},
		{"never restarts", app("a", func(p *corev1.Pod) { p.Spec.RestartPolicy = corev1.RestartPolicyNever }), nil,
			[]string{gate, "--quit", "--", "/server"}, []string{"--port", "8080"}, ""},
		{"restarts on failure", app("a", func(p *corev1.Pod) { p.Spec.RestartPolicy = corev1.RestartPolicyOnFailure }), nil,
			[]string{gate, "--quit", "--", "/server"}, []string{"--port", "8080"}, ""},
		{"opted out", app("a", func(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationInject: "false"} }), nil,
			[]string{"/server"}, []string{"--port", "8080"}, ""},
		{"opted in", app("a", func(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationInject: "true"} }), nil,
			[]string{gate, "--", "/server"}, []string{"--port", "8080"}, ""},
		{"native sidecar", app("a", native), nil, []string{"/server"}, []string{"--port", "8080"}, ""},
		{"native sidecar after wiring", app("a", native, func(p *corev1.Pod) {
			p.Spec.Containers[0].Command = []string{gate, "--", "/server"}
		}), nil, []string{"/server"}, []string{"--port", "8080"}, ""},
		{"entrypoint from the registry", app("a", func(p *corev1.Pod) { p.Spec.Containers[0].Command, p.Spec.Containers[0].Args = nil, nil }),
			images{"registry.example/app:1": {{"/entry"}, {"serve", "--all"}}},
			[]string{gate, "--", "/entry"}, []string{"serve", "--all"}, ""},
		{"image args kept", app("a", func(p *corev1.Pod) { p.Spec.Containers[0].Command = nil }),
			images{"registry.example/app:1": {{"/entry"}, {"serve"}}},
			[]string{gate, "--", "/entry"}, []string{"--port", "8080"}, ""},
		{"registry refuses", app("a", func(p *corev1.Pod) { p.Spec.Containers[0].Command = nil }), images{},
			nil, []string{"--port", "8080"},
			`meshgate: pod admitted without meshgate: container "app": ENTRYPOINT of image registry.example/app:1 not read: MANIFEST_UNKNOWN`},
		{"no registry", app("a", func(p *corev1.Pod) { p.Spec.Containers[0].Command = nil }), nil,
			nil, []string{"--port", "8080"}, `container "app": ENTRYPOINT of image registry.example/app:1 not read: no registry look-up configured`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{Transform: wrap{}, Lookups: tt.lookups}
			req := request(t, tt.pod)
			resp := h.Review(context.Background(), req)
			if resp.UID != req.UID || !resp.Allowed {
				t.Fatalf("got uid %q allowed %v, want %q true", resp.UID, resp.Allowed, req.UID)
			}
			got := apply(t, req, resp)
			c := got.Spec.Containers[0]
			if !reflect.DeepEqual(c.Command, tt.want) || !reflect.DeepEqual(c.Args, tt.args) {
				t.Errorf("got command %q args %q, want %q %q", c.Command, c.Args, tt.want, tt.args)
			}
			if reflect.DeepEqual(c.Command, tt.pod.Spec.Containers[0].Command) && resp.Patch != nil {
				t.Errorf("got patch %s for an unchanged pod, want none", resp.Patch)
			}
			switch {
			case tt.warn == "" && len(resp.Warnings) > 0:
				t.Errorf("got warnings %q, want none", resp.Warnings)
			case tt.warn != "" && (len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], tt.warn)):
				t.Errorf("got warnings %q, want one containing %q", resp.Warnings, tt.warn)
			}
		})
	}
}

// TestReviewPatchKeepsTheRest checks that the patch touches what the
// transformation changed and nothing else: applied to the pod, it gives
// exactly the transformed pod.
func TestReviewPatchKeepsTheRest(t *testing.T) {
	pod := app("a", func(p *corev1.Pod) {
		p.Labels = map[string]string{"app": "a", "a/b~c": "escaped"}
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "istio-proxy", Image: "proxyv2", Args: []string{"proxy"}})
		p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	})
	req := request(t, pod)
	resp := (&Handler{Transform: wrap{}}).Review(context.Background(), req)
	got := apply(t, req, resp)

	want := pod.DeepCopy()
	want.Spec.Containers[0].Command = []string{gate, "--", "/server"}
	if !reflect.DeepEqual(got, want) {
		gj, _ := json.Marshal(got)
		wj, _ := json.Marshal(want)
		t.Errorf("got\n%s\nwant\n%s", gj, wj)
	}
}

// TestReviewLookupTimeout checks that a registry that does not answer
// holds admission for LookupTimeout, not for the API server's timeout, and
// that the pod is admitted with a warning that says so.
func TestReviewLookupTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pod := app("a", func(p *corev1.Pod) { p.Spec.Containers[0].Command = nil })
		h := &Handler{Transform: wrap{}, Lookups: hang{}, LookupTimeout: 1500 * time.Millisecond}
		start := time.Now()
		resp := h.Review(context.Background(), request(t, pod))
		if took := time.Since(start); took != 1500*time.Millisecond {
			t.Errorf("got admission in %v, want 1.5s", took)
		}
		if !resp.Allowed || resp.Patch != nil {
			t.Errorf("got allowed %v patch %s, want allowed without patch", resp.Allowed, resp.Patch)
		}
		if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], `container "app": ENTRYPOINT of image registry.example/app:1 not read: registry look-up timed out`) {
			t.Errorf("got warnings %q, want one naming the container and the timeout", resp.Warnings)
		}
	})
}

// TestReviewOtherRequests checks that only pods being created are
// touched.
func TestReviewOtherRequests(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*admissionv1.AdmissionRequest)
	}{
		{"update", func(r *admissionv1.AdmissionRequest) { r.Operation = admissionv1.Update }},
		{"subresource", func(r *admissionv1.AdmissionRequest) { r.SubResource = "ephemeralcontainers" }},
		{"other kind", func(r *admissionv1.AdmissionRequest) { r.Kind.Kind = "Deployment"; r.Kind.Group = "apps" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request(t, app("a"))
			tt.mod(req)
			resp := (&Handler{Transform: wrap{}}).Review(context.Background(), req)
			if !resp.Allowed || resp.Patch != nil || len(resp.Warnings) > 0 {
				t.Errorf("got allowed %v patch %s warnings %q, want allowed, untouched", resp.Allowed, resp.Patch, resp.Warnings)
			}
		})
	}
}

func TestServeHTTP(t *testing.T) {
	review, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  request(t, app("a")),
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, ctype string
		body                []byte
		status              int
	}{
		{"review", "POST", "application/json", review, 200},
		{"charset", "POST", "application/json; charset=utf-8", review, 200},
		{"get", "GET", "", nil, 405},
		{"yaml", "POST", "application/yaml", review, 415},
		{"garbage", "POST", "application/json", []byte("{"), 400},
		{"no request", "POST", "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), 400},
		{"too large", "POST", "application/json", bytes.Repeat([]byte(" "), maxReview+1), 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, "/mutate", bytes.NewReader(tt.body))
			if tt.ctype != "" {
				r.Header.Set("Content-Type", tt.ctype)
			}
			w := httptest.NewRecorder()
			(&Handler{Transform: wrap{}}).ServeHTTP(w, r)
			if w.Code != tt.status {
				t.Fatalf("got status %d (%s), want %d", w.Code, strings.TrimSpace(w.Body.String()), tt.status)
			}
			if tt.status != 200 {
				return
			}
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
				t.Fatal(err)
			}
			if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil ||
				out.Response.UID != "uid-1" || !out.Response.Allowed || out.Response.Patch == nil {
				t.Errorf("got %s, want a v1 AdmissionReview allowing uid-1 with a patch", w.Body.Bytes())
			}
		})
	}
}

// TestWarningLength checks that a long reason is cut to fit a warning.
func TestWarningLength(t *testing.T) {
	resp := warn(&admissionv1.AdmissionResponse{}, strings.Repeat("x", 1000))
	if n := len(resp.Warnings[0]); n != maxWarning {
		t.Errorf("got a warning of %d bytes, want %d", n, maxWarning)
	}
}

func runtimeRaw(b []byte) runtime.RawExtension { return runtime.RawExtension{Raw: b} }

// TestReviewInjectKeepsValues runs the real transformation over a pod
// whose strings look like numbers, booleans and dates: the patched pod
// keeps them as the strings they were.
func TestReviewInjectKeepsValues(t *testing.T) {
	pod := app("a", func(p *corev1.Pod) {
		p.Annotations = map[string]string{"n": "8080", "b": "true", "d": "2024-01-01", "f": "1.50", "e": ""}
		p.Labels = map[string]string{"version": "1.0"}
		p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "PORT", Value: "0x1F"}, {Name: "EMPTY"}}
	})
	req := request(t, pod)
	resp := (&Handler{Transform: Inject{}}).Review(context.Background(), req)
	if resp.Patch == nil {
		t.Fatalf("got no patch (warnings %q), want the pod wired", resp.Warnings)
	}
	got := apply(t, req, resp)
	for k, v := range pod.Annotations {
		if got.Annotations[k] != v {
			t.Errorf("annotation %s: got %q, want %q", k, got.Annotations[k], v)
		}
	}
	if !reflect.DeepEqual(got.Labels, pod.Labels) || !reflect.DeepEqual(got.Spec.Containers[0].Env, pod.Spec.Containers[0].Env) {
		t.Errorf("got labels %v env %v, want %v %v", got.Labels, got.Spec.Containers[0].Env, pod.Labels, pod.Spec.Containers[0].Env)
	}
	if c := got.Spec.Containers[0].Command; len(c) == 0 || c[0] != gate || c[len(c)-1] != "/server" {
		t.Errorf("got command %q, want %s ... -- /server", c, gate)
	}
}

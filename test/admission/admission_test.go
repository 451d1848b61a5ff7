package admission

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/meshgate/meshgate/test/registry"
)

const gate = "/meshgate/meshgate"

// warnings collects the API server's warnings to a client.
type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

func (w *warnings) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.list)
}

// client is an administrator's client whose warnings are collected.
func client(t *testing.T) (kubernetes.Interface, *warnings) {
	t.Helper()
	c := setup(t)
	w := &warnings{}
	cfg := *c.Config
	cfg.WarningHandler = w
	cs, err := kubernetes.NewForConfig(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs, w
}

// podYAML is a pod as a user writes it; each test gives it a name.
const podYAML = `apiVersion: v1
kind: Pod
metadata:
  name: %s
  labels:
    app: web
spec:
  automountServiceAccountToken: false
  containers:
    - name: app
      image: registry.example/app:1
      command: ["/app/server", "--port", "8080"]
      ports:
        - containerPort: 8080
`

func decodePod(t *testing.T, doc string) *corev1.Pod {
	t.Helper()
	var p corev1.Pod
	if err := yaml.UnmarshalStrict([]byte(doc), &p); err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	return &p
}

func createPod(t *testing.T, cs kubernetes.Interface, ns string, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, p.Name, err)
	}
	got, err := cs.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Pods(ns).Delete(context.Background(), p.Name, metav1.DeleteOptions{})
	})
	return got
}

// wired tells whether a stored pod carries meshgate's wiring, and which
// part is missing if not.
func wired(p *corev1.Pod) (bool, string) {
	if !slices.ContainsFunc(p.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == "meshgate" && v.EmptyDir != nil }) {
		return false, "no emptyDir meshgate"
	}
	if !slices.ContainsFunc(p.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == "meshgate-install" }) {
		return false, "no init container meshgate-install"
	}
	for _, c := range p.Spec.Containers {
		if len(c.Command) > 0 && c.Command[0] == gate {
			return true, ""
		}
	}
	return false, "no command starts with " + gate
}

// untouched checks that nothing of meshgate is in a stored pod.
func untouched(t *testing.T, p *corev1.Pod, want *corev1.Pod) {
	t.Helper()
	if ok, _ := wired(p); ok || p.Annotations["meshgate.io/injected"] != "" ||
		slices.ContainsFunc(p.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == "meshgate" }) {
		t.Errorf("pod %s/%s: got meshgate's wiring, want none", p.Namespace, p.Name)
	}
	for i, c := range p.Spec.Containers {
		if !reflect.DeepEqual(c.Command, want.Spec.Containers[i].Command) || !reflect.DeepEqual(c.Args, want.Spec.Containers[i].Args) {
			t.Errorf("container %s: got command %q args %q, want %q %q", c.Name, c.Command, c.Args, want.Spec.Containers[i].Command, want.Spec.Containers[i].Args)
		}
	}
}

// TestWiredEqualsCommandLine creates the same pod in a labelled namespace
// and, injected by meshgate-inject on the command line, in an unlabelled
// one: the API server stores the same pod.
func TestWiredEqualsCommandLine(t *testing.T) {
	cs, w := client(t)
	doc := fmt.Sprintf(podYAML, "same")

	cmd := exec.Command(env.inject, "-")
	cmd.Stdin = strings.NewReader(doc)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("meshgate-inject: %v\n%s", err, errb.String())
	}

	byWebhook := createPod(t, cs, "wired", decodePod(t, doc))
	byCLI := createPod(t, cs, "plain", decodePod(t, out.String()))
	if ok, why := wired(byWebhook); !ok {
		t.Fatalf("pod in the labelled namespace: %s\n%s", why, env.hook.log)
	}
	if !reflect.DeepEqual(byWebhook.Spec, byCLI.Spec) {
		a, _ := json.MarshalIndent(byWebhook.Spec, "", "  ")
		b, _ := json.MarshalIndent(byCLI.Spec, "", "  ")
		t.Errorf("spec injected at admission:\n%s\nby the command line:\n%s", a, b)
	}
	if !reflect.DeepEqual(byWebhook.Annotations, byCLI.Annotations) || !reflect.DeepEqual(byWebhook.Labels, byCLI.Labels) {
		t.Errorf("annotations and labels at admission %v %v, by the command line %v %v",
			byWebhook.Annotations, byWebhook.Labels, byCLI.Annotations, byCLI.Labels)
	}
	if ws := w.all(); len(ws) > 0 {
		t.Errorf("got warnings %q, want none", ws)
	}
}

// TestSelection checks which pods the shipped configuration sends to the
// webhook and which the webhook wires.
func TestSelection(t *testing.T) {
	cs, _ := client(t)
	always := corev1.ContainerRestartPolicyAlways
	tests := []struct {
		name, ns string
		mod      func(*corev1.Pod)
		wire     bool
	}{
		{"labelled namespace", "wired", nil, true},
		{"unlabelled namespace", "plain", nil, false},
		{"opted out", "wired", func(p *corev1.Pod) { p.Annotations = map[string]string{"meshgate.io/inject": "false"} }, false},
		{"opted in", "plain", func(p *corev1.Pod) { p.Annotations = map[string]string{"meshgate.io/inject": "true"} }, true},
		{"native sidecar", "wired", func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "istio-proxy", Image: "istio/proxyv2:1.28.0", Args: []string{"proxy", "sidecar"}, RestartPolicy: &always}}
		}, false},
		{"native sidecar asked of the mesh", "wired", func(p *corev1.Pod) {
			p.Annotations = map[string]string{"sidecar.istio.io/nativeSidecar": "true"}
		}, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := decodePod(t, fmt.Sprintf(podYAML, fmt.Sprintf("select-%d", i)))
			if tt.mod != nil {
				tt.mod(in)
			}
			got := createPod(t, cs, tt.ns, in.DeepCopy())
			if tt.wire {
				if ok, why := wired(got); !ok {
					t.Errorf("got an unwired pod (%s), want it wired", why)
				}
				return
			}
			untouched(t, got, in)
		})
	}
}

// TestRunsToCompletion checks that a pod that does not restart tells its
// proxy to quit.
func TestRunsToCompletion(t *testing.T) {
	cs, _ := client(t)
	for _, policy := range []corev1.RestartPolicy{corev1.RestartPolicyNever, corev1.RestartPolicyOnFailure} {
		t.Run(string(policy), func(t *testing.T) {
			in := decodePod(t, fmt.Sprintf(podYAML, "job-"+strings.ToLower(string(policy))))
			in.Spec.RestartPolicy = policy
			got := createPod(t, cs, "wired", in)
			cmd := got.Spec.Containers[0].Command
			dash := slices.Index(cmd, "--")
			if dash < 0 || !slices.Contains(cmd[:dash], "--quit") || !slices.Equal(cmd[dash+1:], in.Spec.Containers[0].Command) {
				t.Errorf("got command %q, want %s ... --quit ... -- %q", cmd, gate, in.Spec.Containers[0].Command)
			}
		})
	}
}

// TestEntrypointFromRegistry creates pods without a command whose image
// is in a registry on loopback that asks for credentials: with the pull
// secret the pod names, the webhook reads ENTRYPOINT and CMD; without it,
// the pod is admitted unchanged with a warning naming the container.
func TestEntrypointFromRegistry(t *testing.T) {
	cs, w := client(t)
	ctx := context.Background()
	reg := registry.Start(t, "puller", "s3cret")
	image, _ := reg.Push(t, "team/app:1", []string{"/app/entry", "--flag"}, []string{"serve", "--all"})
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "regcred-"},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: reg.DockerConfig()},
	}
	secret, err := cs.CoreV1().Secrets("wired").Create(ctx, secret, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().Secrets("wired").Delete(context.Background(), secret.Name, metav1.DeleteOptions{})
	})

	in := decodePod(t, fmt.Sprintf(podYAML, "from-registry"))
	in.Spec.Containers[0].Image, in.Spec.Containers[0].Command = image, nil
	in.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: secret.Name}}
	got := createPod(t, cs, "wired", in)
	c := got.Spec.Containers[0]
	dash := slices.Index(c.Command, "--")
	if len(c.Command) == 0 || c.Command[0] != gate || dash < 0 ||
		!slices.Equal(c.Command[dash+1:], []string{"/app/entry", "--flag"}) || !slices.Equal(c.Args, []string{"serve", "--all"}) {
		t.Errorf("got command %q args %q, want %s ... -- /app/entry --flag, args [serve --all]\n%s", c.Command, c.Args, gate, env.hook.log)
	}
	if ws := w.all(); len(ws) > 0 {
		t.Errorf("got warnings %q, want none", ws)
	}

	refused := reg.Refused.Load()
	in = decodePod(t, fmt.Sprintf(podYAML, "no-pull-secret"))
	in.Spec.Containers[0].Image, in.Spec.Containers[0].Command = image, nil
	got = createPod(t, cs, "wired", in)
	untouched(t, got, in)
	ws := w.all()
	if len(ws) != 1 || !strings.Contains(ws[0], `container "app"`) || !strings.Contains(ws[0], image) || !strings.Contains(ws[0], "UNAUTHORIZED") {
		t.Errorf("got warnings %q, want one naming container \"app\", its image and UNAUTHORIZED", ws)
	}
	if reg.Refused.Load() == refused {
		t.Error("the registry refused no request, want the one without credentials refused")
	}
}

// meshInjector plays a mesh's own injector that runs after meshgate's: it
// adds its proxy as a native sidecar.
type meshInjector struct{}

func (m *meshInjector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
		http.Error(w, "bad review", http.StatusBadRequest)
		return
	}
	var pod corev1.Pod
	_ = json.Unmarshal(review.Request.Object.Raw, &pod)
	resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	if !slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == "istio-proxy" }) {
		proxy := map[string]any{"name": "istio-proxy", "image": "istio/proxyv2:1.28.0", "args": []string{"proxy", "sidecar"}, "restartPolicy": "Always"}
		var op any = map[string]any{"op": "add", "path": "/spec/initContainers", "value": []any{proxy}}
		if len(pod.Spec.InitContainers) > 0 {
			op = map[string]any{"op": "add", "path": "/spec/initContainers/-", "value": proxy}
		}
		patch, _ := json.Marshal([]any{op})
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = patch, &pt
	}
	out, _ := json.Marshal(admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp})
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// TestReinvocation registers a second webhook, after meshgate's, that
// turns the pod's proxy into a native sidecar: the API server calls
// meshgate's again, which takes its wiring out.
func TestReinvocation(t *testing.T) {
	cs, _ := client(t)
	ctx := context.Background()
	srv := httptest.NewUnstartedServer(&meshInjector{})
	certPEM, keyPEM := env.ca.Issue(t, 100)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.StartTLS()
	defer srv.Close()

	url := srv.URL + "/inject"
	fail, never, none := admissionregistrationv1.Fail, admissionregistrationv1.NeverReinvocationPolicy, admissionregistrationv1.SideEffectClassNone
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		// Named after meshgate-inject: the API server calls webhooks in
		// the order of their configurations' names.
		ObjectMeta: metav1.ObjectMeta{Name: "zz-mesh-injector"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "sidecar.mesh.example",
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             &none,
			FailurePolicy:           &fail,
			ReinvocationPolicy:      &never,
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: env.ca.PEM},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"test.meshgate.io/mesh": "native"}},
		}},
	}
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, cfg, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), cfg.Name, metav1.DeleteOptions{})
	var last error
	waitFor(t, "the mesh injector to be called", func() bool {
		p, err := cs.CoreV1().Pods("native").Create(ctx, decodePod(t, fmt.Sprintf(podYAML, "probe")), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			last = err
			return false
		}
		return slices.ContainsFunc(p.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == "istio-proxy" })
	}, &last)

	in := decodePod(t, fmt.Sprintf(podYAML, "reinvoked"))
	got := createPod(t, cs, "native", in)
	if !slices.ContainsFunc(got.Spec.InitContainers, func(c corev1.Container) bool {
		return c.Name == "istio-proxy" && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
	}) {
		t.Fatalf("got init containers %v, want the mesh's native sidecar", got.Spec.InitContainers)
	}
	untouched(t, got, in)
	if len(got.Spec.InitContainers) != 1 {
		t.Errorf("got %d init containers, want the proxy alone", len(got.Spec.InitContainers))
	}
	if lines := env.hook.log.find(`"native sidecar"`, `"name":"reinvoked"`, `"unwired":true`); len(lines) == 0 {
		t.Errorf("the webhook's log has no reinvocation that took the wiring out of pod reinvoked:\n%s", env.hook.log)
	}
}

// TestManifestsAdmitted checks the shipped manifests against the API
// server's own admission: the webhook's pods pass the restricted Pod
// Security level that its namespace enforces, and its RBAC lets it get a
// secret and nothing more.
func TestManifestsAdmitted(t *testing.T) {
	cs, _ := client(t)
	ctx := context.Background()
	dep, err := cs.AppsV1().Deployments("meshgate-system").Get(ctx, "meshgate-inject", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the shipped Deployment was not stored: %v", err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "webhook-replica", Labels: dep.Spec.Template.Labels}, Spec: dep.Spec.Template.Spec}
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	if _, err := cs.CoreV1().Pods("meshgate-system").Create(ctx, pod, dry); err != nil {
		t.Errorf("a replica of the shipped Deployment: %v", err)
	}
	loose := pod.DeepCopy()
	loose.Spec.Containers[0].SecurityContext = nil
	if _, err := cs.CoreV1().Pods("meshgate-system").Create(ctx, loose, dry); err == nil || !strings.Contains(err.Error(), "restricted") {
		t.Errorf("a replica without its securityContext: got %v, want it refused by Pod Security (restricted)", err)
	}

	c := setup(t)
	as, err := kubernetes.NewForConfig(c.UserConfig(webhookUser.Token))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := as.CoreV1().Secrets("plain").Get(ctx, "absent", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the webhook getting a secret: got %v, want NotFound (allowed)", err)
	}
	if _, err := as.CoreV1().Secrets("plain").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the webhook listing secrets: got %v, want Forbidden", err)
	}
	if _, err := as.CoreV1().ConfigMaps("plain").Get(ctx, "absent", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the webhook getting a config map: got %v, want Forbidden", err)
	}
}

// TestCertificateRotation replaces the webhook's certificate on disk, as
// cert-manager does: the next connection gets the new one, and the API
// server goes on calling the webhook.
func TestCertificateRotation(t *testing.T) {
	cs, _ := client(t)
	env.ca.Write(t, env.dir+"/tls", 2)
	conn, err := tls.Dial("tcp", env.hook.addr, &tls.Config{RootCAs: env.ca.Pool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	serial := conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	conn.Close()
	if serial != 2 {
		t.Errorf("got certificate serial %d after the rotation, want 2", serial)
	}
	got := createPod(t, cs, "wired", decodePod(t, fmt.Sprintf(podYAML, "after-rotation")))
	if ok, why := wired(got); !ok {
		t.Errorf("pod after the rotation: %s", why)
	}
	if lines := env.hook.log.find(`"tls pair loaded"`); len(lines) == 0 {
		t.Errorf("the webhook's log has no \"tls pair loaded\":\n%s", env.hook.log)
	}
}

// TestWebhookStopped stops the webhook: pods are admitted unchanged
// (failurePolicy Ignore). The webhook is started again on the same
// address afterwards.
func TestWebhookStopped(t *testing.T) {
	cs, w := client(t)
	c := setup(t)
	env.hook.stop()
	defer func() {
		kubeconfig, err := c.Kubeconfig(webhookUser.Token)
		if err != nil {
			t.Fatal(err)
		}
		h, err := startHook(env.inject, kubeconfig, env.dir+"/tls", env.hook.addr)
		if err != nil {
			t.Fatalf("restart the webhook: %v", err)
		}
		env.hook = h
	}()
	in := decodePod(t, fmt.Sprintf(podYAML, "webhook-down"))
	start := time.Now()
	got := createPod(t, cs, "wired", in.DeepCopy())
	untouched(t, got, in)
	t.Logf("admitted in %v with warnings %q", time.Since(start), w.all())
}

// waitFor polls cond until it holds; a minute is a failure, which quotes
// *last.
func waitFor(t *testing.T, what string, cond func() bool, last *error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s (last error: %v)", what, *last)
		}
		<-tick.C
	}
}

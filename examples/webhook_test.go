package examples_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
)

// webhookObjects decodes the webhook's manifests strictly into the API
// types client-go knows them by, by kind and name.
func webhookObjects(t *testing.T) map[string]any {
	t.Helper()
	objs := map[string]any{}
	for _, d := range decodeFile[typeMeta](t, "webhook/meshgate-inject.yaml") {
		obj, err := scheme.Scheme.New(schema.FromAPIVersionAndKind(d.v.APIVersion, d.v.Kind))
		if err != nil {
			t.Fatalf("%s: %v", d.doc, err)
		}
		if err := decodeStrict(d.doc.json, obj); err != nil {
			t.Fatalf("%s: %s: %v", d.doc, d.v.Kind, err)
		}
		name := obj.(metav1.Object).GetName()
		objs[d.v.Kind+"/"+name] = obj
	}
	return objs
}

// decoded is a document of an example file and what it decodes to.
type decoded[T any] struct {
	doc document
	v   T
}

// decodeFile decodes each document of an example file into a T, or fails
// t.
func decodeFile[T any](t *testing.T, file string) []decoded[T] {
	t.Helper()
	docs, err := readDocuments(file)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]decoded[T], len(docs))
	for i, d := range docs {
		out[i].doc = d
		if err := json.Unmarshal(d.json, &out[i].v); err != nil {
			t.Fatalf("%s: %v", d, err)
		}
	}
	return out
}

const webhookNamespace = "meshgate-system"

// TestWebhookManifests checks what the README promises of the shipped
// webhook: it never stops a cluster from creating pods, it runs hardened
// with two replicas that a drain cannot take down together, and it may
// read pull secrets and nothing else.
func TestWebhookManifests(t *testing.T) {
	objs := webhookObjects(t)
	get := func(key string) any {
		t.Helper()
		o, ok := objs[key]
		if !ok {
			t.Fatalf("no %s in webhook/meshgate-inject.yaml", key)
		}
		return o
	}

	mwc := get("MutatingWebhookConfiguration/meshgate-inject").(*admissionregistrationv1.MutatingWebhookConfiguration)
	if len(mwc.Webhooks) != 2 {
		t.Fatalf("got %d webhooks, want 2 (labelled namespaces, annotated pods)", len(mwc.Webhooks))
	}
	for _, w := range mwc.Webhooks {
		t.Run(w.Name, func(t *testing.T) {
			for _, err := range checkWebhook(w) {
				t.Error(err)
			}
		})
	}

	dep := get("Deployment/meshgate-inject").(*appsv1.Deployment)
	if dep.Namespace != webhookNamespace || dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
		t.Errorf("Deployment: got namespace %q replicas %v, want %s and 2", dep.Namespace, dep.Spec.Replicas, webhookNamespace)
	}
	pdb := get("PodDisruptionBudget/meshgate-inject").(*policyv1.PodDisruptionBudget)
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 || !selects(pdb.Spec.Selector, dep.Spec.Template.Labels) {
		t.Errorf("PodDisruptionBudget: got minAvailable %v selector %v, want 1 replica of the Deployment's pods kept", pdb.Spec.MinAvailable, pdb.Spec.Selector)
	}
	svc := get("Service/meshgate-inject").(*corev1.Service)
	if !selects(&metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, dep.Spec.Template.Labels) {
		t.Errorf("Service: selector %v does not select the Deployment's pods", svc.Spec.Selector)
	}
	for _, err := range checkHardened(dep.Spec.Template.Spec) {
		t.Errorf("Deployment: %v", err)
	}

	role := get("ClusterRole/meshgate-inject").(*rbacv1.ClusterRole)
	want := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}}}
	if fmt.Sprint(role.Rules) != fmt.Sprint(want) {
		t.Errorf("ClusterRole: got rules %+v, want get on secrets only", role.Rules)
	}
	crb := get("ClusterRoleBinding/meshgate-inject").(*rbacv1.ClusterRoleBinding)
	sa := get("ServiceAccount/meshgate-inject").(*corev1.ServiceAccount)
	if crb.RoleRef.Name != role.Name || len(crb.Subjects) != 1 || crb.Subjects[0].Name != sa.Name ||
		crb.Subjects[0].Namespace != sa.Namespace || dep.Spec.Template.Spec.ServiceAccountName != sa.Name {
		t.Errorf("ClusterRoleBinding: got %+v, want the ClusterRole bound to the Deployment's ServiceAccount", crb)
	}
}

// checkWebhook lists what makes a webhook entry unsafe for the cluster.
func checkWebhook(w admissionregistrationv1.MutatingWebhook) []error {
	var errs []error
	if w.FailurePolicy == nil || *w.FailurePolicy != admissionregistrationv1.Ignore {
		errs = append(errs, fmt.Errorf("failurePolicy %v, want Ignore", w.FailurePolicy))
	}
	if w.TimeoutSeconds == nil || *w.TimeoutSeconds > 10 {
		errs = append(errs, fmt.Errorf("timeoutSeconds %v, want at most 10", w.TimeoutSeconds))
	}
	if w.ReinvocationPolicy == nil || *w.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy {
		errs = append(errs, fmt.Errorf("reinvocationPolicy %v, want IfNeeded", w.ReinvocationPolicy))
	}
	if w.SideEffects == nil || *w.SideEffects != admissionregistrationv1.SideEffectClassNone {
		errs = append(errs, fmt.Errorf("sideEffects %v, want None (dry runs work)", w.SideEffects))
	}
	excluded := false
	if sel := w.NamespaceSelector; sel != nil {
		for _, e := range sel.MatchExpressions {
			if e.Key == corev1.LabelMetadataName && e.Operator == metav1.LabelSelectorOpNotIn &&
				slices.Contains(e.Values, "kube-system") && slices.Contains(e.Values, webhookNamespace) {
				excluded = true
			}
		}
	}
	if !excluded {
		errs = append(errs, fmt.Errorf("namespaceSelector %v does not exclude kube-system and %s", w.NamespaceSelector, webhookNamespace))
	}
	if s := w.ClientConfig.Service; s == nil || s.Namespace != webhookNamespace || s.Name != "meshgate-inject" || s.Path == nil || *s.Path != "/mutate" {
		errs = append(errs, fmt.Errorf("clientConfig %+v, want the meshgate-inject Service's /mutate", w.ClientConfig))
	}
	if len(w.Rules) != 1 || fmt.Sprint(w.Rules[0].Resources) != "[pods]" || fmt.Sprint(w.Rules[0].Operations) != "[CREATE]" {
		errs = append(errs, fmt.Errorf("rules %+v, want pods on CREATE only", w.Rules))
	}
	return errs
}

// selects tells whether sel selects a pod with labels.
func selects(sel *metav1.LabelSelector, labels map[string]string) bool {
	if sel == nil || len(sel.MatchLabels) == 0 {
		return false
	}
	for k, v := range sel.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// checkHardened lists what keeps a pod from running as the other examples
// do: non-root, read-only root, no privilege escalation, no capabilities,
// RuntimeDefault seccomp, a memory limit, and probes.
func checkHardened(spec corev1.PodSpec) []error {
	var errs []error
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil ||
		psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		errs = append(errs, fmt.Errorf("pod securityContext %+v, want runAsNonRoot and RuntimeDefault seccomp", psc))
	}
	for _, c := range spec.Containers {
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.Capabilities == nil || fmt.Sprint(sc.Capabilities.Drop) != "[ALL]" {
			errs = append(errs, fmt.Errorf("container %s: securityContext %+v, want no privilege escalation, read-only root, all capabilities dropped", c.Name, sc))
		}
		if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
			errs = append(errs, fmt.Errorf("container %s: resources %+v, want a CPU request and a memory limit", c.Name, c.Resources))
		}
		if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" ||
			c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
			errs = append(errs, fmt.Errorf("container %s: want a readiness probe on /readyz and a liveness probe on /healthz", c.Name))
		}
	}
	return errs
}

// certManager is what this test reads of cert-manager's resources (a
// CRD, so no Go type of k8s.io/api).
type certManager struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		SecretName string   `json:"secretName"`
		DNSNames   []string `json:"dnsNames"`
		IsCA       bool     `json:"isCA"`
		IssuerRef  struct {
			Name string `json:"name"`
			Kind string `json:"kind"`
		} `json:"issuerRef"`
		CA *struct {
			SecretName string `json:"secretName"`
		} `json:"ca"`
	} `json:"spec"`
}

// TestWebhookCertManager checks that cert-manager's resources fit the
// webhook: the serving Certificate names the Service's DNS name, its Secret
// is the one the Deployment mounts, it is issued by the CA Issuer, and the
// CA injector is pointed at it.
func TestWebhookCertManager(t *testing.T) {
	objs := webhookObjects(t)
	res := map[string]certManager{}
	for _, d := range decodeFile[certManager](t, "webhook/cert-manager.yaml") {
		cm := d.v
		if cm.APIVersion != "cert-manager.io/v1" || (cm.Kind != "Issuer" && cm.Kind != "Certificate") || cm.Metadata.Namespace != webhookNamespace {
			t.Errorf("%s: got %s %s in %q, want cert-manager.io/v1 Issuers and Certificates in %s", d.doc, cm.APIVersion, cm.Kind, cm.Metadata.Namespace, webhookNamespace)
		}
		res[cm.Kind+"/"+cm.Metadata.Name] = cm
	}
	serving, ok := res["Certificate/meshgate-inject"]
	if !ok {
		t.Fatal("no Certificate meshgate-inject")
	}
	if want := "meshgate-inject." + webhookNamespace + ".svc"; !slices.Contains(serving.Spec.DNSNames, want) {
		t.Errorf("serving Certificate: got dnsNames %q, want %s", serving.Spec.DNSNames, want)
	}
	dep := objs["Deployment/meshgate-inject"].(*appsv1.Deployment)
	mounted := false
	for _, v := range dep.Spec.Template.Spec.Volumes {
		mounted = mounted || (v.Secret != nil && v.Secret.SecretName == serving.Spec.SecretName)
	}
	if !mounted {
		t.Errorf("the Deployment does not mount Secret %q", serving.Spec.SecretName)
	}
	issuer, ok := res[serving.Spec.IssuerRef.Kind+"/"+serving.Spec.IssuerRef.Name]
	if !ok || issuer.Spec.CA == nil {
		t.Fatalf("serving Certificate: issuer %v is not a CA Issuer of this file", serving.Spec.IssuerRef)
	}
	ca, ok := res["Certificate/"+issuer.Spec.CA.SecretName]
	if !ok || !ca.Spec.IsCA || ca.Spec.SecretName != issuer.Spec.CA.SecretName {
		t.Errorf("CA Issuer: Secret %q is not made by a CA Certificate of this file", issuer.Spec.CA.SecretName)
	}
	mwc := objs["MutatingWebhookConfiguration/meshgate-inject"].(*admissionregistrationv1.MutatingWebhookConfiguration)
	if got, want := mwc.Annotations["cert-manager.io/inject-ca-from"], webhookNamespace+"/meshgate-inject"; got != want {
		t.Errorf("cert-manager.io/inject-ca-from: got %q, want %q", got, want)
	}
	if !strings.Contains(strings.Join(dep.Spec.Template.Spec.Containers[0].Args, " "), "/tls.crt") {
		t.Errorf("the webhook's args %q do not name the mounted tls.crt", dep.Spec.Template.Spec.Containers[0].Args)
	}
}

// TestWebhookGencert runs examples/webhook/gencert.sh, the way to TLS
// without cert-manager: the serving certificate must verify against the
// CA for the Service's name, as the API server checks it, and a second run
// must renew it under the same CA.
func TestWebhookGencert(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl not found (CI=true: .ci/run installs it)")
		}
		t.Skip("openssl not found: install it to test gencert.sh")
	}
	dir := t.TempDir()
	load := func() (*x509.Certificate, *x509.Certificate) {
		t.Helper()
		if _, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")); err != nil {
			t.Fatalf("tls.crt and tls.key: %v", err)
		}
		var certs []*x509.Certificate
		for _, f := range []string{"ca.crt", "tls.crt"} {
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			blk, _ := pem.Decode(b)
			if blk == nil {
				t.Fatalf("%s: no PEM block", f)
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			certs = append(certs, c)
		}
		return certs[0], certs[1]
	}
	gen := func() {
		t.Helper()
		out, err := exec.Command("sh", "webhook/gencert.sh", dir, "30").CombinedOutput()
		if err != nil {
			t.Fatalf("gencert.sh: %v\n%s", err, out)
		}
	}
	gen()
	ca, leaf := load()
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	opts := x509.VerifyOptions{DNSName: "meshgate-inject." + webhookNamespace + ".svc", Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if _, err := leaf.Verify(opts); err != nil {
		t.Fatalf("the serving certificate does not verify: %v", err)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d < 29*24*time.Hour || d > 31*24*time.Hour {
		t.Errorf("got a certificate valid for %v, want 30 days", d)
	}

	gen()
	ca2, leaf2 := load()
	if !ca2.Equal(ca) {
		t.Error("a second run made a new CA, want the same (the caBundle stays)")
	}
	if leaf2.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("a second run kept the serving certificate, want a new one")
	}
	if _, err := leaf2.Verify(opts); err != nil {
		t.Errorf("the renewed certificate does not verify: %v", err)
	}
}

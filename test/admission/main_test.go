// Package admission tests meshgate-inject's webhook against a real
// Kubernetes API server: etcd and kube-apiserver (make kube-bins) started
// on loopback, the shipped manifests of examples/webhook applied to it, and
// the built meshgate-inject serving the webhook. Pods are created through
// the API server and what it stored is checked.
//
// Without the binaries the tests skip, saying what to run; with CI=true
// they fail. Set MESHGATE_INJECT_BIN to test a given meshgate-inject;
// otherwise one is built.
package admission

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/meshgate/meshgate/test/kubeapi"
	"github.com/meshgate/meshgate/test/testkit"
	"github.com/meshgate/meshgate/test/tlspair"
)

// The webhook's identity: a static token for its service account's name
// and groups, so that the shipped RBAC is what it reads secrets with.
var webhookUser = kubeapi.User{
	Token:  "meshgate-inject-sa-token",
	Name:   "system:serviceaccount:meshgate-system:meshgate-inject",
	Groups: []string{"system:serviceaccounts", "system:serviceaccounts:meshgate-system", "system:authenticated"},
}

// env is what TestMain set up; tests that need it call setup(t).
var env struct {
	err     error // why there is no API server
	cluster *kubeapi.Cluster
	inject  string // the meshgate-inject binary
	ca      *tlspair.CA
	hook    *hook
	dir     string
}

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	bins := kubeapi.BinDir()
	if missing := kubeapi.Missing(bins); missing != "" {
		env.err = fmt.Errorf("%s not found", missing)
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "meshgate-admission-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	defer testkit.RemoveBuilds()
	env.dir = dir
	if err := start(dir, bins); err != nil {
		env.err = err
		// Not a missing binary: every test fails with this.
	}
	defer func() {
		if env.hook != nil {
			env.hook.stop()
		}
		if env.cluster != nil {
			env.cluster.Stop()
		}
	}()
	return m.Run()
}

func start(dir, bins string) error {
	var err error
	if env.inject, err = testkit.Binary("MESHGATE_INJECT_BIN", "./cmd/meshgate-inject"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, err := kubeapi.Start(ctx, bins, filepath.Join(dir, "cluster"), webhookUser)
	if err != nil {
		return err
	}
	env.cluster = c
	env.ca = tlspair.NewCA(nopTB{})
	if err := os.MkdirAll(filepath.Join(dir, "tls"), 0o700); err != nil {
		return err
	}
	env.ca.Write(nopTB{}, filepath.Join(dir, "tls"), 1)
	kubeconfig, err := c.Kubeconfig(webhookUser.Token)
	if err != nil {
		return err
	}
	env.hook, err = startHook(env.inject, kubeconfig, filepath.Join(dir, "tls"), "127.0.0.1:0")
	if err != nil {
		return err
	}
	if err := applyManifests(ctx, c, "https://"+env.hook.addr+"/mutate", env.ca.PEM); err != nil {
		return err
	}
	for ns, labels := range map[string]map[string]string{
		"wired":  {"meshgate.io/inject": "enabled"},
		"plain":  nil,
		"native": {"meshgate.io/inject": "enabled", "test.meshgate.io/mesh": "native"},
	} {
		if err := c.Namespace(ctx, ns, labels); err != nil {
			return err
		}
	}
	return waitWired(ctx, c.Client, "wired")
}

// setup returns the cluster, or ends the test: see kubeapi.Unavailable.
func setup(t *testing.T) *kubeapi.Cluster {
	t.Helper()
	if env.cluster == nil || env.hook == nil {
		if env.err != nil && strings.HasSuffix(env.err.Error(), "not found") {
			kubeapi.Unavailable(t, env.err.Error())
		}
		t.Fatalf("no API server: %v", env.err)
	}
	return env.cluster
}

// hook is a running "meshgate-inject webhook".
type hook struct {
	cmd  *exec.Cmd
	addr string
	log  *logBuffer
	done chan struct{}
	args []string
}

// logBuffer keeps the webhook's log for the tests to search.
type logBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (b *logBuffer) add(l string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, l)
}

// find returns the log lines that contain every part.
func (b *logBuffer) find(parts ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
next:
	for _, l := range b.lines {
		for _, p := range parts {
			if !strings.Contains(l, p) {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

// startHook runs the webhook and returns once its log says it serves.
func startHook(bin, kubeconfig, tlsDir, listen string) (*hook, error) {
	args := []string{"webhook", "--listen", listen,
		"--tls-cert", filepath.Join(tlsDir, "tls.crt"), "--tls-key", filepath.Join(tlsDir, "tls.key"),
		"--kubeconfig", kubeconfig, "--drain=0s", "--log-level=debug"}
	h := &hook{cmd: exec.Command(bin, args...), log: &logBuffer{}, done: make(chan struct{}), args: args}
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := h.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := h.cmd.Start(); err != nil {
		return nil, err
	}
	serving := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			l := sc.Text()
			h.log.add(l)
			var e struct{ Msg, Addr string }
			if json.Unmarshal([]byte(l), &e) == nil && e.Msg == "serving" {
				serving <- e.Addr
			}
		}
		_ = h.cmd.Wait()
		close(h.done)
	}()
	select {
	case h.addr = <-serving:
		return h, nil
	case <-h.done:
		return nil, fmt.Errorf("meshgate-inject webhook exited (%v):\n%s", h.cmd.ProcessState, h.log)
	case <-time.After(60 * time.Second):
		h.stop()
		return nil, fmt.Errorf("meshgate-inject webhook did not log \"serving\" in 60s:\n%s", h.log)
	}
}

// stop sends SIGTERM and waits for the exit.
func (h *hook) stop() {
	_ = h.cmd.Process.Signal(syscall.SIGTERM)
	<-h.done
}

// applyManifests creates every object of examples/webhook/meshgate-inject.yaml,
// with the webhook configuration pointed at url (no cluster network here
// to reach the Service) and trusting ca.
func applyManifests(ctx context.Context, c *kubeapi.Cluster, url string, ca []byte) error {
	data, err := os.ReadFile("../../examples/webhook/meshgate-inject.yaml")
	if err != nil {
		return err
	}
	for i, doc := range bytes.Split(data, []byte("\n---\n")) {
		var o metav1.PartialObjectMetadata
		if err := yaml.Unmarshal(doc, &o); err != nil {
			return fmt.Errorf("document %d: %w", i, err)
		}
		create := creators(c.Client, o.Namespace, url, ca)[o.Kind]
		if create == nil {
			create = func(context.Context, []byte) error { return errors.New("not a kind this test creates") }
		}
		if err := create(ctx, doc); err != nil {
			return fmt.Errorf("document %d (%s): %w", i, o.Kind, err)
		}
	}
	return nil
}

// creators create a document of each kind the manifests hold, in
// namespace ns, the webhook configuration pointed at url and trusting ca.
func creators(cs kubernetes.Interface, ns, url string, ca []byte) map[string]func(context.Context, []byte) error {
	return map[string]func(context.Context, []byte) error{
		"Namespace":           createAs(cs.CoreV1().Namespaces().Create),
		"ServiceAccount":      createAs(cs.CoreV1().ServiceAccounts(ns).Create),
		"Service":             createAs(cs.CoreV1().Services(ns).Create),
		"ClusterRole":         createAs(cs.RbacV1().ClusterRoles().Create),
		"ClusterRoleBinding":  createAs(cs.RbacV1().ClusterRoleBindings().Create),
		"Deployment":          createAs(cs.AppsV1().Deployments(ns).Create),
		"PodDisruptionBudget": createAs(cs.PolicyV1().PodDisruptionBudgets(ns).Create),
		"MutatingWebhookConfiguration": createAs(func(ctx context.Context, o *admissionregistrationv1.MutatingWebhookConfiguration, opts metav1.CreateOptions) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
			for i := range o.Webhooks {
				o.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: ca}
			}
			return cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, o, opts)
		}),
	}
}

// createAs decodes a document strictly into a T and creates it with
// create, which the API server validates strictly too.
func createAs[T any](create func(context.Context, *T, metav1.CreateOptions) (*T, error)) func(context.Context, []byte) error {
	return func(ctx context.Context, doc []byte) error {
		var o T
		if err := yaml.UnmarshalStrict(doc, &o); err != nil {
			return err
		}
		_, err := create(ctx, &o, metav1.CreateOptions{FieldValidation: "Strict"})
		return err
	}
}

// waitWired waits until the API server calls the webhook: a webhook
// configuration takes effect once the API server's informer has seen it.
// Dry-run creations of a pod in ns show when.
func waitWired(ctx context.Context, cs kubernetes.Interface, ns string) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "probe"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "app", Image: "registry.example/app:1", Command: []string{"/app"}},
		}},
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		got, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return err
		}
		if len(got.Spec.Containers[0].Command) > 1 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the webhook was never called: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// nopTB lets the tlspair helpers run in TestMain, where no test exists
// yet; they only fail on errors of crypto/rand and the file system.
type nopTB struct{ testing.TB }

func (nopTB) Helper()                   {}
func (nopTB) Fatal(args ...any)         { panic(fmt.Sprint(args...)) }
func (nopTB) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }

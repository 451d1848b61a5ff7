// Package kubeapi runs a real Kubernetes API server for tests: etcd and
// kube-apiserver as built by `make kube-bins`, started by hand on loopback,
// with no controller-manager, scheduler or kubelet. Pods created through it
// go through the real admission chain (mutating webhooks included) and are
// stored; nothing runs them.
package kubeapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Versions of the binaries, as the Makefile's kube-bins target names its
// folder.
const (
	KubeVersion = "v1.37.2"
	EtcdVersion = "v3.6.13"
)

// BinDir is where `make kube-bins` puts etcd and kube-apiserver:
// $MESHGATE_KUBE_BINS, else the user's cache folder.
func BinDir() string {
	if d := os.Getenv("MESHGATE_KUBE_BINS"); d != "" {
		return d
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = filepath.Join(os.TempDir(), "cache")
	}
	return filepath.Join(cache, "meshgate", "kube-"+KubeVersion+"-etcd-"+EtcdVersion)
}

// Missing tells which binary is missing from dir, or "" when both are
// there.
func Missing(dir string) string {
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.Mode()&0o111 == 0 {
			return filepath.Join(dir, b)
		}
	}
	return ""
}

// Token is the bearer token of the cluster's administrator (group
// system:masters). Users tokens adds are for other identities.
const Token = "meshgate-test-admin"

// User is an identity the API server knows by its static token, e.g. a
// service account whose RBAC is under test.
type User struct {
	Token, Name string
	Groups      []string
}

// Cluster is a running etcd and kube-apiserver.
type Cluster struct {
	// URL is the API server's https://127.0.0.1:PORT.
	URL string
	// Config is an administrator's client configuration.
	Config *rest.Config
	// Client is an administrator's client.
	Client kubernetes.Interface

	dir       string
	etcd, api *exec.Cmd
	exited    map[*exec.Cmd]chan struct{}
}

// Start runs etcd and kube-apiserver from bins with their state in dir
// (made if need be), and returns when the API server answers /readyz
// with 200. users get static tokens. Logs go to dir/etcd.log and
// dir/kube-apiserver.log; errors quote their last lines.
func Start(ctx context.Context, bins, dir string, users ...User) (*Cluster, error) {
	if m := Missing(bins); m != "" {
		return nil, fmt.Errorf("%s not found: run make kube-bins", m)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, exited: map[*exec.Cmd]chan struct{}{}}
	var err error
	// A port picked free may be taken by another process before the
	// server binds it; a second pick then fits.
	for try := 0; try < 3; try++ {
		if err = c.start(ctx, bins, users); err == nil || !errors.Is(err, errPortTaken) {
			break
		}
		c.Stop()
	}
	if err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

var errPortTaken = errors.New("port taken")

func (c *Cluster) start(ctx context.Context, bins string, users []User) error {
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	client, peer, secure := ports[0], ports[1], ports[2]
	etcdURL, err := c.startEtcd(ctx, bins, client, peer)
	if err != nil {
		return err
	}
	saKey, tokens, err := c.writeCredentials(users)
	if err != nil {
		return err
	}
	c.URL = fmt.Sprintf("https://127.0.0.1:%d", secure)
	if err := c.startAPI(ctx, bins, etcdURL, secure, saKey, tokens); err != nil {
		return err
	}
	c.Config = c.UserConfig(Token)
	c.Client, err = kubernetes.NewForConfig(c.Config)
	return err
}

// startEtcd starts etcd on the client and peer ports, waits for it to be
// healthy and returns its client URL.
func (c *Cluster) startEtcd(ctx context.Context, bins string, client, peer int) (string, error) {
	etcdDir := filepath.Join(c.dir, "etcd")
	_ = os.RemoveAll(etcdDir)
	var err error
	c.etcd, err = c.run(bins, "etcd", "etcd.log",
		"--name=default",
		"--data-dir="+etcdDir,
		fmt.Sprintf("--listen-client-urls=http://127.0.0.1:%d", client),
		fmt.Sprintf("--advertise-client-urls=http://127.0.0.1:%d", client),
		fmt.Sprintf("--listen-peer-urls=http://127.0.0.1:%d", peer),
		fmt.Sprintf("--initial-advertise-peer-urls=http://127.0.0.1:%d", peer),
		fmt.Sprintf("--initial-cluster=default=http://127.0.0.1:%d", peer),
		"--unsafe-no-fsync=true", // a test store: durability costs time on a busy disk
		"--log-level=warn",
	)
	if err != nil {
		return "", err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", client)
	return etcdURL, c.wait(ctx, c.etcd, "etcd.log", http.DefaultClient, etcdURL+"/health", "")
}

// writeCredentials writes the service account signing key and the static
// tokens of the admin and of users, and returns the two files' paths.
func (c *Cluster) writeCredentials(users []User) (saKey, tokens string, err error) {
	pki := filepath.Join(c.dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return "", "", err
	}
	saKey = filepath.Join(pki, "sa.key")
	if err := writeRSAKey(saKey); err != nil {
		return "", "", err
	}
	tokens = filepath.Join(pki, "tokens.csv")
	var csv bytes.Buffer
	fmt.Fprintf(&csv, "%s,admin,admin,\"system:masters\"\n", Token)
	for _, u := range users {
		fmt.Fprintf(&csv, "%s,%s,%s,\"%s\"\n", u.Token, u.Name, u.Name, strings.Join(u.Groups, ","))
	}
	return saKey, tokens, os.WriteFile(tokens, csv.Bytes(), 0o600)
}

// startAPI starts kube-apiserver on port secure and waits for it to be
// ready.
func (c *Cluster) startAPI(ctx context.Context, bins, etcdURL string, secure int, saKey, tokens string) error {
	var err error
	c.api, err = c.run(bins, "kube-apiserver", "kube-apiserver.log",
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", secure),
		"--cert-dir="+filepath.Join(c.dir, "certs"),
		"--token-auth-file="+tokens,
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.0.0.0/24",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+saKey,
		"--service-account-signing-key-file="+saKey,
		// Without a controller-manager there is no endpoint reconciler
		// peer, and loopback is not a valid endpoint for the
		// kubernetes Service.
		"--endpoint-reconciler-type=none",
		// Less work on a busy 2-core machine; nothing here tests them.
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--v=1",
	)
	if err != nil {
		return err
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // loopback, a certificate made at start
	defer tr.CloseIdleConnections()
	return c.wait(ctx, c.api, "kube-apiserver.log", &http.Client{Transport: tr, Timeout: 10 * time.Second}, c.URL+"/readyz", Token)
}

// UserConfig is a client configuration with token.
func (c *Cluster) UserConfig(token string) *rest.Config {
	return &rest.Config{
		Host:            c.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS:             -1, // no client-side throttling: the tests and the benchmark set the pace
	}
}

// Kubeconfig writes a kubeconfig file for token and returns its path.
func (c *Cluster) Kubeconfig(token string) (string, error) {
	p := filepath.Join(c.dir, "kubeconfig-"+hex.EncodeToString([]byte(token))[:12])
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, insecure-skip-tls-verify: true}
users:
- name: test
  user: {token: %q}
contexts:
- name: test
  context: {cluster: test, user: test}
current-context: test
`, c.URL, token)
	return p, os.WriteFile(p, []byte(cfg), 0o600)
}

// run starts a binary with its output in a log file. It dies with the
// test process (Pdeathsig) so that nothing is left behind.
func (c *Cluster) run(bins, name, logName string, args ...string) (*exec.Cmd, error) {
	logf, err := os.Create(filepath.Join(c.dir, logName))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(bins, name), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	cmd.Env = append(os.Environ(), "HTTP_PROXY=", "HTTPS_PROXY=", "NO_PROXY=*")
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	done := make(chan struct{})
	c.exited[cmd] = done
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	return cmd, nil
}

// wait polls url until it answers 200, the process exits (an error with
// the end of its log), or ctx ends.
func (c *Cluster) wait(ctx context.Context, cmd *exec.Cmd, logName string, hc *http.Client, url, token string) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s: %s", url, resp.Status, lastLines(body, 3))
		}
		last = err
		select {
		case <-c.exited[cmd]:
			tail := c.tail(logName)
			if strings.Contains(tail, "address already in use") {
				return fmt.Errorf("%s: %w", cmd.Path, errPortTaken)
			}
			return fmt.Errorf("%s exited (%v) before it was ready:\n%s", filepath.Base(cmd.Path), cmd.ProcessState, tail)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last: %v)\n%s", filepath.Base(cmd.Path), ctx.Err(), last, c.tail(logName))
		case <-tick.C:
		}
	}
}

// tail is the end of a log file.
func (c *Cluster) tail(logName string) string {
	b, _ := os.ReadFile(filepath.Join(c.dir, logName))
	return lastLines(b, 20)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Log is the API server's log, for failure messages.
func (c *Cluster) Log() string { return c.tail("kube-apiserver.log") }

// Stop ends the API server, then etcd, and waits for both.
func (c *Cluster) Stop() {
	for _, cmd := range []*exec.Cmd{c.api, c.etcd} {
		if cmd == nil || cmd.Process == nil {
			continue
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited[cmd]:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-c.exited[cmd]
		}
	}
	c.api, c.etcd = nil, nil
}

// Namespace creates a namespace with labels, and its default
// ServiceAccount, which a controller-manager would create and without
// which the ServiceAccount admission plugin refuses pods.
func (c *Cluster) Namespace(ctx context.Context, name string, labels map[string]string) error {
	_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	_, err = c.Client.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func writeRSAKey(path string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	der := x509.MarshalPKCS1PrivateKey(key)
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}), 0o600)
}

// Unavailable ends a test that needs the binaries when they are missing:
// under CI=true it fails (CI builds them first with make kube-bins),
// elsewhere it skips with what to run.
func Unavailable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("no API server: %s (CI=true: .ci/run must run make kube-bins first)", why)
	}
	t.Skipf("no API server: %s (run make kube-bins to build kube-apiserver and etcd)", why)
}

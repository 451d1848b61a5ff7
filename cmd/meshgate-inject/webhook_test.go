package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/test/tlspair"
)

// webhookFiles writes a TLS pair and a kubeconfig (whose server is never
// called: these pods need no look-up) and returns their paths.
func webhookFiles(t *testing.T, ca *tlspair.CA) (cert, key, kubeconfig string) {
	t.Helper()
	dir := t.TempDir()
	cert, key = ca.Write(t, dir, 1)
	kubeconfig = filepath.Join(dir, "kubeconfig")
	cfg := "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\"}}]\n" +
		"users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key, kubeconfig
}

func TestWebhookFlags(t *testing.T) {
	ca := tlspair.NewCA(t)
	cert, key, kc := webhookFiles(t, ca)
	ok := []string{"webhook", "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key, "--kubeconfig", kc}
	tests := []struct {
		name string
		args []string
		want string // the error line
	}{
		{"no tls", []string{"webhook"}, "webhook: --tls-cert and --tls-key are required"},
		{"missing cert", []string{"webhook", "--tls-cert", "/nonexistent/tls.crt", "--tls-key", key, "--kubeconfig", kc}, "tls certificate: stat /nonexistent/tls.crt"},
		{"key of nothing", []string{"webhook", "--tls-cert", cert, "--tls-key", cert, "--kubeconfig", kc}, "tls pair " + cert},
		{"argument", append(ok, "extra"), `webhook: unexpected argument "extra"`},
		{"unknown flag", append(ok, "--resolve"), "unknown flag: --resolve"},
		{"lookup timeout", append(ok, "--lookup-timeout=0s"), "--lookup-timeout 0s: want a positive duration"},
		{"negative drain", append(ok, "--drain=-1s"), "--drain -1s: want a positive duration"},
		{"cache size", append(ok, "--cache-size=0"), "--cache-size 0: want at least 1"},
		{"log level", append(ok, "--log-level=loud"), `--log-level "loud"`},
		{"preset", append(ok, "--preset=cilium"), "cilium"},
		{"entrypoint", append(ok, "--entrypoint=app"), "--entrypoint"},
		{"kubeconfig", []string{"webhook", "--tls-cert", cert, "--tls-key", key, "--kubeconfig", "/nonexistent/kubeconfig"}, `--kubeconfig "/nonexistent/kubeconfig"`},
		{"listen", []string{"webhook", "--listen", "127.0.0.1:99999", "--tls-cert", cert, "--tls-key", key, "--kubeconfig", kc}, `--listen "127.0.0.1:99999"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tt.args, strings.NewReader(""), &out, &errb, nil)
			lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
			if code != 2 || len(lines) != 1 || !strings.Contains(lines[0], tt.want) || out.Len() > 0 {
				t.Errorf("got exit %d stderr %q stdout %q, want exit 2 and one line containing %q", code, errb.String(), out.String(), tt.want)
			}
		})
	}
}

// TestWebhookServes runs the subcommand: it serves /healthz over TLS and
// wires a pod on /mutate, then exits 0 when its context ends.
func TestWebhookServes(t *testing.T) {
	ca := tlspair.NewCA(t)
	cert, key, kc := webhookFiles(t, ca)
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"webhook", "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key,
			"--kubeconfig", kc, "--drain=0s"}, strings.NewReader(""), io.Discard, pw, nil)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var addr string
	for addr == "" && sc.Scan() {
		var e struct{ Msg, Addr string }
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Msg == "serving" {
			addr = e.Addr
		}
	}
	if addr == "" {
		t.Fatal("the webhook never logged \"serving\"")
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	resp, err := c.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/healthz: got %d, want 200", resp.StatusCode)
	}

	review := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1",` +
		`"kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},` +
		`"namespace":"apps","operation":"CREATE","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"},` +
		`"spec":{"containers":[{"name":"app","image":"example.com/app:1","command":["/app/server"]}]}}}}`
	resp, err = c.Post("https://"+addr+"/mutate", "application/json", strings.NewReader(review))
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Response struct {
			UID     string
			Allowed bool
			Patch   []byte
		}
	}
	err = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if err != nil || out.Response.UID != "u1" || !out.Response.Allowed || !strings.Contains(string(out.Response.Patch), "/meshgate/meshgate") {
		t.Errorf("/mutate: got %+v (%v), want u1 allowed with a patch that wires /meshgate/meshgate", out.Response, err)
	}

	cancel()
	if code := <-done; code != 0 {
		t.Errorf("got exit %d after the context ended, want 0", code)
	}
}

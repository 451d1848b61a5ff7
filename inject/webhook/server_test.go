package webhook

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshgate/meshgate/test/tlspair"
)

// serve starts a Server on loopback with a certificate of serial 1 in dir
// and returns its URL and a function that stops it and returns Serve's
// error.
func serve(t *testing.T, s *Server, ca *tlspair.CA, dir string) (string, func() error) {
	t.Helper()
	cert, key := ca.Write(t, dir, 1)
	s.Certs = &Certs{CertFile: cert, KeyFile: key}
	if s.Handler == nil {
		s.Handler = &Handler{Transform: wrap{}}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() { _ = stop() })
	return "https://" + ln.Addr().String(), stop
}

func client(ca *tlspair.CA) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
}

// get fetches path and returns the status, the body and the serial number
// of the server's certificate.
func get(t *testing.T, c *http.Client, url string) (int, string, int64) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), resp.TLS.PeerCertificates[0].SerialNumber.Int64()
}

func TestServerHealth(t *testing.T) {
	ca := tlspair.NewCA(t)
	url, stop := serve(t, &Server{}, ca, t.TempDir())
	c := client(ca)
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body, _ := get(t, c, url+p); code != 200 || body != "ok" {
			t.Errorf("%s: got %d %q, want 200 ok", p, code, body)
		}
	}
	resp, err := c.Post(url+"/mutate", "application/json", strings.NewReader("{"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("/mutate with a bad review: got %d, want 400", resp.StatusCode)
	}
	if err := stop(); err != nil {
		t.Errorf("stop: got %v, want a clean shutdown", err)
	}
}

// TestServerRotation replaces the certificate the way the kubelet updates
// a Secret volume: the next connection gets the new one, a connection
// already open goes on with the old one, and a pair caught half-written
// is not taken.
func TestServerRotation(t *testing.T) {
	ca := tlspair.NewCA(t)
	dir := t.TempDir()
	url, _ := serve(t, &Server{}, ca, dir)
	kept := client(ca)
	if _, _, serial := get(t, kept, url+"/healthz"); serial != 1 {
		t.Fatalf("got serial %d, want 1", serial)
	}

	ca.Write(t, dir, 2)
	if code, _, serial := get(t, kept, url+"/healthz"); code != 200 || serial != 1 {
		t.Errorf("open connection after the rotation: got %d with serial %d, want 200 with 1 (not dropped)", code, serial)
	}
	if _, _, serial := get(t, client(ca), url+"/healthz"); serial != 2 {
		t.Errorf("new connection: got serial %d, want 2", serial)
	}

	// The certificate of serial 3 with the key of serial 2.
	cert3, _ := ca.Issue(t, 3)
	target, err := filepath.EvalSymlinks(filepath.Join(dir, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(target+".new", cert3, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(target+".new", target); err != nil {
		t.Fatal(err)
	}
	if code, _, serial := get(t, client(ca), url+"/healthz"); code != 200 || serial != 2 {
		t.Errorf("half-written pair: got %d with serial %d, want 200 with 2", code, serial)
	}
}

// TestServerDrain checks that /readyz fails once the server is told to
// stop, while it still serves, until the drain ends.
func TestServerDrain(t *testing.T) {
	ca := tlspair.NewCA(t)
	drained := make(chan time.Time)
	asked := make(chan time.Duration, 1)
	s := &Server{Drain: 5 * time.Second, After: func(d time.Duration) <-chan time.Time {
		asked <- d
		return drained
	}}
	url, stop := serve(t, s, ca, t.TempDir())
	c := client(ca)
	done := make(chan error, 1)
	go func() { done <- stop() }()
	if d := <-asked; d != 5*time.Second {
		t.Errorf("got a drain of %v, want 5s", d)
	}
	if code, body, _ := get(t, c, url+"/readyz"); code != 503 || body != "draining" {
		t.Errorf("/readyz while draining: got %d %q, want 503 draining", code, body)
	}
	if code, _, _ := get(t, c, url+"/healthz"); code != 200 {
		t.Errorf("/healthz while draining: got %d, want 200", code)
	}
	close(drained)
	if err := <-done; err != nil {
		t.Errorf("stop: got %v, want a clean shutdown", err)
	}
}

func TestServerBadPair(t *testing.T) {
	dir := t.TempDir()
	s := &Server{Certs: &Certs{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = s.Serve(context.Background(), ln)
	if err == nil || !strings.Contains(err.Error(), "tls certificate") || !strings.Contains(err.Error(), "tls.crt") {
		t.Errorf("got %v, want an error naming the certificate file", err)
	}
}

package probe

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	good := []struct{ spec, want string }{
		{"http://localhost:15020/healthz/ready", "*probe.HTTP"},
		{"https://127.0.0.1:8443/ready?verbose=1", "*probe.HTTP"},
		{"http://proxy.local/ready", "*probe.HTTP"},
		{"http://[::1]:4191/ready", "*probe.HTTP"},
		{"tcp://127.0.0.1:20000", "*probe.TCP"},
		{"tcp://[::1]:20000", "*probe.TCP"},
		{"tcp://localhost:1/", "*probe.TCP"},
	}
	for _, tc := range good {
		p, err := Parse(tc.spec, Options{})
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.spec, err)
			continue
		}
		if got := typeName(p); got != tc.want {
			t.Errorf("Parse(%q) is %s, want %s", tc.spec, got, tc.want)
		}
		if p.String() != tc.spec {
			t.Errorf("Parse(%q).String() = %q", tc.spec, p.String())
		}
	}
	bad := []struct{ spec, want string }{
		{"", "empty spec"},
		{"localhost:15020", "missing scheme"},
		{"/healthz/ready", "missing scheme"},
		{"ftp://localhost:21/", `unsupported scheme "ftp"`},
		{"grpc://localhost:1", `unsupported scheme "grpc"`},
		{"http:///ready", "missing host"},
		{"tcp://localhost", "missing port"},
		{"tcp://localhost:", "missing port"},
		{"http://localhost:/x", "empty port"},
		{"tcp://localhost:0", `port "0" out of range`},
		{"tcp://localhost:65536", `port "65536" out of range`},
		{"http://localhost:http/", "invalid port"},
		{"tcp://::1:80", "must be in brackets"},
		{"tcp://[::1:80", "missing ']'"},
		{"tcp://[zz]:80", `"zz"`},
		{"http://user:pw@localhost:1/", "credentials"},
		{"http://user:secret@localhost:bad/", "credentials"},
		{"http://localhost:1/a@b", "credentials"},
		{"http://localhost:1/#frag", "fragment"},
		{"tcp://localhost:1/path", "no path or query"},
		{"tcp://localhost:1?x", "no path or query"},
		{"http://bad host:1/", "white space"},
		{"http://-bad-:1/", "bad host name"},
		{"http://a..b:1/", "bad host name"},
		{"http:localhost", "missing scheme"},
		{"%zz://x", "first path segment"},
	}
	for _, tc := range bad {
		_, err := Parse(tc.spec, Options{})
		if err == nil {
			t.Errorf("Parse(%q) = nil error, want %q", tc.spec, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `"`+Redact(tc.spec)+`"`) {
			t.Errorf("Parse(%q) error = %q, want it to name the spec and say %q", tc.spec, err, tc.want)
		}
	}
}

func TestErrorsHideCredentials(t *testing.T) {
	for _, spec := range []string{"http://user:secret@localhost:1/", "https://:secret@x:bad/", "tcp://secret@h:1/p", "http://a@b:secret@c:1/",
		"http://admin:s3/secret@localhost:15020/r", "http://admin:s?secret@localhost:1/", "http://admin:s#secret@localhost:1/",
		"http://admin:%zzsecret@localhost:1/", "admin:secret@localhost:1"} {
		_, err := Parse(spec, Options{})
		if err == nil || strings.Contains(err.Error(), "secret") {
			t.Errorf("Parse(%q) error = %v, want an error that does not show the credentials", spec, err)
		}
	}
	for _, tc := range []struct{ spec, want string }{
		// Up to the last @: a password may hold /, ? and # (and @).
		{"http://user:pw@localhost:1/x?y@z", "http://xxxxx@z"},
		{"http://admin:s3cr/et@localhost:15020/r", "http://xxxxx@localhost:15020/r"},
		{"http://localhost:1/x", "http://localhost:1/x"},
		{"no scheme:pw@all", "xxxxx@all"},
	} {
		if got := Redact(tc.spec); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.spec, got, tc.want)
		}
	}
}

func typeName(p Probe) string {
	switch p.(type) {
	case *HTTP:
		return "*probe.HTTP"
	case *TCP:
		return "*probe.TCP"
	}
	return "other"
}

func TestPresets(t *testing.T) {
	for _, p := range Presets() {
		if _, err := Parse(p.Ready, Options{}); err != nil {
			t.Errorf("preset %s: %v", p.Name, err)
		}
		got, err := LookupPreset(p.Name)
		if err != nil || got != p {
			t.Errorf("LookupPreset(%q) = %v, %v", p.Name, got, err)
		}
	}
	if _, err := LookupPreset("istoi"); err == nil || !strings.Contains(err.Error(), `"istoi"`) {
		t.Errorf("LookupPreset(istoi) error = %v, want it named", err)
	}
}

// mustParse makes a probe that is closed when the test ends, so that no
// kept connection outlives it.
func mustParse(t *testing.T, spec string, opts Options) Probe {
	t.Helper()
	p, err := Parse(spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := p.(io.Closer); ok {
		t.Cleanup(func() { _ = c.Close() })
	}
	return p
}

func TestHTTPVerdicts(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    string // "" means ready
	}{
		{"200", func(w http.ResponseWriter, r *http.Request) {}, ""},
		{"204", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }, ""},
		{"503 with body", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(503)
			_, _ = w.Write([]byte("not ready\n"))
		}, `answered 503 Service Unavailable: "not ready"`},
		{"503 empty", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }, "answered 503 Service Unavailable"},
		{"redirect not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		}, `answered 302 Found to /elsewhere: "<a href=\"/elsewhere\">Found</a>."`},
		{"control characters cleaned", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(500)
			_, _ = w.Write([]byte("bad\x1b[31m\nnews\x00"))
		}, `answered 500 Internal Server Error: "bad[31m news"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			err := mustParse(t, srv.URL+"/ready", Options{}).Check(context.Background())
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Check = %v, want ready", err)
				}
				return
			}
			var nr *NotReadyError
			if !errors.As(err, &nr) || err.Error() != tc.want {
				t.Fatalf("Check = %v, want NotReadyError %q", err, tc.want)
			}
		})
	}
}

func TestHTTPSendsGETWithAgent(t *testing.T) {
	var got atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Method + " " + r.URL.RequestURI() + " " + r.UserAgent())
	}))
	defer srv.Close()
	p := mustParse(t, srv.URL+"/healthz/ready?x=1", Options{UserAgent: "meshgate/test"})
	if err := p.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
	if want := "GET /healthz/ready?x=1 meshgate/test"; got.Load() != want {
		t.Errorf("request = %q, want %q", got.Load(), want)
	}
}

func TestHTTPIgnoresProxyVariables(t *testing.T) {
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200) // a proxy that would say "ready" for anything
	}))
	defer proxy.Close()
	t.Setenv("HTTP_PROXY", proxy.URL)
	t.Setenv("http_proxy", proxy.URL)
	t.Setenv("NO_PROXY", "")
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
	}))
	defer target.Close()
	// A name, not an IP: Go bypasses proxies for loopback IPs on its own.
	url := strings.Replace(target.URL, "127.0.0.1", "localhost", 1)
	err := mustParse(t, url+"/ready", Options{}).Check(context.Background())
	var nr *NotReadyError
	if !errors.As(err, &nr) {
		t.Fatalf("Check = %v, want the target's 503, not the proxy's 200", err)
	}
}

func TestHTTPBoundsTheBody(t *testing.T) {
	var sent atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
		chunk := make([]byte, 32<<10)
		for r.Context().Err() == nil {
			n, err := w.Write(chunk)
			sent.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := mustParse(t, srv.URL+"/", Options{}).Check(ctx)
	var nr *NotReadyError
	if !errors.As(err, &nr) {
		t.Fatalf("Check = %v, want not ready", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Check read until the deadline: the body is not bounded")
	}
	if len(nr.Body) > bodySnippet {
		t.Errorf("kept %d bytes of body, want at most %d", len(nr.Body), bodySnippet)
	}
}

func TestHTTPKeepsConnectionAlive(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
		_, _ = w.Write([]byte("not ready\n"))
	})
	p := mustParse(t, srv.URL+"/", Options{})
	for i := 0; i < 5; i++ {
		_ = p.Check(context.Background())
	}
	if got := conns.Load(); got != 1 {
		t.Errorf("5 attempts opened %d connections, want 1", got)
	}
	p.(*HTTP).Close()
}

// countingServer starts a test server that counts the connections made to
// it, to tell a kept-alive connection from new ones.
func countingServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func TestHTTPS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	srv.StartTLS()
	defer srv.Close()
	err := mustParse(t, srv.URL+"/ready", Options{}).Check(context.Background())
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Check of a self-signed server = %v, want a certificate error", err)
	}
	if err := mustParse(t, srv.URL+"/ready", Options{InsecureSkipVerify: true}).Check(context.Background()); err != nil {
		t.Errorf("Check with InsecureSkipVerify = %v, want ready", err)
	}
}

func TestHTTPCutByContext(t *testing.T) {
	// A server that accepts and never answers.
	srv := newRawServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- mustParse(t, srv.URL()+"/", Options{}).Check(ctx) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Check = %v, want context.Canceled", err)
	}
}

func TestTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	p := mustParse(t, "tcp://"+addr, Options{})
	if err := p.Check(context.Background()); err != nil {
		t.Errorf("Check of an open port = %v, want ready", err)
	}
	ln.Close()
	if err := p.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("Check of a closed port = %v, want connection refused", err)
	}
}

func TestLocalhostMeansLoopback(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			host := "127.0.0.1"
			if network == "tcp6" {
				host = "[::1]"
			}
			ln, err := net.Listen(network, host+":0")
			if err != nil {
				t.Skipf("no %s loopback here: %v", network, err)
			}
			defer ln.Close()
			port := ln.Addr().(*net.TCPAddr).Port
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
			go func() { _ = srv.Serve(ln) }()
			defer srv.Close()
			for _, spec := range []string{
				"tcp://localhost:" + strconv.Itoa(port),
				"http://localhost:" + strconv.Itoa(port) + "/ready",
				"http://LOCALHOST.:" + strconv.Itoa(port) + "/ready",
			} {
				if err := mustParse(t, spec, Options{}).Check(context.Background()); err != nil {
					t.Errorf("%s with a server on %s only: %v", spec, host, err)
				}
			}
		})
	}
}

func TestFunc(t *testing.T) {
	want := errors.New("nope")
	var p Probe = Func(func(context.Context) error { return want })
	if err := p.Check(context.Background()); err != want {
		t.Errorf("Func.Check = %v, want %v", err, want)
	}
}

func TestHTTPSurvivesKeptConnectionClosed(t *testing.T) {
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
	})
	p := mustParse(t, srv.URL+"/", Options{})
	for i := range 3 {
		var nr *NotReadyError
		if err := p.Check(context.Background()); !errors.As(err, &nr) {
			t.Fatalf("attempt %d: %v, want not ready", i, err)
		}
		// The server drops idle connections between attempts.
		srv.CloseClientConnections()
	}
	if got := conns.Load(); got != 3 {
		t.Errorf("%d connections for 3 attempts with closes between, want 3", got)
	}
}

func TestHTTPOddAnswers(t *testing.T) {
	tests := []struct {
		name, raw, want string
	}{
		{"garbage", "SSH-2.0-OpenSSH\r\n\r\n", "malformed HTTP"},
		{"close after 200", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", ""},
		{"binary garbage", "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\n\xff\xfe\x00\r\n\r\n", "malformed HTTP"},
		{"interim 103, no final answer", "HTTP/1.1 103 Early Hints\r\n\r\n", "unexpected EOF"},
		{"HTTP/1.0 503", "HTTP/1.0 503 Service Unavailable\r\n\r\nnot ready\n", `answered 503 Service Unavailable: "not ready"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRawServer(t, func(c net.Conn) {
				buf := make([]byte, 4096)
				_, _ = c.Read(buf)
				_, _ = c.Write([]byte(tc.raw))
			})
			p := mustParse(t, srv.URL()+"/ready", Options{})
			for range 2 { // the second attempt must not trip on the first's connection
				err := p.Check(context.Background())
				if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
					t.Fatalf("Check = %v, want %q", err, tc.want)
				}
			}
		})
	}
}

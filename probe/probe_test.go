package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
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
		if got := fmt.Sprintf("%T", p); err != nil || got != tc.want || p.String() != tc.spec {
			t.Errorf("Parse(%q) = %s %v, %v; want a %s that stands for the spec", tc.spec, got, p, err, tc.want)
		}
	}
	bad := []struct{ spec, want string }{
		{"", "empty spec"},
		{"localhost:15020", "missing scheme"},
		{"/healthz/ready", "missing scheme"},
		{"http:localhost", "missing scheme"},
		{"ftp://localhost:21/", `unsupported scheme "ftp"`},
		{"grpc://localhost:1", `unsupported scheme "grpc"`},
		{"%zz://x", "first path segment"},
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
		{"http://localhost:1/a@b", "credentials"},
		{"http://localhost:1/#frag", "fragment"},
		{"tcp://localhost:1/path", "no path or query"},
		{"tcp://localhost:1?x", "no path or query"},
		{"http://bad host:1/", "white space"},
		{"http://-bad-:1/", "bad host name"},
		{"http://a..b:1/", "bad host name"},
		// Credentials are refused, and no byte of them is shown.
		{"http://user:secret@localhost:1/", "credentials"},
		{"http://user:secret@localhost:bad/", "credentials"},
		{"https://:secret@x:bad/", "credentials"},
		{"tcp://secret@h:1/p", "credentials"},
		{"http://a@b:secret@c:1/", "credentials"},
		{"http://admin:s3/secret@localhost:15020/r", "credentials"},
		{"http://admin:s?secret@localhost:1/", "credentials"},
		{"http://admin:s#secret@localhost:1/", "credentials"},
		{"http://admin:%zzsecret@localhost:1/", "credentials"},
		{"admin:secret@localhost:1", "credentials"},
	}
	for _, tc := range bad {
		_, err := Parse(tc.spec, Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), strconv.Quote(Redact(tc.spec))) ||
			strings.Contains(err.Error(), "secret") {
			t.Errorf("Parse(%q) error = %v, want it to name the spec, credentials hidden, and say %q", tc.spec, err, tc.want)
		}
	}
	if _, err := ParseHTTPURL("tcp://localhost:1"); err == nil || !strings.Contains(err.Error(), "want http or https") {
		t.Errorf("ParseHTTPURL(tcp://localhost:1) error = %v, want the scheme refused", err)
	}
}

func TestRedact(t *testing.T) {
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

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "LocalHost.": true, "app.localhost": true, "127.0.0.1": true, "127.9.8.7": true,
		"::1": true, "::ffff:127.0.0.1": true,
		"10.0.0.1": false, "::": false, "example.com": false, "localhost.example.com": false, "": false,
	} {
		if got := IsLoopback(host); got != want {
			t.Errorf("IsLoopback(%q) = %t, want %t", host, got, want)
		}
	}
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

// TestHTTPRequest checks the request a probe sends, to a host that a
// proxy would serve: TestMain sets the proxy variables, and Go never
// proxies "localhost" or loopback addresses, but does "x.localhost".
func TestHTTPRequest(t *testing.T) {
	got := make(chan string, 1)
	srv := newServer(t, replies(func(r *http.Request) string {
		got <- fmt.Sprintf("%s %s, User-Agent %q, Accept %q", r.Method, r.RequestURI, r.UserAgent(), r.Header.Get("Accept"))
		return ok200
	}))
	url := strings.Replace(srv.url(), "127.0.0.1", "proxied.localhost", 1) + "/healthz/ready?x=1"
	for agent, want := range map[string]string{"": "meshgate", "meshgate/test": "meshgate/test"} {
		if err := mustParse(t, url, Options{UserAgent: agent}).Check(context.Background()); err != nil {
			t.Fatal(err)
		}
		if r, want := <-got, fmt.Sprintf("GET /healthz/ready?x=1, User-Agent %q, Accept \"*/*\"", want); r != want {
			t.Errorf("request with UserAgent %q: got %s, want %s", agent, r, want)
		}
	}
}

func TestHTTPTLS(t *testing.T) {
	tests := []struct {
		name   string
		tls    bool // the server speaks TLS
		scheme string
		opts   Options
		want   string // in the error; "" means ready
	}{
		{"self-signed", true, "https", Options{}, "certificate"},
		{"self-signed, verification off", true, "https", Options{InsecureSkipVerify: true}, ""},
		{"https to a plain port", false, "https", Options{}, "tls"},
		// Go's TLS server answers a plain request with 400.
		{"http to a TLS port", true, "http", Options{}, "answered 400 Bad Request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are expected
			if tc.tls {
				srv.StartTLS()
			} else {
				srv.Start()
			}
			defer srv.Close()
			_, hostport, _ := strings.Cut(srv.URL, "://")
			err := checkWithin(t, mustParse(t, tc.scheme+"://"+hostport+"/ready", tc.opts), roomy)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestTCPAndLocalhost(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Skipf("no such loopback here: %v", err)
			}
			srv := serve(t, ln, always(ok200))
			port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
			for _, spec := range []string{"tcp://localhost:" + port, "http://localhost:" + port + "/ready", "http://LOCALHOST.:" + port + "/ready"} {
				if err := mustParse(t, spec, Options{}).Check(context.Background()); err != nil {
					t.Errorf("%s with a server on %s only: %v", spec, addr, err)
				}
			}
			srv.Close()
			spec := "tcp://" + ln.Addr().String()
			if err := mustParse(t, spec, Options{}).Check(context.Background()); err == nil || !strings.Contains(err.Error(), "refused") {
				t.Errorf("%s once closed: %v, want connection refused", spec, err)
			}
		})
	}
}

func TestFunc(t *testing.T) {
	want := errors.New("nope")
	var p Probe = Func(func(context.Context) error { return want })
	if err := p.Check(context.Background()); err != want || p.String() != "func" {
		t.Errorf("Func: Check = %v, String = %q; want %v, \"func\"", err, p.String(), want)
	}
}

// TestKeptConnAwaitIdle checks that a request on a kept connection waits
// until the Transport reads from it, or closes it, or the request's
// context ends, and for nothing else.
func TestKeptConnAwaitIdle(t *testing.T) {
	for _, event := range []string{"read", "close", "context"} {
		synctest.Test(t, func(t *testing.T) {
			ours, theirs := net.Pipe()
			defer theirs.Close()
			kc := &keptConn{Conn: ours}
			defer kc.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var returned atomic.Bool
			go func() {
				kc.awaitIdle(ctx)
				returned.Store(true)
			}()
			for _, now := range []string{"nothing", event} {
				switch now {
				case "read":
					go func() { _, _ = kc.Read(make([]byte, 1)) }()
				case "close":
					kc.Close()
				case "context":
					cancel()
				}
				if synctest.Wait(); returned.Load() != (now != "nothing") {
					t.Fatalf("after %s: awaitIdle returned: %t", now, returned.Load())
				}
			}
		})
	}
}

package gate

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
)

// proxyAnswers stands in for a proxy's quit endpoint, in memory: each
// request gets the next answer (the last one repeats), a status code or
// the error of a request that failed; errHang waits for the request to
// be cut. In memory, because the retries run in a synctest bubble, whose
// clock would not move while a goroutine waits on a loopback socket.
func proxyAnswers(answers ...any) (func(*url.URL) *http.Client, *atomic.Int64) {
	var n atomic.Int64
	rt := roundTripper(func(r *http.Request) (*http.Response, error) {
		w := httptest.NewRecorder()
		switch a := answers[min(int(n.Add(1)), len(answers))-1].(type) {
		case error:
			if a == errHang {
				<-r.Context().Done()
				return nil, r.Context().Err()
			}
			return nil, a
		case int:
			switch {
			case a == http.StatusNotFound:
				http.Error(w, "shutdown endpoint is not enabled", a)
			default:
				w.WriteHeader(a)
			}
		}
		return w.Result(), nil
	})
	return func(*url.URL) *http.Client { return &http.Client{Transport: rt} }, &n
}

var errHang = io.ErrNoProgress

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestQuit(t *testing.T) {
	u, _ := url.Parse("http://127.0.0.1:15020/quitquitquit")
	tests := []struct {
		name     string
		answers  []any
		requests int64
		status   string // logged on success
		err      string // "" means success
	}{
		{"200", []any{200}, 1, "200 OK", ""},
		{"retried 503 then 200", []any{503, 503, 200}, 3, "200 OK", ""},
		{"503 until the attempts run out", []any{503}, 3, "", "answered 503"},
		{"linkerd 404 not retried", []any{404}, 1, "", "config.linkerd.io/proxy-admin-shutdown: enabled"},
		{"403 not retried", []any{403}, 1, "", "loopback only"},
		{"405 not retried", []any{405}, 1, "", "does not take POST"},
		{"answer lost, then the port closed", []any{io.ErrUnexpectedEOF, errRefused}, 2, "gone", ""},
		{"refused until the attempts run out", []any{errRefused}, 3, "", "connection refused"},
		{"no answer within the limit", []any{errHang}, 2, "", "no answer within the quit limit: context deadline exceeded"},
	}
	for _, tc := range tests {
		synctest.Test(t, func(t *testing.T) {
			client, n := proxyAnswers(tc.answers...)
			log, logs := logged(zap.InfoLevel)
			err := (&Quitter{URLs: []*url.URL{u}, Client: client, Limit: 3 * time.Second, Log: log}).Quit(context.Background())
			if n.Load() != tc.requests {
				t.Errorf("%s: %d requests, want %d", tc.name, n.Load(), tc.requests)
			}
			if l := logs.FilterMessage("proxy told to quit").All(); tc.err == "" && (err != nil || len(l) != 1 || l[0].ContextMap()["status"] != tc.status) {
				t.Errorf("%s: Quit = %v, log %v; want success logged once with status %q", tc.name, err, l, tc.status)
			} else if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), u.String())) {
				t.Errorf("%s: Quit = %v, want an error naming the URL and saying %q", tc.name, err, tc.err)
			}
		})
	}
}

// Real HTTP on loopback: every URL gets its POST, all at once.
func TestQuitAllURLs(t *testing.T) {
	var posts atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.Header.Get("User-Agent") == "meshgate" {
			posts.Add(1)
		}
	}))
	defer srv.Close()
	a, _ := url.Parse(srv.URL + "/a")
	b, _ := url.Parse(srv.URL + "/b")
	if err := (&Quitter{URLs: []*url.URL{a, b}}).Quit(context.Background()); err != nil || posts.Load() != 2 {
		t.Errorf("Quit = %v after %d POSTs, want nil after 2", err, posts.Load())
	}
}

func TestParseQuitURL(t *testing.T) {
	for _, tc := range []struct {
		s      string
		remote bool
		want   string // "" means valid
	}{
		{"http://localhost:15020/quitquitquit", false, ""},
		{"http://127.0.0.2:4191/shutdown", false, ""},
		{"https://[::1]:9901/quitquitquit", false, ""},
		{"http://10.0.0.1:15020/quitquitquit", true, ""},
		{"http://10.0.0.1:15020/quitquitquit", false, "not loopback (add --quit-allow-remote to allow it)"},
		{"http://proxy.example:15020/quitquitquit", false, "not loopback"},
		{"tcp://localhost:1", false, "want http or https"},
		{"http://user:pw@localhost:1/", false, `"http://xxxxx@localhost:1/": credentials`},
	} {
		if _, err := ParseQuitURL(tc.s, tc.remote); tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("ParseQuitURL(%q, %v) = %v, want %q", tc.s, tc.remote, err, tc.want)
		}
	}
}

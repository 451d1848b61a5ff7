package gate

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// quitServer answers quit requests with the given statuses in turn (the
// last one repeats) and counts them.
func quitServer(t *testing.T, statuses ...int) (*url.URL, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		code := statuses[min(i, len(statuses)-1)]
		if code == 404 {
			http.Error(w, "shutdown endpoint is not enabled", 404)
			return
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL + "/quitquitquit")
	return u, &n
}

func instantTimers() func() backoff.Timer { return func() backoff.Timer { return newInstantTimer() } }

func TestQuit(t *testing.T) {
	tests := []struct {
		name     string
		statuses []int
		requests int64
		err      string // "" means success
	}{
		{"200", []int{200}, 1, ""},
		{"retried 503 then 200", []int{503, 503, 200}, 3, ""},
		{"503 until the attempts run out", []int{503}, 3, "answered 503"},
		{"linkerd 404 not retried", []int{404}, 1, "config.linkerd.io/proxy-admin-shutdown: enabled"},
		{"403 not retried", []int{403}, 1, "loopback only"},
		{"405 not retried", []int{405}, 1, "does not take POST"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, n := quitServer(t, tc.statuses...)
			core, logs := observer.New(zap.InfoLevel)
			q := &Quitter{URLs: []*url.URL{u}, Timer: instantTimers(), Log: zap.New(core)}
			err := q.Quit(context.Background())
			if n.Load() != tc.requests {
				t.Errorf("%d requests, want %d", n.Load(), tc.requests)
			}
			if tc.err == "" {
				if err != nil || logs.FilterMessage("proxy told to quit").Len() != 1 {
					t.Errorf("Quit = %v, want success logged once", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), u.String()) {
				t.Errorf("Quit = %v, want an error naming the URL and saying %q", err, tc.err)
			}
		})
	}
}

func TestQuitAllURLs(t *testing.T) {
	a, na := quitServer(t, 200)
	b, nb := quitServer(t, 200)
	if err := (&Quitter{URLs: []*url.URL{a, b}}).Quit(context.Background()); err != nil {
		t.Fatal(err)
	}
	if na.Load() != 1 || nb.Load() != 1 {
		t.Errorf("requests %d and %d, want one each", na.Load(), nb.Load())
	}
}

func TestQuitLimit(t *testing.T) {
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-hang:
		}
	}))
	defer srv.Close()
	defer close(hang)
	u, _ := url.Parse(srv.URL)
	// A limit that is already over: the outcome, not the clock, is tested.
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	err := (&Quitter{URLs: []*url.URL{u}, Timer: instantTimers()}).Quit(ctx)
	if err == nil || !strings.Contains(err.Error(), "no answer within the quit limit") {
		t.Errorf("Quit = %v, want the limit named", err)
	}
}

func TestParseQuitURL(t *testing.T) {
	for _, s := range []string{"http://localhost:15020/quitquitquit", "http://127.0.0.2:4191/shutdown", "https://[::1]:9901/quitquitquit"} {
		if _, err := ParseQuitURL(s, false); err != nil {
			t.Errorf("ParseQuitURL(%q) = %v", s, err)
		}
	}
	for _, tc := range []struct{ s, want string }{
		{"http://10.0.0.1:15020/quitquitquit", "not loopback"},
		{"http://proxy.example:15020/quitquitquit", "not loopback"},
		{"tcp://localhost:1", "want http or https"},
		{"http://user:pw@localhost:1/", `"http://xxxxx@localhost:1/": credentials`},
	} {
		if _, err := ParseQuitURL(tc.s, false); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseQuitURL(%q) = %v, want %q", tc.s, err, tc.want)
		}
	}
	if _, err := ParseQuitURL("http://10.0.0.1:15020/quitquitquit", true); err != nil {
		t.Errorf("remote allowed: %v", err)
	}
}

func TestQuitAnswerLostThenPortClosed(t *testing.T) {
	var n atomic.Int64
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		// The proxy exits while answering: the connection drops, and the
		// port closes.
		c, _, _ := w.(http.Hijacker).Hijack()
		c.Close()
		go srv.Close()
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL + "/quitquitquit")
	core, logs := observer.New(zap.InfoLevel)
	// Each pause waits for the port to be closed, so the retry is refused.
	timer := func() backoff.Timer { return &closedWaitTimer{srv: srv} }
	err := (&Quitter{URLs: []*url.URL{u}, Timer: timer, Log: zap.New(core)}).Quit(context.Background())
	if err != nil || n.Load() != 1 {
		t.Errorf("Quit = %v after %d requests, want success after 1", err, n.Load())
	}
	if l := logs.FilterMessage("proxy told to quit").All(); len(l) != 1 || l[0].ContextMap()["status"] != "gone" {
		t.Errorf("log %v, want the proxy reported gone", l)
	}
}

// closedWaitTimer fires once the server's listener is closed.
type closedWaitTimer struct {
	srv *httptest.Server
	c   chan time.Time
}

func (w *closedWaitTimer) Start(time.Duration) {
	w.c = make(chan time.Time, 1)
	w.srv.Close() // returns once the listener is closed
	w.c <- time.Time{}
}
func (w *closedWaitTimer) Stop()               {}
func (w *closedWaitTimer) C() <-chan time.Time { return w.c }

package probe

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// slack is how long an attempt may outlive its context and still count as
// bounded on a loaded machine under the race detector. A probe that
// ignores its context overshoots by far more, or never returns.
const slack = 2 * time.Second

// stall bounds the attempts that are meant to run into their deadline.
const stall = 300 * time.Millisecond

// roomy bounds the attempts that are meant to end on their own.
const roomy = 20 * time.Second

// checkWithin makes one attempt of p with a deadline bound from now, and
// fails the test if the attempt outlives it by more than slack.
func checkWithin(t *testing.T, p Probe, bound time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	start := time.Now()
	err := p.Check(ctx)
	if took := time.Since(start); took > bound+slack {
		t.Errorf("attempt took %s, want it to end within its bound of %s", took.Round(time.Millisecond), bound)
	}
	return err
}

// verdict names what an attempt said: "ready", "not ready" (the target
// answered, but not 2xx) or "error" (no usable answer).
func verdict(err error) string {
	var nr *NotReadyError
	switch {
	case err == nil:
		return "ready"
	case errors.As(err, &nr):
		return "not ready"
	}
	return "error"
}

// timedOut reports an error that says the attempt's deadline passed,
// whether the context or the connection noticed first.
func timedOut(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded)
}

// newHTTPProbe makes an HTTP probe, closed when the test ends.
func newHTTPProbe(t *testing.T, spec string) *HTTP {
	t.Helper()
	return mustParse(t, spec, Options{}).(*HTTP)
}

// rawServer answers each connection with a handler that writes bytes as
// it likes, for answers no well-behaved server gives. When the test ends
// it closes its listener and connections and waits for its goroutines.
type rawServer struct {
	ln       net.Listener
	accepted atomic.Int64
	wg       sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func newRawServer(t *testing.T, handle func(c net.Conn)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				c.Close()
				return
			}
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Go(func() {
				defer func() {
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
					c.Close()
				}()
				handle(c)
			})
		}
	})
	t.Cleanup(s.Close)
	return s
}

func (s *rawServer) URL() string { return "http://" + s.ln.Addr().String() }

// Close stops the server and waits for its handlers; it may be called
// more than once.
func (s *rawServer) Close() {
	s.mu.Lock()
	s.closed = true
	s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// answerEach answers every request on a connection with answer, as is.
func answerEach(answer string) func(net.Conn) {
	return func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			if _, err := io.WriteString(c, answer); err != nil {
				return
			}
		}
	}
}

// memory reports the heap in use after a collection, and all the bytes
// allocated so far. The first shows what an attempt keeps; the second
// what it used on the way, which a collection afterwards would hide.
func memory() (inuse, allocated uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, ms.TotalAlloc
}

// checkMemoryFlat fails the test if the heap grew by more than limit
// between before and now, kept or along the way.
func checkMemoryFlat(t *testing.T, inuse, allocated, limit uint64) {
	t.Helper()
	inuse2, allocated2 := memory()
	if inuse2 > inuse && inuse2-inuse > limit {
		t.Errorf("heap in use grew by %d KiB, want at most %d KiB", (inuse2-inuse)>>10, limit>>10)
	}
	if allocated2-allocated > 4*limit {
		t.Errorf("attempt allocated %d KiB, want at most %d KiB", (allocated2-allocated)>>10, 4*limit>>10)
	}
}

func TestHTTPNeverAnswers(t *testing.T) {
	for _, scheme := range []string{"http", "https"} {
		t.Run(scheme, func(t *testing.T) {
			// Accepts, reads whatever comes, and never says a word: for
			// https the handshake itself stalls.
			gone := make(chan struct{}, 2)
			srv := newRawServer(t, func(c net.Conn) {
				_, _ = io.Copy(io.Discard, c)
				gone <- struct{}{}
			})
			p := newHTTPProbe(t, strings.Replace(srv.URL(), "http", scheme, 1)+"/ready")
			for i := range 2 {
				err := checkWithin(t, p, stall)
				if verdict(err) != "error" || !timedOut(err) {
					t.Fatalf("attempt %d: got %v, want a timeout", i, err)
				}
				// Not left dialling in the background, for ever.
				select {
				case <-gone:
				case <-time.After(slack):
					t.Fatalf("attempt %d: the connection is still open, want it closed by the probe", i)
				}
				// The connection is in doubt: the next attempt opens its own.
				if got := srv.accepted.Load(); got != int64(i+1) {
					t.Fatalf("after attempt %d: %d connections, want a new one for each attempt after a timeout", i, got)
				}
			}
		})
	}
}

func TestHTTPStalledBody(t *testing.T) {
	tests := []struct{ name, answer string }{
		{"200, no body yet", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"},
		{"200, part of the body", "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nLIVE\n"},
		{"200, past the kept snippet", "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("x", 2*bodySnippet)},
		{"200 chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nLI"},
		{"503, part of the body", "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 1000\r\n\r\nnot "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gone := make(chan struct{})
			srv := newRawServer(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				_, _ = io.WriteString(c, tc.answer)
				// Stalls until the probe hangs up.
				_, _ = io.Copy(io.Discard, br)
				close(gone)
			})
			p := newHTTPProbe(t, srv.URL()+"/ready")
			err := checkWithin(t, p, stall)
			if verdict(err) != "error" || !timedOut(err) {
				t.Fatalf("got %v, want a timeout error", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), slack)
			defer cancel()
			select {
			case <-gone:
			case <-ctx.Done():
				t.Fatal("the server's connection is still open, want it closed by the probe")
			}
		})
	}
}

func TestHTTPHugeBody(t *testing.T) {
	const total = 512 << 20
	tests := []struct {
		name    string
		status  int
		length  bool // Content-Length, or else chunked
		verdict string
	}{
		{"200 with length", 200, true, "ready"},
		{"200 chunked", 200, false, "ready"},
		{"503 with length", 503, true, "not ready"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var sent atomic.Int64
			ended := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer close(ended)
				if tc.length {
					w.Header().Set("Content-Length", strconv.Itoa(total))
				}
				w.WriteHeader(tc.status)
				chunk := bytes.Repeat([]byte("x"), 64<<10)
				for sent.Load() < total {
					n, err := w.Write(chunk)
					sent.Add(int64(n))
					if err != nil {
						return
					}
				}
			}))
			defer srv.Close()
			p := newHTTPProbe(t, srv.URL+"/ready")
			inuse, allocated := memory()
			err := checkWithin(t, p, roomy)
			if got := verdict(err); got != tc.verdict {
				t.Fatalf("got %s (%v), want %s", got, err, tc.verdict)
			}
			// Kept with most of the body unread, the connection would
			// leave the handler blocked in a write; dropped, its writes fail.
			ctx, cancel := context.WithTimeout(context.Background(), slack)
			defer cancel()
			select {
			case <-ended:
			case <-ctx.Done():
				t.Error("the server is still writing the body, want the connection dropped by the probe")
			}
			checkMemoryFlat(t, inuse, allocated, 4<<20)
			srv.Close()
			t.Logf("server wrote %d KiB of %d MiB", sent.Load()>>10, total>>20)
			if got := sent.Load(); got > total/32 {
				t.Errorf("server wrote %d MiB of %d MiB before the probe hung up, want far less", got>>20, total>>20)
			}
		})
	}
}

func TestHTTPEndlessHead(t *testing.T) {
	tests := []struct{ name, start, again string }{
		{"status line", "HTTP/1.1 200 OK", "K"},
		{"header line", "HTTP/1.1 200 OK\r\nX-Endless: ", "a"},
		{"header lines", "HTTP/1.1 200 OK\r\n", "X-Again: a\r\n"},
		{"interim answers", "", "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"},
		{"binary", "", "\x00\xff\x16\x03"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var sent atomic.Int64
			srv := newRawServer(t, func(c net.Conn) {
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				again := []byte(strings.Repeat(tc.again, 1+(32<<10)/len(tc.again)))
				for chunk := append([]byte(tc.start), again...); ; chunk = again {
					n, err := c.Write(chunk)
					sent.Add(int64(n))
					if err != nil {
						return
					}
				}
			})
			p := newHTTPProbe(t, srv.URL()+"/ready")
			inuse, allocated := memory()
			// The production bound on an attempt: time enough for a
			// reader without limits to take gigabytes.
			err := checkWithin(t, p, time.Second)
			if verdict(err) != "error" || timedOut(err) {
				t.Fatalf("got %v, want an error before the deadline", err)
			}
			checkMemoryFlat(t, inuse, allocated, 4<<20)
			srv.Close()
			t.Logf("server wrote %d KiB", sent.Load()>>10)
			if got := sent.Load(); got > 16<<20 {
				t.Errorf("server wrote %d MiB before the probe hung up, want a bounded few", got>>20)
			}
		})
	}
}

func TestHTTPWrongProtocol(t *testing.T) {
	t.Run("https to a plain port", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		defer srv.Close()
		p := newHTTPProbe(t, strings.Replace(srv.URL, "http://", "https://", 1)+"/ready")
		err := checkWithin(t, p, roomy)
		if verdict(err) != "error" || !strings.Contains(err.Error(), "tls") {
			t.Errorf("got %v, want a TLS error", err)
		}
	})
	t.Run("http to a TLS port", func(t *testing.T) {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
		srv.StartTLS()
		defer srv.Close()
		p := newHTTPProbe(t, strings.Replace(srv.URL, "https://", "http://", 1)+"/ready")
		// Go's TLS server answers a plain request with 400; others hang up.
		err := checkWithin(t, p, roomy)
		if got := verdict(err); got == "ready" || got == "not ready" && !strings.Contains(err.Error(), "answered 400") {
			t.Errorf("got %v, want an error or 400", err)
		}
	})
}

func TestHTTPResetMidAnswer(t *testing.T) {
	tests := []struct{ name, partial string }{
		{"half a status line", "HTTP/1.1 20"},
		{"half the headers", "HTTP/1.1 200 OK\r\nContent-Le"},
		{"half the body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nLIVE\n"},
		{"half a chunked body", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nLIVE\n\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRawServer(t, func(c net.Conn) {
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				_, _ = io.WriteString(c, tc.partial)
				// Without lingering, the close sends RST, not FIN.
				_ = c.(*net.TCPConn).SetLinger(0)
			})
			p := newHTTPProbe(t, srv.URL()+"/ready")
			for i := range 2 {
				if err := checkWithin(t, p, roomy); verdict(err) != "error" {
					t.Fatalf("attempt %d: got %v, want an error", i, err)
				}
			}
		})
	}
}

func TestHTTPRedirectsNotFollowed(t *testing.T) {
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1) // ready, if only the probe came
	}))
	defer other.Close()
	tests := []struct {
		name  string
		to    map[string]string // path → where it redirects
		want  string
		other bool
	}{
		{"to itself", map[string]string{"/ready": "/ready"}, "answered 302 Found to /ready", false},
		{"in a loop", map[string]string{"/ready": "/a", "/a": "/b", "/b": "/ready"}, "answered 302 Found to /a", false},
		{"to another host", map[string]string{"/ready": other.URL + "/ready"}, "answered 302 Found to " + other.URL + "/ready", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var requests atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				http.Redirect(w, r, tc.to[r.URL.Path], http.StatusFound)
			}))
			defer srv.Close()
			p := newHTTPProbe(t, srv.URL+"/ready")
			for i := range 3 {
				err := checkWithin(t, p, roomy)
				if verdict(err) != "not ready" || !strings.HasPrefix(err.Error(), tc.want) {
					t.Fatalf("attempt %d: got %v, want %q", i, err, tc.want)
				}
				if got := requests.Load(); got != int64(i+1) {
					t.Fatalf("after attempt %d: got %d requests, want %d", i, got, i+1)
				}
			}
			if got := elsewhere.Load(); got != 0 {
				t.Errorf("got %d requests to the other host, want 0", got)
			}
		})
	}
}

func TestHTTPStatusCodes(t *testing.T) {
	const empty = "Content-Length: 0\r\n\r\n"
	tests := []struct {
		name, answer string
		verdict      string
		want         string // the start of the error, if any
	}{
		{"100 then 200", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n" + empty, "ready", ""},
		{"103 then 204", "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", "ready", ""},
		{"100, 103 then 503", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 503 Service Unavailable\r\n" + empty,
			"not ready", "answered 503 Service Unavailable"},
		{"too many interim answers", strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", maxInterim+1) + "HTTP/1.1 200 OK\r\n" + empty,
			"error", "more than 5 interim answers"},
		{"101 not asked for", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
			"not ready", "answered 101 Switching Protocols"},
		{"200", "HTTP/1.1 200 OK\r\n" + empty, "ready", ""},
		{"299", "HTTP/1.1 299 Odd\r\n" + empty, "ready", ""},
		{"099", "HTTP/1.1 099 Odd\r\n" + empty, "not ready", "answered 099 Odd"},
		{"300", "HTTP/1.1 300 Multiple Choices\r\n" + empty, "not ready", "answered 300 Multiple Choices"},
		{"301", "HTTP/1.1 301 Moved Permanently\r\nLocation: /new\r\n" + empty, "not ready", "answered 301 Moved Permanently to /new"},
		{"303", "HTTP/1.1 303 See Other\r\nLocation: http://elsewhere/\r\n" + empty, "not ready", "answered 303 See Other to http://elsewhere/"},
		{"304", "HTTP/1.1 304 Not Modified\r\n\r\n", "not ready", "answered 304 Not Modified"},
		{"307", "HTTP/1.1 307 Temporary Redirect\r\nLocation: /ready\r\n" + empty, "not ready", "answered 307 Temporary Redirect to /ready"},
		{"308", "HTTP/1.1 308 Permanent Redirect\r\nLocation: /x\r\n" + empty, "not ready", "answered 308 Permanent Redirect to /x"},
		{"500", "HTTP/1.1 500 Internal Server Error\r\n" + empty, "not ready", "answered 500 Internal Server Error"},
		{"502", "HTTP/1.1 502 Bad Gateway\r\n" + empty, "not ready", "answered 502 Bad Gateway"},
		{"503", "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 10\r\n\r\nnot ready\n", "not ready", `answered 503 Service Unavailable: "not ready"`},
		{"504", "HTTP/1.1 504 Gateway Timeout\r\n" + empty, "not ready", "answered 504 Gateway Timeout"},
		{"599", "HTTP/1.1 599 Odd\r\n" + empty, "not ready", "answered 599 Odd"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newRawServer(t, answerEach(tc.answer))
			p := newHTTPProbe(t, srv.URL()+"/ready")
			for i := range 2 { // the second attempt must not trip on what the first left
				err := checkWithin(t, p, roomy)
				if got := verdict(err); got != tc.verdict || tc.want != "" && !strings.HasPrefix(err.Error(), tc.want) {
					t.Fatalf("attempt %d: got %s (%v), want %s %q", i, got, err, tc.verdict, tc.want)
				}
			}
		})
	}
}

func TestHTTPServerClosesAfterKeepAlive(t *testing.T) {
	// Says the connection stays open, then closes it at once.
	srv := newRawServer(t, func(c net.Conn) {
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		_, _ = io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
	})
	p := newHTTPProbe(t, srv.URL()+"/ready")
	for i := range 3 {
		if err := checkWithin(t, p, roomy); verdict(err) != "not ready" {
			t.Fatalf("attempt %d: got %v, want not ready: a connection closed between attempts says nothing", i, err)
		}
	}
	if got := srv.accepted.Load(); got != 3 {
		t.Errorf("got %d connections for 3 attempts, want 3", got)
	}
}

func TestHTTPDropsUnaskedAnswer(t *testing.T) {
	// The first request gets its answer and one more, which must not be
	// taken for the answer to the next attempt.
	srv := newRawServer(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		extra := "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"+extra)
			extra = ""
		}
	})
	p := newHTTPProbe(t, srv.URL()+"/ready")
	for i := range 3 {
		if err := checkWithin(t, p, roomy); verdict(err) != "not ready" {
			t.Fatalf("attempt %d: got %v, want not ready", i, err)
		}
	}
}

func TestHTTPFlapping(t *testing.T) {
	var ready atomic.Bool
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if !ready.Load() {
			w.WriteHeader(503)
		}
	})
	p := newHTTPProbe(t, srv.URL+"/ready")
	for i, state := range []bool{true, false, true, false, false, true} {
		ready.Store(state)
		want := map[bool]string{true: "ready", false: "not ready"}[state]
		if err := checkWithin(t, p, roomy); verdict(err) != want {
			t.Fatalf("attempt %d: got %v, want %s", i, err, want)
		}
	}
	if got := conns.Load(); got != 1 {
		t.Errorf("got %d connections, want 1 kept throughout", got)
	}
}

func TestHTTPPortReusedByAnotherServer(t *testing.T) {
	first := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) }))
	addr := first.Listener.Addr().String()
	p := newHTTPProbe(t, first.URL+"/ready")
	if err := checkWithin(t, p, roomy); verdict(err) != "not ready" {
		t.Fatalf("first server: got %v, want not ready", err)
	}
	first.Close() // and with it the probe's kept connection, from the far end
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port taken by someone else before the second server: %v", err)
	}
	var requests atomic.Int64
	second := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests.Add(1) }))
	second.Listener.Close()
	second.Listener = ln
	second.Start()
	defer second.Close()
	for i := range 2 {
		if err := checkWithin(t, p, roomy); err != nil {
			t.Fatalf("second server, attempt %d: got %v, want ready", i, err)
		}
	}
	if got := requests.Load(); got != 2 {
		t.Errorf("second server got %d requests, want 2", got)
	}
}

func TestHTTPContextEndsAtAnyPoint(t *testing.T) {
	// Cancels each attempt at a different point of the exchange: before
	// the answer, as it arrives, after it. Whatever the verdict, the next
	// attempt without a deadline must be answered on a sound connection.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	p := newHTTPProbe(t, srv.URL+"/ready")
	for i := range 200 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%50)*10*time.Microsecond)
		err := p.Check(ctx)
		cancel()
		if got := verdict(err); got == "not ready" {
			t.Fatalf("attempt %d: got %v, want ready or an error", i, err)
		}
		if err := checkWithin(t, p, roomy); err != nil {
			t.Fatalf("attempt %d, after one cut short: got %v, want ready", i, err)
		}
	}
}

package probe

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	ok200  = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
	not503 = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"

	// stall bounds the attempts that are meant to run into their deadline.
	stall = 300 * time.Millisecond
	// roomy bounds the attempts that are meant to end on their own.
	roomy = 20 * time.Second
	// slack is how long an attempt may outlive its context, or a server
	// wait for the probe to hang up, on a loaded machine under the race
	// detector. A probe that ignores its context overshoots by far more.
	slack = 2 * time.Second
)

// server hands each connection to a handler that writes bytes as it likes,
// for answers no well-behaved server gives. It counts the connections it
// accepts, and tells on ended when a handler has returned and closed its
// connection. When the test ends it closes its listener and connections
// and waits for its handlers.
type server struct {
	ln       net.Listener
	accepted atomic.Int64
	ended    chan struct{}
	stop     context.CancelFunc // closes the connections
	wg       sync.WaitGroup
}

// newServer serves handle on a loopback port.
func newServer(t *testing.T, handle func(net.Conn)) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, ln, handle)
}

func serve(t *testing.T, ln net.Listener, handle func(net.Conn)) *server {
	ctx, stop := context.WithCancel(context.Background())
	s := &server{ln: ln, ended: make(chan struct{}, 64), stop: stop}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			closeOnStop := context.AfterFunc(ctx, func() { c.Close() })
			s.wg.Go(func() {
				handle(c)
				closeOnStop()
				c.Close()
				select {
				case s.ended <- struct{}{}:
				default: // nobody counts
				}
			})
		}
	})
	t.Cleanup(s.Close)
	return s
}

func (s *server) url() string { return "http://" + s.ln.Addr().String() }

// Close stops the server and waits for its handlers; it may be called
// more than once.
func (s *server) Close() {
	s.ln.Close()
	s.stop()
	s.wg.Wait()
}

// awaitEnd fails the test unless a handler ends within slack.
func (s *server) awaitEnd(t *testing.T, why string) {
	t.Helper()
	select {
	case <-s.ended:
	case <-time.After(slack):
		t.Error(why)
	}
}

// replies answers each request on a connection with answer(request).
func replies(answer func(*http.Request) string) func(net.Conn) {
	return func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, answer(r)); err != nil {
				return
			}
		}
	}
}

func always(answer string) func(net.Conn) {
	return replies(func(*http.Request) string { return answer })
}

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
// answered, but not 2xx), "timeout" (its deadline passed, whether the
// context or the connection noticed first) or "error".
func verdict(err error) string {
	var nr *NotReadyError
	switch {
	case err == nil:
		return "ready"
	case errors.As(err, &nr):
		return "not ready"
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	}
	return "error"
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

func TestHTTPAnswers(t *testing.T) {
	elsewhere := newServer(t, always(ok200)) // ready, if only the probe came
	const empty = "Content-Length: 0\r\n\r\n"
	tests := []struct {
		name, answer string
		then         string // after each answer: "" keeps the connection, "close" closes it, "reset" resets it
		verdict      string
		want         string // in the error
		conns        int64  // connections for the attempts
	}{
		{"200", "HTTP/1.1 200 OK\r\n" + empty, "", "ready", "", 1},
		{"299", "HTTP/1.1 299 Odd\r\n" + empty, "", "ready", "", 1},
		{"099", "HTTP/1.1 099 Odd\r\n" + empty, "", "not ready", "answered 099 Odd", 3},
		{"100 then 200", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n" + empty, "", "ready", "", 1},
		{"103 then 204", "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", "", "ready", "", 1},
		{"100, 103 then 503", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n" + not503, "", "not ready", "answered 503 Service Unavailable", 1},
		{"too many interim answers", strings.Repeat("HTTP/1.1 100 Continue\r\n\r\n", maxInterim+1) + ok200, "", "error", "more than 5 interim answers", 3},
		{"103, then a close", "HTTP/1.1 103 Early Hints\r\n\r\n", "close", "error", "unexpected EOF", 3},
		{"101 not asked for", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", "", "not ready", "answered 101 Switching Protocols", 3},
		{"300", "HTTP/1.1 300 Multiple Choices\r\n" + empty, "", "not ready", "answered 300 Multiple Choices", 1},
		{"301", "HTTP/1.1 301 Moved Permanently\r\nLocation: /new\r\n" + empty, "", "not ready", "answered 301 Moved Permanently to /new", 1},
		{"302 to itself, with a body", "HTTP/1.1 302 Found\r\nLocation: /ready\r\nContent-Length: 13\r\n\r\n<a>Found</a>\n", "", "not ready", `answered 302 Found to /ready: "<a>Found</a>"`, 1},
		{"302 to a ready host", "HTTP/1.1 302 Found\r\nLocation: " + elsewhere.url() + "/ready\r\n" + empty, "", "not ready", "answered 302 Found to " + elsewhere.url() + "/ready", 1},
		{"303", "HTTP/1.1 303 See Other\r\nLocation: http://elsewhere/\r\n" + empty, "", "not ready", "answered 303 See Other to http://elsewhere/", 1},
		{"304", "HTTP/1.1 304 Not Modified\r\n\r\n", "", "not ready", "answered 304 Not Modified", 1},
		{"307", "HTTP/1.1 307 Temporary Redirect\r\nLocation: /ready\r\n" + empty, "", "not ready", "answered 307 Temporary Redirect to /ready", 1},
		{"308", "HTTP/1.1 308 Permanent Redirect\r\nLocation: /x\r\n" + empty, "", "not ready", "answered 308 Permanent Redirect to /x", 1},
		{"503 with a body", "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 10\r\n\r\nnot ready\n", "", "not ready", `answered 503 Service Unavailable: "not ready"`, 1},
		{"599", "HTTP/1.1 599 Odd\r\n" + empty, "", "not ready", "answered 599 Odd", 1},
		{"control characters", "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 14\r\n\r\nbad\x1b[31m\nnews\x00", "", "not ready", `answered 500 Internal Server Error: "bad[31m news"`, 1},
		{"HTTP/1.0 503, body to the close", "HTTP/1.0 503 Service Unavailable\r\n\r\nnot ready\n", "close", "not ready", `answered 503 Service Unavailable: "not ready"`, 3},
		{"200 then a close", "HTTP/1.1 200 OK\r\nConnection: close\r\n" + empty, "close", "ready", "", 3},
		{"503 keep-alive, then a close", "HTTP/1.1 503 Service Unavailable\r\nConnection: keep-alive\r\n" + empty, "close", "not ready", "", 3},
		{"503 and a 200 nobody asked for", not503 + ok200, "", "not ready", "", 3},
		{"SSH", "SSH-2.0-OpenSSH\r\n\r\n", "", "error", "malformed HTTP", 3},
		{"reset in the status line", "HTTP/1.1 20", "reset", "error", "", 3},
		{"reset in the headers", "HTTP/1.1 200 OK\r\nContent-Le", "reset", "error", "", 3},
		{"reset in the body", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nLIVE\n", "reset", "error", "", 3},
		{"reset in a chunked body", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nLIVE\n\r\n", "reset", "error", "", 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				for {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					if _, err := io.WriteString(c, tc.answer); err != nil || tc.then == "close" {
						return
					}
					if tc.then == "reset" { // without lingering, the close sends RST, not FIN
						_ = c.(*net.TCPConn).SetLinger(0)
						return
					}
				}
			})
			p := mustParse(t, srv.url()+"/ready", Options{})
			// Each attempt must not trip on what the one before left.
			const attempts = 3
			for i := range attempts {
				err := checkWithin(t, p, roomy)
				if got := verdict(err); got != tc.verdict || err != nil && !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("attempt %d: got %s (%v), want %s %q", i, got, err, tc.verdict, tc.want)
				}
			}
			if got := srv.accepted.Load(); got != tc.conns {
				t.Errorf("got %d connections for %d attempts, want %d", got, attempts, tc.conns)
			}
		})
	}
	if got := elsewhere.accepted.Load(); got != 0 {
		t.Errorf("a redirect was followed to another host: %d connections to it", got)
	}
}

func TestHTTPHangsAndFloods(t *testing.T) {
	x := strings.Repeat("x", 64<<10)
	const huge = "Content-Length: 536870912\r\n\r\n" // 512 MiB
	tests := []struct{ name, scheme, answer, again, verdict string }{
		// The answer, then silence until the probe hangs up.
		{"no answer", "http", "", "", "timeout"},
		{"no TLS handshake", "https", "", "", "timeout"},
		{"200, no body yet", "http", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", "", "timeout"},
		{"200, part of the body", "http", "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nLIVE\n", "", "timeout"},
		{"200, past the kept snippet", "http", "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("x", 2*bodySnippet), "", "timeout"},
		{"200 chunked", "http", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nLI", "", "timeout"},
		{"503, part of the body", "http", "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 1000\r\n\r\nnot ", "", "timeout"},
		// The answer, then again and again until the probe hangs up.
		{"endless status line", "http", "HTTP/1.1 200 OK", "K", "error"},
		{"endless header line", "http", "HTTP/1.1 200 OK\r\nX-Endless: ", "a", "error"},
		{"endless header lines", "http", "HTTP/1.1 200 OK\r\n", "X-Again: a\r\n", "error"},
		{"endless interim answers", "http", "", "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", "error"},
		{"endless binary", "http", "", "\x00\xff\x16\x03", "error"},
		{"200, huge body", "http", "HTTP/1.1 200 OK\r\n" + huge, x, "ready"},
		{"200, endless chunked body", "http", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "10000\r\n" + x + "\r\n", "ready"},
		{"503, huge body", "http", "HTTP/1.1 503 Service Unavailable\r\n" + huge, x, "not ready"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.verdict == "timeout" {
				t.Parallel()
			}
			var sent atomic.Int64
			srv := newServer(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				if tc.scheme == "http" {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
				}
				again := []byte(strings.Repeat(tc.again, 1+(32<<10)/max(1, len(tc.again))))
				for chunk := append([]byte(tc.answer), again...); len(chunk) > 0; chunk = again {
					n, err := c.Write(chunk)
					sent.Add(int64(n))
					if err != nil {
						return
					}
				}
				_, _ = io.Copy(io.Discard, br)
			})
			p := mustParse(t, strings.Replace(srv.url(), "http", tc.scheme, 1)+"/ready", Options{})
			// The production bound on an attempt: time enough for a
			// reader without limits to take gigabytes.
			bound := time.Second
			if tc.verdict == "timeout" {
				bound = stall
			}
			inuse, allocated := memory()
			for i := range 2 {
				err := checkWithin(t, p, bound)
				if got := verdict(err); got != tc.verdict {
					t.Fatalf("attempt %d: got %s (%v), want %s", i, got, err, tc.verdict)
				}
				var nr *NotReadyError
				if errors.As(err, &nr) && len(nr.Body) > bodySnippet {
					t.Errorf("kept %d bytes of the body, want at most %d", len(nr.Body), bodySnippet)
				}
				srv.awaitEnd(t, "the server's connection is still open, want it closed by the probe")
				if got := srv.accepted.Load(); got != int64(i+1) {
					t.Fatalf("after attempt %d: %d connections, want a new one for each attempt", i, got)
				}
			}
			const limit = 4 << 20
			inuse2, allocated2 := memory()
			if inuse2 > inuse && inuse2-inuse > limit || allocated2-allocated > 4*limit {
				t.Errorf("heap in use grew by %d KiB and %d KiB were allocated, want at most %d and %d KiB",
					(int64(inuse2)-int64(inuse))>>10, (allocated2-allocated)>>10, limit>>10, 4*limit>>10)
			}
			if got := sent.Load(); got > 32<<20 {
				t.Errorf("server wrote %d MiB before the probe hung up, want a bounded few", got>>20)
			}
		})
	}
}

func TestHTTPFlappingAndCutShort(t *testing.T) {
	// The proxy flaps, and before each attempt comes one cut short at a
	// different point of the exchange: before the answer, as it arrives,
	// after it. Whatever that one says, the next must say what the proxy
	// says now.
	var ready atomic.Bool
	srv := newServer(t, replies(func(*http.Request) string {
		if ready.Load() {
			return ok200
		}
		return not503
	}))
	p := mustParse(t, srv.url()+"/ready", Options{})
	for i := range 200 {
		ready.Store(i%3 != 1)
		want := map[bool]string{true: "ready", false: "not ready"}[ready.Load()]
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%50)*10*time.Microsecond)
		err := p.Check(ctx)
		cancel()
		if got := verdict(err); got != want && got != "timeout" {
			t.Fatalf("attempt %d, cut short: got %v, want %s or a timeout", i, err, want)
		}
		if err := checkWithin(t, p, roomy); verdict(err) != want {
			t.Fatalf("attempt %d, after one cut short: got %v, want %s", i, err, want)
		}
	}
}

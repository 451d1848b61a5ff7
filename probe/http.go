package probe

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
)

const (
	// bodySnippet is how much of a not-ready answer is kept for the log.
	bodySnippet = 128
	// bodyDrain is how much of an answer is read so that the connection can
	// be reused. A readiness answer is a few bytes; past this the connection
	// is closed instead.
	bodyDrain = 64 << 10
	// maxHead bounds the bytes read for the status lines and headers of an
	// answer, interim answers included. net/http reads a line until it
	// ends, so a line that never ends would fill memory until the deadline.
	maxHead = 64 << 10
	// maxBodyRead bounds the bytes read for the body, its chunk framing and
	// trailer included; past it the connection is dropped, not read on.
	maxBodyRead = 2 * bodyDrain
	// maxInterim is how many 1xx answers may come before the final one.
	maxInterim = 5
)

// errOverBudget ends reading an answer that goes on past its bound.
var errOverBudget = errors.New("answer longer than its bound")

// budget reads from the connection until left runs out.
type budget struct {
	r    io.Reader
	left int64
}

func (b *budget) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errOverBudget
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

// HTTP is ready when a GET of its URL answers 2xx. Redirects are not
// followed (a redirect is not "ready"), proxy variables such as HTTP_PROXY
// are ignored (the target is the pod's own proxy), interim 1xx answers are
// skipped, and at most a bounded part of the answer is read.
//
// It speaks HTTP/1.1 itself over one kept-alive connection, in the
// caller's goroutine: an attempt is a write and a read, with no goroutine,
// pool or timer of its own, which keeps the cost of polling every few
// milliseconds small. The connection is replaced whenever an answer leaves
// it in doubt.
type HTTP struct {
	spec       string
	host, port string
	request    []byte      // the whole GET, written as is
	tls        *tls.Config // nil for http
	dialer     net.Dialer

	conn net.Conn // kept alive between attempts, or nil
	in   *budget  // conn, bounded for each answer
	br   *bufio.Reader
}

func newHTTP(spec string, u *url.URL, opts Options) *HTTP {
	agent := opts.UserAgent
	if agent == "" {
		agent = "meshgate"
	}
	h := &HTTP{spec: spec, host: u.Hostname(), port: u.Port()}
	if h.port == "" {
		h.port = "80"
		if u.Scheme == "https" {
			h.port = "443"
		}
	}
	if u.Scheme == "https" {
		h.tls = &tls.Config{
			ServerName:         h.host,
			InsecureSkipVerify: opts.InsecureSkipVerify, //nolint:gosec // only when asked for
			MinVersion:         tls.VersionTLS12,
		}
	}
	h.request = []byte("GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUser-Agent: " + agent + "\r\nAccept: */*\r\n\r\n")
	return h
}

// Check sends one GET and reads a bounded part of the answer. It is not
// safe for concurrent use: a gate makes one attempt of a probe at a time.
func (h *HTTP) Check(ctx context.Context) error {
	reused := h.conn != nil
	resp, err := h.roundTrip(ctx)
	if err != nil && reused && ctx.Err() == nil {
		// The kept connection may have been closed by the server while
		// idle; that says nothing about readiness. Once more, afresh.
		resp, err = h.roundTrip(ctx)
	}
	if err != nil {
		return err
	}
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return nil
	}
	return resp.notReady
}

// answer is what Check needs of a response.
type answer struct {
	StatusCode int
	notReady   *NotReadyError
}

func (h *HTTP) roundTrip(ctx context.Context) (answer, error) {
	if err := h.connect(ctx); err != nil {
		return answer{}, err
	}
	// The attempt's deadline and cancellation reach the connection as a
	// deadline: no goroutine waits on ctx unless it ends. The callback
	// takes c, not h.conn, which this goroutine changes meanwhile.
	c := h.conn
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	resp, err := h.exchange()
	if !stop() {
		// ctx ended during the exchange: its callback has set, or is
		// about to set, a past deadline on c that would fail the next
		// attempt.
		h.drop()
	}
	if err != nil {
		h.drop()
		if ctx.Err() != nil {
			return answer{}, ctx.Err()
		}
		return answer{}, err
	}
	return resp, nil
}

// exchange writes the request and reads the answer. The connection stays
// for the next attempt only if the answer ended cleanly and the server
// keeps it.
func (h *HTTP) exchange() (answer, error) {
	if _, err := h.conn.Write(h.request); err != nil {
		return answer{}, err
	}
	h.in.left = maxHead
	resp, err := h.readFinal()
	if err != nil {
		return answer{}, err
	}
	h.in.left = maxBodyRead
	head, err := io.ReadAll(io.LimitReader(resp.Body, bodySnippet))
	var rest int64
	if err == nil {
		// Drain what is left, within bounds, so the connection can be kept.
		rest, err = io.Copy(io.Discard, io.LimitReader(resp.Body, bodyDrain))
	}
	if err != nil && !errors.Is(err, errOverBudget) {
		// A body cut short or stalled: the answer never arrived whole.
		return answer{}, err
	}
	drained := err == nil && rest < bodyDrain
	if !drained || resp.Close || resp.StatusCode < 200 || h.br.Buffered() > 0 {
		// Unread body, "Connection: close", a switch of protocols, or
		// bytes nobody asked for, which the next attempt would take for
		// its answer: the connection cannot serve another request.
		// Closed first, so that closing the body does not read on.
		h.drop()
	}
	resp.Body.Close()
	a := answer{StatusCode: resp.StatusCode}
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return a, nil
	}
	status := resp.Status
	if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		status += " to " + cleanText(loc)
	}
	a.notReady = &NotReadyError{Status: status, Body: cleanText(string(head))}
	return a, nil
}

// readFinal reads answers up to the final one, past the interim 1xx
// answers a server may send first, as an HTTP client does. 101 is final:
// it switches protocols, which nobody asked for.
func (h *HTTP) readFinal() (*http.Response, error) {
	for range maxInterim + 1 {
		resp, err := http.ReadResponse(h.br, nil)
		if errors.Is(err, errOverBudget) {
			return nil, fmt.Errorf("status line and headers longer than %d KiB", maxHead>>10)
		}
		if err != nil {
			return nil, err
		}
		if resp.StatusCode < 100 || resp.StatusCode > 199 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
	}
	return nil, fmt.Errorf("more than %d interim answers", maxInterim)
}

// connect opens the connection if none is kept.
func (h *HTTP) connect(ctx context.Context) error {
	if h.conn != nil {
		return nil
	}
	c, err := dial(ctx, &h.dialer, h.host, h.port)
	if err != nil {
		return err
	}
	if h.tls != nil {
		tc := tls.Client(c, h.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return err
		}
		c = tc
	}
	h.conn, h.in = c, &budget{r: c}
	h.br = bufio.NewReaderSize(h.in, 4096)
	return nil
}

// drop closes the kept connection.
func (h *HTTP) drop() {
	if h.conn != nil {
		h.conn.Close()
		h.conn, h.in, h.br = nil, nil, nil
	}
}

func (h *HTTP) String() string { return h.spec }

// Close closes the kept connection; the probe may still be used after.
func (h *HTTP) Close() error {
	h.drop()
	return nil
}

// Client returns an HTTP client for requests to the host of u: it dials
// localhost as the loopback addresses without a lookup, ignores proxy
// variables (the target is in the pod), does not follow redirects, and
// leaves every time bound to the request's context.
func Client(u *url.URL, opts Options) *http.Client {
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	d := &net.Dialer{}
	tr := &http.Transport{
		Proxy: nil,
		// The URL's host stays as written (for Host and SNI); only the
		// dial goes to the loopback addresses when it is localhost.
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx, d, host, port)
		},
		TLSClientConfig: &tls.Config{
			InsecureSkipVerify: opts.InsecureSkipVerify, //nolint:gosec // only when asked for
			MinVersion:         tls.VersionTLS12,
		},
		DisableCompression:  true,
		MaxIdleConns:        1,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     30 * time.Second,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// cleanText makes untrusted answer text safe for one log line.
func cleanText(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			if unicode.IsSpace(r) {
				return ' '
			}
			return -1
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > bodySnippet {
		s = s[:bodySnippet]
	}
	return s
}

package probe

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
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
	// maxHead bounds the bytes read for the status line and headers of an
	// answer: a line that never ends would otherwise fill memory until
	// the deadline.
	maxHead = 64 << 10
	// maxInterim is how many 1xx answers may come before the final one;
	// net/http holds to this number.
	maxInterim = 5
)

// HTTP is ready when a GET of its URL answers 2xx. Redirects are not
// followed (a redirect is not "ready"), proxy variables such as HTTP_PROXY
// are ignored (the target is the pod's own proxy), interim 1xx answers are
// skipped, and at most a bounded part of the answer is read.
//
// It uses net/http over one kept-alive connection. A hand-written
// HTTP/1.1 exchange was measured against it (make bench, CPU per attempt
// while polling at the default pace) and was not cheaper enough to carry
// a parser of our own.
type HTTP struct {
	spec    string
	client  *http.Client
	req     *http.Request
	trace   *httptrace.ClientTrace // counts interim answers
	interim atomic.Int32           // interim answers to this attempt
	snippet [bodySnippet]byte      // the start of the body, for the error
	ctx     context.Context        // the attempt's, while it runs
}

// errInterim ends an attempt answered by too many interim answers.
var errInterim = fmt.Errorf("more than %d interim answers", maxInterim)

func newHTTP(spec string, u *url.URL, opts Options) *HTTP {
	agent := opts.UserAgent
	if agent == "" {
		agent = "meshgate"
	}
	// The URL parsed, so the request cannot fail to build.
	req, _ := http.NewRequest(http.MethodGet, u.String(), nil)
	req.Header.Set("User-Agent", agent)
	req.Header.Set("Accept", "*/*")
	h := &HTTP{spec: spec, client: Client(u, opts), req: req}
	h.trace = &httptrace.ClientTrace{
		// net/http skips any number of them, within a bound on their
		// bytes.
		Got1xxResponse: func(int, textproto.MIMEHeader) error {
			if h.interim.Add(1) > maxInterim {
				return errInterim
			}
			return nil
		},
		// Called in Check's goroutine before the request is written.
		GotConn: func(info httptrace.GotConnInfo) {
			if kc, ok := info.Conn.(*keptConn); ok && info.Reused {
				kc.awaitIdle(h.ctx)
			}
		},
	}
	return h
}

// Check sends one GET and reads a bounded part of the answer. It is not
// safe for concurrent use: a gate makes one attempt of a probe at a time.
func (h *HTTP) Check(ctx context.Context) error {
	h.interim.Store(0)
	h.ctx = ctx
	defer func() { h.ctx = nil }()
	resp, err := h.client.Do(h.req.WithContext(httptrace.WithClientTrace(ctx, h.trace)))
	if err != nil {
		if ctx.Err() != nil {
			// net/http goes on dialling after the request's context
			// ends, without its deadline, for a later request to use
			// the connection. A handshake that never ends would hold
			// that dial for ever, one more for each attempt: this
			// cancels it.
			h.client.CloseIdleConnections()
		}
		return cause(ctx, err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// Its body is the connection, handed over to a protocol nobody
		// asked for: closed unread.
		resp.Body.Close()
		return &NotReadyError{Status: resp.Status}
	}
	n, err := io.ReadFull(resp.Body, h.snippet[:])
	head := h.snippet[:n]
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = nil // a body shorter than the snippet, read whole
	} else if err == nil {
		// Drain what is left, within bounds, so that the connection can
		// be kept; past them, closing the body drops it.
		_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, bodyDrain))
	}
	resp.Body.Close()
	if err != nil {
		// A body cut short or stalled: the answer never arrived whole.
		return cause(ctx, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return nil
	}
	status := resp.Status
	if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		status += " to " + cleanText(loc)
	}
	return &NotReadyError{Status: status, Body: cleanText(string(head))}
}

// cause is what an attempt that failed reports: the context's error when
// it ended the attempt, else net/http's error without the request it
// wraps (the spec names the URL).
func cause(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, errInterim):
		return errInterim
	case errors.Is(err, http.ErrSchemeMismatch):
		return errors.New("tls: the server answered in plain HTTP, not TLS")
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func (h *HTTP) String() string { return h.spec }

// Close closes the kept connection; the probe may still be used after.
func (h *HTTP) Close() error {
	h.client.CloseIdleConnections()
	return nil
}

// Client returns an HTTP client for requests to the host of u: it dials
// localhost as the loopback addresses without a lookup, ignores proxy
// variables (the target is in the pod), does not follow redirects, keeps
// one connection alive, bounds the status line and headers of an answer,
// and leaves every time bound to the request's context.
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
			c, err := dial(ctx, d, host, port)
			if err != nil {
				return nil, err
			}
			return &keptConn{Conn: c}, nil
		},
		DisableCompression:     true,
		MaxIdleConns:           1,
		MaxIdleConnsPerHost:    1,
		IdleConnTimeout:        30 * time.Second,
		MaxResponseHeaderBytes: maxHead,
	}
	if u.Scheme == "https" {
		// The handshake is ours, so that its errors are TLS's own.
		cfg := &tls.Config{
			ServerName:         host,
			InsecureSkipVerify: opts.InsecureSkipVerify, //nolint:gosec // only when asked for
			MinVersion:         tls.VersionTLS12,
		}
		tr.DialTLSContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := dial(ctx, d, host, port)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(c, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				c.Close()
				return nil, err
			}
			return &keptConn{Conn: tc}, nil
		}
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// keptConn is a connection of a probe's Transport that tells when the
// Transport reads from it. Between requests the Transport looks at what
// is left over from the last answer: nothing, and it waits for more;
// bytes nobody asked for (a server that answered twice), and it drops the
// connection. It hands the connection to the next request without waiting
// for that look, which may then take the leftover answer for its own:
// awaitIdle makes the next request wait until the Transport is reading
// with nothing left over, or has closed the connection (and then the
// request is sent on a new one).
type keptConn struct {
	net.Conn
	mu     sync.Mutex
	reads  int           // Reads in progress
	closed bool          // Close was called
	wake   chan struct{} // closed when reads or closed change, if someone waits
}

func (c *keptConn) Read(p []byte) (int, error) {
	c.change(func() { c.reads++ })
	n, err := c.Conn.Read(p)
	c.change(func() { c.reads-- })
	return n, err
}

func (c *keptConn) Close() error {
	c.change(func() { c.closed = true })
	return c.Conn.Close()
}

func (c *keptConn) change(f func()) {
	c.mu.Lock()
	f()
	if c.wake != nil {
		close(c.wake)
		c.wake = nil
	}
	c.mu.Unlock()
}

// awaitIdle returns once the Transport reads from the connection or has
// closed it, or when ctx ends.
func (c *keptConn) awaitIdle(ctx context.Context) {
	for {
		c.mu.Lock()
		if c.reads > 0 || c.closed {
			c.mu.Unlock()
			return
		}
		if c.wake == nil {
			c.wake = make(chan struct{})
		}
		wake := c.wake
		c.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return
		}
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

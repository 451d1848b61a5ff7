package probe

import (
	"context"
	"crypto/tls"
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
)

// HTTP is ready when a GET of its URL answers 2xx. Redirects are not
// followed (a redirect is not "ready"), proxy variables such as HTTP_PROXY
// are ignored (the target is the pod's own proxy), and at most a bounded
// part of the body is read.
type HTTP struct {
	spec   string
	url    string
	agent  string
	client *http.Client
}

func newHTTP(spec string, u *url.URL, opts Options) *HTTP {
	agent := opts.UserAgent
	if agent == "" {
		agent = "meshgate"
	}
	return &HTTP{spec: spec, url: u.String(), agent: agent, client: Client(u, opts)}
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

// Check sends one GET and reads a bounded part of the answer.
func (h *HTTP) Check(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", h.agent)
	resp, err := h.client.Do(req)
	if err != nil {
		return unwrapURLError(err)
	}
	defer resp.Body.Close()
	head := make([]byte, bodySnippet)
	n, _ := io.ReadFull(resp.Body, head)
	// Drain what is left, within bounds, so the connection can be kept.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, bodyDrain))
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return nil
	}
	status := resp.Status
	if status == "" {
		status = fmt.Sprint(resp.StatusCode)
	}
	if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		status += " to " + cleanText(loc)
	}
	return &NotReadyError{Status: status, Body: cleanText(string(head[:n]))}
}

func (h *HTTP) String() string { return h.spec }

// CloseIdleConnections closes kept-alive connections; callers use it when
// they are done with the probe.
func (h *HTTP) CloseIdleConnections() { h.client.CloseIdleConnections() }

// unwrapURLError drops the "Get \"url\": " prefix that net/http adds: the
// caller names the probe already.
func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
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

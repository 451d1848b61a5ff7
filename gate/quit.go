package gate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"

	"github.com/meshgate/meshgate/probe"
)

// Defaults for a Quitter. The limit sits well inside Kubernetes' default
// grace period of 30 s, so a dead endpoint cannot keep a pod past it.
const (
	DefaultQuitAttemptTimeout = 2 * time.Second
	DefaultQuitAttempts       = 3
	DefaultQuitLimit          = 10 * time.Second
)

// Quitter tells sidecars to exit, by a POST to each of their quit URLs.
type Quitter struct {
	URLs []*url.URL
	// AttemptTimeout bounds each request; Attempts is how many requests
	// each URL gets at most; Limit bounds the whole quit. Zero means the
	// default.
	AttemptTimeout time.Duration
	Attempts       int
	Limit          time.Duration
	// Client makes the HTTP client for a URL; nil means probe.Client
	// with Options (--insecure-skip-verify reaches https quit URLs too).
	// Tests give it an in-memory transport, so that the retries run on
	// synctest's clock (a loopback socket would keep that clock still).
	Client  func(*url.URL) *http.Client
	Options probe.Options
	Log     *zap.Logger
}

// ParseQuitURL checks a quit URL. Unless remote is allowed, its host must
// be loopback: a quit sent elsewhere could stop another pod's proxy.
func ParseQuitURL(s string, remote bool) (*url.URL, error) {
	u, err := probe.ParseHTTPURL(s)
	if err != nil {
		return nil, fmt.Errorf("quit URL %q: %w", probe.Redact(s), err)
	}
	if !remote && !probe.IsLoopback(u.Hostname()) {
		return nil, fmt.Errorf("quit URL %q: host %q is not loopback (add --quit-allow-remote to allow it)", probe.Redact(s), u.Hostname())
	}
	return u, nil
}

// Quit sends the quit requests, all URLs at once, and returns when each
// has been answered with 2xx, has failed for good, or the limit has
// passed. It logs each outcome and returns an error naming the URLs that
// did not take the quit.
func (q *Quitter) Quit(ctx context.Context) error {
	if len(q.URLs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, orDefault(q.Limit, DefaultQuitLimit))
	defer cancel()
	errs := make([]error, len(q.URLs))
	var wg sync.WaitGroup
	for i, u := range q.URLs {
		wg.Go(func() { errs[i] = q.quitOne(ctx, u) })
	}
	wg.Wait()
	var failed []string
	for i, err := range errs {
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", q.URLs[i], err))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("quit failed: %s", strings.Join(failed, "; "))
	}
	return nil
}

// quitOne posts to one URL, retrying what may pass on a retry (no answer,
// 5xx) and not what will not (other 4xx).
func (q *Quitter) quitOne(ctx context.Context, u *url.URL) error {
	log := q.log().With(zap.Stringer("url", u))
	client := q.client(u)
	defer client.CloseIdleConnections()
	attempts := q.Attempts
	if attempts <= 0 {
		attempts = DefaultQuitAttempts
	}
	policy := backoff.WithContext(backoff.WithMaxRetries(backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(100*time.Millisecond), backoff.WithMaxInterval(time.Second),
		backoff.WithMaxElapsedTime(0)), uint64(attempts-1)), ctx)
	// last is the last error of a request: backoff's loop returns ctx's
	// error instead once ctx ends. reached: a request got to the proxy.
	var last error
	n, status, reached := 0, "", false
	post := func() error {
		n++
		var err error
		status, err = q.post(ctx, client, u)
		switch {
		case err == nil:
		case errors.As(err, new(*permanentError)):
			return backoff.Permanent(err)
		case reached && isDialError(err):
			// The proxy took a request, its answer was lost, and now its
			// port is closed: it quit, as it was told to.
			status = "gone"
		default:
			reached = reached || !isDialError(err)
			last = err
			return err
		}
		return nil
	}
	notify := func(err error, pause time.Duration) {
		log.Debug("quit not taken", zap.Error(err), zap.Duration("retry_in", pause))
	}
	err := backoff.RetryNotify(post, policy, notify)
	switch {
	case err == nil:
		log.Info("proxy told to quit", zap.String("status", status), zap.Int("attempts", n))
		return nil
	case errors.As(err, new(*permanentError)):
		log.Warn("proxy refused to quit", zap.Error(err))
		return err
	}
	if ctx.Err() != nil && isTimeout(last) {
		last = fmt.Errorf("no answer within the quit limit: %w", last)
	}
	log.Warn("proxy did not take the quit", zap.Error(last))
	return last
}

// isDialError reports a request that never reached its server.
func isDialError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// permanentError is an answer that a retry will not change.
type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }

func (q *Quitter) post(ctx context.Context, client *http.Client, u *url.URL) (string, error) {
	actx, cancel := context.WithTimeout(ctx, orDefault(q.AttemptTimeout, DefaultQuitAttemptTimeout))
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, u.String(), nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("User-Agent", "meshgate")
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in the log line already
		}
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	text := strings.TrimSpace(string(body))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		return resp.Status, nil
	case resp.StatusCode >= 500:
		return "", fmt.Errorf("answered %s", resp.Status)
	}
	return "", &permanentError{msg: explainQuit(resp.StatusCode, resp.Status, text)}
}

// explainQuit turns a known refusal into advice.
func explainQuit(code int, status, body string) string {
	msg := "answered " + status
	if body != "" {
		if len(body) > 128 {
			body = body[:128]
		}
		msg += fmt.Sprintf(": %q", body)
	}
	switch {
	case code == http.StatusNotFound && strings.Contains(body, "shutdown endpoint is not enabled"):
		return msg + " (Linkerd: annotate the pod with config.linkerd.io/proxy-admin-shutdown: enabled)"
	case code == http.StatusForbidden:
		return msg + " (the endpoint takes requests from loopback only)"
	case code == http.StatusMethodNotAllowed:
		return msg + " (the endpoint does not take POST: is this the quit URL?)"
	case code == http.StatusNotFound:
		return msg + " (no quit endpoint at this URL: check the port and path)"
	}
	return msg
}

func (q *Quitter) client(u *url.URL) *http.Client {
	if q.Client != nil {
		return q.Client(u)
	}
	return probe.Client(u, q.Options)
}

func (q *Quitter) log() *zap.Logger {
	if q.Log == nil {
		return zap.NewNop()
	}
	return q.Log
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

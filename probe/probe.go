// Package probe checks whether a proxy is ready to carry traffic.
//
// A probe makes one attempt per call to Check and reports the outcome as an
// error: nil means ready. Probes do not retry, sleep or log; the gate does
// that. Parse turns a spec such as "http://localhost:15020/healthz/ready" or
// "tcp://127.0.0.1:20000" into a probe.
package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// Probe is one readiness check.
type Probe interface {
	// Check makes a single attempt and returns nil when the target is ready.
	// It returns when ctx is done, at the latest.
	Check(ctx context.Context) error
	// String returns the spec the probe was made from.
	String() string
}

// Func adapts a function to the Probe interface, for tests and for callers
// with checks of their own.
type Func func(ctx context.Context) error

// Check calls f(ctx).
func (f Func) Check(ctx context.Context) error { return f(ctx) }

// String names the probe.
func (f Func) String() string { return "func" }

// NotReadyError reports that the target answered, but not with "ready". It
// tells the caller the target is up and doing work for each attempt, unlike a
// refused connection, which costs it nothing.
type NotReadyError struct {
	Status string // e.g. "503 Service Unavailable"
	Body   string // the start of the answer's body, cleaned for a log line
}

func (e *NotReadyError) Error() string {
	if e.Body == "" {
		return "answered " + e.Status
	}
	return fmt.Sprintf("answered %s: %q", e.Status, e.Body)
}

// Options tune the probes that Parse makes.
type Options struct {
	// InsecureSkipVerify turns off certificate verification for https probes.
	InsecureSkipVerify bool
	// UserAgent is sent with HTTP requests; empty means "meshgate".
	UserAgent string
}

// Parse makes a probe from a spec. The forms are:
//
//	http://HOST[:PORT]/PATH[?QUERY]   ready on a 2xx answer
//	https://HOST[:PORT]/PATH[?QUERY]  the same over TLS
//	tcp://HOST:PORT                    ready when a connection opens
//
// HOST is a name, an IPv4 address or a bracketed IPv6 address; "localhost"
// means the loopback addresses, without a lookup.
func Parse(spec string, opts Options) (Probe, error) {
	u, err := parseURL(spec)
	if err != nil {
		return nil, fmt.Errorf("probe %q: %w", Redact(spec), err)
	}
	switch u.Scheme {
	case "http", "https":
		return newHTTP(spec, u, opts), nil
	case "tcp":
		if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.ForceQuery {
			return nil, fmt.Errorf("probe %q: a tcp probe takes no path or query", Redact(spec))
		}
		return &TCP{spec: spec, host: u.Hostname(), port: u.Port()}, nil
	}
	// parseURL accepts only the schemes above.
	panic("unreachable")
}

// Redact hides the user information of a URL-like spec ("user:pw@"), so
// that an error about it can be shown and logged. It works on the text,
// so that it also covers specs that do not parse, and it takes everything
// up to the last "@" for user information: a password may hold any of
// "/", "?", "#", ":", "%" and "@", and none of its bytes may show.
func Redact(spec string) string {
	at := strings.LastIndex(spec, "@")
	if at < 0 {
		return spec
	}
	if scheme, _, ok := strings.Cut(spec[:at], "://"); ok {
		return scheme + "://xxxxx" + spec[at:]
	}
	return "xxxxx" + spec[at:]
}

// ParseHTTPURL checks an http or https URL the way Parse checks a probe
// spec, for other requests to the proxy (such as telling it to quit).
func ParseHTTPURL(s string) (*url.URL, error) {
	u, err := parseURL(s)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("unsupported scheme %q: want http or https", u.Scheme)
	}
	return u, nil
}

// IsLoopback reports whether host (a name or an address, as in a URL)
// is this machine's loopback: localhost, 127.0.0.0/8 or ::1.
func IsLoopback(host string) bool {
	if isLocalhost(host) {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// parseURL checks the parts of a spec that every kind shares.
func parseURL(spec string) (*url.URL, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, errors.New("empty spec")
	}
	// Before anything reads the text: with "/", "?" or "#" in a password
	// a URL parser takes part of it for the host, the port or the path,
	// and quotes it in its errors. No readiness path needs an "@" that
	// %40 cannot write.
	if strings.Contains(spec, "@") {
		return nil, errors.New("credentials in the spec are not supported (an @ in a path is written %40)")
	}
	if strings.ContainsAny(spec, " \t\r\n") {
		return nil, errors.New("spec contains white space")
	}
	if !strings.Contains(spec, "://") {
		return nil, errors.New("missing scheme: want http://, https:// or tcp://")
	}
	u, err := url.Parse(spec)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, err
	}
	switch u.Scheme {
	case "http", "https", "tcp":
	default:
		return nil, fmt.Errorf("unsupported scheme %q: want http, https or tcp", u.Scheme)
	}
	if u.Opaque != "" {
		return nil, errors.New("missing // after the scheme")
	}
	if u.Fragment != "" || strings.HasSuffix(spec, "#") {
		return nil, errors.New("a fragment is not allowed")
	}
	if err := checkHost(u.Hostname(), u.Host); err != nil {
		return nil, err
	}
	port := u.Port()
	if port == "" {
		if u.Scheme == "tcp" {
			return nil, errors.New("missing port")
		}
		if strings.HasSuffix(u.Host, ":") {
			return nil, errors.New("empty port")
		}
		return u, nil
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("port %q out of range 1-65535", port)
	}
	return u, nil
}

// checkHost accepts a DNS name, an IPv4 address, or an IPv6 address written
// in brackets.
func checkHost(host, hostport string) error {
	if host == "" {
		return errors.New("missing host")
	}
	if strings.Contains(host, ":") {
		if !strings.HasPrefix(hostport, "[") {
			return errors.New("an IPv6 address must be in brackets, as in [::1]:15020")
		}
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("bad IPv6 address %q", host)
		}
		return nil
	}
	if strings.HasPrefix(hostport, "[") {
		return fmt.Errorf("bad IPv6 address %q", host)
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	name := strings.TrimSuffix(host, ".")
	if len(name) > 253 || name == "" {
		return fmt.Errorf("bad host name %q", host)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("bad host name %q", host)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("bad host name %q", host)
			}
		}
	}
	return nil
}

// isLocalhost reports whether host names the loopback interface by name.
// Such names are never looked up: a scratch container may have no
// /etc/hosts, and then a lookup of "localhost" goes to DNS and fails.
func isLocalhost(host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	return host == "localhost" || strings.HasSuffix(host, ".localhost")
}

// loopbacks are tried in this order for "localhost". Proxies bind IPv4
// loopback or all addresses far more often than IPv6 loopback alone.
var loopbacks = [...]string{"127.0.0.1", "::1"}

// dial opens a TCP connection to host:port, resolving localhost to the
// loopback addresses itself.
func dial(ctx context.Context, d *net.Dialer, host, port string) (net.Conn, error) {
	if !isLocalhost(host) {
		return d.DialContext(ctx, "tcp", net.JoinHostPort(host, port))
	}
	var first error
	for _, ip := range loopbacks {
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip, port))
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, first
}

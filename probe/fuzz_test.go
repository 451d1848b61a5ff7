package probe

import (
	"bufio"
	"bytes"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// FuzzRedactUserinfo checks that no byte of a URL's user information,
// whatever it holds ("/", "?", "#", "@", ":", "%"), shows in the errors
// about it or in Redact's output. Looking for the password there would
// not do: it may also be part of what is not secret (the host in
// "http://0:0000@0000"). So the output must be the same as with the
// one-letter user "x". The seeds are in testdata/fuzz/FuzzRedactUserinfo.
func FuzzRedactUserinfo(f *testing.F) {
	f.Fuzz(func(t *testing.T, scheme byte, user, password, rest string) {
		secret := user + ":" + password
		if strings.ContainsAny(secret, " \t\r\n") || len(password) < 4 {
			return
		}
		prefix := []string{"http", "https", "tcp", "ftp", ""}[int(scheme)%5] + "://"
		spec, plain := prefix+secret+"@"+rest, prefix+"x@"+rest
		p, err := Parse(spec, Options{})
		if err == nil {
			t.Fatalf("Parse(%q) = %v, want credentials refused", spec, p)
		}
		if _, want := Parse(plain, Options{}); want == nil || err.Error() != want.Error() {
			t.Errorf("Parse(%q) error %q, want %v as for %q", spec, err, want, plain)
		}
		_, err = ParseHTTPURL(spec)
		if _, want := ParseHTTPURL(plain); err == nil || want == nil || err.Error() != want.Error() {
			t.Errorf("ParseHTTPURL(%q) error %v, want %v as for %q", spec, err, want, plain)
		}
		if r, want := Redact(spec), Redact(plain); r != want {
			t.Errorf("Redact(%q) = %q, want %q as for %q", spec, r, want, plain)
		}
	})
}

// FuzzParse checks that Parse never panics, that each error names the
// spec, and that an accepted spec makes a probe that stands for it and
// sends a well-formed request. The seeds are in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, spec string) {
		p, err := Parse(spec, Options{})
		if err != nil {
			if p != nil {
				t.Errorf("Parse(%q) = %v with error %v, want no probe", spec, p, err)
			}
			if !strings.Contains(err.Error(), strconv.Quote(Redact(spec))) {
				t.Errorf("Parse(%q) error = %q, want it to name the spec quoted, credentials hidden", spec, err)
			}
			return
		}
		if got := p.String(); got != spec {
			t.Errorf("Parse(%q).String() = %q, want the spec", spec, got)
		}
		var port string
		switch p := p.(type) {
		case *HTTP:
			port = p.req.URL.Port()
			var request bytes.Buffer
			if err := p.req.Write(&request); err != nil {
				t.Fatalf("Parse(%q) makes a request that cannot be written: %v", spec, err)
			}
			checkRequest(t, spec, request.Bytes())
			if _, err := ParseHTTPURL(spec); err != nil {
				t.Errorf("ParseHTTPURL(%q) = %v, want it to take what Parse takes", spec, err)
			}
		case *TCP:
			port = p.port
		default:
			t.Errorf("Parse(%q) is %T, want *HTTP or *TCP", spec, p)
		}
		if n, err := strconv.Atoi(port); port != "" && (err != nil || n < 1 || n > 65535) {
			t.Errorf("Parse(%q) probes port %q, want 1-65535", spec, port)
		}
	})
}

// checkRequest fails the test unless request is one GET of the spec's
// path and query, with nothing smuggled in by its bytes.
func checkRequest(t *testing.T, spec string, request []byte) {
	t.Helper()
	lines := bytes.Split(bytes.TrimSuffix(request, []byte("\r\n\r\n")), []byte("\r\n"))
	if len(lines) != 4 {
		t.Fatalf("Parse(%q) sends %q, want a request line and 3 headers", spec, request)
	}
	for _, l := range lines {
		if bytes.ContainsAny(l, "\r\n\x00") {
			t.Fatalf("Parse(%q) sends %q, want no line breaks or NULs within a line", spec, request)
		}
	}
	r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(request)))
	if err != nil {
		t.Fatalf("Parse(%q) sends %q, which does not parse: %v", spec, request, err)
	}
	u, _ := url.Parse(spec)
	if r.Method != "GET" || r.RequestURI != u.RequestURI() || len(r.Header) != 2 {
		t.Errorf("Parse(%q) sends %s %s with %v, want GET %s with User-Agent and Accept", spec, r.Method, r.RequestURI, r.Header, u.RequestURI())
	}
}

package probe

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// TestMain sets the proxy variables before any test runs (net/http reads
// them once per process) to a port where nothing listens, then fails the
// package when a test leaves a goroutine or a socket behind. No goroutine
// is ignored: every test server is closed and every handler waited for.
func TestMain(m *testing.M) {
	for _, v := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
		os.Setenv(v, "http://127.0.0.1:9")
	}
	os.Unsetenv("NO_PROXY")
	os.Unsetenv("no_proxy")
	goleak.VerifyTestMain(m, goleak.Cleanup(exitUnlessSocketsClosed))
}

// exitUnlessSocketsClosed ends the test binary with code, or with 1 when
// a socket is still open after a passing run. A probe's kept connection
// has no goroutine of its own, so goleak cannot see it; its descriptor
// can be seen (where there is a /proc).
func exitUnlessSocketsClosed(code int) {
	fds, _ := filepath.Glob("/proc/self/fd/*")
	var open []string
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err == nil && strings.HasPrefix(target, "socket:") {
			open = append(open, filepath.Base(fd)+"->"+target)
		}
	}
	if code == 0 && len(open) > 0 {
		fmt.Fprintf(os.Stderr, "sockets left open after the tests: %s\n", strings.Join(open, ", "))
		code = 1
	}
	os.Exit(code)
}

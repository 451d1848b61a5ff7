package probe

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine or a socket
// behind. No goroutine is ignored: every test server is closed and every
// handler waited for before its test ends.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(exitUnlessSocketsClosed))
}

// exitUnlessSocketsClosed ends the test binary with code, or with 1 when
// a socket is still open after a passing run. A probe's kept connection
// has no goroutine of its own, so goleak cannot see it; its descriptor
// can be seen.
func exitUnlessSocketsClosed(code int) {
	if code == 0 {
		if open := openSockets(); len(open) > 0 {
			fmt.Fprintf(os.Stderr, "sockets left open after the tests: %s\n", strings.Join(open, ", "))
			code = 1
		}
	}
	os.Exit(code)
}

// openSockets lists this process's open socket descriptors. It finds none
// where /proc is missing, as on systems other than Linux.
func openSockets() []string {
	fds, _ := filepath.Glob("/proc/self/fd/*")
	var open []string
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err == nil && strings.HasPrefix(target, "socket:") {
			open = append(open, filepath.Base(fd)+"->"+target)
		}
	}
	return open
}

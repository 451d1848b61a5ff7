// Command meshgate holds an application back until its mesh proxy is ready.
//
// Usage:
//
//	meshgate [flags] -- COMMAND [ARG...]
//	meshgate --quit [flags] -- COMMAND [ARG...]
//	meshgate wait [flags]
//	meshgate check [flags]
//	meshgate quit [flags]
//	meshgate install DEST
//	meshgate version
//	meshgate help [COMMAND]
//
// With a command, meshgate polls the proxy's readiness endpoint (by default
// Istio's http://localhost:15020/healthz/ready), paced by what each attempt
// costs the proxy, until it answers ready, then replaces itself with
// COMMAND through execve: the command keeps meshgate's PID, stdio and
// environment, and receives its argv exactly as given. Flags after -- belong to the command. "wait" waits
// the same way and exits 0; "check" tries every probe once and exits 0 if
// all are ready, 1 if not.
//
// With --quit or --quit-url (for Jobs), meshgate supervises instead of
// exec'ing: it runs COMMAND as its child, forwards signals to it, reaps
// zombies, and when the child ends POSTs to the proxy's quit endpoint, then
// exits with the child's status. The quit also follows a command that could
// not start and a wait that timed out; --quit-on success limits it to runs
// that exited 0. "quit" sends the quit at once. "install DEST" copies the
// binary atomically to DEST/meshgate, for init containers without cp.
//
// Probes are given with --probe (repeatable, all must pass) as
// http://HOST[:PORT]/PATH, https://... (ready on 2xx, redirects not
// followed) or tcp://HOST:PORT (ready when a connection opens), or with
// --preset istio|linkerd|envoy|consul|kuma. "localhost" means the loopback
// addresses and is never looked up, so images without /etc/hosts work.
//
// Every flag can also be set through MESHGATE_<FLAG> (MESHGATE_TIMEOUT=30s,
// MESHGATE_PROBE=a,b); the command line wins as a whole (a --preset given
// there beats MESHGATE_PROBE), and within one source --probe beats --preset. MESHGATE_DISABLED=true skips
// the wait (not the quit). meshgate logs to stderr only (JSON, or --log-format console).
//
// Exit codes:
//
//	N       the command's own status, once it runs (it replaced meshgate, or
//	        meshgate supervised it; 128+N if signal N killed it)
//	0       wait or check: the proxy is ready; quit: every endpoint took it
//	1       check: a probe is not ready; quit: an endpoint refused; install:
//	        an I/O error; any error not listed here
//	2       bad flags, environment variables or arguments
//	69      the proxy was not ready within --timeout (EX_UNAVAILABLE)
//	126     the command was found but cannot be executed (e.g. a directory)
//	127     the command was not found
//	128+N   signal N (SIGTERM, SIGINT, SIGHUP, SIGQUIT) arrived while waiting,
//	        before the command started, or during quit or install
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/meshgate/meshgate/gate"
)

// version is set at link time by the Makefile and the Dockerfile
// (-X main.version=v1.2.3). A build without it reports the module version
// the go command recorded, as after
// go install github.com/meshgate/meshgate/cmd/meshgate@v1.2.3.
var version = "dev"

func init() { version = buildVersion(version, debug.ReadBuildInfo) }

// buildVersion is stamped unless it is the default and the build
// information has a module version for the main module.
func buildVersion(stamped string, read func() (*debug.BuildInfo, bool)) string {
	if stamped != "dev" {
		return stamped
	}
	if bi, ok := read(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return stamped
}

func main() {
	c := make(chan os.Signal, 32)
	// Routing a signal costs the runtime a thread of its own and a round
	// trip to it per signal, in the way of a proxy that is ready at once:
	// it is done beside the parsing of the command line, and run waits for
	// it before its first log line. Until then a stop signal does what it
	// does before main runs: it ends the process (as PID 1, nothing).
	caught := make(chan struct{})
	go func() {
		// Catching these also makes them reach us as PID 1, and exec
		// resets caught signals to their defaults for the command.
		signal.Notify(c, gate.StopSignals()...)
		close(caught)
	}()
	proc := process{C: c, Caught: caught, Waiting: tuneForWaiting,
		Notify: func(s ...os.Signal) { signal.Notify(c, s...) }, Stop: func() { signal.Stop(c) },
		Settle: func() {
			// signal.Stop waits until every signal caught so far has been
			// handed to its channels; stopping a spare channel that wants
			// what c wants too disables nothing.
			spare := make(chan os.Signal, 1)
			signal.Notify(spare, syscall.SIGTERM)
			signal.Stop(spare)
		}}
	os.Exit(run(context.Background(), os.Args[1:], os.Environ(), os.Stdout, os.Stderr, proc))
}

// tuneForWaiting sets the runtime up for a wait that polls for a while,
// once the first attempt found the proxy not ready; a proxy that is ready
// at once meets the runtime's defaults, which start up faster (a change of
// GOMAXPROCS stops the world). The command gets a runtime of its own.
func tuneForWaiting() {
	// A gate runs one thing at a time: one processor means fewer threads
	// to wake on every attempt. GOMAXPROCS in the environment still wins.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	// Each attempt leaves a few KiB of garbage, and the runtime does not
	// collect before the heap reaches 4 MiB: waiting, the resident set
	// grew by that much over the first 10 s. A collection of our small
	// heap takes well under a millisecond, so collect at a quarter of that
	// (1 MiB) and stay flat. GOGC in the environment still wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(25)
	}
}

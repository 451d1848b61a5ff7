// Command bench measures the built meshgate binary against the proxy
// emulator on loopback, next to the classic shell loop run in the same
// session, and prints one markdown table with each figure beside its target.
//
//	go run ./test/bench --meshgate bin/meshgate --app bin/app [flags]
//
// It makes four measurements, each with flags for its counts and durations
// (--only picks some of them):
//
//   - notice: how long after the proxy turns ready the command starts, over
//     trials whose phases (closed, then 503, then 200) are drawn from --seed;
//   - overhead: how much later the command starts behind meshgate than when
//     exec'd directly, with the proxy ready from the first attempt;
//   - load: how often the waiter knocks while the port is closed and while
//     the proxy answers 503, and the proxy's share of time spent answering
//     it, at each per-request cost of --load-costs;
//   - cost: meshgate's CPU per second of waiting, its start-up CPU and peak
//     RSS, and the size of the binary.
//
// The baseline is sh -c 'until curl -fs URL >/dev/null; do sleep 1; done;
// exec APP'. Without curl its figures are left out, with a note.
//
// Trials run one after another, so that on a small machine they do not
// compete for the CPU, and each on a fresh loopback port below the ephemeral
// range, so that no socket of an earlier trial, or any outgoing connection,
// can answer for it. Progress goes to stderr, the table to stdout.
//
// Exit codes: 0 the table is printed, whether or not the targets are met
// (the figures depend on the machine, and CI does not time things); 1 a
// measurement could not be made (the reason is noted under the table);
// 2 bad flags.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

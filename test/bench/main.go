// Command bench measures the built meshgate binary against reference
// gates run in the same session, on loopback against the proxy emulator,
// and prints a table of figures and a table of goals, each goal a ratio to
// the references' figures of the same run:
//
//	go run ./test/bench --meshgate bin/meshgate --app bin/app --refgate bin/refgate [flags]
//
// The gates are meshgate with its defaults; test/refgate, a Go loop with a
// keep-alive net/http client, with no pause, a fixed 10 ms and a fixed
// 50 ms pause; the classic sh -c 'until curl -fs URL >/dev/null; do sleep
// 1; done; exec APP' if curl is installed; and any gate given with --also
// (another build of meshgate, say). All of them exec the same app.
//
// It makes five measurements (--only picks some of them):
//
//   - notice: how long after the proxy turns ready the app starts, over
//     trials whose phases (closed, then 503, then 200) are drawn from --seed,
//     and how often each gate asks while the proxy answers 503;
//   - busy: the same with every core kept busy by a yes(1), as on a busy node;
//   - overhead: how much later the app starts behind each gate than when
//     exec'd directly, with the proxy ready from the first attempt;
//   - load: the share of its time a proxy that takes --load-cost per answer
//     spends answering each gate;
//   - cost: each gate's CPU per second and per attempt while it waits, its
//     VmHWM after --cost-wait, and the size of meshgate's binary.
//
// Trials run one after another, gates interleaved in an order that turns,
// each on a fresh loopback port below the ephemeral range, so that no
// socket of an earlier trial, or any outgoing connection, can answer for
// it. Progress goes to stderr, the tables to stdout.
//
// Exit codes: 0 the tables are printed, whether or not the goals are met
// (the figures depend on the machine, and CI does not time things); 1 a
// measurement could not be made (the reason is noted under the tables);
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

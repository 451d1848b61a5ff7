// Command bench is make bench: it measures the built meshgate binary
// against reference gates run in the same session, on loopback against the
// proxy emulator, and prints a table of figures and a table of goals, each
// goal a ratio to the references' figures of the same run (README.md,
// "Performance", says what each measurement and goal is):
//
//	go run ./test/bench --meshgate bin/meshgate --app bin/app --refgate bin/refgate [flags]
//
// The gates are meshgate with its defaults; test/refgate with no pause, a
// fixed 10 ms and a fixed 50 ms pause; the classic curl loop if curl is
// installed; and any gate given with --also (another build of meshgate,
// say). All of them exec the same app. --only picks some of the
// measurements: notice, busy (notice with every core busy), overhead,
// load and cost.
//
// Trials run one after another, gates interleaved in an order that turns,
// each on a fresh loopback port below the ephemeral range. Progress goes
// to stderr, the tables to stdout.
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

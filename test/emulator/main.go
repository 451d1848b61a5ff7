// Command emulator plays a mesh proxy's readiness endpoint: closed for a
// while, then "not ready", then "ready", for the demo and the pod tests.
//
//	emulator [--listen 127.0.0.1:15020] [--path /healthz/ready]
//	         [--phases closed:1s,503:2s,200] [--quit-path /quitquitquit]
//	         [--ready-file FILE]
//
// Each phase is a state (closed, hang or an HTTP status) with an optional
// duration; the last one holds until SIGTERM or SIGINT, and one without a
// duration before it holds until SIGUSR1. Each phase change is printed to
// stderr with the time.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/meshgate/meshgate/test/sidecar"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stderr))
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("emulator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:15020", "address to listen on")
	path := fs.String("path", "/healthz/ready", "readiness path")
	phases := fs.String("phases", "closed:1s,503:2s,200", "states with durations: closed, hang or an HTTP status")
	quitPath := fs.String("quit-path", "", "path that takes a POST to quit, e.g. /quitquitquit (the emulator then exits)")
	readyFile := fs.String("ready-file", "", "write the time (Unix nanoseconds) it turns ready to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ps, err := sidecar.ParsePhases(*phases)
	if err != nil {
		fmt.Fprintf(stderr, "emulator: %v\n", err)
		return 2
	}
	next := make(chan struct{})
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	go func() {
		for range usr1 {
			select {
			case next <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}()
	start := time.Now()
	e := &sidecar.Emulator{Addr: *listen, Path: *path, QuitPath: *quitPath, Next: next,
		OnPhase: func(s sidecar.State, t time.Time) {
			if s.Ready() && *readyFile != "" {
				if err := os.WriteFile(*readyFile, []byte(strconv.FormatInt(t.UnixNano(), 10)), 0o644); err != nil {
					fmt.Fprintf(stderr, "emulator: %v\n", err)
				}
			}
			fmt.Fprintf(stderr, "emulator %s +%4dms  %s\n", t.Format("15:04:05.000"), t.Sub(start).Milliseconds(), describe(s, *listen, *path))
		}}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-e.Quitted():
			fmt.Fprintf(stderr, "emulator %s  told to quit: exiting\n", time.Now().Format("15:04:05.000"))
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := e.Run(ctx, ps); err != nil {
		fmt.Fprintf(stderr, "emulator: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "emulator: answered %d readiness requests\n", e.Requests())
	return 0
}

func describe(s sidecar.State, addr, path string) string {
	switch {
	case s == sidecar.Closed:
		return "port " + addr + " closed (proxy not started)"
	case s == sidecar.Hang:
		return "accepting on " + addr + " but never answering"
	}
	return fmt.Sprintf("GET %s answers %s (proxy %s)", path, s, map[bool]string{true: "ready", false: "not ready"}[s.Ready()])
}

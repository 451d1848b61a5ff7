// Command refgate is the reference the benchmark holds meshgate to: the
// plainest gate one could write in Go. It GETs a URL with a keep-alive
// net/http client, pausing a fixed time between attempts (none with
// --pause 0), and on a 2xx answer execs the command, or exits 0 if there is
// none:
//
//	refgate --url URL --pause 10ms [--verbose] [-- COMMAND [ARG...]]
//
// It has no flags of its own beyond these, no logger, no signal handling
// and no pacing: whatever meshgate costs beyond it is meshgate's own.
// --verbose prints one line per failed attempt on stderr: "refused" when
// the connection was refused, "not ready" otherwise.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"
)

func main() {
	url := flag.String("url", "", "readiness URL")
	pause := flag.Duration("pause", 0, "pause between attempts")
	verbose := flag.Bool("verbose", false, "one line per failed attempt on stderr")
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "refgate: --url is required")
		os.Exit(2)
	}
	var path string
	if flag.NArg() > 0 {
		p, err := exec.LookPath(flag.Arg(0))
		if err != nil {
			fmt.Fprintf(os.Stderr, "refgate: %v\n", err)
			os.Exit(127)
		}
		path = p
	}
	client := &http.Client{
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1, DisableCompression: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	req, err := http.NewRequest(http.MethodGet, *url, nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "refgate: %v\n", err)
		os.Exit(2)
	}
	for !ready(client, req, *verbose) {
		if *pause > 0 {
			time.Sleep(*pause)
		}
	}
	if path == "" {
		return
	}
	client.CloseIdleConnections()
	if err := syscall.Exec(path, flag.Args(), os.Environ()); err != nil {
		fmt.Fprintf(os.Stderr, "refgate: exec %s: %v\n", path, err)
		os.Exit(126)
	}
}

// ready makes one attempt, bounded by a second.
func ready(client *http.Client, req *http.Request, verbose bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := client.Do(req.WithContext(ctx))
	if err != nil {
		if verbose {
			if errors.Is(err, syscall.ECONNREFUSED) {
				fmt.Fprintln(os.Stderr, "refused")
			} else {
				fmt.Fprintln(os.Stderr, "not ready")
			}
		}
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return true
	}
	if verbose {
		fmt.Fprintln(os.Stderr, "not ready")
	}
	return false
}

// Command refgate is the reference the benchmark holds meshgate to: the
// plainest gate one could write in Go. It GETs a URL with a keep-alive
// net/http client, pausing a fixed time between attempts (none with
// --pause 0), and on a 2xx answer execs the command, or exits 0 if there is
// none:
//
//	refgate --url URL --pause 10ms [-- COMMAND [ARG...]]
//
// It has no flags of its own beyond these, no logger, no signal handling
// and no pacing: whatever meshgate costs beyond it is meshgate's own.
package main

import (
	"context"
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
	flag.Parse()
	if *url == "" {
		fmt.Fprintln(os.Stderr, "refgate: --url is required")
		os.Exit(2)
	}
	var path string
	var err error
	if flag.NArg() > 0 {
		if path, err = exec.LookPath(flag.Arg(0)); err != nil {
			fmt.Fprintf(os.Stderr, "refgate: %v\n", err)
			os.Exit(127)
		}
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
	for !ready(client, req) {
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
func ready(client *http.Client, req *http.Request) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	resp, err := client.Do(req.WithContext(ctx))
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode/100 == 2
}

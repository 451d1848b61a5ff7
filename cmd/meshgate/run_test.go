package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/meshgate/meshgate/test/testkit"
)

// server answers readiness with the given status.
func server(t *testing.T, status int) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(status) }))
	t.Cleanup(srv.Close)
	return srv.URL + "/ready"
}

// quitServers count the quits they take, over http and over https with a
// certificate nobody signed.
func quitServers(t *testing.T) (plain, tls string, quits *atomic.Int32) {
	quits = new(atomic.Int32)
	count := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { quits.Add(1) })
	srv, tlsSrv := httptest.NewServer(count), httptest.NewUnstartedServer(count)
	// The refused handshakes are the server's to report, not in the
	// standard logger that run sends to its own log meanwhile.
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0)
	tlsSrv.StartTLS()
	t.Cleanup(func() { srv.Close(); tlsSrv.Close() })
	return srv.URL + "/quitquitquit", tlsSrv.URL + "/quitquitquit", quits
}

// TestRun runs each mode against servers on loopback and, supervised,
// real commands: their status is passed through, and the proxy is told to
// quit unless --quit-on says otherwise or the pod is stopping.
func TestRun(t *testing.T) {
	ready, notReady := server(t, 200), server(t, 503)
	quit, tlsQuit, quits := quitServers(t)
	empty := t.TempDir() // a PATH without commands, and where install is stopped
	supervised := func(args ...string) []string { return append([]string{"--probe", ready, "--quit-url", quit}, args...) }
	tests := []struct {
		name  string
		args  []string
		env   []string
		sig   os.Signal // already on the signal channel
		code  int
		quits int32
		msg   string // a log message expected once
		error string // in that line's error
	}{
		{"check ready", []string{"check", "--probe", ready}, nil, nil, 0, 0, "", ""},
		{"check not ready", []string{"check", "--probe", ready, "--probe", notReady}, nil, nil, 1, 0, "exiting", notReady},
		{"check disabled", []string{"check", "--probe", notReady}, []string{"MESHGATE_DISABLED=1"}, nil, 0, 0, "check disabled; reporting ready", ""},
		{"variable overridden", []string{"check", "--preset", "linkerd", "--disabled"}, []string{"MESHGATE_PROBE=tcp://127.0.0.1:1"},
			nil, 0, 0, "ignoring variable: the command line's --preset wins", ""},
		{"wait ready", []string{"wait", "--probe", ready}, nil, nil, 0, 0, "proxy ready", ""},
		{"wait disabled", []string{"wait", "--probe", notReady, "--disabled"}, nil, nil, 0, 0, "wait disabled; not waiting for the proxy", ""},
		{"unknown variable", []string{"wait", "--probe", ready}, []string{"MESHGATE_TIMOUT=1s"}, nil, 0, 0, "ignoring unknown variable", ""},
		{"wait signalled", []string{"wait", "--probe", notReady}, nil, syscall.SIGHUP, 129, 0, "exiting", ""},
		// The smallest timeout: the outcome, not the time, is under test.
		{"wait timed out", []string{"wait", "--probe", notReady, "--timeout", "1ns"}, nil, nil, 69, 0, "exiting", "proxy not ready after"},
		{"wait timed out, start", []string{"wait", "--probe", notReady, "--timeout", "1ns", "--on-timeout", "start"}, nil, nil, 0, 0,
			"proxy not ready; going on as --on-timeout=start asks", "proxy not ready after"},
		// The probe would never pass: the missing command must come first.
		{"command not found", []string{"--probe", notReady, "--timeout", "0", "--", "no-such-command"}, []string{"PATH=" + empty},
			nil, 127, 0, "exiting", `command "no-such-command" not found`},
		{"install signalled", []string{"install", empty}, nil, syscall.SIGTERM, 143, 0, "exiting", ""},
		{"quit", []string{"quit", "--quit-url", quit}, nil, nil, 0, 1, "", ""},
		{"quit, --insecure-skip-verify", []string{"quit", "--quit-url", tlsQuit, "--insecure-skip-verify"}, nil, nil, 0, 1, "", ""},
		// The default limit (10s) leaves the three quick refusals their
		// own error, however busy the machine.
		{"quit, certificate refused", []string{"quit", "--quit-url", tlsQuit}, nil, nil, 1, 0, "exiting", "certificate"},
		{"supervised, failed", supervised("--", "/bin/sh", "-c", "exit 3"), nil, nil, 3, 1, "exiting", "command exited with status 3"},
		{"supervised, --quit", supervised("--quit", "--", "/bin/true"), nil, nil, 0, 1, "exited", ""},
		{"supervised, killed", supervised("--", "/bin/sh", "-c", "kill -KILL $$"), nil, nil, 137, 1, "exiting", "killed"},
		{"supervised, not found", supervised("--", "no-such-command"), []string{"PATH=" + empty}, nil, 127, 1, "exiting", "not found"},
		{"supervised, not ready", []string{"--probe", notReady, "--quit-url", quit, "--timeout", "1ns", "--", "/bin/true"}, nil, nil, 69, 1, "exiting", ""},
		// The pod is stopping, and the kubelet stops the proxy.
		{"supervised, signalled", []string{"--probe", notReady, "--quit-url", quit, "--", "/bin/true"}, nil, syscall.SIGTERM, 143, 0, "exiting", ""},
		{"--quit-on success, failed", supervised("--quit-on", "success", "--", "/bin/sh", "-c", "exit 3"), nil, nil, 3, 0,
			"not telling the proxy to quit: the run failed and --quit-on=success", ""},
		{"--quit-on success, succeeded", supervised("--quit-on=success", "--", "/bin/true"), nil, nil, 0, 1, "exited", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := make(chan os.Signal, 1)
			if tc.sig != nil {
				c <- tc.sig
			}
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, tc.env, &stdout, &stderr, process{C: c})
			if n := quits.Swap(0); code != tc.code || n != tc.quits || stdout.Len() != 0 {
				t.Fatalf("run = %d after %d quits, stdout %q; want %d after %d and nothing on stdout\n%s", code, n, stdout.String(), tc.code, tc.quits, stderr.String())
			}
			found := 0
			for _, l := range testkit.Logs(t, stderr.String(), tc.msg) {
				if strings.Contains(fmt.Sprint(l["error"]), tc.error) {
					found++
				}
			}
			if tc.msg != "" && found != 1 {
				t.Errorf("log has %d lines %q with error %q, want 1:\n%s", found, tc.msg, tc.error, stderr.String())
			}
		})
	}
	if entries, _ := os.ReadDir(empty); len(entries) != 0 {
		t.Errorf("install stopped by SIGTERM left %d files, want none", len(entries))
	}
}

// A supervised command gets the signals on the channel, which stands in
// for os/signal, once it runs.
func TestSuperviseForwardsSignals(t *testing.T) {
	started := filepath.Join(t.TempDir(), "started")
	if err := syscall.Mkfifo(started, 0o600); err != nil {
		t.Fatal(err)
	}
	c := make(chan os.Signal, 1)
	go func() {
		// Returns once the command has set its trap and written.
		if _, err := os.ReadFile(started); err == nil {
			c <- syscall.SIGUSR1
		}
	}()
	var asked []os.Signal
	// The sleeper holds no pipe of the test's: if the trap fails, go
	// test need not wait for it.
	script := `trap 'kill $sleeper; exit 42' USR1; sleep 60 >/dev/null 2>&1 & sleeper=$!; echo > "$0"; wait $sleeper`
	quit, _, quits := quitServers(t)
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"--probe", server(t, 200), "--quit-url", quit, "--forward-signals", "USR1", "--", "/bin/sh", "-c", script, started},
		nil, &bytes.Buffer{}, &stderr, process{C: c, Notify: func(s ...os.Signal) { asked = append(asked, s...) }})
	if code != 42 || quits.Load() != 1 || fmt.Sprint(asked) != fmt.Sprint([]os.Signal{syscall.SIGUSR1}) {
		t.Errorf("run = %d after %d quits, asked for %v; want 42 (the trap's) after 1, asked for USR1\n%s", code, quits.Load(), asked, stderr.String())
	}
}

// quit ends on a stop signal with 128+N, even while an endpoint hangs.
func TestQuitStopsOnSignal(t *testing.T) {
	sigs := make(chan os.Signal, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sigs <- syscall.SIGINT // the quit is under way
		<-r.Context().Done()   // and hangs until meshgate hangs up
	}))
	defer srv.Close()
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"quit", "--quit-url", srv.URL + "/quitquitquit"}, nil, &bytes.Buffer{}, &stderr, process{C: sigs})
	if code != 130 {
		t.Errorf("quit with SIGINT during a hanging request = %d, want 130\n%s", code, stderr.String())
	}
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"reflect"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshgate/meshgate/test/pty"
	"github.com/meshgate/meshgate/test/testkit"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name      string
		args, env []string
		probes    []string
		quitURLs  []string
		want      func(*config) // turns the defaults into what is expected
	}{
		{"defaults", []string{"--", "/app"}, nil, []string{defaultProbe}, nil, func(c *config) {}},
		{"flags win over env", []string{"--probe", "tcp://localhost:1", "--probe=http://localhost:2/r", "--timeout", "30s",
			"--on-timeout=start", "--attempt-timeout", "200ms", "--poll-min", "1ms", "--poll-max", "2s", "--poll-share", "0.1", "--poll-jitter=0",
			"--insecure-skip-verify", "--disabled", "--log-format", "console", "--log-level", "debug", "--", "/app", "--timeout", "x"},
			[]string{"MESHGATE_TIMEOUT=1s", "MESHGATE_PROBE=tcp://b:2"}, []string{"tcp://localhost:1", "http://localhost:2/r"}, nil, func(c *config) {
				c.timeout, c.onTimeout, c.attemptTimeout = 30*time.Second, "start", 200*time.Millisecond
				c.pollMin, c.pollMax, c.pollShare, c.pollJitter = time.Millisecond, 2*time.Second, 0.1, 0
				c.insecure, c.disabled, c.logFormat, c.logLevel = true, true, "console", "debug"
				c.command = []string{"/app", "--timeout", "x"}
			}},
		// An empty variable is unset.
		{"env", []string{"--", "/app"}, []string{"MESHGATE_PROBE=tcp://localhost:1, tcp://localhost:2", "MESHGATE_TIMEOUT=0", "MESHGATE_POLL_MIN=",
			"MESHGATE_DISABLED=true", "MESHGATE_LOG_LEVEL=warn", "MESHGATE_ATTEMPT_TIMEOUT=3s"},
			[]string{"tcp://localhost:1", "tcp://localhost:2"}, nil, func(c *config) {
				c.timeout, c.disabled, c.logLevel, c.attemptTimeout = 0, true, "warn", 3*time.Second
			}},
		{"quit", []string{"--quit", "--quit-url", "http://localhost:1/q", "--quit-on", "success", "--quit-timeout", "3s",
			"--quit-allow-remote", "--forward-signals", "sigterm, URG", "--", "/app"}, nil, []string{defaultProbe}, []string{"http://localhost:1/q"},
			func(c *config) {
				c.supervise, c.quitOn, c.quitTimeout = true, "success", 3*time.Second
				c.forward = []os.Signal{syscall.SIGTERM, syscall.SIGURG}
			}},
		{"quit env", []string{"--", "/app"}, []string{"MESHGATE_QUIT_URL=http://localhost:1/a,http://127.0.0.1:2/b", "MESHGATE_FORWARD_SIGNALS=HUP"},
			[]string{defaultProbe}, []string{"http://localhost:1/a", "http://127.0.0.1:2/b"},
			func(c *config) { c.supervise, c.forward = true, []os.Signal{syscall.SIGHUP} }},
		// The command line wins over the environment as a whole: a
		// --preset given there beats MESHGATE_PROBE and MESHGATE_QUIT_URL;
		// within one source --probe beats --preset.
		{"--preset beats variables", []string{"--quit", "--preset", "linkerd", "--", "/app"},
			[]string{"MESHGATE_PROBE=tcp://127.0.0.1:1", "MESHGATE_QUIT_URL=http://127.0.0.1:5/q"},
			[]string{"http://localhost:4191/ready"}, []string{"http://localhost:4191/shutdown"},
			func(c *config) { c.supervise, c.overridden = true, []string{"MESHGATE_PROBE", "MESHGATE_QUIT_URL"} }},
		{"--probe beats MESHGATE_PRESET", []string{"--probe", "tcp://127.0.0.1:2", "--", "/app"}, []string{"MESHGATE_PRESET=linkerd"},
			[]string{"tcp://127.0.0.1:2"}, nil, func(c *config) {}},
		{"MESHGATE_PROBE beats MESHGATE_PRESET", []string{"--", "/app"}, []string{"MESHGATE_PRESET=linkerd", "MESHGATE_PROBE=tcp://127.0.0.1:3"},
			[]string{"tcp://127.0.0.1:3"}, nil, func(c *config) {}},
		// kuma has no quit endpoint; one's own goes with its probe.
		{"kuma with a quit URL", []string{"--preset", "kuma", "--quit-url", "http://localhost:9901/quitquitquit", "--", "/app"}, nil,
			[]string{"http://localhost:9902/ready"}, []string{"http://localhost:9901/quitquitquit"}, func(c *config) { c.supervise = true }},
		{"unknown env is noted", []string{"--", "/app"}, []string{"MESHGATE_TIMOUT=1s", "MESHGATE_timeout=1s", "MESHGATE_ON_TIMEOUT=start"}, []string{defaultProbe}, nil,
			func(c *config) { c.unknownEnv, c.onTimeout = []string{"MESHGATE_TIMOUT", "MESHGATE_timeout"}, "start" }},
		{"wait", []string{"wait", "--timeout", "1s"}, nil, []string{defaultProbe}, nil, func(c *config) {
			c.mode, c.timeout, c.command = "wait", time.Second, nil
			c.quitOn, c.quitTimeout, c.forward = "", 0, nil // not flags of wait
		}},
		{"install", []string{"install", "/dst"}, []string{"MESHGATE_TIMEOUT=1s"}, nil, nil, func(c *config) {
			*c = config{mode: "install", installDest: "/dst", logFormat: "json", logLevel: "info"}
		}},
		{"help", []string{"help", "check"}, nil, nil, nil, func(c *config) { *c = config{mode: "help", helpTopic: "check"} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := config{timeout: 2 * time.Minute, attemptTimeout: time.Second, pollRefused: 10 * time.Millisecond,
				pollRefusedMax: 100 * time.Millisecond, pollMin: 8 * time.Millisecond, pollMax: time.Second,
				pollShare: 0.04, pollJitter: 0.2, onTimeout: "fail", logFormat: "json", logLevel: "info", command: []string{"/app"},
				quitOn: "always", quitTimeout: 10 * time.Second, forward: []os.Signal{syscall.SIGTERM, syscall.SIGINT,
					syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH}}
			tc.want(&want)
			got, err := parse(tc.args, tc.env)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			endpoints := fmt.Sprint(got.probes, got.quitURLs)
			got.probes, got.quitURLs = nil, nil
			if !reflect.DeepEqual(got, want) || endpoints != fmt.Sprint(tc.probes, tc.quitURLs) {
				t.Errorf("parse(%q, %q)\n got %+v %s\nwant %+v %s", tc.args, tc.env, got, endpoints, want, fmt.Sprint(tc.probes, tc.quitURLs))
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		env  []string
		want string
	}{
		{nil, nil, "missing command"},
		{[]string{"/app"}, nil, `unknown command "/app"`},
		{[]string{"--timeout", "1s", "/app"}, nil, `missing -- before the command "/app"`},
		{[]string{"--timeout", "1s", "x", "--", "/app"}, nil, `unexpected argument "x" before --`},
		{[]string{"--"}, nil, "missing command after --"},
		{[]string{"--", ""}, nil, "empty command"},
		{[]string{"--timout", "1s", "--", "/app"}, nil, "unknown flag: --timout"},
		{[]string{"--timeout", "soon", "--", "/app"}, nil, `"soon" for "--timeout"`},
		{[]string{"--timeout", "-1s", "--", "/app"}, nil, "--timeout must not be negative"},
		{[]string{"--attempt-timeout", "0s", "--", "/app"}, nil, "--attempt-timeout must be positive"},
		{[]string{"--poll-min", "0s", "--", "/app"}, nil, "--poll-min must be positive"},
		{[]string{"--poll-min", "2s", "--poll-max", "1s", "--", "/app"}, nil, "--poll-max (1s) must not be less than --poll-min (2s)"},
		{[]string{"--poll-refused", "-1ms", "--", "/app"}, nil, "--poll-refused must be positive"},
		{[]string{"--poll-refused", "1s", "--", "/app"}, nil, "--poll-refused-max (100ms) must not be less than --poll-refused (1s)"},
		{[]string{"--poll-share", "1", "--", "/app"}, nil, "--poll-share must be between 0 and 1"},
		{[]string{"--", "/app"}, []string{"MESHGATE_POLL_JITTER=1.5"}, "MESHGATE_POLL_JITTER must be at least 0 and less than 1, got 1.5"},
		{[]string{"--on-timeout", "retry", "--", "/app"}, nil, `--on-timeout must be fail or start, got "retry"`},
		{[]string{"--preset", "istoi", "--", "/app"}, nil, `unknown preset "istoi"`},
		{[]string{"--probe", "localhost:15020", "--", "/app"}, nil, `probe "localhost:15020": missing scheme`},
		{[]string{"--log-format", "xml", "--", "/app"}, nil, `--log-format must be json or console, got "xml"`},
		{[]string{"--log-level", "trace", "--", "/app"}, nil, `--log-level must be debug, info, warn or error, got "trace"`},
		{[]string{"--", "/app"}, []string{"MESHGATE_TIMEOUT=soon"}, `MESHGATE_TIMEOUT="soon"`},
		{[]string{"--", "/app"}, []string{"MESHGATE_PROBE=tcp://x"}, `MESHGATE_PROBE: probe "tcp://x": missing port`},
		{[]string{"--", "/app"}, []string{"MESHGATE_ON_TIMEOUT=maybe"}, `MESHGATE_ON_TIMEOUT must be fail or start, got "maybe"`},
		{[]string{"--", "/app"}, []string{"MESHGATE_PROBE=http://x:1/a,"}, `MESHGATE_PROBE: probe "": empty spec`},
		{[]string{"--", "/app"}, []string{"MESHGATE_PRESET=istoi"}, `MESHGATE_PRESET: unknown preset "istoi"`},
		{[]string{"--timeout", "1s", "--", "/app"}, []string{"MESHGATE_ATTEMPT_TIMEOUT=2s"}, "MESHGATE_ATTEMPT_TIMEOUT (2s) is longer than --timeout (1s)"},
		{[]string{"wait", "--timeout", "1s", "--attempt-timeout", "5s"}, nil, "--attempt-timeout (5s) is longer than --timeout (1s)"},
		{[]string{"--quit", "--quit-on", "maybe", "--", "/app"}, nil, `--quit-on must be always or success, got "maybe"`},
		{[]string{"--quit-on", "success", "--", "/app"}, nil, "--quit-on applies only with --quit or --quit-url"},
		{[]string{"--", "/app"}, []string{"MESHGATE_FORWARD_SIGNALS=TERM"}, "MESHGATE_FORWARD_SIGNALS applies only with --quit or --quit-url"},
		{[]string{"--on-timeout", "start", "--timeout", "0", "--", "/app"}, nil, "--on-timeout start needs a --timeout"},
		{[]string{"--timeout", "100000h", "--", "/app"}, nil, "--timeout 100000h0m0s is more than 24h0m0s: a missing unit?"},
		{[]string{"check", "--attempt-timeout", "90m"}, nil, "--attempt-timeout 1h30m0s is more than 1h0m0s"},
		// Not KILL (cannot be caught), CHLD (ours), nor SEGV (a fault).
		{[]string{"--forward-signals", "TERM,KILL", "--", "/app"}, nil, `--forward-signals: cannot forward signal "KILL"`},
		{[]string{"--forward-signals", "SEGV", "--", "/app"}, nil, `cannot forward signal "SEGV"`},
		{[]string{"--forward-signals", "CHLD", "--", "/app"}, nil, `cannot forward signal "CHLD"`},
		{[]string{"--quit-url", "http://10.1.1.1:15020/quitquitquit", "--", "/app"}, nil, `host "10.1.1.1" is not loopback`},
		{[]string{"--", "/app"}, []string{"MESHGATE_QUIT_URL=http://localhost:1/q,nope"}, `MESHGATE_QUIT_URL: quit URL "nope"`},
		{[]string{"--quit", "--quit-timeout", "0s", "--", "/app"}, nil, "--quit-timeout must be positive"},
		{[]string{"--quit", "--preset", "kuma", "--", "/app"}, nil, "preset kuma: current Kuma has no HTTP quit endpoint"},
		{[]string{"quit", "--preset", "kuma"}, nil, "run kuma-sidecar as a native sidecar"},
		{[]string{"quit", "--probe", "tcp://localhost:1"}, nil, "unknown flag: --probe"},
		{[]string{"wait", "--quit"}, nil, "unknown flag: --quit"},
		{[]string{"install"}, nil, "install takes one destination, got 0 arguments"},
		{[]string{"wait", "now"}, nil, `wait takes no arguments, got "now"`},
		{[]string{"check", "--timeout", "1s"}, nil, "unknown flag: --timeout"},
		{[]string{"version", "x"}, nil, `version takes no arguments, got "x"`},
		{[]string{"help", "nope"}, nil, `help: unknown command "nope"`},
	}
	for _, tc := range tests {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, tc.env, &stdout, &stderr, process{})
		// Not a terminal, no format asked for: one JSON line.
		lines := testkit.LogLines(t, stderr.String())
		if code != 2 || len(lines) != 1 || lines[0]["level"] != "error" || !strings.Contains(fmt.Sprint(lines[0]["error"]), tc.want) || stdout.Len() != 0 {
			t.Errorf("run(%q, %q) = %d, stderr %q, stdout %q; want 2 and one JSON line saying %q", tc.args, tc.env, code, stderr.String(), stdout.String(), tc.want)
		}
	}
}

// No byte of a URL's user information shows, whatever it holds and
// wherever the URL came from.
func TestCredentialsNeverShow(t *testing.T) {
	for _, password := range []string{"s3cr/et", "s3cr?et", "s3cr#et", "s3cr@et", "s3cr%zzet", "s3cr:et"} {
		url := "http://admin:" + password + "@localhost:15020/r"
		for _, tc := range []struct{ args, env []string }{
			{[]string{"check", "--probe", url}, nil},
			{[]string{"check"}, []string{"MESHGATE_PROBE=" + url}},
			{[]string{"quit", "--quit-url", url}, nil},
			{[]string{"quit"}, []string{"MESHGATE_QUIT_URL=" + url}},
		} {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, tc.env, &stdout, &stderr, process{})
			out := stdout.String() + stderr.String()
			if code != 2 || strings.Contains(out, "s3cr") || strings.Contains(out, "admin") {
				t.Errorf("run(%q, %q) = %d, output %q: want 2 and no byte of the credentials", tc.args, tc.env, code, out)
			}
		}
	}
}

// Usage errors are JSON when JSON was asked for, or nothing was and
// stderr is not a terminal; plain text for a person at a terminal.
func TestUsageErrorFormat(t *testing.T) {
	tests := []struct {
		name      string
		args, env []string
		tty, json bool
	}{
		{"terminal, nothing asked", []string{"--bogus"}, nil, true, false},
		{"terminal, json asked", []string{"--log-format", "json", "--bogus"}, nil, true, true},
		{"pipe, nothing asked", []string{"--bogus"}, nil, false, true},
		{"pipe, console asked", []string{"--log-format=console", "--bogus"}, nil, false, false},
		{"pipe, console asked by variable", []string{"wait", "--timeout", "x"}, []string{"MESHGATE_LOG_FORMAT=console"}, false, false},
	}
	for _, tc := range tests {
		f, read := stderrFile(t, tc.tty)
		code := run(context.Background(), tc.args, tc.env, &bytes.Buffer{}, f, process{})
		out := strings.TrimSpace(read())
		isJSON := strings.HasPrefix(out, "{") && len(testkit.LogLines(t, out)) == 1
		if code != 2 || isJSON != tc.json || strings.Contains(out, "\n") || !tc.json && !strings.HasPrefix(out, "meshgate: ") {
			t.Errorf("%s: run(%q, %q) = %d, stderr %q; want 2 and one line, JSON: %v", tc.name, tc.args, tc.env, code, out, tc.json)
		}
	}
}

// stderrFile gives a file for stderr, the follower side of a new
// pseudo-terminal if tty, else a pipe as a container runtime gives, and a
// way to read what was written once run has returned.
func stderrFile(t *testing.T, tty bool) (*os.File, func() string) {
	if tty {
		leader, follower := pty.Open(t)
		return follower, func() string {
			buf := make([]byte, 4096)
			n, _ := leader.Read(buf)
			return strings.ReplaceAll(string(buf[:n]), "\r\n", "\n")
		}
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return w, func() string {
		w.Close()
		b, _ := io.ReadAll(r)
		return string(b)
	}
}

func TestHelpAndVersion(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"Usage: meshgate [flags] -- COMMAND", "meshgate check [flags]", "--probe", "[$MESHGATE_PROBE]", "--on-timeout", "Exit codes",
			// What is forwarded: the stop signals always, plus the list.
			"besides TERM, INT, HUP and QUIT, which always are", "empty: no others"}},
		{[]string{"-h"}, []string{"Usage: meshgate [flags] -- COMMAND"}},
		{[]string{"wait", "-h"}, []string{"Usage: meshgate wait [flags]", "--timeout", "[$MESHGATE_TIMEOUT]"}},
		{[]string{"check", "--help"}, []string{"Usage: meshgate check [flags]", "--attempt-timeout"}},
		{[]string{"help", "check"}, []string{"Usage: meshgate check [flags]"}},
		{[]string{"help"}, []string{"Usage: meshgate [flags] -- COMMAND"}},
		{[]string{"version", "--help"}, []string{"Usage: meshgate version"}},
		{[]string{"version"}, []string{"meshgate dev\n"}},
	}
	for _, tc := range tests {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, nil, &stdout, &stderr, process{})
		if code != 0 || stderr.Len() != 0 {
			t.Errorf("run(%q) = %d, stderr %q; want 0 and nothing", tc.args, code, stderr.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(stdout.String(), w) {
				t.Errorf("run(%q) printed %q, want it to contain %q", tc.args, stdout.String(), w)
			}
		}
	}
}

func TestBuildVersion(t *testing.T) {
	info := func(v string) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			return &debug.BuildInfo{Main: debug.Module{Path: "github.com/meshgate/meshgate", Version: v}}, true
		}
	}
	tests := []struct {
		stamped string
		read    func() (*debug.BuildInfo, bool)
		want    string
	}{
		{"v1.2.3", info("v9.9.9"), "v1.2.3"},                                  // make build, make release
		{"dev", info("v1.2.3"), "v1.2.3"},                                     // go install ...@v1.2.3
		{"dev", info("(devel)"), "dev"},                                       // go build -buildvcs=false
		{"dev", info(""), "dev"},                                              // go test
		{"dev", func() (*debug.BuildInfo, bool) { return nil, false }, "dev"}, // no build information
		{"dev", info("v0.0.0-20261201-abc"), "v0.0.0-20261201-abc"},           // a pseudo-version
	}
	for i, tc := range tests {
		if got := buildVersion(tc.stamped, tc.read); got != tc.want {
			t.Errorf("case %d: buildVersion(%q, ...) = %q, want %q", i, tc.stamped, got, tc.want)
		}
	}
}

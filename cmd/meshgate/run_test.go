package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshgate/meshgate/test/testkit"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		env       []string
		endpoints string        // the probes and the quit URLs
		want      func(*config) // mutates the defaults into what is expected
	}{
		{"defaults", []string{"--", "/app"}, nil, "[" + defaultProbe + "] []", func(c *config) {}},
		{"flags", []string{"--probe", "tcp://localhost:1", "--probe=http://localhost:2/r", "--timeout", "30s",
			"--on-timeout=start", "--attempt-timeout", "200ms", "--poll-min", "1ms", "--poll-max", "2s", "--poll-share", "0.1", "--poll-jitter=0",
			"--insecure-skip-verify", "--disabled", "--log-format", "console", "--log-level", "debug", "--", "/app", "--timeout", "x"},
			nil, "[tcp://localhost:1 http://localhost:2/r] []", func(c *config) {
				c.timeout, c.onTimeout, c.attemptTimeout = 30*time.Second, "start", 200*time.Millisecond
				c.pollMin, c.pollMax, c.pollShare, c.pollJitter = time.Millisecond, 2*time.Second, 0.1, 0
				c.insecure, c.disabled, c.logFormat, c.logLevel = true, true, "console", "debug"
				c.command = []string{"/app", "--timeout", "x"}
			}},
		{"env", []string{"--", "/app"}, []string{"MESHGATE_PROBE=tcp://localhost:1, tcp://localhost:2", "MESHGATE_TIMEOUT=0",
			"MESHGATE_DISABLED=true", "MESHGATE_PRESET=linkerd", "MESHGATE_LOG_LEVEL=warn", "MESHGATE_ATTEMPT_TIMEOUT=3s"},
			"[tcp://localhost:1 tcp://localhost:2] []", func(c *config) {
				c.timeout, c.disabled, c.logLevel, c.attemptTimeout = 0, true, "warn", 3*time.Second
			}},
		{"flag wins over env", []string{"--timeout", "5s", "--probe", "tcp://a:1", "--", "/app"},
			[]string{"MESHGATE_TIMEOUT=1s", "MESHGATE_PROBE=tcp://b:2"},
			"[tcp://a:1] []", func(c *config) { c.timeout = 5 * time.Second }},
		{"quit", []string{"--quit", "--quit-url", "http://localhost:1/q", "--quit-on", "success", "--quit-timeout", "3s",
			"--quit-allow-remote", "--forward-signals", "sigterm, URG", "--", "/app"}, nil, "[" + defaultProbe + "] [http://localhost:1/q]", func(c *config) {
			c.supervise, c.quitOn, c.quitTimeout = true, "success", 3*time.Second
			c.forward = []os.Signal{syscall.SIGTERM, syscall.SIGURG}
		}},
		{"quit env", []string{"--", "/app"}, []string{"MESHGATE_QUIT_URL=http://localhost:1/a,http://127.0.0.1:2/b", "MESHGATE_FORWARD_SIGNALS=HUP"},
			"[" + defaultProbe + "] [http://localhost:1/a http://127.0.0.1:2/b]", func(c *config) {
				c.supervise, c.forward = true, []os.Signal{syscall.SIGHUP}
			}},
		{"empty env is unset", []string{"--", "/app"}, []string{"MESHGATE_TIMEOUT=", "MESHGATE_DISABLED="}, "[" + defaultProbe + "] []", func(c *config) {}},
		{"unknown env is noted", []string{"--", "/app"}, []string{"MESHGATE_TIMOUT=1s", "MESHGATE_ON_TIMEOUT=start"}, "[" + defaultProbe + "] []",
			func(c *config) { c.unknownEnv, c.onTimeout = []string{"MESHGATE_TIMOUT"}, "start" }},
		{"wait", []string{"wait", "--timeout", "1s"}, nil, "[" + defaultProbe + "] []", func(c *config) {
			c.mode, c.timeout, c.command = "wait", time.Second, nil
			c.quitOn, c.quitTimeout, c.forward = "", 0, nil // not flags of wait
		}},
		{"check", []string{"check", "--preset", "kuma"}, []string{"MESHGATE_TIMEOUT=1s"}, "[http://localhost:9902/ready] []", func(c *config) {
			c.mode, c.command = "check", nil
			c.timeout, c.onTimeout = 0, "" // not flags of check
			c.pollRefused, c.pollRefusedMax, c.pollMin, c.pollMax, c.pollShare, c.pollJitter = 0, 0, 0, 0, 0, 0
			c.quitOn, c.quitTimeout, c.forward = "", 0, nil
		}},
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
			if !reflect.DeepEqual(got, want) || endpoints != tc.endpoints {
				t.Errorf("parse(%q, %q)\n got %+v %s\nwant %+v %s", tc.args, tc.env, got, endpoints, want, tc.endpoints)
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
		{[]string{"-x", "--", "/app"}, nil, "unknown shorthand flag: 'x'"},
		{[]string{"--timeout", "soon", "--", "/app"}, nil, `"soon" for "--timeout"`},
		{[]string{"--timeout", "-1s", "--", "/app"}, nil, "--timeout must not be negative"},
		{[]string{"--attempt-timeout", "0s", "--", "/app"}, nil, "--attempt-timeout must be positive"},
		{[]string{"--poll-min", "0s", "--", "/app"}, nil, "--poll-min must be positive"},
		{[]string{"--poll-min", "2s", "--poll-max", "1s", "--", "/app"}, nil, "--poll-max (1s) must not be less than --poll-min (2s)"},
		{[]string{"--poll-refused", "-1ms", "--", "/app"}, nil, "--poll-refused must be positive"},
		{[]string{"--poll-refused", "1s", "--", "/app"}, nil, "--poll-refused-max (100ms) must not be less than --poll-refused (1s)"},
		{[]string{"--poll-share", "1", "--", "/app"}, nil, "--poll-share must be between 0 and 1"},
		{[]string{"--poll-share", "lots", "--", "/app"}, nil, `"lots" for "--poll-share"`},
		{[]string{"--", "/app"}, []string{"MESHGATE_POLL_JITTER=1.5"}, "MESHGATE_POLL_JITTER must be at least 0 and less than 1, got 1.5"},
		{[]string{"--on-timeout", "retry", "--", "/app"}, nil, `--on-timeout must be fail or start, got "retry"`},
		{[]string{"--preset", "istoi", "--", "/app"}, nil, `unknown preset "istoi"`},
		{[]string{"--probe", "localhost:15020", "--", "/app"}, nil, `probe "localhost:15020": missing scheme`},
		{[]string{"--log-format", "xml", "--", "/app"}, nil, `--log-format must be json or console, got "xml"`},
		{[]string{"--log-level", "trace", "--", "/app"}, nil, `--log-level must be debug, info, warn or error, got "trace"`},
		{[]string{"--", "/app"}, []string{"MESHGATE_TIMEOUT=soon"}, `MESHGATE_TIMEOUT="soon"`},
		{[]string{"--", "/app"}, []string{"MESHGATE_DISABLED=yes please"}, `MESHGATE_DISABLED="yes please"`},
		{[]string{"--", "/app"}, []string{"MESHGATE_PROBE=tcp://x"}, `MESHGATE_PROBE: probe "tcp://x": missing port`},
		{[]string{"--", "/app"}, []string{"MESHGATE_ON_TIMEOUT=maybe"}, `MESHGATE_ON_TIMEOUT must be fail or start, got "maybe"`},
		{[]string{"--", "/app"}, []string{"MESHGATE_LOG_FORMAT=text"}, `MESHGATE_LOG_FORMAT must be json or console, got "text"`},
		{[]string{"--quit", "--", "/app"}, []string{"MESHGATE_QUIT_ON=maybe"}, `MESHGATE_QUIT_ON must be always or success, got "maybe"`},
		{[]string{"--", "/app"}, []string{"MESHGATE_PROBE=http://x:1/a,"}, `MESHGATE_PROBE: probe "": empty spec`},
		{[]string{"--", "/app"}, []string{"MESHGATE_PRESET=istoi"}, `MESHGATE_PRESET: unknown preset "istoi"`},
		{[]string{"--", "/app"}, []string{"MESHGATE_ATTEMPT_TIMEOUT=2s", "MESHGATE_TIMEOUT=1s"}, "MESHGATE_ATTEMPT_TIMEOUT (2s) is longer than MESHGATE_TIMEOUT (1s)"},
		{[]string{"--timeout", "1s", "--", "/app"}, []string{"MESHGATE_ATTEMPT_TIMEOUT=2s"}, "MESHGATE_ATTEMPT_TIMEOUT (2s) is longer than --timeout (1s)"},
		{[]string{"wait", "--timeout", "1s", "--attempt-timeout", "5s"}, nil, "--attempt-timeout (5s) is longer than --timeout (1s)"},
		{[]string{"wait"}, []string{"MESHGATE_TIMEOUT=1s", "MESHGATE_ATTEMPT_TIMEOUT=5s"}, "MESHGATE_ATTEMPT_TIMEOUT (5s) is longer than MESHGATE_TIMEOUT (1s)"},
		{[]string{"--quit", "--quit-on", "maybe", "--", "/app"}, nil, `--quit-on must be always or success, got "maybe"`},
		{[]string{"--quit-on", "success", "--", "/app"}, nil, "--quit-on applies only with --quit or --quit-url"},
		{[]string{"--", "/app"}, []string{"MESHGATE_FORWARD_SIGNALS=TERM"}, "MESHGATE_FORWARD_SIGNALS applies only with --quit or --quit-url"},
		{[]string{"--quit-timeout", "5s", "--", "/app"}, nil, "--quit-timeout applies only with --quit or --quit-url"},
		{[]string{"--on-timeout", "start", "--timeout", "0", "--", "/app"}, nil, "--on-timeout start needs a --timeout"},
		{[]string{"--timeout", "1s", "--attempt-timeout", "2s", "--", "/app"}, nil, "--attempt-timeout (2s) is longer than --timeout (1s)"},
		{[]string{"--timeout", "100000h", "--", "/app"}, nil, "--timeout 100000h0m0s is more than 24h0m0s: a missing unit?"},
		{[]string{"--poll-max", "2h", "--", "/app"}, nil, "--poll-max 2h0m0s is more than 1h0m0s"},
		{[]string{"check", "--attempt-timeout", "90m"}, nil, "--attempt-timeout 1h30m0s is more than 1h0m0s"},
		{[]string{"--forward-signals", "TERM,KILL", "--", "/app"}, nil, `--forward-signals: cannot forward signal "KILL"`},
		{[]string{"--forward-signals", "SEGV", "--", "/app"}, nil, `cannot forward signal "SEGV"`},
		{[]string{"--forward-signals", "CHLD", "--", "/app"}, nil, `cannot forward signal "CHLD"`},
		{[]string{"--forward-signals", "TREM", "--", "/app"}, nil, `cannot forward signal "TREM"`},
		{[]string{"--quit-url", "http://10.1.1.1:15020/quitquitquit", "--", "/app"}, nil, `host "10.1.1.1" is not loopback`},
		{[]string{"--", "/app"}, []string{"MESHGATE_QUIT_URL=http://localhost:1/q,nope"}, `MESHGATE_QUIT_URL: quit URL "nope"`},
		{[]string{"--quit", "--quit-timeout", "0s", "--", "/app"}, nil, "--quit-timeout must be positive"},
		{[]string{"quit", "--probe", "tcp://localhost:1"}, nil, "unknown flag: --probe"},
		{[]string{"wait", "--quit"}, nil, "unknown flag: --quit"},
		{[]string{"install"}, nil, "install takes one destination, got 0 arguments"},
		{[]string{"install", "a", "b"}, nil, "install takes one destination, got 2 arguments"},
		{[]string{"wait", "now"}, nil, `wait takes no arguments, got "now"`},
		{[]string{"check", "--timeout", "1s"}, nil, "unknown flag: --timeout"},
		{[]string{"version", "x"}, nil, `version takes no arguments, got "x"`},
		{[]string{"help", "nope"}, nil, `help: unknown command "nope"`},
	}
	for _, tc := range tests {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, tc.env, &stdout, &stderr, signals{})
		// Not a terminal, no format asked for: one JSON line.
		msg := stderr.String()
		var line struct{ Level, Msg, Error string }
		jerr := json.Unmarshal([]byte(msg), &line)
		if code != 2 || jerr != nil || line.Level != "error" || !strings.Contains(line.Error, tc.want) ||
			strings.Count(msg, "\n") != 1 || stdout.Len() != 0 {
			t.Errorf("run(%q, %q) = %d, stderr %q, stdout %q; want 2 and one JSON line saying %q", tc.args, tc.env, code, msg, stdout.String(), tc.want)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"Usage: meshgate [flags] -- COMMAND", "meshgate check [flags]", "--probe", "[$MESHGATE_PROBE]", "--on-timeout", "Exit codes"}},
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
		code := run(context.Background(), tc.args, nil, &stdout, &stderr, signals{})
		if code != 0 || stderr.Len() != 0 {
			t.Errorf("run(%q) = %d, stderr %q; want 0 and nothing", tc.args, code, stderr.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(stdout.String(), w) {
				t.Errorf("run(%q) printed %q, want it to contain %q", tc.args, stdout.String(), w)
			}
		}
	}
	var stdout bytes.Buffer
	run(context.Background(), []string{"check", "-h"}, nil, &stdout, &bytes.Buffer{}, signals{})
	if strings.Contains(stdout.String(), "--timeout") || strings.Contains(stdout.String(), "--on-timeout") {
		t.Errorf("check help lists flags check does not take:\n%s", stdout.String())
	}
}

// server answers readiness with the given status.
func server(t *testing.T, status int) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(status) }))
	t.Cleanup(srv.Close)
	return srv.URL + "/ready"
}

func TestCheckAndWait(t *testing.T) {
	ready, notReady := server(t, 200), server(t, 503)
	tests := []struct {
		name string
		args []string
		env  []string
		code int
		msg  string // a log message expected on stderr
	}{
		{"check ready", []string{"check", "--probe", ready}, nil, 0, ""},
		{"check not ready", []string{"check", "--probe", ready, "--probe", notReady}, nil, 1, "exiting"},
		{"check disabled", []string{"check", "--probe", notReady}, []string{"MESHGATE_DISABLED=1"}, 0, "check disabled; reporting ready"},
		{"wait ready", []string{"wait", "--probe", ready}, nil, 0, "proxy ready"},
		{"wait disabled", []string{"wait", "--probe", notReady, "--disabled"}, nil, 0, "wait disabled; not waiting for the proxy"},
		{"unknown env warned", []string{"wait", "--probe", ready}, []string{"MESHGATE_TIMOUT=1s"}, 0, "ignoring unknown variable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, tc.env, &stdout, &stderr, signals{})
			if code != tc.code || stdout.Len() != 0 {
				t.Fatalf("run = %d, stdout %q; want %d and nothing on stdout\n%s", code, stdout.String(), tc.code, stderr.String())
			}
			if tc.msg == "" {
				return
			}
			found := 0
			for _, l := range testkit.LogLines(t, stderr.String()) {
				if l["msg"] == tc.msg {
					found++
				}
			}
			if found != 1 {
				t.Errorf("log has %d lines %q, want 1:\n%s", found, tc.msg, stderr.String())
			}
		})
	}
}

func TestWaitSignal(t *testing.T) {
	sigs := make(chan os.Signal, 1)
	sigs <- syscall.SIGHUP
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"wait", "--probe", server(t, 503)}, nil, &bytes.Buffer{}, &stderr, signals{C: sigs})
	if code != 129 {
		t.Errorf("run with SIGHUP = %d, want 129\n%s", code, stderr.String())
	}
}

func TestWaitOnTimeout(t *testing.T) {
	notReady := server(t, 503)
	for _, tc := range []struct {
		onTimeout string
		code      int
		level     string
	}{{"fail", 69, "error"}, {"start", 0, "warn"}} {
		var stderr bytes.Buffer
		// The smallest timeout: the outcome, not the time, is under test.
		code := run(context.Background(), []string{"wait", "--probe", notReady, "--timeout", "1ns", "--on-timeout", tc.onTimeout},
			nil, &bytes.Buffer{}, &stderr, signals{})
		if code != tc.code {
			t.Errorf("--on-timeout %s: code %d, want %d", tc.onTimeout, code, tc.code)
		}
		lines := testkit.LogLines(t, stderr.String())
		last := lines[len(lines)-1]
		if last["level"] != tc.level || !strings.Contains(last["error"].(string), "proxy not ready after") {
			t.Errorf("--on-timeout %s: last log line %v, want a %s naming the timeout", tc.onTimeout, last, tc.level)
		}
	}
}

func TestWrapFailsFastOnMissingCommand(t *testing.T) {
	var stderr bytes.Buffer
	// The probe would never pass; the missing command must be reported first.
	code := run(context.Background(), []string{"--probe", server(t, 503), "--timeout", "0", "--", "no-such-command-here"},
		[]string{"PATH=" + t.TempDir()}, &bytes.Buffer{}, &stderr, signals{})
	if code != 127 || !strings.Contains(stderr.String(), `command \"no-such-command-here\" not found`) {
		t.Errorf("run = %d, stderr %s; want 127 naming the command", code, stderr.String())
	}
}

func TestBuildVersion(t *testing.T) {
	info := func(v string) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			return &debug.BuildInfo{Main: debug.Module{Path: "github.com/meshgate/meshgate", Version: v}}, true
		}
	}
	none := func() (*debug.BuildInfo, bool) { return nil, false }
	tests := []struct {
		stamped string
		read    func() (*debug.BuildInfo, bool)
		want    string
	}{
		{"v1.2.3", info("v9.9.9"), "v1.2.3"},                        // make build, make release
		{"dev", info("v1.2.3"), "v1.2.3"},                           // go install ...@v1.2.3
		{"dev", info("(devel)"), "dev"},                             // go build -buildvcs=false
		{"dev", info(""), "dev"},                                    // go test
		{"dev", none, "dev"},                                        // no build information
		{"dev", info("v0.0.0-20261201-abc"), "v0.0.0-20261201-abc"}, // a pseudo-version
	}
	for i, tc := range tests {
		if got := buildVersion(tc.stamped, tc.read); got != tc.want {
			t.Errorf("case %d: buildVersion(%q, ...) = %q, want %q", i, tc.stamped, got, tc.want)
		}
	}
}

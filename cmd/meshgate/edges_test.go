package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/meshgate/meshgate/test/pty"
)

// The command line wins over the environment as a whole: a --preset given
// there beats MESHGATE_PROBE; within one source --probe beats --preset.
func TestPrecedence(t *testing.T) {
	tests := []struct {
		args       []string
		env        []string
		endpoints  string // the probes and the quit URLs
		overridden []string
	}{
		{[]string{"check", "--preset", "linkerd"}, []string{"MESHGATE_PROBE=tcp://127.0.0.1:1"}, "[http://localhost:4191/ready] []", []string{"MESHGATE_PROBE"}},
		{[]string{"check", "--probe", "tcp://127.0.0.1:2"}, []string{"MESHGATE_PRESET=linkerd"}, "[tcp://127.0.0.1:2] []", nil},
		{[]string{"check"}, []string{"MESHGATE_PRESET=linkerd", "MESHGATE_PROBE=tcp://127.0.0.1:3"}, "[tcp://127.0.0.1:3] []", nil},
		{[]string{"check", "--preset", "kuma", "--probe", "tcp://127.0.0.1:4"}, nil, "[tcp://127.0.0.1:4] []", nil},
		{[]string{"quit", "--preset", "linkerd"}, []string{"MESHGATE_QUIT_URL=http://127.0.0.1:5/q"}, "[] [http://localhost:4191/shutdown]", []string{"MESHGATE_QUIT_URL"}},
	}
	for _, tc := range tests {
		cfg, err := parse(tc.args, tc.env)
		if err != nil {
			t.Fatalf("parse(%q, %q): %v", tc.args, tc.env, err)
		}
		if endpoints := fmt.Sprint(cfg.probes, cfg.quitURLs); endpoints != tc.endpoints || fmt.Sprint(cfg.overridden) != fmt.Sprint(tc.overridden) {
			t.Errorf("parse(%q, %q): endpoints %s, overridden %q; want %s, %q",
				tc.args, tc.env, endpoints, cfg.overridden, tc.endpoints, tc.overridden)
		}
	}
	// The probe that runs is the preset's, and the override is logged.
	var stderr bytes.Buffer
	run(context.Background(), []string{"check", "--preset", "linkerd", "--attempt-timeout", "1ms"},
		[]string{"MESHGATE_PROBE=tcp://127.0.0.1:1"}, &bytes.Buffer{}, &stderr, signals{})
	out := stderr.String()
	if !strings.Contains(out, "http://localhost:4191/ready") || strings.Contains(out, "tcp://127.0.0.1:1") ||
		!strings.Contains(out, `"msg":"ignoring variable: the command line's --preset wins","variable":"MESHGATE_PROBE"`) {
		t.Errorf("check --preset linkerd with MESHGATE_PROBE set logged\n%s\nwant the preset's probe and a warning about the variable", out)
	}
}

// No byte of a URL's user information shows, whatever it holds and
// wherever the URL came from.
func TestCredentialsNeverShow(t *testing.T) {
	for _, password := range []string{"s3cr/et", "s3cr?et", "s3cr#et", "s3cr@et", "s3cr%zzet", "s3cr:et"} {
		url := "http://admin:" + password + "@localhost:15020/r"
		for _, tc := range []struct {
			args []string
			env  []string
		}{
			{[]string{"check", "--probe", url}, nil},
			{[]string{"check"}, []string{"MESHGATE_PROBE=" + url}},
			{[]string{"quit", "--quit-url", url}, nil},
			{[]string{"quit"}, []string{"MESHGATE_QUIT_URL=" + url}},
			{[]string{"--quit-url", url, "--", "/app"}, nil},
		} {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, tc.env, &stdout, &stderr, signals{})
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
	pts := openPTY(t)
	tests := []struct {
		name   string
		args   []string
		env    []string
		stderr func() (*os.File, func() string)
		json   bool
	}{
		{"terminal, nothing asked", []string{"--bogus"}, nil, pts, false},
		{"terminal, json asked", []string{"--log-format", "json", "--bogus"}, nil, pts, true},
		{"terminal, json asked by variable", []string{"--bogus"}, []string{"MESHGATE_LOG_FORMAT=json"}, pts, true},
		{"file, nothing asked", []string{"--bogus"}, nil, file(t), true},
		{"file, console asked", []string{"--log-format=console", "--bogus"}, nil, file(t), false},
		{"file, console asked by variable", []string{"wait", "--timeout", "x"}, []string{"MESHGATE_LOG_FORMAT=console"}, file(t), false},
		{"file, bad format asked", []string{"--log-format", "text", "--", "/app"}, nil, file(t), true},
	}
	for _, tc := range tests {
		f, read := tc.stderr()
		code := run(context.Background(), tc.args, tc.env, &bytes.Buffer{}, f, signals{})
		out := read()
		var line struct{ Level, Error string }
		isJSON := json.Unmarshal([]byte(strings.TrimSpace(out)), &line) == nil && line.Level == "error" && line.Error != ""
		if code != 2 || isJSON != tc.json || strings.Count(strings.TrimSpace(out), "\n") != 0 ||
			!tc.json && !strings.HasPrefix(out, "meshgate: ") {
			t.Errorf("%s: run(%q, %q) = %d, stderr %q; want 2 and one line, JSON: %v", tc.name, tc.args, tc.env, code, out, tc.json)
		}
	}
}

// file gives a regular file as stderr, and a way to read what was written.
func file(t *testing.T) func() (*os.File, func() string) {
	return func() (*os.File, func() string) {
		f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f, func() string {
			b, _ := os.ReadFile(f.Name())
			return string(b)
		}
	}
}

// openPTY gives a terminal as stderr: the follower side of a new
// pseudo-terminal, and a way to read what was written to it.
func openPTY(t *testing.T) func() (*os.File, func() string) {
	return func() (*os.File, func() string) {
		leader, follower := pty.Open(t)
		return follower, func() string {
			buf := make([]byte, 4096)
			n, _ := leader.Read(buf) // what run wrote is there: it has returned
			return strings.ReplaceAll(string(buf[:n]), "\r\n", "\n")
		}
	}
}

// install and quit end on a stop signal with 128+N, and install leaves
// nothing behind.
func TestInstallStopsOnSignal(t *testing.T) {
	dir := t.TempDir()
	sigs := make(chan os.Signal, 1)
	sigs <- syscall.SIGTERM
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"install", dir}, nil, &bytes.Buffer{}, &stderr, signals{C: sigs})
	entries, _ := os.ReadDir(dir)
	if code != 143 || len(entries) != 0 {
		t.Errorf("install with SIGTERM = %d, left %d files; want 143 and none\n%s", code, len(entries), stderr.String())
	}
}

func TestQuitStopsOnSignal(t *testing.T) {
	seen := make(chan struct{}, 1)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- struct{}{}
		<-release // hangs until the test ends
	}))
	defer srv.Close()
	defer close(release)
	sigs := make(chan os.Signal, 1)
	go func() {
		<-seen // the quit is under way
		sigs <- syscall.SIGINT
	}()
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"quit", "--quit-url", srv.URL + "/quitquitquit"}, nil, &bytes.Buffer{}, &stderr, signals{C: sigs})
	if code != 130 {
		t.Errorf("quit with SIGINT during a hanging request = %d, want 130\n%s", code, stderr.String())
	}
}

// --insecure-skip-verify reaches https quit URLs too.
func TestInsecureQuitURL(t *testing.T) {
	quits := 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { quits++ }))
	// The refused handshakes are the server's to report, not in the
	// standard logger that run sends to its own log meanwhile.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"quit", "--quit-url", srv.URL + "/quitquitquit", "--insecure-skip-verify"},
		nil, &bytes.Buffer{}, &stderr, signals{}); code != 0 || quits != 1 {
		t.Errorf("quit of a self-signed endpoint with --insecure-skip-verify = %d after %d requests, want 0 after 1\n%s", code, quits, stderr.String())
	}
	stderr.Reset()
	// The default limit (10s) leaves the three quick refusals their own
	// error, however busy the machine.
	if code := run(context.Background(), []string{"quit", "--quit-url", srv.URL + "/quitquitquit"},
		nil, &bytes.Buffer{}, &stderr, signals{}); code != 1 || !strings.Contains(stderr.String(), "certificate") {
		t.Errorf("quit of a self-signed endpoint without it = %d, want 1 naming the certificate\n%s", code, stderr.String())
	}
}

// The kuma preset probes kuma-dp's readiness port, and refuses a quit it
// cannot send, at once, saying what to do instead.
func TestKumaPreset(t *testing.T) {
	cfg, err := parse([]string{"check", "--preset", "kuma"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.probes) != 1 || cfg.probes[0].String() != "http://localhost:9902/ready" {
		t.Errorf("check --preset kuma probes %v, want kuma-dp's readiness port 9902", cfg.probes)
	}
	for _, args := range [][]string{{"--quit", "--preset", "kuma", "--", "/app"}, {"quit", "--preset", "kuma"}} {
		var stderr bytes.Buffer
		code := run(context.Background(), args, nil, &bytes.Buffer{}, &stderr, signals{})
		if code != 2 || !strings.Contains(stderr.String(), "native sidecar") {
			t.Errorf("run(%q) = %d, %s; want 2 saying to use a native sidecar", args, code, stderr.String())
		}
	}
	// A quit URL of one's own still goes with the preset's probe.
	if _, err := parse([]string{"--preset", "kuma", "--quit-url", "http://localhost:9901/quitquitquit", "--", "/app"}, nil); err != nil {
		t.Errorf("--preset kuma with --quit-url: %v", err)
	}
}

// The help says exactly what is forwarded: the stop signals always, plus
// the list.
func TestHelpSaysWhatIsForwarded(t *testing.T) {
	var stdout bytes.Buffer
	run(context.Background(), []string{"--help"}, nil, &stdout, &bytes.Buffer{}, signals{})
	help := strings.Join(strings.Fields(stdout.String()), " ")
	for _, want := range []string{"besides TERM, INT, HUP and QUIT, which always are", "empty: no others"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help does not say %q:\n%s", want, stdout.String())
		}
	}
}

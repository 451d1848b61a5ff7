package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	appreport "github.com/meshgate/meshgate/test/app/report"
	"github.com/meshgate/meshgate/test/sidecar"
)

// readyPath is the emulator's readiness path, Istio's.
const readyPath = "/healthz/ready"

// trialSlack is how long a trial may run past its phases before it is
// counted as stuck: the curl loop notices up to a second late, and a
// loaded machine adds more.
const trialSlack = 15 * time.Second

// bench is what every measurement shares.
type bench struct {
	cfg  config
	env  []string // children's environment
	curl string   // curl's path; empty when missing, and the baseline is skipped
	dir  string   // app reports
	log  io.Writer
	runs int // names each app report
}

func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(b.log, "bench: "+format+"\n", args...)
}

// waiter is a gate that holds the app back: meshgate, a reference gate,
// or the shell loop.
type waiter struct {
	name string
	// argv waits for url, then runs the app in its place, or with app
	// false exits 0.
	argv func(url string, app bool) []string
	// own is set when the waiter's PID is the gate itself, whose VmHWM
	// tells its memory (for the shell loop it is sh's).
	own bool
}

// The places of the waiters the goals refer to, in b.waiters().
const (
	gateAt = iota
	noPauseAt
	fixed10At
	fixed50At
)

// waiters are meshgate, the reference gates, the curl loop if curl is
// installed, and the gates given with --also.
func (b *bench) waiters() []waiter {
	withApp := func(app bool, argv ...string) []string {
		if app {
			return append(argv, "--", b.cfg.app)
		}
		return argv
	}
	gate := func(bin, name string) waiter {
		return waiter{name: name, own: true, argv: func(url string, app bool) []string {
			argv := []string{bin}
			if !app {
				argv = append(argv, "wait")
			}
			// --timeout 0: the benchmark bounds each trial itself.
			return withApp(app, append(argv, "--probe", url, "--timeout", "0", "--log-level", "info")...)
		}}
	}
	ref := func(pause time.Duration, name string) waiter {
		return waiter{name: name, own: true, argv: func(url string, app bool) []string {
			return withApp(app, b.cfg.refgate, "--url", url, "--pause", pause.String())
		}}
	}
	ws := []waiter{gate(b.cfg.meshgate, "meshgate"), ref(0, "no-pause loop"), ref(10*time.Millisecond, "fixed 10 ms loop"), ref(50*time.Millisecond, "fixed 50 ms loop")}
	if b.curl != "" {
		ws = append(ws, waiter{name: "curl loop", argv: func(url string, app bool) []string {
			script := fmt.Sprintf("until curl -fs '%s' >/dev/null; do sleep 1; done", url)
			if !app {
				return []string{"sh", "-c", script}
			}
			// The app, passed as $0, needs no quoting.
			return []string{"sh", "-c", script + `; exec "$0"`, b.cfg.app}
		}})
	}
	for _, x := range b.cfg.also {
		ws = append(ws, gate(x.path, x.name))
	}
	return ws
}

// command prepares argv in a process group of its own, so that ending it
// ends the loop's curl and sleep too. Its stderr goes to the buffer, for
// tail to explain a failure.
func (b *bench) command(ctx context.Context, argv, env []string) (*exec.Cmd, *bytes.Buffer) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(append([]string(nil), b.env...), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	return cmd, &stderr
}

func tail(stderr *bytes.Buffer) string {
	out := strings.TrimSpace(stderr.String())
	if out == "" {
		return ""
	}
	lines := strings.Split(out, "\n")
	return "\n\t" + strings.Join(lines[max(0, len(lines)-3):], "\n\t")
}

// trial is one run of a waiter against an emulator going through phases.
type trial struct {
	phases []sidecar.Phase
	cost   time.Duration
	w      waiter
	app    bool // the waiter runs the app, whose start is read from its report
}

type trialResult struct {
	readyAt, appStart time.Time
	notReady          tally // the 503 phase; zero if it did not begin and end
}

// tally is what an emulator did over a window of time: the readiness
// requests it answered, and the time it spent answering them.
type tally struct {
	requests     int64
	window, busy time.Duration
}

func (t *tally) add(u tally) {
	t.requests, t.window, t.busy = t.requests+u.requests, t.window+u.window, t.busy+u.busy
}

// mark is the emulator's state and counters as a phase began.
type mark struct {
	state sidecar.State
	at    time.Time
	tally
}

// runTrial starts an emulator on a fresh port and the waiter against it,
// and returns when the waiter has exited.
func (b *bench) runTrial(ctx context.Context, t trial) (trialResult, error) {
	var res trialResult
	addr, err := sidecar.FreeAddr()
	if err != nil {
		return res, err
	}
	limit := trialSlack
	for _, p := range t.phases {
		limit += p.For
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	e := &sidecar.Emulator{Addr: addr, Path: readyPath, Cost: t.cost}
	emuCtx, stopEmu := context.WithCancel(ctx)
	defer stopEmu()
	var marks []mark
	ran, err := runEmulator(emuCtx, e, t.phases, &marks)
	if err != nil {
		return res, err
	}
	var env []string
	report := b.reportPath()
	if t.app {
		env = []string{"APP_REPORT=" + report}
	}
	argv := t.w.argv("http://"+addr+readyPath, t.app)
	cmd, stderr := b.command(ctx, argv, env)
	// Should the emulator fail, the waiter waits until the limit.
	werr := cmd.Run()
	stopEmu()
	rerr := <-ran
	res.readyAt = e.ReadyAt()
	res.notReady = span(marks, "503")
	switch {
	case rerr != nil:
		return res, fmt.Errorf("emulator on %s: %w", addr, rerr)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return res, fmt.Errorf("%s still running after %s, killed%s", filepath.Base(argv[0]), limit, tail(stderr))
	case ctx.Err() != nil:
		return res, ctx.Err()
	case werr != nil:
		return res, fmt.Errorf("%s: %w%s", filepath.Base(argv[0]), werr, tail(stderr))
	case t.app:
		res.appStart, err = readStart(report)
	}
	return res, err
}

// runEmulator runs e through phases until ctx ends, with a mark for each
// phase as it begins. It returns once the first has begun, so that a proxy
// ready from the start is ready before a waiter's first attempt; ran gives
// Run's result, and marks may be read once it has.
func runEmulator(ctx context.Context, e *sidecar.Emulator, phases []sidecar.Phase, marks *[]mark) (ran <-chan error, err error) {
	first := make(chan struct{})
	e.OnPhase = func(s sidecar.State, at time.Time) {
		*marks = append(*marks, mark{s, at, tally{requests: e.Requests(), busy: e.Busy()}})
		if len(*marks) == 1 {
			close(first)
		}
	}
	result := make(chan error, 1)
	go func() { result <- e.Run(ctx, phases) }()
	select {
	case <-first:
		return result, nil
	case err := <-result:
		return nil, fmt.Errorf("emulator on %s: %w", e.Addr, err)
	}
}

// span is what the emulator did during the phase in state s, or zero if
// that phase did not both begin and end.
func span(marks []mark, s sidecar.State) tally {
	for i := 0; i+1 < len(marks); i++ {
		if m0, m1 := marks[i], marks[i+1]; m0.state == s {
			return tally{m1.requests - m0.requests, m1.at.Sub(m0.at), m1.busy - m0.busy}
		}
	}
	return tally{}
}

// steady starts an emulator on a fresh port that answers state until it
// is closed, and returns its readiness URL.
func (b *bench) steady(state sidecar.State) (*sidecar.Emulator, string, error) {
	addr, err := sidecar.FreeAddr()
	if err != nil {
		return nil, "", err
	}
	e := &sidecar.Emulator{Addr: addr, Path: readyPath}
	return e, "http://" + addr + readyPath, e.Set(state)
}

func (b *bench) reportPath() string {
	b.runs++
	return filepath.Join(b.dir, "app-"+strconv.Itoa(b.runs)+".json")
}

// readStart reads the app's start time from its report, and removes it.
func readStart(path string) (time.Time, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return time.Time{}, fmt.Errorf("the app left no report: %w", err)
	}
	_ = os.Remove(path)
	var r appreport.Report
	if err := json.Unmarshal(data, &r); err != nil || r.StartNano == 0 {
		return time.Time{}, fmt.Errorf("app report %s: no start_unix_nano", path)
	}
	return time.Unix(0, r.StartNano), nil
}

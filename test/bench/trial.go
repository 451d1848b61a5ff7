package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshgate/meshgate/test/sidecar"
)

// readyPath is the emulator's readiness path, Istio's.
const readyPath = "/healthz/ready"

// trialSlack is how long a trial may run past its phases before it is
// counted as stuck: the curl loop notices up to a second late, and a
// loaded machine adds more.
const trialSlack = 15 * time.Second

// Ports below Linux's ephemeral range (32768 and up by default).
const (
	portLow  = 20000
	portHigh = 32768
)

// bench is what every measurement shares.
type bench struct {
	cfg   config
	env   []string // children's environment
	curl  string   // curl's path; empty when missing, and the baseline is skipped
	dir   string   // app reports
	log   io.Writer
	ports *ports
	runs  int // names each app report
}

func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(b.log, "bench: "+format+"\n", args...)
}

// waiter is a gate that holds the app back: meshgate, a reference gate,
// or the shell loop.
type waiter struct {
	name string
	// wrap waits for url, then runs the app in its place.
	wrap func(url string) []string
	// wait waits for url, then exits 0.
	wait func(url string) []string
	// own is set when the waiter's PID is the gate itself, whose VmHWM
	// tells its memory (for the shell loop it is sh's).
	own bool
}

// The waiters' names, as the goals refer to them.
const (
	nameGate    = "meshgate"
	nameNoPause = "no-pause loop"
	name10      = "fixed 10 ms loop"
	name50      = "fixed 50 ms loop"
	nameCurl    = "curl loop"
)

// waiters are meshgate, the reference gates, the curl loop if curl is
// installed, and the gates given with --also.
func (b *bench) waiters() []waiter {
	gate := func(bin, name string) waiter {
		argv := func(mode string) func(string) []string {
			return func(url string) []string {
				argv := []string{bin}
				if mode == "wait" {
					argv = append(argv, "wait")
				}
				// --timeout 0: the benchmark bounds each trial itself.
				// Info: its "exec" line times the execve.
				argv = append(argv, "--probe", url, "--timeout", "0", "--log-level", "info")
				if mode == "wrap" {
					argv = append(argv, "--", b.cfg.app)
				}
				return argv
			}
		}
		return waiter{name: name, wrap: argv("wrap"), wait: argv("wait"), own: true}
	}
	ref := func(pause time.Duration, name string) waiter {
		argv := func(wrap bool) func(string) []string {
			return func(url string) []string {
				argv := []string{b.cfg.refgate, "--url", url, "--pause", pause.String()}
				if wrap {
					argv = append(argv, "--", b.cfg.app)
				}
				return argv
			}
		}
		return waiter{name: name, wrap: argv(true), wait: argv(false), own: true}
	}
	ws := []waiter{gate(b.cfg.meshgate, nameGate), ref(0, nameNoPause), ref(10*time.Millisecond, name10), ref(50*time.Millisecond, name50)}
	if b.curl != "" {
		ws = append(ws, waiter{name: nameCurl, wrap: b.loop(true), wait: b.loop(false)})
	}
	for _, x := range b.cfg.also {
		ws = append(ws, gate(x.path, x.name))
	}
	return ws
}

// loop is the classic shell loop; the app, passed as $0, needs no quoting.
func (b *bench) loop(wrap bool) func(string) []string {
	return func(url string) []string {
		script := fmt.Sprintf("until curl -fs '%s' >/dev/null; do sleep 1; done", url)
		if !wrap {
			return []string{"sh", "-c", script}
		}
		return []string{"sh", "-c", script + `; exec "$0"`, b.cfg.app}
	}
}

// command prepares argv in a process group of its own, so that ending it
// ends the loop's curl and sleep too.
func (b *bench) command(ctx context.Context, argv, env []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(append([]string(nil), b.env...), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	return cmd
}

// phaseRun is one run of a waiter against an emulator going through phases.
type phaseRun struct {
	phases []sidecar.Phase
	cost   time.Duration
	argv   func(url string) []string
	env    []string
}

// mark is the emulator's state and counters as a phase began.
type mark struct {
	state    sidecar.State
	at       time.Time
	requests int64
	busy     time.Duration
}

type phaseResult struct {
	launched time.Time // just before the waiter started
	marks    []mark
	readyAt  time.Time
	usage    *syscall.Rusage
	lines    []line // the waiter's stderr
}

// span returns the marks at the start and at the end of the phase in state
// s; ok is false if that phase did not both begin and end.
func (r phaseResult) span(s sidecar.State) (from, to mark, ok bool) {
	for i := 0; i+1 < len(r.marks); i++ {
		if r.marks[i].state == s {
			return r.marks[i], r.marks[i+1], true
		}
	}
	return mark{}, mark{}, false
}

// runPhases starts an emulator on a fresh port and the waiter against it,
// and returns when the waiter has exited.
func (b *bench) runPhases(ctx context.Context, pr phaseRun) (phaseResult, error) {
	var res phaseResult
	addr, err := b.ports.take()
	if err != nil {
		return res, err
	}
	limit := trialSlack
	for _, p := range pr.phases {
		limit += p.For
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()

	first := make(chan struct{})
	e := &sidecar.Emulator{Addr: addr, Path: readyPath, Cost: pr.cost}
	// Called by Run's goroutine; res.marks is read only once Run has
	// returned.
	e.OnPhase = func(s sidecar.State, at time.Time) {
		res.marks = append(res.marks, mark{state: s, at: at, requests: e.Requests(), busy: e.Busy()})
		if len(res.marks) == 1 {
			close(first)
		}
	}
	emuCtx, stopEmu := context.WithCancel(ctx)
	defer stopEmu()
	ran := make(chan error, 1)
	go func() { ran <- e.Run(emuCtx, pr.phases) }()
	// A proxy ready from the start must be ready before the waiter's first
	// attempt.
	select {
	case <-first:
	case err := <-ran:
		return res, fmt.Errorf("emulator on %s: %w", addr, err)
	}

	argv := pr.argv("http://" + addr + readyPath)
	res.launched = time.Now()
	c, err := b.start(ctx, argv, pr.env)
	if err != nil {
		stopEmu()
		<-ran
		return res, err
	}
	waited := make(chan error, 1)
	go func() { waited <- c.wait() }()
	var werr, rerr error
	select {
	case werr = <-waited:
		stopEmu()
		rerr = <-ran
	case rerr = <-ran:
		// Run holds its last phase until its context ends, so it has
		// failed or time is up: the waiter would wait for ever.
		cancel()
		werr = <-waited
	}
	res.readyAt = e.ReadyAt()
	res.lines = c.out.lines
	res.usage = c.usage
	switch {
	case rerr != nil:
		return res, fmt.Errorf("emulator on %s: %w", addr, rerr)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return res, fmt.Errorf("%s still running after %s, killed%s", filepath.Base(argv[0]), limit, c.out.tail())
	case ctx.Err() != nil:
		return res, ctx.Err()
	case werr != nil:
		return res, fmt.Errorf("%s: %w%s", filepath.Base(argv[0]), werr, c.out.tail())
	}
	return res, nil
}

// child is a started waiter.
type child struct {
	wait  func() error // waits for its end, then sets usage and out
	usage *syscall.Rusage
	out   lineWriter
}

// start starts argv as our child.
func (b *bench) start(ctx context.Context, argv, env []string) (*child, error) {
	c := &child{}
	cmd := b.command(ctx, argv, env)
	cmd.Stderr = &c.out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c.wait = func() error {
		err := cmd.Wait()
		if cmd.ProcessState != nil {
			c.usage, _ = cmd.ProcessState.SysUsage().(*syscall.Rusage)
		}
		return err
	}
	return c, nil
}

// appStart runs the app behind pr's waiter and returns when the app started,
// as its own clock read it first thing.
func (b *bench) appStart(ctx context.Context, pr phaseRun) (phaseResult, time.Time, error) {
	report := b.reportPath()
	pr.env = append(append([]string(nil), pr.env...), "APP_REPORT="+report)
	res, err := b.runPhases(ctx, pr)
	if err != nil {
		return res, time.Time{}, err
	}
	start, err := readStart(report)
	return res, start, err
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
	var r struct {
		StartNano int64 `json:"start_unix_nano"`
	}
	if err := json.Unmarshal(data, &r); err != nil || r.StartNano == 0 {
		return time.Time{}, fmt.Errorf("app report %s: no start_unix_nano", path)
	}
	return time.Unix(0, r.StartNano), nil
}

// ports hands out loopback ports below the ephemeral range, so that no
// outgoing connection, of ours or of the machine, holds the port a trial
// listens on, and so that a closed port really refuses.
type ports struct{ next int }

func newPorts() *ports {
	// A random start, so that two benchmarks running at once rarely meet.
	return &ports{next: portLow + rand.IntN(portHigh-portLow)}
}

// take returns a loopback address on a port nothing listens on, a
// different one each time.
func (p *ports) take() (string, error) {
	for range portHigh - portLow {
		port := p.next
		if p.next++; p.next >= portHigh {
			p.next = portLow
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		if err := ln.Close(); err != nil {
			return "", err
		}
		return addr, nil
	}
	return "", fmt.Errorf("no free loopback port in [%d, %d)", portLow, portHigh)
}

// line is one line of a child's stderr and when it arrived.
type line struct {
	at   time.Time
	text string
}

// lineWriter keeps a child's stderr as timed lines. os/exec writes to it
// from one goroutine and Wait waits for that goroutine to finish.
type lineWriter struct {
	lines   []line
	partial []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	now := time.Now()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.lines = append(w.lines, line{at: now, text: string(w.partial[:i])})
		w.partial = w.partial[i+1:]
	}
}

// tail is the end of the output, to explain an error.
func (w *lineWriter) tail() string {
	const keep = 3
	var texts []string
	for _, l := range w.lines[max(0, len(w.lines)-keep):] {
		texts = append(texts, l.text)
	}
	if len(w.partial) > 0 {
		texts = append(texts, string(w.partial))
	}
	if len(texts) == 0 {
		return ""
	}
	return "\n\t" + strings.Join(texts, "\n\t")
}

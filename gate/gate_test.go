package gate

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/meshgate/meshgate/probe"
)

// instantTimer fires at once and records the pauses it was asked for.
type instantTimer struct {
	c      chan time.Time
	pauses []time.Duration
}

func newInstantTimer() *instantTimer { return &instantTimer{c: make(chan time.Time, 1)} }

func (t *instantTimer) Start(d time.Duration) {
	t.pauses = append(t.pauses, d)
	t.c <- time.Time{}
}
func (t *instantTimer) Stop()               {}
func (t *instantTimer) C() <-chan time.Time { return t.c }
func (t *instantTimer) count() int          { return len(t.pauses) }

// failing returns a probe that fails n times, then passes, and counts calls.
func failing(n int64, err error) (probe.Probe, *atomic.Int64) {
	var calls atomic.Int64
	return probe.Func(func(context.Context) error {
		if calls.Add(1) <= n {
			return err
		}
		return nil
	}), &calls
}

// fakeClock advances by step on every reading.
func fakeClock(step time.Duration) func() time.Time {
	var n atomic.Int64
	base := time.Unix(1_700_000_000, 0)
	return func() time.Time { return base.Add(time.Duration(n.Add(1)) * step) }
}

func TestWaitRetriesUntilReady(t *testing.T) {
	p, calls := failing(4, errors.New("connection refused"))
	timer := newInstantTimer()
	core, logs := observer.New(zap.DebugLevel)
	g := &Gate{Probes: []probe.Probe{p}, Timer: timer, Log: zap.New(core)}
	if err := g.Wait(context.Background()); err != nil {
		t.Fatalf("Wait = %v, want nil", err)
	}
	if got := calls.Load(); got != 5 {
		t.Errorf("probe called %d times, want 5", got)
	}
	if got := timer.count(); got != 4 {
		t.Errorf("paused %d times, want 4 (none before the first attempt)", got)
	}
	ready := logs.FilterMessage("proxy ready").All()
	if len(ready) != 1 || ready[0].ContextMap()["attempts"] != int64(5) {
		t.Errorf("proxy ready lines = %v, want one with attempts=5", ready)
	}
	if got := logs.FilterMessage("proxy not ready").Len(); got != 4 {
		t.Errorf("%d debug lines for failed attempts, want 4", got)
	}
}

func TestWaitAlreadyReadyDoesNotPause(t *testing.T) {
	p, calls := failing(0, nil)
	timer := newInstantTimer()
	g := &Gate{Probes: []probe.Probe{p}, Timer: timer}
	if err := g.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 1 || timer.count() != 0 {
		t.Errorf("attempts = %d, pauses = %d; want 1 and 0", calls.Load(), timer.count())
	}
}

func TestWaitFeedsThePacer(t *testing.T) {
	refused := &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	n := 0
	p := probe.Func(func(context.Context) error {
		n++
		switch {
		case n <= 3:
			return refused
		case n <= 5:
			return &probe.NotReadyError{Status: "503 Service Unavailable"}
		}
		return nil
	})
	timer := newInstantTimer()
	pacer := NewPacer()
	pacer.Rand = func() float64 { return 0.5 } // no jitter
	// A clock that stands still: every attempt took no time at all.
	still := time.Unix(1_700_000_000, 0)
	g := &Gate{Probes: []probe.Probe{p}, Timer: timer, BackOff: func() backoff.BackOff { return pacer },
		Now: func() time.Time { return still }}
	if err := g.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Refused: the exponential part, with backoff's own jitter of ±20%.
	for i, d := range timer.pauses[:3] {
		if lo, hi := DefaultRefused*8/10, DefaultRefused*121/100*12/10; d < lo || d > hi {
			t.Errorf("pause %d after a refusal = %v, want about %v", i, d, DefaultRefused)
		}
	}
	// Answered in a moment: the floor.
	for i, d := range timer.pauses[3:] {
		if d != DefaultPollMin {
			t.Errorf("pause %d after an answer = %v, want the floor %v", i+3, d, DefaultPollMin)
		}
	}
}

func TestWaitTimesOutWithLastErrors(t *testing.T) {
	refused, _ := failing(1<<40, errors.New("connection refused"))
	ready, _ := failing(0, nil)
	notReady := probe.Func(func(context.Context) error {
		return &probe.NotReadyError{Status: "503 Service Unavailable"}
	})
	g := &Gate{Probes: []probe.Probe{refused, ready, notReady}, Timer: newInstantTimer()}
	// The deadline has passed by the end of the first attempt.
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	err := g.Wait(ctx)
	if got := ExitCode(err); got != ExitNotReady {
		t.Fatalf("ExitCode(%v) = %d, want %d", err, got, ExitNotReady)
	}
	if !errors.Is(err, ErrNotReady) {
		t.Errorf("errors.Is(%v, ErrNotReady) = false", err)
	}
	var te *TimeoutError
	if !errors.As(err, &te) || te.Attempts != 1 {
		t.Fatalf("err = %#v, want a TimeoutError after 1 attempt", err)
	}
	msg := err.Error()
	for _, want := range []string{"proxy not ready after", "func: connection refused", "func: answered 503"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	if got := strings.Count(msg, "func:"); got != 2 {
		t.Errorf("error %q lists %d probes, want the 2 not ready", msg, got)
	}
}

// expiring is a context whose deadline passes when expire is called.
type expiring struct {
	context.Context
	done chan struct{}
}

func newExpiring() *expiring {
	return &expiring{Context: context.Background(), done: make(chan struct{})}
}

func (e *expiring) expire()               { close(e.done) }
func (e *expiring) Done() <-chan struct{} { return e.done }
func (e *expiring) Err() error {
	select {
	case <-e.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

func TestWaitTimeoutDuringPauseKeepsLastError(t *testing.T) {
	p, _ := failing(1<<40, errors.New("connection refused"))
	ctx := newExpiring()
	// The deadline passes while the gate pauses between attempts.
	timer := &stuckTimer{onStart: ctx.expire}
	g := &Gate{Probes: []probe.Probe{p}, Timer: timer}
	err := g.Wait(ctx)
	if ExitCode(err) != ExitNotReady || !strings.Contains(err.Error(), "func: connection refused") {
		t.Errorf("Wait = %v, want exit 69 with the last error", err)
	}
}

func TestWaitTimeoutCutsFirstAttempt(t *testing.T) {
	ctx := newExpiring()
	hangs := probe.Func(func(actx context.Context) error {
		ctx.expire()
		<-actx.Done()
		return actx.Err()
	})
	err := (&Gate{Probes: []probe.Probe{hangs}, AttemptTimeout: time.Hour}).Wait(ctx)
	if ExitCode(err) != ExitNotReady || !strings.Contains(err.Error(), "func: no answer before the timeout") {
		t.Errorf("Wait = %v, want exit 69 saying the probe never answered", err)
	}
}

func TestWaitCancelledIsNotATimeout(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p, _ := failing(1<<40, errors.New("refused"))
	err := (&Gate{Probes: []probe.Probe{p}, Timer: newInstantTimer()}).Wait(ctx)
	if ExitCode(err) != ExitFailure || !errors.Is(err, context.Canceled) {
		t.Errorf("Wait = %v, want exit 1 and context.Canceled", err)
	}
}

type stuckTimer struct{ onStart func() }

func (s *stuckTimer) Start(time.Duration) {
	if s.onStart != nil {
		s.onStart()
	}
}
func (s *stuckTimer) Stop()               {}
func (s *stuckTimer) C() <-chan time.Time { return nil }

func TestWaitSignalWhilePaused(t *testing.T) {
	p, _ := failing(1<<40, errors.New("refused"))
	sigs := make(chan os.Signal, 1)
	timer := &stuckTimer{onStart: func() { sigs <- syscall.SIGTERM }}
	g := &Gate{Probes: []probe.Probe{p}, Timer: timer, Signals: sigs}
	err := g.Wait(context.Background())
	if got := ExitCode(err); got != 143 {
		t.Errorf("ExitCode(%v) = %d, want 143", err, got)
	}
	var se *SignalError
	if !errors.As(err, &se) || se.Signal != syscall.SIGTERM {
		t.Errorf("err = %v, want a SignalError for SIGTERM", err)
	}
}

func TestWaitSignalCutsAttempt(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT} {
		sigs := make(chan os.Signal, 1)
		cancelled := make(chan struct{})
		p := probe.Func(func(ctx context.Context) error {
			sigs <- sig // the signal arrives mid-attempt
			<-ctx.Done()
			close(cancelled)
			return ctx.Err()
		})
		g := &Gate{Probes: []probe.Probe{p}, Timer: newInstantTimer(), Signals: sigs, AttemptTimeout: time.Hour}
		err := g.Wait(context.Background())
		if got, want := ExitCode(err), 128+int(sig); got != want {
			t.Errorf("%v: ExitCode = %d, want %d", sig, got, want)
		}
		select {
		case <-cancelled:
		default:
			t.Errorf("%v: the attempt was not cancelled before Wait returned", sig)
		}
	}
}

func TestAttemptTimeoutCutsHangingProbe(t *testing.T) {
	hangs := probe.Func(func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	g := &Gate{Probes: []probe.Probe{hangs}, AttemptTimeout: time.Millisecond}
	err := g.Check(context.Background())
	if ExitCode(err) != ExitFailure || !strings.Contains(err.Error(), "no answer within the attempt timeout (1ms)") {
		t.Errorf("Check = %v, want exit 1 naming the attempt timeout", err)
	}
}

func TestWaitAsksPassedProbesNoMore(t *testing.T) {
	fast, fastCalls := failing(0, nil)
	slow, slowCalls := failing(3, errors.New("refused"))
	g := &Gate{Probes: []probe.Probe{fast, slow}, Timer: newInstantTimer()}
	if err := g.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fastCalls.Load() != 1 || slowCalls.Load() != 4 {
		t.Errorf("calls = %d and %d, want 1 and 4", fastCalls.Load(), slowCalls.Load())
	}
}

func TestWaitLogsProgress(t *testing.T) {
	p, _ := failing(10, errors.New("connection refused"))
	core, logs := observer.New(zap.InfoLevel)
	g := &Gate{Probes: []probe.Probe{p}, Timer: newInstantTimer(), Log: zap.New(core),
		Now: fakeClock(time.Second), ProgressEvery: 5 * time.Second}
	if err := g.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines := logs.FilterMessage("still waiting").All()
	if len(lines) < 1 {
		t.Fatal("no progress line over many fake seconds")
	}
	for i := 1; i < len(lines); i++ {
		gap := lines[i].ContextMap()["elapsed"].(time.Duration) - lines[i-1].ContextMap()["elapsed"].(time.Duration)
		if gap < 5*time.Second {
			t.Errorf("progress lines %v apart, want at least 5s", gap)
		}
	}
	notReady, _ := lines[0].ContextMap()["not_ready"].(map[string]any)
	if notReady["func"] != "connection refused" {
		t.Errorf("progress line not_ready = %v, want the last error of the probe", lines[0].ContextMap()["not_ready"])
	}
	if logs.FilterMessage("waiting for proxy").Len() != 1 {
		t.Error("want exactly one start line")
	}
}

func TestCheck(t *testing.T) {
	ok, _ := failing(0, nil)
	bad := probe.Func(func(context.Context) error { return &probe.NotReadyError{Status: "503 Service Unavailable"} })
	if err := (&Gate{Probes: []probe.Probe{ok}}).Check(context.Background()); err != nil {
		t.Errorf("Check(ready) = %v", err)
	}
	err := (&Gate{Probes: []probe.Probe{ok, bad}}).Check(context.Background())
	if ExitCode(err) != ExitFailure || !strings.Contains(err.Error(), "func: answered 503") {
		t.Errorf("Check(not ready) = %v, want exit 1 naming the probe", err)
	}
	sigs := make(chan os.Signal, 1)
	sigs <- syscall.SIGINT
	hangs := probe.Func(func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	if got := ExitCode((&Gate{Probes: []probe.Probe{hangs}, Signals: sigs}).Check(context.Background())); got != 130 {
		t.Errorf("Check with SIGINT = %d, want 130", got)
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("boom"), 1},
		{Usagef("bad flag"), 2},
		{&ExitError{Code: 69, Err: &TimeoutError{}}, 69},
		{fmtWrap(&ExitError{Code: 127, Err: errors.New("x")}), 127},
		{signalExit(syscall.SIGTERM), 143},
		{signalExit(syscall.SIGQUIT), 131},
	}
	for _, tc := range tests {
		if got := ExitCode(tc.err); got != tc.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func fmtWrap(err error) error { return errors.Join(errors.New("context"), err) }

func TestWaitSignalBeforeFirstAttempt(t *testing.T) {
	sigs := make(chan os.Signal, 1)
	sigs <- syscall.SIGTERM // already there when the wait begins
	ready, _ := failing(0, nil)
	err := (&Gate{Probes: []probe.Probe{ready}, Signals: sigs, Timer: newInstantTimer()}).Wait(context.Background())
	if got := ExitCode(err); got != 143 {
		t.Errorf("Wait = %v (exit %d), want 143: the proxy being ready must not start the command after SIGTERM", err, got)
	}
}

func TestWaitDropsOtherSignals(t *testing.T) {
	sigs := make(chan os.Signal, 2)
	sigs <- syscall.SIGUSR1
	sigs <- syscall.SIGWINCH
	n := 0
	p := probe.Func(func(context.Context) error {
		n++
		if n < 3 {
			return errors.New("refused")
		}
		return nil
	})
	// Each pause waits for the channel to drain, so both are taken.
	timer := &drainTimer{sigs: sigs}
	core, logs := observer.New(zap.InfoLevel)
	g := &Gate{Probes: []probe.Probe{p}, Signals: sigs, Timer: timer, Log: zap.New(core)}
	if err := g.Wait(context.Background()); err != nil {
		t.Fatalf("Wait = %v, want ready: USR1 and WINCH do not end the wait", err)
	}
	var dropped []any
	for _, e := range logs.FilterMessage("dropping signal: the command is not running yet").All() {
		dropped = append(dropped, e.ContextMap()["signal"])
	}
	if !reflect.DeepEqual(dropped, []any{"SIGUSR1", "SIGWINCH"}) {
		t.Errorf("dropped %v, want one line for each of SIGUSR1 and SIGWINCH, in order", dropped)
	}
	if len(sigs) != 0 {
		t.Errorf("%d signals left in the channel for the command", len(sigs))
	}
}

// drainTimer fires once its signal channel is empty.
type drainTimer struct {
	sigs chan os.Signal
	c    chan time.Time
}

func (d *drainTimer) Start(time.Duration) {
	for len(d.sigs) > 0 {
		runtime.Gosched() // the watcher takes them; no time passes
	}
	d.c = make(chan time.Time, 1)
	d.c <- time.Time{}
}
func (d *drainTimer) Stop()               {}
func (d *drainTimer) C() <-chan time.Time { return d.c }

// closer is a probe that records being closed.
type closer struct {
	probe.Func
	closed bool
}

func (c *closer) Close() error { c.closed = true; return nil }

func TestWaitClosesProbes(t *testing.T) {
	p := &closer{Func: func(context.Context) error { return nil }}
	if err := (&Gate{Probes: []probe.Probe{p}}).Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !p.closed {
		t.Error("the probe's kept connection was not closed after the wait")
	}
}

// Each probe keeps its own outcome when another one hangs until the
// attempt timeout: an operator must see which endpoint is down and how.
func TestEachProbeKeepsItsOwnOutcome(t *testing.T) {
	notReady := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer notReady.Close()
	hang, err := net.Listen("tcp", "127.0.0.1:0") // accepts (the backlog) and never answers
	if err != nil {
		t.Fatal(err)
	}
	defer hang.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "tcp://" + closed.Addr().String()
	closed.Close()
	specs := []string{notReady.URL + "/a", refused, "http://" + hang.Addr().String() + "/b"}
	var probes []probe.Probe
	for _, s := range specs {
		p, err := probe.Parse(s, probe.Options{})
		if err != nil {
			t.Fatal(err)
		}
		probes = append(probes, p)
	}
	// Long enough that the quick ones answer on a busy machine.
	err = (&Gate{Probes: probes, AttemptTimeout: 2 * time.Second}).Check(context.Background())
	want := []string{
		specs[0] + ": answered 503 Service Unavailable",
		specs[1] + ": dial tcp " + closed.Addr().String() + ": connect: connection refused",
		specs[2] + ": no answer within the attempt timeout (2s)",
	}
	for _, w := range want {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Check = %v\nwant it to say %q", err, w)
		}
	}
}

// A deadline that the dialer noticed before the context's own timer did
// is still the deadline: the error it cut is not reported as the probe's
// outcome, the earlier one is.
func TestWaitDeadlineSeenFirstByTheDialer(t *testing.T) {
	ctx := &lateDeadline{Context: context.Background(), done: make(chan struct{})}
	n := 0
	p := probe.Func(func(context.Context) error {
		n++
		switch n {
		case 1:
			return errors.New("connection refused")
		case 2:
			// The deadline passes, and the dialer sees it first.
			ctx.past.Store(true)
			return &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
		}
		close(ctx.done) // now ctx says so too
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
	})
	err := (&Gate{Probes: []probe.Probe{p}, Timer: newInstantTimer()}).Wait(ctx)
	if ExitCode(err) != ExitNotReady || !strings.Contains(err.Error(), "func: connection refused") {
		t.Errorf("Wait = %v, want exit 69 with the last outcome before the deadline", err)
	}
}

// lateDeadline is a context whose deadline passes (past) before it says
// it is done (done), as a real one may for a moment.
type lateDeadline struct {
	context.Context
	past atomic.Bool
	done chan struct{}
}

func (l *lateDeadline) Deadline() (time.Time, bool) {
	if l.past.Load() {
		return time.Now().Add(-time.Millisecond), true
	}
	return time.Now().Add(time.Hour), true
}

func (l *lateDeadline) Done() <-chan struct{} { return l.done }

func (l *lateDeadline) Err() error {
	select {
	case <-l.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

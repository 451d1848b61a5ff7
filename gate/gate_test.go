package gate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/meshgate/meshgate/probe"
)

// fake is a probe that fails its first fails attempts with err, then
// passes; it counts its attempts and remembers being closed.
type fake struct {
	fails  int64
	err    error
	calls  atomic.Int64
	closed atomic.Bool
}

func (f *fake) Check(context.Context) error {
	if f.calls.Add(1) <= f.fails {
		return f.err
	}
	return nil
}
func (f *fake) String() string { return "fake" }
func (f *fake) Close() error   { f.closed.Store(true); return nil }

var (
	errRefused = &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	err503     = &probe.NotReadyError{Status: "503 Service Unavailable"}
	hangs      = probe.Func(func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
)

// steady is a Pacer without jitter.
func steady() *Pacer { p := NewPacer(); p.Jitter = 0; return p }

// logged returns a logger and what it logged.
func logged(level zapcore.Level) (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(level)
	return zap.New(core), logs
}

// A wait retries until ready, and meanwhile logs progress every 5 s and
// drops the signals that do not stop it; a probe that passed is not asked
// again, and a ready proxy costs no pause at all (nor the Waiting hook).
func TestWaitRetriesUntilReady(t *testing.T) {
	for _, fails := range []int64{0, 200} {
		synctest.Test(t, func(t *testing.T) {
			ready, slow := &fake{}, &fake{fails: fails, err: errRefused}
			sigs := make(chan os.Signal, 2)
			sigs <- syscall.SIGUSR1
			sigs <- syscall.SIGWINCH
			log, logs := logged(zap.DebugLevel)
			start, waiting := time.Now(), 0
			g := &Gate{Probes: []probe.Probe{ready, slow}, Signals: sigs, Log: log, Pacer: steady, Waiting: func() { waiting++ }}
			if err := g.Wait(t.Context()); err != nil {
				t.Fatalf("Wait = %v, want nil", err)
			}
			if want := min(int(fails), 1); waiting != want {
				t.Errorf("Waiting called %d times, want %d: once when the first attempt fails", waiting, want)
			}
			if ready.calls.Load() != 1 || slow.calls.Load() != fails+1 || !ready.closed.Load() || !slow.closed.Load() {
				t.Errorf("calls = %d and %d, want 1 and %d, and both closed", ready.calls.Load(), slow.calls.Load(), fails+1)
			}
			if took := time.Since(start); fails == 0 && took != 0 || fails > 0 && took < 10*time.Second {
				t.Errorf("%d failures took %v, want no pause for none, and at least 10s for 200", fails, took)
			}
			if l := logs.FilterMessage("proxy ready").All(); len(l) != 1 || l[0].ContextMap()["attempts"] != fails+1 {
				t.Errorf("proxy ready lines = %v, want one with attempts=%d", l, fails+1)
			}
			if got := logs.FilterMessage("proxy not ready").Len(); got != int(fails) {
				t.Errorf("%d debug lines for failed attempts, want %d", got, fails)
			}
			var progress, dropped []any
			for _, l := range logs.FilterMessage("still waiting").All() {
				progress = append(progress, l.ContextMap()["elapsed"])
				if nr := l.ContextMap()["not_ready"]; !reflect.DeepEqual(nr, map[string]any{"fake": errRefused.Error()}) {
					t.Errorf("not_ready = %v, want the probe's last error", nr)
				}
			}
			for _, e := range logs.FilterMessage("dropping signal: the command is not running yet").All() {
				dropped = append(dropped, e.ContextMap()["signal"])
			}
			if !reflect.DeepEqual(dropped, []any{"SIGUSR1", "SIGWINCH"}) || len(sigs) != 0 {
				t.Errorf("dropped %v, %d left; want SIGUSR1 and SIGWINCH, in order, none left", dropped, len(sigs))
			}
			if want := time.Since(start) / (5 * time.Second); len(progress) != int(want) {
				t.Errorf("progress lines at %v over %v, want one every 5s", progress, time.Since(start))
			}
		})
	}
}

// The wait tells the pacer how each attempt went: refused (a fast retry
// that grows) or answered, and how long the answer took.
func TestWaitFeedsThePacer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var gaps []time.Duration
		var ended time.Time
		p := probe.Func(func(context.Context) error {
			if !ended.IsZero() {
				gaps = append(gaps, time.Since(ended))
			}
			defer func() { ended = time.Now() }()
			switch n := len(gaps); {
			case n < 3:
				return errRefused
			case n < 5:
				time.Sleep(20 * time.Millisecond) // the proxy's work
				return err503
			}
			return nil
		})
		if err := (&Gate{Probes: []probe.Probe{p}, Pacer: steady}).Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		// Refused: 10 ms, growing by 10%. Answered: one answer is not
		// trusted; two of 20 ms make it 24 × 19 ms.
		want := []time.Duration{10 * time.Millisecond, 11 * time.Millisecond, 12100 * time.Microsecond, DefaultPollMin, 456 * time.Millisecond}
		if !reflect.DeepEqual(gaps, want) {
			t.Errorf("pauses = %v, want %v", gaps, want)
		}
	})
}

func TestWaitEnds(t *testing.T) {
	stubborn := func() probe.Probe { return &fake{fails: 1 << 40, err: errRefused} }
	signals := func(g *Gate) chan<- os.Signal { c := make(chan os.Signal, 1); g.Signals = c; return c }
	tests := []struct {
		name  string
		setup func(*Gate, context.CancelFunc)
		code  int
		want  string
	}{
		{"timeout while paused keeps the last errors", func(g *Gate, _ context.CancelFunc) {
			g.Probes = []probe.Probe{stubborn(), &fake{}, &fake{fails: 1 << 40, err: err503}}
		}, 69, "attempts): fake: dial tcp: connect: connection refused; fake: answered 503"},
		{"timeout cuts the first attempt", func(g *Gate, _ context.CancelFunc) {
			g.Probes, g.AttemptTimeout = []probe.Probe{hangs}, time.Hour
		}, 69, "proxy not ready after 1s (1 attempts): func: no answer before the timeout"},
		{"cancelled", func(g *Gate, cancel context.CancelFunc) { g.Probes = []probe.Probe{hangs}; cancel() },
			1, "wait cancelled: context canceled"},
		{"signal while paused", func(g *Gate, _ context.CancelFunc) {
			g.Probes = []probe.Probe{stubborn()}
			c := signals(g)
			time.AfterFunc(300*time.Millisecond, func() { c <- syscall.SIGTERM })
		}, 143, "received SIGTERM while waiting"},
		{"signal before the first attempt", func(g *Gate, _ context.CancelFunc) {
			g.Probes = []probe.Probe{&fake{}}
			signals(g) <- syscall.SIGHUP
		}, 129, "received SIGHUP while waiting"},
		{"signal cuts an attempt", func(g *Gate, _ context.CancelFunc) {
			c := signals(g)
			g.Probes, g.AttemptTimeout = []probe.Probe{probe.Func(func(ctx context.Context) error {
				c <- syscall.SIGQUIT
				<-ctx.Done()
				return ctx.Err()
			})}, time.Hour
		}, 131, "received SIGQUIT while waiting"},
	}
	for _, tc := range tests {
		synctest.Test(t, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			g := &Gate{Timeout: time.Second}
			tc.setup(g, cancel)
			err := g.Wait(ctx)
			if ExitCode(err) != tc.code || !strings.Contains(err.Error(), tc.want) || errors.Is(err, ErrNotReady) != (tc.code == 69) {
				t.Errorf("%s: Wait = %v (exit %d), want exit %d saying %q", tc.name, err, ExitCode(err), tc.code, tc.want)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name   string
		probes []probe.Probe
		signal os.Signal
		code   int
		want   string
	}{
		{"ready", []probe.Probe{&fake{}}, nil, 0, ""},
		{"not ready", []probe.Probe{&fake{}, &fake{fails: 1, err: err503}}, nil, 1, "proxy not ready: fake: answered 503"},
		// Each probe keeps its own outcome when another one hangs until
		// the attempt timeout: an operator must see which is down and how.
		{"each its own outcome", []probe.Probe{&fake{fails: 1, err: err503}, &fake{fails: 1, err: errRefused}, hangs}, nil, 1,
			"proxy not ready: fake: answered 503 Service Unavailable; fake: dial tcp: connect: connection refused; func: no answer within the attempt timeout (1s)"},
		{"SIGINT", []probe.Probe{hangs}, syscall.SIGINT, 130, "received SIGINT"},
	}
	for _, tc := range tests {
		synctest.Test(t, func(t *testing.T) {
			sigs := make(chan os.Signal, 1)
			if tc.signal != nil {
				sigs <- tc.signal
			}
			err := (&Gate{Probes: tc.probes, Signals: sigs}).Check(t.Context())
			if ExitCode(err) != tc.code || err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: Check = %v, want exit %d saying %q", tc.name, err, tc.code, tc.want)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	for err, want := range map[error]int{
		nil:                0,
		errors.New("boom"): 1,
		fmt.Errorf("in %w", errors.Join(errors.New("context"), Usagef("bad flag"))): 2,
	} {
		if got := ExitCode(err); got != want {
			t.Errorf("ExitCode(%v) = %d, want %d", err, got, want)
		}
	}
}

// A deadline that the dialer noticed before the context's own timer did
// is still the deadline: the error it cut is not reported as the probe's
// outcome, the earlier one is.
func TestWaitDeadlineSeenFirstByTheDialer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := &lateDeadline{Context: t.Context()}
		cut := &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
		first := true
		p := probe.Func(func(context.Context) error {
			if first {
				first = false
				return err503
			}
			ctx.past.Store(true) // the deadline passes, and the dialer sees it first
			return cut
		})
		err := (&Gate{Probes: []probe.Probe{p}}).Wait(ctx)
		if ExitCode(err) != ExitNotReady || !strings.HasSuffix(err.Error(), "func: answered 503 Service Unavailable") {
			t.Errorf("Wait = %v, want exit 69 with the last outcome before the deadline", err)
		}
	})
}

// lateDeadline is a context whose deadline has passed (past) while it
// does not say it is done yet, as a real one may for a moment.
type lateDeadline struct {
	context.Context
	past atomic.Bool
}

func (l *lateDeadline) Deadline() (time.Time, bool) {
	if l.past.Load() {
		return time.Now().Add(-time.Millisecond), true
	}
	return time.Time{}, false
}

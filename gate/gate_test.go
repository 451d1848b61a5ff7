package gate

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
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

// logged returns a logger and what it logged.
func logged(level zapcore.Level) (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(level)
	return zap.New(core), logs
}

func TestWaitRetriesUntilReady(t *testing.T) {
	for _, fails := range []int64{0, 4} {
		synctest.Test(t, func(t *testing.T) {
			ready, slow := &fake{}, &fake{fails: fails, err: errRefused}
			log, logs := logged(zap.DebugLevel)
			start := time.Now()
			if err := (&Gate{Probes: []probe.Probe{ready, slow}, Log: log}).Wait(t.Context()); err != nil {
				t.Fatalf("Wait = %v, want nil", err)
			}
			if ready.calls.Load() != 1 || slow.calls.Load() != fails+1 {
				t.Errorf("calls = %d and %d, want 1 (a ready probe is not asked again) and %d", ready.calls.Load(), slow.calls.Load(), fails+1)
			}
			if fails == 0 && time.Since(start) != 0 {
				t.Errorf("a ready proxy cost %v, want no pause at all", time.Since(start))
			}
			if l := logs.FilterMessage("proxy ready").All(); len(l) != 1 || l[0].ContextMap()["attempts"] != fails+1 {
				t.Errorf("proxy ready lines = %v, want one with attempts=%d", l, fails+1)
			}
			if got := logs.FilterMessage("proxy not ready").Len(); got != int(fails) {
				t.Errorf("%d debug lines for failed attempts, want %d", got, fails)
			}
			if !ready.closed.Load() || !slow.closed.Load() {
				t.Error("probes not closed after the wait")
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
		pacer := func() *Pacer { pc := NewPacer(); pc.Rand = func() float64 { return 0.5 }; return pc }
		if err := (&Gate{Probes: []probe.Probe{p}, Pacer: pacer}).Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		for i, d := range gaps[:3] { // backoff's own jitter, ±20%
			if d < DefaultRefused*8/10 || d > DefaultRefused*121/100*12/10 {
				t.Errorf("pause %d after a refusal = %v, want about %v", i, d, DefaultRefused)
			}
		}
		// One answer is not trusted; two of 20 ms make it 24 × 19 ms.
		if want := []time.Duration{DefaultPollMin, 456 * time.Millisecond}; !reflect.DeepEqual(gaps[3:], want) {
			t.Errorf("pauses after answers = %v, want %v", gaps[3:], want)
		}
	})
}

func TestWaitEnds(t *testing.T) {
	tests := []struct {
		name  string
		probe func() []probe.Probe
		setup func(*Gate, context.CancelFunc)
		code  int
		want  []string
	}{
		{"timeout while paused keeps the last errors", func() []probe.Probe {
			return []probe.Probe{&fake{fails: 1 << 40, err: errRefused}, &fake{}, &fake{fails: 1 << 40, err: err503}}
		}, nil, 69, []string{"proxy not ready after 1s (", "fake: dial tcp: connect: connection refused", "; fake: answered 503"}},
		{"timeout cuts the first attempt", func() []probe.Probe { return []probe.Probe{hangs} },
			func(g *Gate, _ context.CancelFunc) { g.AttemptTimeout = time.Hour },
			69, []string{"proxy not ready after 1s (1 attempts): func: no answer before the timeout"}},
		{"cancelled", func() []probe.Probe { return []probe.Probe{hangs} },
			func(_ *Gate, cancel context.CancelFunc) { cancel() }, 1, []string{"wait cancelled: context canceled"}},
		{"signal while paused", func() []probe.Probe { return []probe.Probe{&fake{fails: 1 << 40, err: errRefused}} },
			func(g *Gate, _ context.CancelFunc) {
				sigs := make(chan os.Signal, 1)
				g.Signals = sigs
				time.AfterFunc(300*time.Millisecond, func() { sigs <- syscall.SIGTERM })
			}, 143, []string{"received SIGTERM while waiting"}},
		{"signal before the first attempt", func() []probe.Probe { return []probe.Probe{&fake{}} },
			func(g *Gate, _ context.CancelFunc) {
				sigs := make(chan os.Signal, 1)
				sigs <- syscall.SIGTERM
				g.Signals = sigs
			}, 143, []string{"received SIGTERM while waiting"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				g := &Gate{Probes: tc.probe(), Timeout: time.Second}
				if tc.setup != nil {
					tc.setup(g, cancel)
				}
				err := g.Wait(ctx)
				if ExitCode(err) != tc.code {
					t.Fatalf("Wait = %v (exit %d), want exit %d", err, ExitCode(err), tc.code)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("Wait = %q, want it to say %q", err, w)
					}
				}
				if errors.Is(err, ErrNotReady) != (tc.code == 69) {
					t.Errorf("errors.Is(%v, ErrNotReady) = %v", err, !(tc.code == 69))
				}
			})
		})
	}
}

func TestWaitSignalCutsAttempt(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT} {
		synctest.Test(t, func(t *testing.T) {
			sigs := make(chan os.Signal, 1)
			var cancelled atomic.Bool
			p := probe.Func(func(ctx context.Context) error {
				sigs <- sig // the signal arrives mid-attempt
				<-ctx.Done()
				cancelled.Store(true)
				return ctx.Err()
			})
			err := (&Gate{Probes: []probe.Probe{p}, Signals: sigs, AttemptTimeout: time.Hour}).Wait(t.Context())
			var se *SignalError
			if ExitCode(err) != 128+int(sig) || !errors.As(err, &se) || se.Signal != sig || !cancelled.Load() {
				t.Errorf("%v: Wait = %v (exit %d), cancelled %v; want exit %d after the attempt was cancelled",
					sig, err, ExitCode(err), cancelled.Load(), 128+int(sig))
			}
		})
	}
}

func TestWaitLogsProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		p := probe.Func(func(context.Context) error {
			if time.Since(start) < 12*time.Second {
				return errRefused
			}
			return nil
		})
		log, logs := logged(zap.InfoLevel)
		if err := (&Gate{Probes: []probe.Probe{p}, Log: log}).Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		var elapsed []time.Duration
		for _, l := range logs.FilterMessage("still waiting").All() {
			elapsed = append(elapsed, l.ContextMap()["elapsed"].(time.Duration).Truncate(time.Second))
			if nr := l.ContextMap()["not_ready"]; !reflect.DeepEqual(nr, map[string]any{"func": errRefused.Error()}) {
				t.Errorf("not_ready = %v, want the probe's last error", nr)
			}
		}
		if !reflect.DeepEqual(elapsed, []time.Duration{5 * time.Second, 10 * time.Second}) {
			t.Errorf("progress lines at %v, want at 5s and 10s", elapsed)
		}
		if logs.FilterMessage("waiting for proxy").Len() != 1 {
			t.Error("want exactly one start line")
		}
	})
}

func TestWaitDropsOtherSignals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sigs := make(chan os.Signal, 2)
		sigs <- syscall.SIGUSR1
		sigs <- syscall.SIGWINCH
		log, logs := logged(zap.InfoLevel)
		g := &Gate{Probes: []probe.Probe{&fake{fails: 2, err: errRefused}}, Signals: sigs, Log: log}
		if err := g.Wait(t.Context()); err != nil {
			t.Fatalf("Wait = %v, want ready: USR1 and WINCH do not end the wait", err)
		}
		var dropped []any
		for _, e := range logs.FilterMessage("dropping signal: the command is not running yet").All() {
			dropped = append(dropped, e.ContextMap()["signal"])
		}
		if !reflect.DeepEqual(dropped, []any{"SIGUSR1", "SIGWINCH"}) || len(sigs) != 0 {
			t.Errorf("dropped %v, %d left; want SIGUSR1 and SIGWINCH, in order, none left", dropped, len(sigs))
		}
	})
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
		{"hangs", []probe.Probe{hangs}, nil, 1, "func: no answer within the attempt timeout (1s)"},
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
	tests := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("boom"), 1},
		{Usagef("bad flag"), 2},
		{&ExitError{Code: 69, Err: &TimeoutError{}}, 69},
		{errors.Join(errors.New("context"), &ExitError{Code: 127, Err: errors.New("x")}), 127},
		{SignalExit(syscall.SIGTERM), 143},
		{SignalExit(syscall.SIGQUIT), 131},
	}
	for _, tc := range tests {
		if got := ExitCode(tc.err); got != tc.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

// Each probe keeps its own outcome when another one hangs until the
// attempt timeout: an operator must see which endpoint is down and how.
// Real sockets, so outside a synctest bubble, where the clock would not
// move while a goroutine waits on the network.
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
	closed.Close()
	specs := []string{notReady.URL + "/a", "tcp://" + closed.Addr().String(), "http://" + hang.Addr().String() + "/b"}
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
	for i, w := range []string{
		"answered 503 Service Unavailable",
		"dial tcp " + closed.Addr().String() + ": connect: connection refused",
		"no answer within the attempt timeout (2s)",
	} {
		if err == nil || !strings.Contains(err.Error(), specs[i]+": "+w) {
			t.Errorf("Check = %v\nwant it to say %q", err, specs[i]+": "+w)
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
	return time.Now().Add(time.Hour), true
}

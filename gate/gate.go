// Package gate holds a command back until a proxy is ready, then starts it.
//
// A Gate polls its probes with backoff until all are ready, the timeout
// passes or a signal arrives (Wait), and then replaces the process with the
// command (Exec). Every side effect is a field, so that tests can replace
// it; a nil field means the production default.
package gate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/meshgate/meshgate/probe"
)

// Defaults for the fields of a Gate.
const (
	DefaultTimeout        = 2 * time.Minute
	DefaultAttemptTimeout = time.Second
	DefaultBackOffInitial = 10 * time.Millisecond
	DefaultBackOffMax     = 250 * time.Millisecond
	DefaultProgressEvery  = 5 * time.Second
)

// Gate waits for a set of probes and then starts a command.
type Gate struct {
	// Probes must all be ready; once a probe has passed it is not asked
	// again, so a probe that flaps cannot keep the others waiting.
	Probes []probe.Probe
	// Timeout bounds the whole wait; 0 waits for ever.
	Timeout time.Duration
	// AttemptTimeout bounds each attempt of each probe; 0 means
	// DefaultAttemptTimeout.
	AttemptTimeout time.Duration
	// BackOff makes the retry policy for one wait; a policy is not safe
	// for reuse, so each wait asks for a new one. Nil means
	// NewBackOff(DefaultBackOffInitial, DefaultBackOffMax).
	BackOff func() backoff.BackOff
	// Timer sleeps between attempts; nil means a real timer.
	Timer backoff.Timer
	// Signals ends the wait when a signal arrives on it.
	Signals <-chan os.Signal
	// Log receives the gate's log lines; nil discards them.
	Log *zap.Logger
	// Now tells the time; nil means time.Now.
	Now func() time.Time
	// ProgressEvery is how often a "still waiting" line is logged; 0 means
	// DefaultProgressEvery.
	ProgressEvery time.Duration
	// Execve replaces the process; nil means syscall.Exec with a clean
	// signal mask.
	Execve func(path string, argv, env []string) error
	// Getpid tells the process's PID; nil means os.Getpid.
	Getpid func() int

	// held keeps signals that arrived during the wait but do not end it,
	// for Supervise to forward once the command runs.
	held []os.Signal
}

// isStop reports whether a signal ends the wait: those that ask a process
// to stop. Others that the caller routes to Signals (for forwarding to a
// supervised command) are held until the command runs.
func isStop(s os.Signal) bool {
	switch s {
	case syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT:
		return true
	}
	return false
}

// onSignal handles a signal during the wait: an error ends it.
func (g *Gate) onSignal(s os.Signal) error {
	if isStop(s) {
		return signalExit(s)
	}
	g.log().Debug("holding signal for the command", zap.Stringer("signal", s))
	g.held = append(g.held, s)
	return nil
}

// NewBackOff returns the default retry policy: exponential from initial to
// max with ±50% jitter, so that pods started together drift apart, and no
// give-up of its own (the deadline belongs to Wait).
func NewBackOff(initial, max time.Duration) backoff.BackOff {
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(initial),
		backoff.WithMaxInterval(max),
		backoff.WithMultiplier(1.5),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithMaxElapsedTime(0),
	)
}

// TimeoutError reports a wait that ran out of time, with the last error of
// each probe that was not ready.
type TimeoutError struct {
	Elapsed  time.Duration
	Attempts int
	NotReady []ProbeError
}

// ProbeError is the last outcome of one probe.
type ProbeError struct {
	Probe string
	Err   error
}

func (e *TimeoutError) Error() string {
	head := fmt.Sprintf("proxy not ready after %s (%d attempts)", e.Elapsed.Round(time.Millisecond), e.Attempts)
	return listErrors(head, e.NotReady)
}

// listErrors writes probe errors after head on one line.
func listErrors(head string, pes []ProbeError) string {
	var b strings.Builder
	b.WriteString(head)
	for i, pe := range pes {
		sep := "; "
		if i == 0 {
			sep = ": "
		}
		fmt.Fprintf(&b, "%s%s: %v", sep, pe.Probe, pe.Err)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrNotReady) true.
func (e *TimeoutError) Is(target error) bool { return target == ErrNotReady }

// Wait returns nil once every probe is ready. Otherwise it returns an
// *ExitError: code 69 with a *TimeoutError when the timeout passes, 128+N
// with a *SignalError when signal N arrives. The first attempt is made at
// once, so a proxy that is already ready costs no pause at all.
func (g *Gate) Wait(ctx context.Context) error {
	log := g.log()
	start := g.now()
	if g.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.Timeout)
		defer cancel()
	}
	policy := g.policy()
	policy.Reset()
	timer := g.Timer
	if timer == nil {
		timer = &realTimer{}
	}
	defer timer.Stop()

	pending := append([]probe.Probe(nil), g.Probes...)
	last := make([]error, len(pending))
	lastProgress := start
	attempts := 0
	log.Info("waiting for proxy", zap.Strings("probes", specs(pending)),
		zap.Duration("timeout", g.Timeout), zap.Duration("attempt_timeout", g.attemptTimeout()))
	for {
		attempts++
		errs, sig := g.attempt(ctx, pending)
		if sig != nil {
			return sig
		}
		if ctx.Err() != nil {
			return g.expired(ctx, start, attempts, pending, last, errs)
		}
		pending, last = keepFailed(pending, errs)
		if len(pending) == 0 {
			log.Info("proxy ready", zap.Int("attempts", attempts), zap.Duration("elapsed", g.now().Sub(start)))
			return nil
		}
		pause := policy.NextBackOff()
		if pause == backoff.Stop {
			return g.expired(ctx, start, attempts, pending, last, nil)
		}
		if log.Core().Enabled(zapcore.DebugLevel) {
			for i, p := range pending {
				log.Debug("proxy not ready", zap.String("probe", p.String()), zap.Int("attempt", attempts),
					zap.NamedError("error", last[i]), zap.Duration("retry_in", pause))
			}
		}
		if now := g.now(); now.Sub(lastProgress) >= g.progressEvery() {
			lastProgress = now
			log.Info("still waiting", zap.Duration("elapsed", now.Sub(start)), zap.Int("attempts", attempts),
				zap.Object("not_ready", probeErrors{pending, last}))
		}
		timer.Start(pause)
		if err := g.pause(ctx, timer); err != nil {
			if errors.Is(err, ctx.Err()) {
				return g.expired(ctx, start, attempts, pending, last, nil)
			}
			return err
		}
	}
}

// pause waits for the timer; it returns ctx's error when ctx ends first,
// or the error of a signal that ends the wait.
func (g *Gate) pause(ctx context.Context, timer backoff.Timer) error {
	for {
		select {
		case <-timer.C():
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case s := <-g.Signals:
			if err := g.onSignal(s); err != nil {
				return err
			}
		}
	}
}

// attempt checks the pending probes at the same time, each within the
// attempt timeout. A signal cuts the attempt short.
func (g *Gate) attempt(ctx context.Context, pending []probe.Probe) ([]error, error) {
	actx, cancel := context.WithTimeout(ctx, g.attemptTimeout())
	defer cancel()
	errs := make([]error, len(pending))
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for i, p := range pending {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = p.Check(actx)
			}()
		}
		wg.Wait()
	}()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case s := <-g.Signals:
			if err := g.onSignal(s); err != nil {
				cancel()
				<-done // probes return promptly once their context is cancelled
				return nil, err
			}
		}
	}
	for i, err := range errs {
		// Name an attempt cut by its own timeout for what it is; one cut
		// by the overall deadline is reported by the caller.
		if err != nil && errors.Is(actx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			errs[i] = fmt.Errorf("no answer within the attempt timeout (%s)", g.attemptTimeout())
		}
	}
	return errs, nil
}

// keepFailed returns the probes that are not ready yet, with their errors.
func keepFailed(pending []probe.Probe, errs []error) ([]probe.Probe, []error) {
	var ps []probe.Probe
	var es []error
	for i, err := range errs {
		if err != nil {
			ps = append(ps, pending[i])
			es = append(es, err)
		}
	}
	return ps, es
}

// expired builds the error for a wait whose context ended. errs, when not
// nil, are the outcomes of an attempt cut short by the deadline: they only
// stand in for probes that had no earlier outcome.
func (g *Gate) expired(ctx context.Context, start time.Time, attempts int, pending []probe.Probe, last, errs []error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("wait cancelled: %w", ctx.Err())
	}
	te := &TimeoutError{Elapsed: g.now().Sub(start), Attempts: attempts}
	if errs != nil {
		// The cut attempt covered exactly the probes still pending.
		for i, p := range pending {
			if errs[i] == nil {
				continue
			}
			err := errs[i]
			if i < len(last) && last[i] != nil {
				err = last[i]
			} else if isTimeout(err) {
				err = errors.New("no answer before the timeout")
			}
			te.NotReady = append(te.NotReady, ProbeError{Probe: p.String(), Err: err})
		}
	} else {
		for i, p := range pending {
			te.NotReady = append(te.NotReady, ProbeError{Probe: p.String(), Err: last[i]})
		}
	}
	return &ExitError{Code: ExitNotReady, Err: te}
}

// isTimeout reports an error that only says time ran out.
func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &t) && t.Timeout()
}

func signalExit(s os.Signal) error {
	sig, ok := s.(syscall.Signal)
	if !ok {
		return &ExitError{Code: ExitFailure, Err: fmt.Errorf("received %v while waiting", s)}
	}
	return &ExitError{Code: ExitSignalBase + int(sig), Err: &SignalError{Signal: sig}}
}

func (g *Gate) log() *zap.Logger {
	if g.Log == nil {
		return zap.NewNop()
	}
	return g.Log
}

func (g *Gate) now() time.Time {
	if g.Now == nil {
		return time.Now()
	}
	return g.Now()
}

func (g *Gate) policy() backoff.BackOff {
	if g.BackOff == nil {
		return NewBackOff(DefaultBackOffInitial, DefaultBackOffMax)
	}
	return g.BackOff()
}

func (g *Gate) attemptTimeout() time.Duration {
	if g.AttemptTimeout <= 0 {
		return DefaultAttemptTimeout
	}
	return g.AttemptTimeout
}

func (g *Gate) progressEvery() time.Duration {
	if g.ProgressEvery <= 0 {
		return DefaultProgressEvery
	}
	return g.ProgressEvery
}

func specs(ps []probe.Probe) []string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return s
}

// probeErrors logs the last error of each pending probe as one object.
type probeErrors struct {
	probes []probe.Probe
	errs   []error
}

func (pe probeErrors) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	for i, p := range pe.probes {
		enc.AddString(p.String(), fmt.Sprint(pe.errs[i]))
	}
	return nil
}

// realTimer is backoff's timer, which that package does not export.
type realTimer struct{ t *time.Timer }

func (r *realTimer) Start(d time.Duration) {
	if r.t == nil {
		r.t = time.NewTimer(d)
		return
	}
	r.t.Reset(d)
}

func (r *realTimer) Stop() {
	if r.t != nil {
		r.t.Stop()
	}
}

func (r *realTimer) C() <-chan time.Time { return r.t.C }

// Check makes one attempt of every probe, without retries. It returns nil
// when all are ready, an *ExitError with code 1 naming those that are not,
// or 128+N when signal N arrives first.
func (g *Gate) Check(ctx context.Context) error {
	errs, sig := g.attempt(ctx, g.Probes)
	if sig != nil {
		return sig
	}
	pending, last := keepFailed(g.Probes, errs)
	if len(pending) == 0 {
		return nil
	}
	pes := make([]ProbeError, len(pending))
	for i, p := range pending {
		pes[i] = ProbeError{Probe: p.String(), Err: last[i]}
	}
	return &ExitError{Code: ExitFailure, Err: errors.New(listErrors("proxy not ready", pes))}
}

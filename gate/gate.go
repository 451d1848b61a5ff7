// Package gate holds a command back until a proxy is ready, then starts it.
//
// A Gate polls its probes, paced by a retry policy, until all are ready,
// the timeout passes or a signal arrives (Wait), and then replaces the
// process with the command (Exec) or runs it as a child (Supervise). Every side effect is a field, so that tests can replace
// it; a nil field means the production default.
package gate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
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
	// Pacer makes the retry policy for one wait; a policy is not safe
	// for reuse, so each wait asks for a new one. Nil means NewPacer().
	// A *Pacer and not any backoff.BackOff: the wait tells it how each
	// attempt went, which that interface has no word for.
	Pacer func() *Pacer
	// Signals ends the wait when a stop signal arrives on it; any other
	// signal that arrives before the command runs is dropped with a log
	// line, and once a supervised command runs each one is forwarded.
	Signals <-chan os.Signal
	// Release is called by Exec once its log line is written, before its
	// last look at Signals, unless execve set the stop signals to their
	// default action already (not as PID 1): it must stop the delivery of
	// signals to Signals, returning only when every signal caught so far
	// is in the channel, so that a later stop signal takes its default
	// action instead of being caught and lost in execve. main passes
	// signal.Stop on the channel; nil does nothing.
	Release func()
	// Settle is called by Supervise before its last look at Signals, and
	// by Exec in place of Release when the stop signals are at their
	// default action already: it must return once every signal caught so
	// far is in the channel, without stopping the delivery. main passes a Notify and Stop of a
	// spare channel (signal.Stop waits for delivery to be idle); nil
	// does nothing.
	Settle func()
	// Log receives the gate's log lines; nil discards them.
	Log *zap.Logger
	// Waiting, if not nil, is called once, when the first attempt of a
	// wait finds the proxy not ready: the wait is going to take a while.
	// main sets the runtime up for a long, quiet wait then, and not
	// before, so that a proxy already ready meets a start-up as short as
	// can be.
	Waiting func()
	// ProgressEvery is how often a "still waiting" line is logged; 0 means
	// DefaultProgressEvery.
	ProgressEvery time.Duration
	// Execve replaces the process; nil means syscall.Exec with every
	// signal at its default action and none blocked. It must call last
	// just before the exec and not exec if last fails, telling it whether
	// it has set the stop signals to their default action already.
	Execve func(path string, argv, env []string, last func(defaulted bool) error) error
	// Start starts a supervised command; nil means cmd.Start with every
	// signal at its default action and none blocked. A test can widen
	// the moment before the start with it.
	Start func(cmd *exec.Cmd) error
}

// StopSignals are the signals that end a wait: those that ask a process to
// stop. The caller must route them to Signals (which also makes them reach
// us as PID 1); others it routes there, for forwarding to a supervised
// command, are dropped with a log line until the command runs: held back,
// they would reach the command in its first microseconds, before it has
// set up its handlers, and a harmless SIGUSR1 would kill it.
func StopSignals() []os.Signal {
	return []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT}
}

func isStop(s os.Signal) bool { return slices.Contains(StopSignals(), s) }

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
	if g.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.Timeout)
		defer cancel()
	}
	ctx, unwatch := g.watchSignals(ctx)
	defer unwatch()
	// Kept-alive connections to the proxy are of no use once the wait is
	// over, and a supervised command may run for hours.
	defer closeProbes(g.Probes)
	w := &waiting{g: g, ctx: ctx, pacer: g.pacer(), start: time.Now(),
		pending: slices.Clone(g.Probes), last: make([]error, len(g.Probes))}
	w.lastProgress = w.start
	// Said before the first attempt, which may hang until its timeout:
	// the log must tell what is being waited for from the start.
	log.Info("waiting for proxy", zap.Strings("probes", specs(w.pending)),
		zap.Duration("timeout", g.Timeout), zap.Duration("attempt_timeout", g.attemptTimeout()))
	// backoff's loop pauses as the pacer says and stops once ctx ends (the
	// pacer itself never gives up), so an error means ctx ended.
	if err := backoff.RetryNotify(w.attempt, backoff.WithContext(w.pacer, ctx), w.notify); err != nil {
		return w.ended()
	}
	// A stop signal taken while the last attempt passed still stops us:
	// the command must not start after it.
	if err := unwatch(); err != nil {
		return err
	}
	log.Info("proxy ready", zap.Int("attempts", w.attempts), zap.Duration("elapsed", time.Since(w.start)))
	return nil
}

// waiting is the state of one wait, between the attempts that backoff's
// retry loop makes.
type waiting struct {
	g            *Gate
	ctx          context.Context
	pacer        *Pacer
	start        time.Time
	lastProgress time.Time
	attempts     int
	pending      []probe.Probe // not ready yet
	last         []error       // the last outcome of each pending probe
	cut          []error       // the outcomes of an attempt that ctx cut short
}

// errPending makes backoff retry and errEnded makes it stop; what the
// probes said is in waiting.
var errPending, errEnded = errors.New("probes pending"), errors.New("wait ended")

// attempt checks the pending probes once, and tells the pacer how it went.
func (w *waiting) attempt() error {
	w.attempts++
	began := time.Now()
	errs := w.g.attempt(w.ctx, w.pending)
	if expired(w.ctx) {
		w.cut = errs
		return backoff.Permanent(errEnded)
	}
	w.pacer.Observe(observe(errs, time.Since(began)))
	w.pending, w.last = keepFailed(w.pending, errs)
	if len(w.pending) > 0 {
		return errPending
	}
	return nil
}

// notify logs an attempt that was not ready, before the pause.
func (w *waiting) notify(_ error, pause time.Duration) {
	if w.attempts == 1 && w.g.Waiting != nil {
		w.g.Waiting()
	}
	log := w.g.log()
	if log.Core().Enabled(zapcore.DebugLevel) {
		for i, p := range w.pending {
			log.Debug("proxy not ready", zap.String("probe", p.String()), zap.Int("attempt", w.attempts),
				zap.NamedError("error", w.last[i]), zap.Duration("retry_in", pause))
		}
	}
	if now := time.Now(); now.Sub(w.lastProgress) >= w.g.progressEvery() {
		w.lastProgress = now
		log.Info("still waiting", zap.Duration("elapsed", now.Sub(w.start)), zap.Int("attempts", w.attempts),
			zap.Object("not_ready", probeErrors{w.pending, w.last}))
	}
}

func closeProbes(ps []probe.Probe) {
	for _, p := range ps {
		if c, ok := p.(io.Closer); ok {
			_ = c.Close()
		}
	}
}

// Observation is what one attempt tells a Pacer.
type Observation struct {
	// Refused is set when every probe's connection was refused: nothing
	// listens yet, and an attempt costs the proxy nothing.
	Refused bool
	// Took is how long the attempt took: with an answer, about how long
	// the proxy worked on it.
	Took time.Duration
}

func observe(errs []error, took time.Duration) Observation {
	refused := true
	for _, err := range errs {
		refused = refused && err != nil && errors.Is(err, syscall.ECONNREFUSED)
	}
	return Observation{Refused: refused, Took: took}
}

// watchSignals ends ctx when a signal that stops the wait arrives, with
// that signal's error as the cause, and drops any other signal. unwatch
// ends the watch and returns the error of a stop signal that arrived, if
// one did; signals after it stay in the channel.
func (g *Gate) watchSignals(ctx context.Context) (_ context.Context, unwatch func() error) {
	ctx, cancel := context.WithCancelCause(ctx)
	if g.Signals == nil {
		return ctx, func() error { cancel(nil); return nil }
	}
	// take deals with one signal: a stop signal ends the wait, and the
	// others are dropped.
	take := func(s os.Signal) (stop bool) {
		if isStop(s) {
			cancel(signalExit(s))
			return true
		}
		g.dropSignal(s)
		return false
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case s := <-g.Signals:
				if take(s) {
					return
				}
			case <-quit:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	var once sync.Once
	return ctx, func() error {
		once.Do(func() {
			close(quit)
			<-done
			// What came in before the watch ended counts, even if the
			// watcher had not taken it yet.
		drain:
			for ctx.Err() == nil {
				select {
				case s := <-g.Signals:
					take(s)
				default:
					break drain
				}
			}
		})
		err := signalCause(ctx)
		cancel(nil)
		return err
	}
}

// dropSignal logs a signal that arrived before the command runs and does
// not stop it.
func (g *Gate) dropSignal(s os.Signal) {
	g.log().Info("dropping signal: the command is not running yet", zap.String("signal", sigName(s)))
}

// sigName names a signal as "SIGUSR1".
func sigName(s os.Signal) string {
	if sig, ok := s.(syscall.Signal); ok {
		return signalName(sig)
	}
	return s.String()
}

// signalCause returns the error of the stop signal that ended ctx, if any.
func signalCause(ctx context.Context) error {
	var ee *ExitError
	if errors.As(context.Cause(ctx), &ee) {
		return ee
	}
	return nil
}

// attempt checks the pending probes, each within the attempt timeout; a
// lone probe in this goroutine, more at the same time.
func (g *Gate) attempt(ctx context.Context, pending []probe.Probe) []error {
	actx, cancel := context.WithTimeout(ctx, g.attemptTimeout())
	defer cancel()
	errs := make([]error, len(pending))
	if len(pending) == 1 {
		errs[0] = pending[0].Check(actx)
	} else {
		var wg sync.WaitGroup
		for i, p := range pending {
			wg.Go(func() { errs[i] = p.Check(actx) })
		}
		wg.Wait()
	}
	for i, err := range errs {
		// Name an attempt cut by its own timeout for what it is; one cut
		// by the overall deadline is reported by the caller. Only a probe
		// that ran out of time: the others keep their own outcome (an
		// answer, a refused connection), whatever the slowest one did.
		if err != nil && isTimeout(err) && expired(actx) && !expired(ctx) {
			errs[i] = fmt.Errorf("no answer within the attempt timeout (%s)", g.attemptTimeout())
		}
	}
	return errs
}

// expired reports whether ctx has ended or its deadline has passed. The
// dialer and the connection take the deadline from ctx and may fire just
// before ctx's own timer marks it done: an error cut by the deadline must
// be taken for what it is even then.
func expired(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
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

// ended builds the error for a wait whose context ended: by a stop signal,
// by the deadline, or by the caller.
func (w *waiting) ended() error {
	if err := signalCause(w.ctx); err != nil {
		return err
	}
	if err := w.ctx.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("wait cancelled: %w", err)
	}
	// The deadline passed (its timer may not have marked ctx yet).
	te := &TimeoutError{Elapsed: time.Since(w.start), Attempts: w.attempts}
	for i, p := range w.pending {
		err := w.last[i]
		if w.cut != nil {
			// An attempt cut short by the deadline covered exactly the
			// probes still pending; its outcomes only stand in for
			// probes that had no earlier one.
			switch {
			case w.cut[i] == nil:
				continue
			case err != nil:
			case isTimeout(w.cut[i]):
				err = errors.New("no answer before the timeout")
			default:
				err = w.cut[i]
			}
		}
		te.NotReady = append(te.NotReady, ProbeError{Probe: p.String(), Err: err})
	}
	return &ExitError{Code: ExitNotReady, Err: te}
}

// isTimeout reports an error that only says time ran out.
func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &t) && t.Timeout()
}

// SignalExit is the error for stop signal s: exit 128+N.
func SignalExit(s os.Signal) error { return signalExit(s) }

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

func (g *Gate) pacer() *Pacer {
	if g.Pacer == nil {
		return NewPacer()
	}
	return g.Pacer()
}

func (g *Gate) attemptTimeout() time.Duration {
	return orDefault(g.AttemptTimeout, DefaultAttemptTimeout)
}

func (g *Gate) progressEvery() time.Duration { return orDefault(g.ProgressEvery, DefaultProgressEvery) }

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

// Check makes one attempt of every probe, without retries. It returns nil
// when all are ready, an *ExitError with code 1 naming those that are not,
// or 128+N when signal N arrives first.
func (g *Gate) Check(ctx context.Context) error {
	ctx, unwatch := g.watchSignals(ctx)
	defer unwatch()
	errs := g.attempt(ctx, g.Probes)
	if err := unwatch(); err != nil {
		return err
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

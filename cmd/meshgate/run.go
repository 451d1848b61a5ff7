package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/meshgate/meshgate/gate"
	"github.com/meshgate/meshgate/probe"
)

// process is what main hands run of the process itself. Its signals: main
// connects C to os/signal for the signals that stop a wait, and Notify adds
// more (those forwarded to a supervised command); tests use a plain
// channel. And its runtime, which Waiting sets up for a long wait.
type process struct {
	C      chan os.Signal
	Notify func(...os.Signal) // nil: nothing more can be asked for
	// Stop ends the delivery of signals to C, once all caught so far are
	// in it (signal.Stop); nil does nothing.
	Stop func()
	// Settle returns once all signals caught so far are in C, without
	// stopping the delivery; nil does nothing.
	Settle func()
	// Caught is closed once the stop signals are routed to C; run waits
	// for it before its first log line. Nil: they are.
	Caught <-chan struct{}
	// Waiting is called once, when the first attempt finds the proxy not
	// ready (gate.Gate.Waiting); nil does nothing.
	Waiting func()
}

// run is meshgate from the command line to the exit code. In wrap mode it
// does not return when the command starts: the command takes its place.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer, proc process) int {
	cfg, err := parse(args, environ)
	if errors.Is(err, pflag.ErrHelp) {
		fmt.Fprint(stdout, usage(cfg.mode))
		return gate.ExitOK
	}
	if err != nil {
		usageError(args, environ, stderr, err)
		return gate.ExitCode(err)
	}
	switch cfg.mode {
	case "version":
		fmt.Fprintf(stdout, "meshgate %s\n", version)
		return gate.ExitOK
	case "help":
		fmt.Fprint(stdout, usage(cfg.helpTopic))
		return gate.ExitOK
	}
	log := newLogger(cfg, stderr)
	if proc.Caught != nil {
		<-proc.Caught // whatever the log says has begun, a stop signal stops
	}
	// net/http reports a few oddities of a server (an answer nobody asked
	// for) through the standard logger: they belong in our log.
	defer zap.RedirectStdLog(log)()
	for _, name := range cfg.unknownEnv {
		log.Warn("ignoring unknown variable", zap.String("variable", name))
	}
	for _, name := range cfg.overridden {
		log.Warn("ignoring variable: the command line's --preset wins", zap.String("variable", name))
	}
	err = runMode(ctx, cfg, environ, log, proc)
	code := gate.ExitCode(err)
	if err != nil {
		log.Error("exiting", zap.Int("code", code), zap.Error(err))
	}
	_ = log.Sync()
	return code
}

// usageError reports a command line or environment that did not parse. A
// JSON-only log pipeline must not drop it: it is one JSON line when JSON
// logs were asked for, or when no format was and stderr is not a terminal
// (a container's log); a person at a terminal reads plain text.
func usageError(args, environ []string, stderr io.Writer, err error) {
	format := askedFormat(args, environ)
	if format == "json" || format != "console" && !isTerminal(stderr) {
		log := newLogger(config{logFormat: "json", logLevel: "info"}, stderr)
		log.Error("exiting", zap.Int("code", gate.ExitCode(err)), zap.Error(err))
		_ = log.Sync()
		return
	}
	fmt.Fprintf(stderr, "meshgate: %v\n", err)
}

// askedFormat finds the log format asked for, the way parse would, from a
// command line or an environment that may not parse: the last
// --log-format before --, else MESHGATE_LOG_FORMAT.
func askedFormat(args, environ []string) string {
	format := ""
	for i := 0; i < len(args) && args[i] != "--"; i++ {
		if v, ok := strings.CutPrefix(args[i], "--log-format="); ok {
			format = v
		} else if args[i] == "--log-format" && i+1 < len(args) {
			format = args[i+1]
			i++
		}
	}
	if format != "" {
		return format
	}
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, envName("log-format")+"="); ok && v != "" {
			format = v
		}
	}
	return format
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	var t syscall.Termios
	_, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return e == 0
}

// runMode builds the components from cfg and does what its mode asks.
func runMode(ctx context.Context, cfg config, environ []string, log *zap.Logger, proc process) error {
	g := newGate(cfg, log, proc)
	switch cfg.mode {
	case "install":
		ctx, stop := stopOnSignal(ctx, proc.C, nil)
		defer stop()
		_, err := (&gate.Installer{Log: log, Argv0: os.Args[0], Environ: environ}).Install(ctx, cfg.installDest)
		return err
	case "quit":
		ctx, stop := stopOnSignal(ctx, proc.C, nil)
		defer stop()
		err := newQuitter(cfg, log).Quit(ctx)
		if cause := context.Cause(ctx); cause != nil && gate.ExitCode(cause) > gate.ExitSignalBase {
			return cause
		}
		return err
	case "check":
		if cfg.disabled {
			log.Info("check disabled; reporting ready")
			return nil
		}
		return g.Check(ctx)
	case "wait":
		return wait(ctx, cfg, g, log)
	}
	if cfg.supervise {
		return supervise(ctx, cfg, g, newQuitter(cfg, log), environ, log, proc)
	}
	// A command that cannot start fails now, not after a long wait.
	if _, err := gate.Resolve(cfg.command[0], environ); err != nil {
		return err
	}
	if err := wait(ctx, cfg, g, log); err != nil {
		return err
	}
	return g.Exec(cfg.command, environ)
}

func newGate(cfg config, log *zap.Logger, proc process) *gate.Gate {
	return &gate.Gate{
		Probes:         cfg.probes,
		Timeout:        cfg.timeout,
		AttemptTimeout: cfg.attemptTimeout,
		Pacer: func() *gate.Pacer {
			return &gate.Pacer{Refused: cfg.pollRefused, RefusedMax: cfg.pollRefusedMax, Min: cfg.pollMin,
				Max: cfg.pollMax, Share: cfg.pollShare, Jitter: cfg.pollJitter}
		},
		Signals: proc.C,
		Release: proc.Stop,
		Settle:  proc.Settle,
		Waiting: proc.Waiting,
		Log:     log,
	}
}

func newQuitter(cfg config, log *zap.Logger) *gate.Quitter {
	return &gate.Quitter{URLs: cfg.quitURLs, Limit: cfg.quitTimeout, Log: log,
		Options: probe.Options{InsecureSkipVerify: cfg.insecure, UserAgent: "meshgate/" + version}}
}

// wait waits unless disabled; with --on-timeout=start a timeout is only
// a warning.
func wait(ctx context.Context, cfg config, g *gate.Gate, log *zap.Logger) error {
	if cfg.disabled {
		log.Info("wait disabled; not waiting for the proxy")
		return nil
	}
	err := g.Wait(ctx)
	if errors.Is(err, gate.ErrNotReady) && cfg.onTimeout == "start" {
		log.Warn("proxy not ready; going on as --on-timeout=start asks", zap.Error(err))
		return nil
	}
	return err
}

// supervise waits, runs the command as a child, and then tells the proxy
// to quit: also when the command could not start or the proxy never became
// ready, so that a broken Job does not leave its pod running for ever. A
// signal during the wait means the pod is stopping, and the kubelet stops
// the proxy itself: no quit then.
func supervise(ctx context.Context, cfg config, g *gate.Gate, q *gate.Quitter, environ []string, log *zap.Logger, proc process) error {
	// Not with an empty list: Notify with no signals asks for all of
	// them. The stop signals are routed already, and always forwarded.
	if proc.Notify != nil && len(cfg.forward) > 0 {
		proc.Notify(cfg.forward...)
	}
	_, err := gate.Resolve(cfg.command[0], environ)
	if err == nil {
		err = wait(ctx, cfg, g, log)
		var se *gate.SignalError
		if errors.As(err, &se) {
			return err
		}
		if err == nil {
			err = g.Supervise(cfg.command, environ)
		}
	}
	if cfg.quitOn == "success" && err != nil {
		log.Info("not telling the proxy to quit: the run failed and --quit-on=success",
			zap.Int("code", gate.ExitCode(err)))
		return err
	}
	// The pod may be stopping while we quit: a stop signal now leaves
	// the quit at most a second more, and the command's status stands.
	qctx, stop := stopOnSignal(ctx, proc.C, func(cancel context.CancelCauseFunc, s os.Signal) {
		log.Info("stop signal during the quit; giving it at most 1s more", zap.Stringer("signal", s))
		time.AfterFunc(quitGrace, func() { cancel(nil) })
	})
	defer stop()
	if qerr := q.Quit(qctx); qerr != nil && err == nil {
		// The command's status stays the result; each failed endpoint
		// was logged with advice.
		log.Warn("the proxy may keep the pod running", zap.Error(qerr))
	}
	return err
}

// quitGrace is what is left of a quit once a stop signal came.
const quitGrace = time.Second

// stopOnSignal returns a ctx that a stop signal from c ends, with the
// signal's exit as its cause; onStop, if not nil, decides instead what a
// stop signal does. Other signals are dropped. stop ends the watch.
func stopOnSignal(ctx context.Context, c <-chan os.Signal, onStop func(context.CancelCauseFunc, os.Signal)) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	if c == nil {
		return ctx, func() { cancel(nil) }
	}
	stop := func(s os.Signal) {
		if onStop != nil {
			onStop(cancel, s)
		} else {
			cancel(gate.SignalExit(s))
		}
	}
	// A stop signal that came before the watch ends ctx before any work
	// starts, not whenever the watcher gets to run.
	for pending := true; pending; {
		select {
		case s := <-c:
			if isStop(s) {
				stop(s)
				return ctx, func() { cancel(nil) }
			}
		default:
			pending = false
		}
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case s := <-c:
				if !isStop(s) {
					continue
				}
				stop(s)
				return
			case <-quit:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return ctx, func() { close(quit); <-done; cancel(nil) }
}

func isStop(s os.Signal) bool {
	for _, stop := range gate.StopSignals() {
		if s == stop {
			return true
		}
	}
	return false
}

// newLogger builds the one logger of the process, on stderr: stdout belongs
// to the command.
func newLogger(cfg config, stderr io.Writer) *zap.Logger {
	level, _ := zapcore.ParseLevel(cfg.logLevel) // checked by validate
	var enc zapcore.Encoder
	if cfg.logFormat == "console" {
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		ec := zap.NewProductionEncoderConfig()
		// In UTC: a local time stamp would read /etc/localtime and parse
		// it before the first line, in the way of the first attempt.
		ec.EncodeTime = func(t time.Time, enc zapcore.PrimitiveArrayEncoder) {
			enc.AppendString(t.UTC().Format(time.RFC3339Nano))
		}
		ec.EncodeDuration = zapcore.StringDurationEncoder
		enc = zapcore.NewJSONEncoder(ec)
	}
	// Each line goes to stderr in one write, so there is nothing to flush;
	// syncing a file there would fsync it before the command starts.
	core := zapcore.NewCore(enc, zapcore.AddSync(struct{ io.Writer }{stderr}), level)
	return zap.New(core).Named("meshgate")
}

package gate

import (
	"errors"
	"fmt"
	"syscall"
)

// Exit codes. They follow the shell and tini where those have one, and
// sysexits(3) for "not ready", as linkerd-await does.
const (
	ExitOK            = 0
	ExitFailure       = 1   // anything not listed here
	ExitUsage         = 2   // bad flags, environment or arguments
	ExitNotReady      = 69  // EX_UNAVAILABLE: the proxy was not ready in time
	ExitNotExecutable = 126 // the command was found but cannot be executed
	ExitNotFound      = 127 // the command was not found
	ExitSignalBase    = 128 // plus N: signal N ended the wait or the command
)

// ExitError carries the exit code that an error should end the process
// with. It is the only place a code is attached to an error.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode maps an error to the process exit code: 0 for nil, the code of
// the first ExitError in its chain, and 1 for anything else.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return ExitFailure
}

// Usage marks err as a usage error (exit 2).
func Usage(err error) error { return &ExitError{Code: ExitUsage, Err: err} }

// Usagef formats a usage error.
func Usagef(format string, a ...any) error { return Usage(fmt.Errorf(format, a...)) }

// SignalError reports that a signal ended the wait.
type SignalError struct {
	Signal syscall.Signal
}

func (e *SignalError) Error() string {
	return fmt.Sprintf("received %s while waiting", signalName(e.Signal))
}

// signalName gives the conventional upper-case name, as in "SIGTERM".
func signalName(s syscall.Signal) string {
	if name, ok := signalNames[s]; ok {
		return name
	}
	return fmt.Sprintf("signal %d (%s)", int(s), s)
}

var signalNames = map[syscall.Signal]string{
	syscall.SIGHUP: "SIGHUP", syscall.SIGINT: "SIGINT", syscall.SIGQUIT: "SIGQUIT", syscall.SIGILL: "SIGILL",
	syscall.SIGTRAP: "SIGTRAP", syscall.SIGABRT: "SIGABRT", syscall.SIGBUS: "SIGBUS", syscall.SIGFPE: "SIGFPE",
	syscall.SIGKILL: "SIGKILL", syscall.SIGUSR1: "SIGUSR1", syscall.SIGSEGV: "SIGSEGV", syscall.SIGUSR2: "SIGUSR2",
	syscall.SIGPIPE: "SIGPIPE", syscall.SIGALRM: "SIGALRM", syscall.SIGTERM: "SIGTERM", syscall.SIGCHLD: "SIGCHLD",
	syscall.SIGCONT: "SIGCONT", syscall.SIGSTOP: "SIGSTOP", syscall.SIGTSTP: "SIGTSTP", syscall.SIGTTIN: "SIGTTIN",
	syscall.SIGTTOU: "SIGTTOU", syscall.SIGURG: "SIGURG", syscall.SIGXCPU: "SIGXCPU", syscall.SIGXFSZ: "SIGXFSZ",
	syscall.SIGVTALRM: "SIGVTALRM", syscall.SIGPROF: "SIGPROF", syscall.SIGWINCH: "SIGWINCH", syscall.SIGIO: "SIGIO",
	syscall.SIGPWR: "SIGPWR", syscall.SIGSYS: "SIGSYS",
}

// ErrNotReady is matched by errors.Is for a wait that ran out of time.
var ErrNotReady = errors.New("proxy not ready")

package gate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"unsafe"

	"go.uber.org/zap"
)

// DefaultPath is searched when the environment has no PATH, as execvp and
// container runtimes do.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// program checks that argv names a command and finds it on env's PATH,
// as Exec and Supervise both must before they start it.
func program(argv, env []string) (string, error) {
	if len(argv) == 0 {
		return "", Usagef("empty command")
	}
	return Resolve(argv[0], env)
}

// Exec replaces the process with argv, looked up on env's PATH, with env as
// its environment. It returns only on failure: code 127 when the command is
// not found, 126 when it cannot be executed, 128+N when signal N arrived
// before the exec.
func (g *Gate) Exec(argv, env []string) error {
	path, err := program(argv, env)
	if err != nil {
		return err
	}
	// The log line goes first, however long stderr takes to take it: a
	// signal that arrives meanwhile is caught into Signals, and the last
	// look below finds it. Nothing that can block comes after that look.
	log := g.log()
	log.Info("exec", zap.String("path", path), zap.Strings("argv", argv))
	_ = log.Sync() // deferred calls do not run after exec; EINVAL on pipes is fine
	execve := g.Execve
	if execve == nil {
		execve = execClean
	}
	if err := execve(path, argv, env, g.lastLook); err != nil {
		var ee *ExitError
		if errors.As(err, &ee) {
			return err // a signal came: the command does not start
		}
		return execError(path, err)
	}
	return nil
}

// lastLook hands the stop signals back to their default action and then
// takes any signal caught before that: a stop signal means the command
// must not start; others are dropped, as during the wait.
//
// Why a hand-off and not a blocked mask. An init such as tini blocks the
// signals it handles with sigprocmask, so that they wait in the kernel
// until it asks for them, and each child unblocks them between fork and
// exec. A Go process cannot do that: the runtime catches signals on any
// of its threads, and blocking them on the exec'ing thread only sends
// them to another, where they are caught into a queue that execve then
// discards. Blocking them across execve would also start the command
// with them blocked, which it must not be. So the gate stops catching
// them instead: after Release (signal.Stop, which returns only once every
// signal caught so far has reached the channel), a stop signal is no
// longer caught and lost but takes its default action and ends the
// process before the command runs, as it would end the command a moment
// later. What Release leaves in the channel is taken here.
//
// When the kernel's default action is set already (defaulted: execClean
// does it unless we are PID 1), no stop signal is caught any more, and
// those caught before only need to reach the channel: Settle is enough.
// signal.Stop would cost a round trip to the runtime's signal thread per
// signal, over half a millisecond here, in the way of the command's start.
func (g *Gate) lastLook(defaulted bool) error {
	if defaulted {
		call(g.Settle)
	} else {
		call(g.Release)
	}
	for {
		select {
		case s := <-g.Signals:
			if isStop(s) {
				return signalExit(s)
			}
			g.dropSignal(s)
		default:
			return nil
		}
	}
}

// execClean calls execve with every signal at its default action and none
// blocked. That is a choice, not what the command would have got without
// us: whoever started us may have blocked or ignored signals (nohup
// ignores SIGHUP; a parent that blocks signals for itself may leave them
// blocked in us), and both survive exec.
// We do not hand those on, because an app that ignores or blocks SIGTERM
// without knowing it never hears the kubelet ask it to stop, and dies by
// SIGKILL at the end of the grace period; and because the Go runtime has
// already replaced most inherited dispositions with its own handlers
// (which exec resets to the default), so the rest could not be handed on
// faithfully anyway. One rule, all at the default, is what tini gives its
// child too. last is called just before execve; if it fails, nothing is
// exec'd.
func execClean(path string, argv, env []string, last func(defaulted bool) error) error {
	// If exec fails the thread keeps its empty mask, which is what the
	// runtime wants of its threads anyway.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := clearSignalMask(); err != nil {
		return err
	}
	defaulted := os.Getpid() != 1
	if defaulted {
		// From here on a stop signal ends the process by the kernel's
		// own default action, with the status that says so, before or
		// during execve. As PID 1 the kernel drops a signal that is not
		// caught, so there the Go runtime keeps it, and once it is no
		// longer asked to deliver it, it exits.
		defaultStopSignals()
	}
	if err := last(defaulted); err != nil {
		return err
	}
	// After last: releasing the signals gives back those our parent
	// ignored (SIGHUP and SIGINT under nohup) to their ignored state.
	ignored := unignoreSignals()
	err := syscall.Exec(path, argv, env)
	reignoreSignals(ignored)
	return err
}

// defaultStopSignals sets the stop signals to their default action.
func defaultStopSignals() {
	for _, s := range StopSignals() {
		var dfl kernelSigaction
		syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(s.(syscall.Signal)), uintptr(unsafe.Pointer(&dfl)), 0, 8, 0, 0)
	}
}

// kernelSigaction is the kernel's struct sigaction on Linux.
type kernelSigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

const sigIgn = 1 // SIG_IGN; SIG_DFL is 0

// unignoreSignals sets every ignored signal to its default action, and
// returns them. The Go runtime installs its handler on nearly every signal
// at start, an inherited SIG_IGN included (a Go binary started with
// signals 40 and 50 ignored catches both), and execve resets a caught
// signal to its default. It keeps an inherited SIG_IGN for SIGHUP and
// SIGINT alone (so that nohup works), and never touches 32 and 33, which
// the C library reserves: those, and any signal ignored since, would stay
// ignored across execve.
func unignoreSignals() []syscall.Signal {
	var ignored []syscall.Signal
	for sig := syscall.Signal(1); sig <= 64; sig++ {
		if sig == syscall.SIGKILL || sig == syscall.SIGSTOP {
			continue
		}
		var old kernelSigaction
		if _, _, e := syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig), 0,
			uintptr(unsafe.Pointer(&old)), 8, 0, 0); e != 0 || old.handler != sigIgn {
			continue
		}
		var dfl kernelSigaction
		if _, _, e := syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig),
			uintptr(unsafe.Pointer(&dfl)), 0, 8, 0, 0); e == 0 {
			ignored = append(ignored, sig)
		}
	}
	return ignored
}

// reignoreSignals undoes unignoreSignals.
func reignoreSignals(sigs []syscall.Signal) {
	for _, sig := range sigs {
		act := kernelSigaction{handler: sigIgn}
		syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0)
	}
}

// clearSignalMask unblocks every signal on the calling thread, which the
// caller has locked. Both execve and fork hand this thread's mask on.
func clearSignalMask() error {
	var empty [2]uint32 // a 64-bit sigset_t
	const sigSetMask = 2
	if _, _, e := syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, sigSetMask,
		uintptr(unsafe.Pointer(&empty)), 0, unsafe.Sizeof(empty), 0, 0); e != 0 {
		return fmt.Errorf("clear signal mask: %w", e)
	}
	return nil
}

// execError maps a failed execve to an exit code: ENOENT after the file
// was found means its interpreter or dynamic loader is missing (127, as sh
// reports it), anything else means it cannot be executed (126).
func execError(path string, err error) error {
	if errors.Is(err, syscall.ENOENT) {
		if _, serr := os.Stat(path); errors.Is(serr, fs.ErrNotExist) {
			return &ExitError{Code: ExitNotFound, Err: fmt.Errorf("exec %s: %w (it vanished after it was found)", path, err)}
		}
		return &ExitError{Code: ExitNotFound, Err: fmt.Errorf("exec %s: %w (a missing interpreter or dynamic loader?)", path, err)}
	}
	return &ExitError{Code: ExitNotExecutable, Err: fmt.Errorf("exec %s: %w", path, err)}
}

// Resolve finds the command name on the PATH of env, as Exec will; the
// caller can use it to fail at once, before a long wait, on a command that
// will never start.
func Resolve(name string, env []string) (string, error) {
	if name == "" {
		return "", Usagef("empty command")
	}
	return LookPath(name, pathOf(env))
}

func pathOf(env []string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], "PATH="); ok {
			return v
		}
	}
	return DefaultPath
}

// LookPath finds the executable file for name the way a shell would: a name
// with a slash is used as it is, any other is searched in the directories
// of path. Relative directories in path are skipped, so that the current
// directory never supplies the command by accident. The error is an
// *ExitError with code 127 (not found) or 126 (found, not executable).
func LookPath(name, path string) (string, error) {
	if strings.Contains(name, "/") {
		if err := checkExecutable(name); err != nil {
			return "", err
		}
		return name, nil
	}
	var found error // the first file that exists but cannot be run
	for _, dir := range filepath.SplitList(path) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		err := checkExecutable(p)
		if err == nil {
			return p, nil
		}
		if ExitCode(err) == ExitNotExecutable && found == nil {
			found = err
		}
	}
	if found != nil {
		return "", found
	}
	return "", &ExitError{Code: ExitNotFound, Err: fmt.Errorf("command %q not found in PATH %q", name, path)}
}

func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
		return &ExitError{Code: ExitNotFound, Err: fmt.Errorf("command %q not found", p)}
	case err != nil:
		return &ExitError{Code: ExitNotExecutable, Err: fmt.Errorf("command %q: %w", p, unwrapPathError(err))}
	case fi.IsDir():
		return &ExitError{Code: ExitNotExecutable, Err: fmt.Errorf("command %q is a directory", p)}
	case !fi.Mode().IsRegular():
		return &ExitError{Code: ExitNotExecutable, Err: fmt.Errorf("command %q is not a regular file", p)}
	}
	// Ask the kernel rather than reading mode bits: it knows our UID, our
	// groups and noexec mounts.
	if err := syscall.Access(p, 0x1 /* X_OK */); err != nil {
		return &ExitError{Code: ExitNotExecutable, Err: fmt.Errorf("command %q is not executable: %w", p, err)}
	}
	return nil
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// call calls f unless it is nil.
func call(f func()) {
	if f != nil {
		f()
	}
}

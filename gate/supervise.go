package gate

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"go.uber.org/zap"
)

// Supervise runs argv as a child instead of replacing the process, for
// when something must happen after the command ends (telling the proxy to
// quit). It does what an init does: signals that arrive once the child
// runs are forwarded to it (the caller chooses which by what it routes to
// Signals), every zombie is reaped, and the child's status becomes the
// result: nil for 0, else an *ExitError with the child's code, or 128+N
// when signal N killed it. The command's stdio is the process's own.
func (g *Gate) Supervise(argv, env []string) error {
	path, err := program(argv, env)
	if err != nil {
		return err
	}
	log := g.log()
	if os.Getpid() != 1 {
		// Orphans of the command come to us, not to an init that may
		// never reap them, as they would if we were PID 1.
		if err := setChildSubreaper(); err != nil {
			log.Warn("cannot become a child subreaper; orphans go to init", zap.Error(err))
		}
	}
	cmd, foreground := childCommand(path, argv, env)
	// The last look at the signals comes after every log line of the
	// wait: a stop signal that came since means the pod is stopping, and
	// the command must not start (exit 128+N); another is dropped, as
	// during the wait. From here to the start nothing can block; a signal
	// that comes in that moment is forwarded to the command just started.
	if err := g.lastLookSupervised(); err != nil {
		return err
	}
	start := g.Start
	if start == nil {
		start = startClean
	}
	if err := start(cmd); err != nil {
		return execError(path, unwrapPathError(err))
	}
	if foreground {
		defer takeTerminalBack()
	}
	child := cmd.Process.Pid
	log.Info("started", zap.Int("pid", child), zap.String("path", path), zap.Strings("argv", argv))
	exited := make(chan syscall.WaitStatus, 1)
	go reap(child, exited, log)
	for {
		select {
		case ws := <-exited:
			return childExit(ws, log)
		case s := <-g.Signals:
			forward(cmd.Process, s, log)
		}
	}
}

// childCommand makes the command to supervise, and tells whether it gets
// the terminal's foreground.
func childCommand(path string, argv, env []string) (cmd *exec.Cmd, foreground bool) {
	// Not exec.CommandContext: the child decides when it is done.
	cmd = exec.Command(path)
	cmd.Args, cmd.Env = argv, env
	// Files, not other readers and writers: the child gets the very
	// descriptors, and no goroutine copies its output.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// If we are killed outright, the command goes too, as it would with
	// its container: nothing is left running without its supervisor. The
	// kernel ties this to the thread that forks; the Go runtime only ends
	// a thread when a goroutine exits locked to it, which startClean
	// does not do.
	//
	// The command gets a process group of its own, as under tini: a
	// signal sent to our whole group (kill -INT -- -PGID, or Ctrl-C when
	// we lead the terminal's foreground group) then reaches the command
	// once, forwarded by us, not a second time from the group. At a
	// terminal its group becomes the foreground one, so that Ctrl-C and
	// Ctrl-Z go to it, and job control works as without us.
	attr := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	foreground = foregroundTerminal()
	if foreground {
		attr.Foreground, attr.Ctty = true, 0
	}
	cmd.SysProcAttr = attr
	return cmd, foreground
}

// lastLookSupervised takes every signal that came before now: one the
// kernel still holds for us, one a thread is handling, and those in
// Signals. The signals stay routed to Signals, for forwarding once the
// command runs; Settle (signal delivery idle) stands in for the hand-off
// that Exec can make.
func (g *Gate) lastLookSupervised() error {
	pending := kernelPendingStop()
	// A thread that took a signal from the kernel before that look runs
	// the handler at once, unless the machine is busy and it waits for a
	// processor between the two: it is runnable then. Once no other
	// thread of ours is, every signal taken has reached the runtime, and
	// Settle sees it into Signals.
	othersAsleep()
	call(g.Settle)
	for {
		var s os.Signal
		select {
		case s = <-g.Signals:
		default:
			if !pending {
				return nil
			}
			// The kernel had a stop signal for us that no thread had
			// taken yet: it is on its way.
			s = <-g.Signals
		}
		if isStop(s) {
			return signalExit(s)
		}
		g.dropSignal(s)
	}
}

// othersAsleep waits, for a bounded number of looks, until no thread of
// the process but the caller's is running or waiting to run.
func othersAsleep() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self := strconv.Itoa(syscall.Gettid())
	for range 2000 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return // no /proc: nothing to look at
		}
		busy := false
		for _, t := range tasks {
			if t.Name() == self {
				continue
			}
			b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/stat")
			if i := strings.LastIndexByte(string(b), ')'); err == nil && i+2 < len(b) && b[i+2] == 'R' {
				busy = true
				break
			}
		}
		if !busy {
			return
		}
		syscall.Syscall(syscall.SYS_SCHED_YIELD, 0, 0, 0)
	}
}

// kernelPendingStop reports whether a stop signal has been sent to the
// process and not yet taken by any thread. /proc/self/status lists those
// (ShdPnd) whatever the threads block; without /proc, rt_sigpending does,
// for the signals the calling thread blocks, so this thread blocks the
// stop signals while it asks.
func kernelPendingStop() bool {
	var stop uint64
	for _, s := range StopSignals() {
		stop |= 1 << (s.(syscall.Signal) - 1)
	}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "ShdPnd:"); ok {
				set, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				return err == nil && set&stop != 0
			}
		}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, set uint64
	const sigBlock, sigSetMask = 0, 2
	if _, _, e := syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, sigBlock, uintptr(unsafe.Pointer(&stop)),
		uintptr(unsafe.Pointer(&old)), 8, 0, 0); e != 0 {
		return false
	}
	_, _, e := syscall.RawSyscall(syscall.SYS_RT_SIGPENDING, uintptr(unsafe.Pointer(&set)), 8, 0)
	// Unblocked again, a stop signal pending for this thread alone is
	// taken here, by the Go runtime, into Signals.
	syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, sigSetMask, uintptr(unsafe.Pointer(&old)), 0, 8, 0, 0)
	return e == 0 && set&stop != 0
}

// foregroundTerminal reports whether stdin is our controlling terminal
// and our process group is its foreground group: only then is the
// foreground ours to hand to the command.
func foregroundTerminal() bool {
	var fg int32
	if _, _, e := syscall.RawSyscall(syscall.SYS_IOCTL, 0, syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&fg))); e != 0 {
		return false
	}
	return int(fg) == syscall.Getpgrp()
}

// takeTerminalBack makes our process group the terminal's foreground group
// again once the command has ended, so that our last log lines and the
// shell after us are not stopped by SIGTTOU. A background group may do so
// only with SIGTTOU blocked, on the thread that asks.
func takeTerminalBack() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set, old uint64 = 1 << (syscall.SIGTTOU - 1), 0
	const sigBlock, sigSetMask = 0, 2
	if _, _, e := syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, sigBlock, uintptr(unsafe.Pointer(&set)),
		uintptr(unsafe.Pointer(&old)), 8, 0, 0); e != 0 {
		return
	}
	pgrp := int32(syscall.Getpgrp())
	syscall.RawSyscall(syscall.SYS_IOCTL, 0, syscall.TIOCSPGRP, uintptr(unsafe.Pointer(&pgrp)))
	syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, sigSetMask, uintptr(unsafe.Pointer(&old)), 0, 8, 0, 0)
}

// startClean starts cmd with every signal at its default action and none
// blocked, as execClean does: the child takes the mask of the thread that
// forks it and our ignored signals. They are ignored again once the child
// is started; for that moment a signal our parent chose to ignore, which
// no one sends, would take its default action on us.
func startClean(cmd *exec.Cmd) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := clearSignalMask(); err != nil {
		return err
	}
	ignored := unignoreSignals()
	defer reignoreSignals(ignored)
	return cmd.Start()
}

func forward(p *os.Process, s os.Signal, log *zap.Logger) {
	log.Debug("forwarding signal", zap.Stringer("signal", s))
	// Through the pidfd: never to another process that took the PID.
	if err := p.Signal(s); err != nil {
		log.Debug("signal not delivered", zap.Stringer("signal", s), zap.Error(err))
	}
}

// reap waits for any child, so that orphans that were re-parented to us
// do not stay zombies, and reports the status of the command's own.
func reap(child int, exited chan<- syscall.WaitStatus, log *zap.Logger) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		switch {
		case err == syscall.EINTR:
			continue
		case err != nil:
			// ECHILD: nothing left to wait for, which cannot happen
			// before the command itself was reaped.
			log.Error("wait for children", zap.Error(err))
			exited <- syscall.WaitStatus(1 << 8)
			return
		case pid == child:
			// Orphans that died before the command are zombies too, and
			// wait4 may well have named the command first.
			reapDead(log)
			exited <- ws
			return
		}
		log.Debug("reaped orphan", zap.Int("pid", pid))
	}
}

// reapDead reaps the children that are zombies already, without waiting.
func reapDead(log *zap.Logger) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		log.Debug("reaped orphan", zap.Int("pid", pid))
	}
}

// childExit turns the command's wait status into the result.
func childExit(ws syscall.WaitStatus, log *zap.Logger) error {
	if ws.Signaled() {
		log.Info("exited", zap.Int("code", ExitSignalBase+int(ws.Signal())), zap.Stringer("signal", ws.Signal()))
		return &ExitError{Code: ExitSignalBase + int(ws.Signal()), Err: fmt.Errorf("command killed by %s", signalName(ws.Signal()))}
	}
	code := ws.ExitStatus()
	log.Info("exited", zap.Int("code", code))
	if code == 0 {
		return nil
	}
	return &ExitError{Code: code, Err: fmt.Errorf("command exited with status %d", code)}
}

// setChildSubreaper is prctl(PR_SET_CHILD_SUBREAPER, 1).
func setChildSubreaper() error {
	const prSetChildSubreaper = 36
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		return e
	}
	return nil
}

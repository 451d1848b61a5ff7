package test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/meshgate/meshgate/test/pty"
)

// The moments between the end of the wait and the command's start are
// widened here the way a slow log reader widens them: meshgate's stderr is
// a pipe that the test does not read until it has sent its signal, so
// meshgate is blocked writing a log line when the signal comes.

// blockedOnStderr waits until a thread of pid is blocked in write(2) on
// its stderr: the pipe is full. There is no event for that; /proc tells.
func blockedOnStderr(t *testing.T, pid int) {
	t.Helper()
	want := fmt.Sprintf("%d 0x2 ", syscall.SYS_WRITE)
	deadline := time.Now().Add(20 * time.Second)
	for {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/syscall", pid))
		for _, task := range tasks {
			if b, err := os.ReadFile(task); err == nil && strings.HasPrefix(string(b), want) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("meshgate (PID %d) never blocked writing to its stderr", pid)
		}
		time.Sleep(time.Millisecond) // polling /proc: a blocked write has no event
	}
}

// slowReader is meshgate's stderr as a pipe that nobody reads until
// drain is called.
type slowReader struct {
	r, w *os.File
	done chan string
}

func newSlowReader(t *testing.T) *slowReader {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return &slowReader{r: r, w: w, done: make(chan string, 1)}
}

// drain reads the pipe from now on; text returns what was read, once
// meshgate has exited and the write end is closed.
func (s *slowReader) drain(br *bufio.Reader) {
	go func() {
		b, _ := io.ReadAll(br)
		s.done <- string(b)
	}()
}

func (s *slowReader) text(t *testing.T) string {
	t.Helper()
	select {
	case out := <-s.done:
		return out
	case <-time.After(20 * time.Second):
		t.Fatal("meshgate's stderr never closed")
		return ""
	}
}

// fill writes to the pipe, through a description of its own that does not
// block, until it is full.
func (s *slowReader) fill(t *testing.T) {
	t.Helper()
	// Raw calls: an *os.File would wait in the poller, not say EAGAIN.
	fd, err := syscall.Open(fmt.Sprintf("/proc/self/fd/%d", s.w.Fd()), syscall.O_WRONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	chunk := []byte(strings.Repeat("\n", 4096)) // blank lines: not log lines
	for _, size := range []int{4096, 1} {
		for {
			if _, err := syscall.Write(fd, chunk[:size]); errors.Is(err, syscall.EAGAIN) {
				break
			} else if err != nil {
				t.Fatal(err)
			}
		}
	}
}

func jsonLines(out string) string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "{") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// A stop signal while the exec line is being written stops the command
// from starting: the line is written before the last look at the signals.
func TestStopSignalWhileTheExecLineIsWritten(t *testing.T) {
	t.Parallel()
	_, ready := emulator(t, "200")
	ran := filepath.Join(t.TempDir(), "ran")
	// An argument larger than the pipe, so that the exec line that logs
	// it blocks until the test reads.
	big := strings.Repeat("a", 100000)
	stderr := newSlowReader(t)
	cmd := exec.Command(bins.meshgate, "--probe", ready, "--", "/bin/sh", "-c", `echo RAN >"$0"`, ran, big)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "GORACE=atexit_sleep_ms=0"}
	cmd.Stderr = stderr.w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	blockedOnStderr(t, cmd.Process.Pid)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stderr.w.Close()
	stderr.drain(bufio.NewReader(stderr.r))
	// 143 either way: meshgate exits with it, or, if the kernel had not
	// handed the signal to a thread before meshgate let go of the stop
	// signals, the signal's default action ends meshgate.
	code := exitCode(t, cmd.Wait())
	out := jsonLines(stderr.text(t))
	if _, err := os.Stat(ran); err == nil || code != 143 {
		t.Errorf("exit %d, command ran: %v; want 143 and the command never started\n%s", code, err == nil, out)
	}
	if !strings.Contains(out, `"msg":"exec"`) {
		t.Errorf("no exec line: the signal did not come while it was written\n%s", out)
	}
}

// Supervising, a stop signal after the wait's last log line and before
// the command's start stops the start; the quit follows --quit-on.
func TestStopSignalBeforeTheChildStarts(t *testing.T) {
	t.Parallel()
	e, ready, quit := proxy(t, "503", "200", false)
	stderr := newSlowReader(t)
	report := filepath.Join(t.TempDir(), "report.json")
	cmd := exec.Command(bins.meshgate, "--probe", ready, "--quit-url", quit, "--timeout", "0", "--", bins.app)
	cmd.Env = []string{"APP_REPORT=" + report, "GORACE=atexit_sleep_ms=0"}
	cmd.Stderr = stderr.w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	br := bufio.NewReader(stderr.r)
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("meshgate's stderr ended before it began to wait: %v", err)
		}
		if strings.Contains(l, `"msg":"waiting for proxy"`) {
			break
		}
	}
	// From here the next line, "proxy ready", blocks.
	stderr.fill(t)
	if err := e.Set("200"); err != nil {
		t.Fatal(err)
	}
	blockedOnStderr(t, cmd.Process.Pid)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stderr.w.Close()
	stderr.drain(br)
	code := exitCode(t, cmd.Wait())
	out := jsonLines(stderr.text(t))
	if code != 143 || strings.Contains(out, `"msg":"started"`) {
		t.Errorf("exit %d; want 143 and no start\n%s", code, out)
	}
	if _, err := os.Stat(report); err == nil {
		t.Error("the app ran")
	}
	if !strings.Contains(out, `"msg":"proxy ready"`) {
		t.Errorf("no 'proxy ready': the signal came during the wait, not after it\n%s", out)
	}
	if e.Quits() != 1 {
		t.Errorf("%d quit requests, want 1: with --quit-on always the quit follows a run that never started", e.Quits())
	}
}

// An empty --forward-signals forwards the stop signals only, not every
// signal there is.
func TestSuperviseEmptyForwardList(t *testing.T) {
	t.Parallel()
	for _, list := range []string{"", ","} {
		_, ready, quit := proxy(t, "200", "200", false)
		s := startSupervised(t, bins.meshgate, []string{"--probe", ready, "--quit-url", quit, "--forward-signals", list, "--", bins.app})
		s.expect("ready")
		for _, sig := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGWINCH, syscall.SIGALRM, syscall.SIGINT} {
			_ = s.cmd.Process.Signal(sig)
		}
		s.expect("got SIGINT") // a stop signal: always forwarded
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		if code := s.wait(); code != 0 {
			t.Fatalf("--forward-signals %q: exit %d\n%s", list, code, s.stderr)
		}
		if r := s.appReport(); r == nil || !slices.Equal(r.Signals, []string{"SIGINT", "SIGTERM"}) {
			t.Errorf("--forward-signals %q: the app received %+v, want SIGINT and SIGTERM only", list, r)
		}
	}
}

// A signal sent to meshgate's whole process group reaches the command
// once: the command has a group of its own, and meshgate forwards.
func TestGroupSignalReachesTheCommandOnce(t *testing.T) {
	t.Parallel()
	_, ready, quit := proxy(t, "200", "200", false)
	s := startSupervisedAttr(t, &syscall.SysProcAttr{Setsid: true}, bins.meshgate,
		[]string{"--probe", ready, "--quit-url", quit, "--", bins.app})
	app := appPID(t, s)
	s.expect("ready")
	pgid := s.cmd.Process.Pid // a session leader leads its group
	if got := pgrpOf(t, app); got != app {
		t.Errorf("the app (PID %d) is in process group %d, want its own (meshgate's is %d)", app, got, pgid)
	}
	if err := syscall.Kill(-pgid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	s.expect("got SIGINT")
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	if code := s.wait(); code != 0 {
		t.Fatalf("exit %d\n%s", code, s.stderr)
	}
	if r := s.appReport(); r == nil || !slices.Equal(r.Signals, []string{"SIGINT", "SIGTERM"}) {
		t.Errorf("the app received %+v, want SIGINT once, then SIGTERM", r)
	}
}

// At a terminal the command's group is the foreground one: Ctrl-C reaches
// the command once, from the terminal, and not meshgate.
func TestTerminalForegroundIsTheCommands(t *testing.T) {
	t.Parallel()
	leader, follower := pty.Open(t)
	_, ready, quit := proxy(t, "200", "200", false)
	g := &gate{t: t, report: filepath.Join(t.TempDir(), "report.json"), stderr: newLogTail()}
	g.cmd = exec.Command(bins.meshgate, "--probe", ready, "--quit-url", quit, "--", bins.app)
	g.cmd.Env = []string{"APP_REPORT=" + g.report, "APP_SIGNALS=1", "GODEBUG=asyncpreemptoff=1"} // no SIGURG of its own runtime
	g.cmd.Stdin, g.cmd.Stdout, g.cmd.Stderr = follower, follower, g.stderr
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	g.spawn()
	follower.Close()
	s := readLines(g, leader, func(l string) string {
		// The terminal echoes the Ctrl-C as "^C" before what follows.
		return strings.TrimPrefix(strings.TrimRight(l, "\r"), "^C")
	})
	app := appPID(t, s)
	s.expect("ready")
	var fg int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, leader.Fd(), syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&fg))); e != 0 {
		t.Fatal(e)
	}
	if int(fg) != app {
		t.Errorf("the terminal's foreground group is %d, want the app's own (%d)", fg, app)
	}
	if _, err := leader.Write([]byte{3}); err != nil { // Ctrl-C
		t.Fatal(err)
	}
	s.expect("got SIGINT")
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	if code := s.wait(); code != 0 {
		t.Fatalf("exit %d\n%s", code, s.stderr)
	}
	if r := s.appReport(); r == nil || !slices.Equal(r.Signals, []string{"SIGINT", "SIGTERM"}) {
		t.Errorf("the app received %+v, want SIGINT once, then SIGTERM", r)
	}
}

// appPID reads the app's PID from its first line.
func appPID(t *testing.T, s *supervised) int {
	t.Helper()
	line := s.expect("app: started as PID ")
	pid, err := strconv.Atoi(strings.Fields(strings.TrimPrefix(line, "app: started as PID "))[0])
	if err != nil {
		t.Fatalf("no PID in %q", line)
	}
	return pid
}

// pgrpOf reads a process's group from /proc.
func pgrpOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ppid pgrp ...
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	pgrp, err := strconv.Atoi(f[2])
	if err != nil {
		t.Fatal(err)
	}
	return pgrp
}

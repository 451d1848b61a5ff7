package test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/meshgate/meshgate/test/sidecar"
)

// The moments between the end of the wait and the command's start are
// widened here the way a slow log reader widens them: meshgate's stderr is
// a pipe that the test does not read until it has sent its signal, so
// meshgate is blocked writing a log line when the signal comes.

// slowStart starts cmd with its stderr a pipe that nobody reads yet.
func slowStart(t *testing.T, cmd *exec.Cmd) (g *gate, stderr *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	cmd.Stderr = w
	g = startCmd(t, cmd)
	return g, r
}

// stopWhileBlocked waits until a thread of meshgate is blocked in
// write(2) on its stderr, which only /proc tells, sends SIGTERM, then
// reads what meshgate logs from br, the pipe's read end, from then on.
func stopWhileBlocked(t *testing.T, g *gate, br *bufio.Reader) (code int, logs string) {
	t.Helper()
	want := fmt.Sprintf("%d 0x2 ", syscall.SYS_WRITE)
	poll(t, "meshgate blocked writing to its stderr", func() bool {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/syscall", g.Cmd.Process.Pid))
		for _, task := range tasks {
			if b, err := os.ReadFile(task); err == nil && strings.HasPrefix(string(b), want) {
				return true
			}
		}
		return false
	})
	g.Signal(syscall.SIGTERM)
	g.Cmd.Stderr.(*os.File).Close()
	done := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(br)
		done <- string(b)
	}()
	// 143 either way: meshgate exits with it, or, if the kernel had not
	// handed the signal to a thread before meshgate let go of the stop
	// signals, the signal's default action ends meshgate.
	code = g.Wait()
	var lines []string
	for l := range strings.Lines(<-done) {
		if strings.HasPrefix(l, "{") {
			lines = append(lines, l)
		}
	}
	return code, strings.Join(lines, "")
}

// A stop signal while the exec line is being written stops the command
// from starting: the line is written before the last look at the signals.
func TestStopSignalWhileTheExecLineIsWritten(t *testing.T) {
	t.Parallel()
	_, ok, _ := ready(t)
	ran := filepath.Join(t.TempDir(), "ran")
	// An argument larger than the pipe, so that the exec line that logs
	// it blocks until the test reads.
	big := strings.Repeat("a", 100000)
	g, stderr := slowStart(t, exec.Command(bins.meshgate, "--probe", ok, "--", "/bin/sh", "-c", `echo RAN >"$0"`, ran, big))
	code, logs := stopWhileBlocked(t, g, bufio.NewReader(stderr))
	if _, err := os.Stat(ran); err == nil || code != 143 {
		t.Errorf("exit %d, command ran: %v; want 143 and the command never started\n%s", code, err == nil, logs)
	}
	if !strings.Contains(logs, `"msg":"exec"`) {
		t.Errorf("no exec line: the signal did not come while it was written\n%s", logs)
	}
}

// Supervising, a stop signal after the wait's last log line and before
// the command's start stops the start; the quit follows --quit-on.
func TestStopSignalBeforeTheChildStarts(t *testing.T) {
	t.Parallel()
	e := &sidecar.Emulator{QuitStays: true}
	ok, quit := proxy(t, e, "503")
	g, stderr := slowStart(t, exec.Command(bins.meshgate, "--probe", ok, "--quit-url", quit, "--timeout", "0", "--", bins.app))
	br := bufio.NewReader(stderr)
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
	fill(t, g.Cmd.Stderr.(*os.File))
	if err := e.Set("200"); err != nil {
		t.Fatal(err)
	}
	code, logs := stopWhileBlocked(t, g, br)
	if code != 143 || strings.Contains(logs, `"msg":"started"`) || g.appReport() != nil {
		t.Errorf("exit %d, app ran %v; want 143 and no start\n%s", code, g.appReport() != nil, logs)
	}
	if !strings.Contains(logs, `"msg":"proxy ready"`) {
		t.Errorf("no 'proxy ready': the signal came during the wait, not after it\n%s", logs)
	}
	if e.Quits() != 1 {
		t.Errorf("%d quit requests, want 1: with --quit-on always the quit follows a run that never started", e.Quits())
	}
}

// fill writes to the pipe w, through a description of its own that does
// not block, until it is full.
func fill(t *testing.T, w *os.File) {
	t.Helper()
	// Raw calls: an *os.File would wait in the poller, not say EAGAIN.
	fd, err := syscall.Open(fmt.Sprintf("/proc/self/fd/%d", w.Fd()), syscall.O_WRONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
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

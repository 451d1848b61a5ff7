package gate

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/zap"
)

// supervise runs script under /bin/sh as a supervised command, in $DIR,
// a new directory, with $READY a FIFO that the script writes to once it
// is ready for signals, and returns the directory and the result of
// Supervise; each signal in sigs is sent to c once the script is ready.
func supervise(t *testing.T, g *Gate, script string, c chan<- os.Signal, sigs ...os.Signal) (dir string, err error) {
	t.Helper()
	dir = t.TempDir()
	ready := filepath.Join(dir, "ready")
	if err := syscall.Mkfifo(ready, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- g.Supervise([]string{"/bin/sh", "-c", script}, []string{"READY=" + ready, "DIR=" + dir, "PATH=/usr/bin:/bin"})
	}()
	if len(sigs) == 0 {
		return dir, <-done
	}
	opened := make(chan struct{})
	go func() { _, _ = os.ReadFile(ready); close(opened) }() // returns once the script wrote and closed it
	select {
	case <-opened:
	case err = <-done:
		t.Fatalf("Supervise = %v before the command was ready", err)
	}
	for _, s := range sigs {
		c <- s
	}
	return dir, <-done
}

// The command's status becomes the result; a signal queued before the
// start stops it (a stop signal) or is dropped; once it runs, each signal
// is forwarded, in order. The script that traps signals spins on a
// builtin, after each of which the shell runs the traps of the signals
// it caught: waiting in a blocking call instead (open of a FIFO), a signal
// caught just before the call would wait for the call to return, for
// ever. The one that dies by the signal's default action may block.
func TestSupervise(t *testing.T) {
	tests := []struct {
		name, script string
		queued       os.Signal   // in the channel before the start
		send         []os.Signal // once the script is ready
		code         int
		want         string
	}{
		{"success", "exit 0", nil, nil, 0, ""},
		{"failure", "exit 3", nil, nil, 3, "command exited with status 3"},
		{"status 255", "exit 255", nil, nil, 255, "command exited with status 255"},
		{"killed", "kill -KILL $$", nil, nil, 137, "command killed by SIGKILL"},
		{"other signal before the start", "exit 0", syscall.SIGUSR1, nil, 0, ""},
		{"stop signal before the start", "exit 0", syscall.SIGTERM, nil, 143, "received SIGTERM while waiting"},
		{"forwarded, trapped", `trap 'n=$((n+1))' HUP; trap 'exit $((n+6))' USR1; echo >"$READY"
while :; do :; done`, nil, []os.Signal{syscall.SIGHUP, syscall.SIGUSR1}, 7, "command exited with status 7"},
		{"forwarded, default action", `echo >"$READY"; read x <"$READY"`, nil, []os.Signal{syscall.SIGTERM}, 143, "command killed by SIGTERM"},
	}
	for _, tc := range tests {
		sigs := make(chan os.Signal, 1)
		if tc.queued != nil {
			sigs <- tc.queued
		}
		log, logs := logged(zap.InfoLevel)
		_, err := supervise(t, &Gate{Signals: sigs, Log: log}, tc.script, sigs, tc.send...)
		if ExitCode(err) != tc.code || err != nil && err.Error() != tc.want {
			t.Errorf("%s: Supervise = %v (exit %d), want exit %d, %q", tc.name, err, ExitCode(err), tc.code, tc.want)
		}
		started := logs.FilterMessage("started").Len() == 1
		if exited := logs.FilterMessage("exited").All(); started && (len(exited) != 1 || exited[0].ContextMap()["code"] != int64(tc.code)) {
			t.Errorf("%s: exited lines %v, want one with code %d", tc.name, exited, tc.code)
		}
		if started != (tc.queued != syscall.SIGTERM) {
			t.Errorf("%s: started %v, want a start unless a stop signal came first", tc.name, started)
		}
	}
}

// A command that cannot start fails as a shell would say it, and nothing
// runs; the caller decides on the quit from that status.
func TestSuperviseCommandCannotStart(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "plain"), 0o644)
	for argv0, code := range map[string]int{"nope": 127, filepath.Join(dir, "plain"): 126, "": 2} {
		log, logs := logged(zap.InfoLevel)
		err := (&Gate{Log: log}).Supervise([]string{argv0}, []string{"PATH=" + dir})
		if ExitCode(err) != code || logs.FilterMessage("started").Len() != 0 {
			t.Errorf("Supervise(%q) = %v (exit %d), want exit %d and nothing started", argv0, err, ExitCode(err), code)
		}
	}
}

// An orphan of the command is re-parented to us (a child subreaper, which
// needs no privilege) and reaped, not left a zombie.
func TestSuperviseReapsOrphans(t *testing.T) {
	log, logs := logged(zap.DebugLevel)
	// The grandchild waits until its parent is gone (or its parent could
	// reap it), then exits; $(…) returns once it has closed its stdout,
	// and the loop after it lets it become a zombie, or be reaped.
	script := `g=$(sh -c '(while read -r _ _ _ pp _ </proc/self/stat && [ $pp = $$ ]; do :; done) & echo $!')
echo $g >"$DIR/pid"; while read -r _ _ s _ 2>/dev/null </proc/$g/stat && [ "$s" != Z ]; do :; done`
	dir, err := supervise(t, &Gate{Log: log}, script, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "pid"))
	pid, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	reaped := logs.FilterMessage("reaped orphan").FilterField(zap.Int64("pid", pid)).Len()
	if pid == 0 || reaped != 1 {
		t.Errorf("the grandchild %d reaped %d times, want once", pid, reaped)
	}
}

package pod

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshgate/meshgate/test/testkit"
)

// startTimeout bounds the wait for a container to be running, for Kill and
// PID; runc itself takes tens of milliseconds.
const startTimeout = 10 * time.Second

// Process is a container started by Pod.Start: its process 1, which runs
// under a foreground runc run.
type Process struct {
	Name string // the container's name in the pod
	ID   string // the runc container ID

	pod    *Pod
	log    string // runc --log, JSON lines
	stdout testkit.Output
	stderr testkit.Output

	done chan struct{} // closed once code and err are set
	code int
	err  error // runc failed, or never ran: there is no exit code
}

// Wait waits for the container to exit and returns the exit code of its
// process 1: its own status, or 128+N if it was killed by signal N. It
// fails the test if runc failed instead, e.g. could not exec the command.
func (pr *Process) Wait() int {
	pr.pod.t.Helper()
	<-pr.done
	if pr.err != nil {
		// The output is logged by the pod's cleanup, as for any failure.
		pr.pod.t.Fatalf("container %s: %v", pr.Name, pr.err)
	}
	return pr.code
}

// Done is closed when the container has exited, for tests that select on
// it with a deadline of their own.
func (pr *Process) Done() <-chan struct{} { return pr.done }

func (pr *Process) Stdout() string { return pr.stdout.String() }

func (pr *Process) Stderr() string { return pr.stderr.String() }

// Kill sends sig to the container's process 1 with runc kill, once the
// container is running. Note that process 1 of a PID namespace only
// receives the signals it has a handler for (SIGKILL aside).
func (pr *Process) Kill(sig syscall.Signal) error {
	if _, err := pr.PID(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	_, err := command(ctx, "runc", "--root", pr.pod.root, "kill", pr.ID, strconv.Itoa(int(sig)))
	return err
}

// PID waits for the container to be running and returns the host PID of
// its process 1.
func (pr *Process) PID() (int, error) {
	var st containerState
	var err error
	poll(10*time.Millisecond, func() bool {
		st, err = pr.state()
		return err == nil && st.Status == "running" || pr.ended()
	})
	switch {
	case err == nil && st.Status == "running":
		return st.Pid, nil
	case pr.ended():
		return 0, fmt.Errorf("container %s: ended: %s", pr.Name, pr.status())
	case err == nil:
		err = fmt.Errorf("status %s", st.Status)
	}
	return 0, fmt.Errorf("container %s: not running after %v: %w", pr.Name, startTimeout, err)
}

// poll calls try, pause apart, until it returns true or startTimeout has
// passed, and reports whether it did.
func poll(pause time.Duration, try func() bool) bool {
	deadline := time.Now().Add(startTimeout)
	for !try() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
	}
	return true
}

// ended reports whether the container has exited.
func (pr *Process) ended() bool {
	select {
	case <-pr.done:
		return true
	default:
		return false
	}
}

// WaitOutput waits until the container's standard output or error
// contains s. It returns an error if the container ends or timeout passes
// first; when the test fails, the pod's cleanup logs every container's
// output.
func (pr *Process) WaitOutput(s string, timeout time.Duration) error {
	if testkit.WaitFor(s, timeout, pr.done, &pr.stdout, &pr.stderr) {
		return nil
	}
	if pr.ended() {
		return fmt.Errorf("container %s: ended (%s) before writing %q", pr.Name, pr.status(), s)
	}
	return fmt.Errorf("container %s: no %q after %v", pr.Name, s, timeout)
}

type containerState struct {
	Status string `json:"status"`
	Pid    int    `json:"pid"`
}

func (pr *Process) state() (containerState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	out, err := command(ctx, "runc", "--root", pr.pod.root, "state", pr.ID)
	if err != nil {
		return containerState{}, err
	}
	var st containerState
	if err := json.Unmarshal(out, &st); err != nil {
		return containerState{}, fmt.Errorf("runc state %s: %w", pr.ID, err)
	}
	return st, nil
}

// exitStatus turns what waiting for runc run returned into the container's
// exit code, or the reason runc failed.
func (pr *Process) exitStatus(waitErr error) (int, error) {
	log, err := os.ReadFile(pr.log)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	if msgs := runcErrors(log); len(msgs) > 0 {
		return 0, errors.New(strings.Join(msgs, "; "))
	}
	var exitErr *exec.ExitError
	switch {
	case waitErr == nil:
		return 0, nil
	case errors.As(waitErr, &exitErr) && exitErr.ExitCode() >= 0:
		return exitErr.ExitCode(), nil
	default:
		// runc itself was killed, or output was still open after
		// WaitDelay: the container's status is unknown.
		return 0, fmt.Errorf("runc run: %w", waitErr)
	}
}

// status describes how the container ended, for messages; it must only be
// called once done is closed.
func (pr *Process) status() string {
	if pr.err != nil {
		return pr.err.Error()
	}
	return "exit code " + strconv.Itoa(pr.code)
}

// stop kills the container if it still runs and deletes what runc left.
// Failing to stop it is a test error: the pod would leak.
func (pr *Process) stop() {
	if !pr.killUntilDone() {
		pr.pod.t.Errorf("container %s: still running %v after SIGKILL", pr.Name, startTimeout)
	}
	// runc run deletes its container when process 1 exits; this is for a
	// runc that was itself killed. "does not exist" is the usual answer,
	// and the pod's final runc list catches any other failure.
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	command(ctx, "runc", "--root", pr.pod.root, "delete", "--force", pr.ID)
}

// killUntilDone sends SIGKILL until runc run has returned, and reports
// whether that happened within startTimeout. Again and again, because a
// container still being created does not exist for runc kill yet; its
// errors are of no interest, the wait tells.
func (pr *Process) killUntilDone() bool {
	return poll(50*time.Millisecond, func() bool {
		if pr.ended() {
			return true
		}
		ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
		defer cancel()
		command(ctx, "runc", "--root", pr.pod.root, "kill", pr.ID, "KILL")
		return false
	})
}

// Command app is the application that tests, the demo and the pod
// scenarios put behind meshgate, or run alone in a pod. It is static, so it
// runs in a scratch container, and it takes its settings from the
// environment, so that its argv can be anything:
//
//	APP_REPORT=FILE  write what the app saw (PID, user, argv, env, signal
//	                 state, capabilities, start time, /etc/hosts, signals
//	                 received) to FILE as JSON; exit 1 if it cannot
//	APP_FETCH=URL    GET URL first and report the status (proves the app
//	                 reaches the proxy)
//	APP_ORPHANS=N    leave N grandchildren behind, re-parented to whoever
//	                 reaps orphans, and print "orphans: PID..." on stdout
//	APP_SIGNALS=1    catch signals, print "ready", then "got SIGNAME" for
//	                 each one, until SIGTERM
//	APP_KILL=N       end by killing itself with signal N
//	APP_EXIT=N       exit with N (default 0)
//
// It always prints "app: started ..." to stdout, to show stdout is its own.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/meshgate/meshgate/test/app/report"
)

func main() {
	// The app's helpers are itself, told apart by an argv[0] that no test
	// gives the app.
	switch os.Args[0] {
	case "app:orphaner":
		orphaner()
	case "app:zombie":
		os.Exit(0)
	}
	r := report.Report{
		PID: os.Getpid(), UID: os.Getuid(), GID: os.Getgid(), Argv: os.Args, Env: os.Environ(),
		StartNano: time.Now().UnixNano(),
	}
	status, _ := os.ReadFile("/proc/self/status")
	r.SigIgn, r.SigBlk = field(status, "SigIgn"), field(status, "SigBlk")
	r.CapBnd, r.CapEff = field(status, "CapBnd"), field(status, "CapEff")
	_, err := os.Stat("/etc/hosts")
	r.Hosts = err == nil
	if u := os.Getenv("APP_FETCH"); u != "" {
		r.Fetch = fetch(u)
	}
	fmt.Printf("app: started as PID %d with argv %q%s\n", r.PID, r.Argv, fetchNote(r.Fetch))
	if n, _ := strconv.Atoi(os.Getenv("APP_ORPHANS")); n > 0 {
		orphans(n)
	}
	if os.Getenv("APP_SIGNALS") != "" {
		r.Signals = catch()
	}
	if path := os.Getenv("APP_REPORT"); path != "" {
		b, _ := json.Marshal(r)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "app: %v\n", err)
			os.Exit(1)
		}
	}
	if n, _ := strconv.Atoi(os.Getenv("APP_KILL")); n > 0 {
		die(syscall.Signal(n))
	}
	code, _ := strconv.Atoi(os.Getenv("APP_EXIT"))
	os.Exit(code)
}

// die kills the process with s, as a C program killed by s would die:
// the Go runtime's own handler would turn most signals into exit 2.
func die(s syscall.Signal) {
	type sigaction struct {
		handler, flags, restorer uintptr
		mask                     uint64
	}
	act := sigaction{} // SIG_DFL
	syscall.RawSyscall6(syscall.SYS_RT_SIGACTION, uintptr(s), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0)
	_ = syscall.Kill(os.Getpid(), s)
	select {} // the signal ends the process
}

// catch prints "ready" once its handlers are in place, then each signal,
// and returns the names of those received when SIGTERM comes.
func catch() []string {
	c := make(chan os.Signal, 64)
	for s := range report.Signals {
		signal.Notify(c, s)
	}
	fmt.Println("ready")
	var got []string
	for s := range c {
		got = append(got, report.Signals[s.(syscall.Signal)])
		fmt.Println("got", got[len(got)-1])
		if s == syscall.SIGTERM {
			return got
		}
	}
	return got
}

// orphans starts n children that each start a grandchild and exit at
// once, and prints the grandchildren's PIDs.
func orphans(n int) {
	var pids []string
	for range n {
		cmd := exec.Command("/proc/self/exe")
		cmd.Args[0] = "app:orphaner"
		out, err := cmd.Output()
		if err != nil {
			fmt.Fprintf(os.Stderr, "app: orphaner: %v\n", err)
			os.Exit(1)
		}
		pids = append(pids, strings.TrimSpace(string(out)))
	}
	fmt.Println("orphans:", strings.Join(pids, " "))
}

// orphaner starts a grandchild that exits at once, and does not wait
// for it: the grandchild's zombie goes to whoever reaps orphans.
func orphaner() {
	cmd := exec.Command("/proc/self/exe")
	cmd.Args[0] = "app:zombie"
	if err := cmd.Start(); err != nil {
		os.Exit(1)
	}
	fmt.Println(cmd.Process.Pid)
	os.Exit(0)
}

func fetch(u string) string {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get(u)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Status
}

func fetchNote(f string) string {
	if f == "" {
		return ""
	}
	return "; the proxy answered " + f
}

// field returns the value of a "Name:\tvalue" line of a /proc status file.
func field(status []byte, name string) string {
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

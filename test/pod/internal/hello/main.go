// Command hello is a tiny static program that stands in for an app or a
// sidecar in pod tests. It reports what it sees from inside the container,
// one key=value line each, then does what its flags ask, in this order:
// install itself, read a file, write a file, listen, connect, wait for
// SIGTERM.
//
//	pid=1
//	uid=65532 gid=65532
//	capbnd=0000000000000000 capeff=0000000000000000
//	args=["/hello","-trap"]
//	env=["PATH=/bin","A=1"]
//	hosts=false
//
// Exit codes: the -exit value on success, 1 when a step fails, 143 after
// SIGTERM with -trap.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		install = fs.String("install", "", "copy this program to `DIR`/meshgate, as meshgate install does")
		read    = fs.String("read", "", "print the content of `PATH`")
		write   = fs.String("write", "", "write `PATH` (content: hello) and report the error, if any")
		listen  = fs.String("listen", "", "listen on `ADDR`, answer one connection with \"hello\", then go on")
		connect = fs.String("connect", "", "connect to `ADDR` (retrying up to -timeout) and print what it sends")
		trap    = fs.Bool("trap", false, "print \"ready\", wait for SIGTERM, print \"term\" and exit 143")
		sleep   = fs.Duration("sleep", 0, "sleep this long before exiting")
		timeout = fs.Duration("timeout", 5*time.Second, "bound on -listen and -connect")
		code    = fs.Int("exit", 0, "exit with this code when all went well")
	)
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}

	// Catch SIGTERM before saying anything, so a test that waits for
	// "ready" can signal at once.
	var sigs chan os.Signal
	if *trap {
		sigs = make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM)
	}

	fmt.Fprintf(stdout, "pid=%d\n", os.Getpid())
	fmt.Fprintf(stdout, "uid=%d gid=%d\n", os.Getuid(), os.Getgid())
	if status, err := os.ReadFile("/proc/self/status"); err == nil {
		fmt.Fprintf(stdout, "capbnd=%s capeff=%s\n", field(status, "CapBnd"), field(status, "CapEff"))
	}
	fmt.Fprintf(stdout, "args=%s\n", quote(args))
	fmt.Fprintf(stdout, "env=%s\n", quote(os.Environ()))
	_, err := os.Stat("/etc/hosts")
	fmt.Fprintf(stdout, "hosts=%t\n", err == nil)

	if *install != "" {
		dst := filepath.Join(*install, "meshgate")
		if err := copySelf(dst); err != nil {
			fmt.Fprintf(stdout, "install=%v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "install=%s\n", dst)
	}
	if *read != "" {
		b, err := os.ReadFile(*read)
		if err != nil {
			fmt.Fprintf(stdout, "read=%v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "read=%q\n", b)
	}
	if *write != "" {
		if err := os.WriteFile(*write, []byte("hello\n"), 0o644); err != nil {
			fmt.Fprintf(stdout, "write=%v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "write=ok\n")
	}
	if *listen != "" {
		if err := serveOne(*listen, *timeout, stdout); err != nil {
			fmt.Fprintf(stdout, "listen=%v\n", err)
			return 1
		}
	}
	if *connect != "" {
		b, err := dial(*connect, *timeout)
		if err != nil {
			fmt.Fprintf(stdout, "connect=%v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "connect=%q\n", b)
	}
	if *trap {
		fmt.Fprintln(stdout, "ready")
		<-sigs
		fmt.Fprintln(stdout, "term")
		return 128 + int(syscall.SIGTERM)
	}
	time.Sleep(*sleep)
	return *code
}

// copySelf copies the running executable to dst, executable by anyone.
func copySelf(dst string) error {
	self, err := os.Open("/proc/self/exe")
	if err != nil {
		return err
	}
	defer self.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, self); err != nil {
		out.Close()
		return err
	}
	return out.Close()
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

// serveOne accepts a single connection within timeout and answers it, so
// the listener never outlives the test that asked for it.
func serveOne(addr string, timeout time.Duration, stdout io.Writer) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Fprintf(stdout, "listening=%s\n", ln.Addr())
	if err := ln.(*net.TCPListener).SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = io.WriteString(c, "hello")
	return err
}

// dial retries for a bounded time, because the peer container may not be
// listening yet.
func dial(addr string, timeout time.Duration) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			defer c.Close()
			if err := c.SetDeadline(deadline); err != nil {
				return nil, err
			}
			return io.ReadAll(c)
		}
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) || time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// quote renders a string list as Go-quoted, bracketed items, so spaces and
// empty strings stay visible.
func quote(list []string) string {
	b := []byte("[")
	for i, s := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, s)
	}
	return string(append(b, ']'))
}

package probe

import (
	"context"
	"net"
	"syscall"
	"testing"
)

func TestTCPFullBacklog(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// Linux takes listen on a listening socket as a new backlog. With the
	// smallest one, the accept queue fills at once, and then the kernel
	// drops each SYN: a dial neither opens nor is refused.
	raw, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var lerr error
	if err := raw.Control(func(fd uintptr) { lerr = syscall.Listen(int(fd), 0) }); err != nil || lerr != nil {
		t.Fatalf("listen again: %v, %v", err, lerr)
	}
	// Nothing accepts; fill the queue until a dial stalls.
	var d net.Dialer
	full := false
	for range 8 {
		ctx, cancel := context.WithTimeout(context.Background(), stall)
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		cancel()
		if err != nil {
			if verdict(err) != "timeout" {
				t.Fatalf("filling the backlog: got %v, want a timeout once it is full", err)
			}
			full = true
			break
		}
		defer c.Close()
	}
	if !full {
		t.Skip("the backlog took 8 connections without accepting any")
	}
	err = checkWithin(t, mustParse(t, "tcp://"+ln.Addr().String(), Options{}), stall)
	if verdict(err) != "timeout" {
		t.Errorf("got %v, want a timeout", err)
	}
}

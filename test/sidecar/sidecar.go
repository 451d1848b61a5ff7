// Package sidecar plays the proxy's side of a pod for tests, the demo and
// the benchmark: its readiness port is closed for a while, then answers
// "not ready", then "ready", in phases the caller sets.
package sidecar

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A State is what the emulator does in a phase.
type State string

// States besides an HTTP status code such as "503" or "200".
const (
	Closed State = "closed" // nothing listens: connections are refused
	Hang   State = "hang"   // connections are accepted, requests never answered
)

// Phase is one state held for a while. For == 0 holds it until the end,
// or, if more phases follow, until the emulator's Next channel fires.
type Phase struct {
	State State
	For   time.Duration
}

// ParsePhases reads a list such as "closed:500ms,503:2s,200".
func ParsePhases(s string) ([]Phase, error) {
	var ps []Phase
	for _, part := range strings.Split(s, ",") {
		name, dur, timed := strings.Cut(strings.TrimSpace(part), ":")
		p := Phase{State: State(name)}
		if err := p.State.check(); err != nil {
			return nil, fmt.Errorf("phase %q: %w", part, err)
		}
		if timed {
			d, err := time.ParseDuration(dur)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("phase %q: bad duration", part)
			}
			p.For = d
		}
		ps = append(ps, p)
	}
	return ps, nil
}

func (s State) check() error {
	if s == Closed || s == Hang {
		return nil
	}
	if code, err := strconv.Atoi(string(s)); err != nil || code < 100 || code > 599 {
		return fmt.Errorf("state %q: want closed, hang or an HTTP status", s)
	}
	return nil
}

// Ready reports whether the state answers "ready".
func (s State) Ready() bool { return len(s) == 3 && s[0] == '2' }

// Ports are handed out below Linux's ephemeral range (32768 and up by
// default), so that no outgoing connection, of this process or of the
// machine, holds the port of an emulator whose phase is closed, and a
// closed port really refuses. Each process starts at a random place, away
// from the ports of others.
const portLow, portHigh = 20000, 32768

var lastPort atomic.Int32

// FreeAddr returns a loopback address on a port that nothing listens on, a
// different one each time.
func FreeAddr() (string, error) {
	lastPort.CompareAndSwap(0, int32(portLow+rand.IntN(portHigh-portLow)))
	for range portHigh - portLow {
		port := portLow + (int(lastPort.Add(1))-portLow)%(portHigh-portLow)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if ln, err := net.Listen("tcp", addr); err == nil {
			return addr, ln.Close()
		}
	}
	return "", fmt.Errorf("no free loopback port in [%d, %d)", portLow, portHigh)
}

// Emulator serves a readiness endpoint on Addr.
type Emulator struct {
	Addr string        // host:port to listen on
	Path string        // readiness path; other paths answer 404
	Cost time.Duration // work done for each readiness request before answering
	// QuitPath, if set, takes a POST that tells the proxy to exit. The
	// answer is QuitAnswer ("200" when empty; "hang" never answers; a 404
	// says what Linkerd says when shutdown is not enabled). After a 2xx
	// the port closes, as the proxy's would, unless QuitStays is set.
	QuitPath   string
	QuitAnswer State
	QuitStays  bool
	// OnPhase, if set, is called as each phase begins, with the time.
	OnPhase func(State, time.Time)
	// Next ends a phase that has no duration of its own, when more follow.
	Next <-chan struct{}

	mu       sync.Mutex
	state    State
	srv      *http.Server
	served   chan struct{}
	readyAt  time.Time
	once     sync.Once
	requests atomic.Int64
	busy     atomic.Int64 // nanoseconds spent answering
	quits    atomic.Int64
	quitted  chan struct{}
	asked    chan struct{}
	askOnce  sync.Once
}

// Set switches to state s at once.
func (e *Emulator) Set(s State) error {
	if err := s.check(); err != nil {
		return err
	}
	e.init()
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	if s == Closed {
		e.closeLocked()
	} else if e.srv == nil {
		if err := e.listenLocked(); err != nil {
			return err
		}
	}
	e.state = s
	if s.Ready() && e.readyAt.IsZero() {
		e.readyAt = now
	}
	if e.OnPhase != nil {
		e.OnPhase(s, now)
	}
	return nil
}

// Run goes through the phases in order and then holds the last one until
// ctx ends; then it closes the port.
func (e *Emulator) Run(ctx context.Context, phases []Phase) error {
	defer e.Close()
	for i, p := range phases {
		if err := e.Set(p.State); err != nil {
			return err
		}
		if p.For == 0 {
			if i == len(phases)-1 {
				break
			}
			select {
			case <-e.Next:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		t := time.NewTimer(p.For)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}
	<-ctx.Done()
	return nil
}

func (e *Emulator) ReadyAt() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.readyAt
}

func (e *Emulator) Quits() int64 { return e.quits.Load() }

// Quitted is closed when a quit request has been answered with 2xx.
func (e *Emulator) Quitted() <-chan struct{} {
	e.init()
	return e.quitted
}

// QuitAsked is closed when the first quit request has arrived, before it
// is answered.
func (e *Emulator) QuitAsked() <-chan struct{} {
	e.init()
	return e.asked
}

func (e *Emulator) Requests() int64 { return e.requests.Load() }

func (e *Emulator) Busy() time.Duration { return time.Duration(e.busy.Load()) }

func (e *Emulator) Close() {
	e.init()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closeLocked()
}

func (e *Emulator) init() {
	e.once.Do(func() {
		e.quitted = make(chan struct{})
		e.asked = make(chan struct{})
	})
}

func (e *Emulator) listenLocked() error {
	ln, err := net.Listen("tcp", e.Addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(e.serve), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		// Serve ends with ErrServerClosed when Close is called; any
		// other end shows up as refused connections, which tests see.
		_ = srv.Serve(ln)
	}()
	e.srv, e.served = srv, served
	return nil
}

func (e *Emulator) closeLocked() {
	if e.srv == nil {
		return
	}
	// Close, not Shutdown: hanging handlers are woken by their
	// connections' contexts being cancelled.
	_ = e.srv.Close()
	<-e.served
	e.srv = nil
}

func (e *Emulator) serve(w http.ResponseWriter, r *http.Request) {
	if e.QuitPath != "" && r.URL.Path == e.QuitPath {
		e.quit(w, r)
		return
	}
	if r.URL.Path != e.Path {
		http.NotFound(w, r)
		return
	}
	start := time.Now()
	e.mu.Lock()
	s := e.state
	e.mu.Unlock()
	if s == Hang {
		<-r.Context().Done()
		return
	}
	if e.Cost > 0 {
		t := time.NewTimer(e.Cost)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		}
	}
	code, _ := strconv.Atoi(string(s))
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(map[bool]string{true: "ready\n", false: "not ready\n"}[s.Ready()]))
	e.requests.Add(1)
	e.busy.Add(int64(time.Since(start)))
}

// quit answers a quit request the way meshes do: POST only, then exit.
func (e *Emulator) quit(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	e.quits.Add(1)
	e.init()
	e.askOnce.Do(func() { close(e.asked) })
	answer := e.QuitAnswer
	if answer == "" {
		answer = "200"
	}
	switch {
	case answer == Hang:
		<-r.Context().Done()
		return
	case !answer.Ready():
		code, _ := strconv.Atoi(string(answer))
		http.Error(w, map[bool]string{true: "shutdown endpoint is not enabled", false: "cannot quit"}[code == 404], code)
		return
	}
	_, _ = w.Write([]byte("OK\n"))
	// The answer must be out before the port closes.
	w.(http.Flusher).Flush()
	e.mu.Lock()
	defer e.mu.Unlock()
	select {
	case <-e.quitted:
	default:
		close(e.quitted)
	}
	if !e.QuitStays {
		go e.Close() // after the answer is on its way, as an exiting proxy's
	}
}

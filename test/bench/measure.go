package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/meshgate/meshgate/test/sidecar"
)

// Targets, as the design states them.
const (
	targetNoticeP50 = 10 * time.Millisecond // with a proxy that answers at once
	targetNoticeP99 = 30 * time.Millisecond
	targetShare     = 0.05 // of the proxy's time, when each answer costs it shareCost
	shareCost       = 20 * time.Millisecond
	targetOverhead  = 2 * time.Millisecond // median, over exec'ing the command directly
	targetCPU       = 3 * time.Millisecond // per second of waiting
	targetRSS       = 10 << 20
	targetBinary    = 7 << 20
)

// measure makes the measurements asked for and gathers their rows. A
// measurement that fails leaves a note and does not stop the others.
func (b *bench) measure(ctx context.Context) *report {
	rep := &report{header: b.machine(ctx)}
	if b.curl == "" {
		rep.notes = append(rep.notes, "curl not found: no baseline figures (apt-get install -y curl)")
	}
	steps := []struct {
		name string
		run  func(context.Context) ([]row, error)
	}{{"notice", b.notice}, {"overhead", b.overhead}, {"load", b.load}, {"cost", b.cost}}
	for _, s := range steps {
		if !b.cfg.only[s.name] {
			continue
		}
		rows, err := s.run(ctx)
		rep.rows = append(rep.rows, rows...)
		if err != nil {
			rep.failed = true
			rep.notes = append(rep.notes, fmt.Sprintf("%s could not be measured: %v", s.name, err))
			b.progress("%s: %v", s.name, err)
		}
	}
	return rep
}

// notice measures how long after the proxy turns ready the command starts.
// Each trial draws its phases once and runs every waiter through them, so
// that the waiters meet the same proxies.
func (b *bench) notice(ctx context.Context) ([]row, error) {
	ws := b.waiters()
	r := rand.New(rand.NewPCG(b.cfg.seed, b.cfg.seed))
	late := make([][]time.Duration, len(ws))
	var toExec []time.Duration // meshgate only: ready → its execve
	for i := range b.cfg.noticeTrials {
		phases := b.noticePhases(r)
		var said []string
		for j, w := range ws {
			res, start, err := b.appStart(ctx, phaseRun{phases: phases, argv: w.wrap})
			if err != nil {
				return nil, fmt.Errorf("trial %d, %s: %w", i+1, w.name, err)
			}
			d := start.Sub(res.readyAt)
			if d < 0 {
				return nil, fmt.Errorf("trial %d, %s: the command started %s before the proxy was ready", i+1, w.name, ms(-d))
			}
			late[j] = append(late[j], d)
			said = append(said, w.name+" "+ms(d))
			if j == 0 {
				at, err := execAt(res.lines)
				if err != nil {
					return nil, fmt.Errorf("trial %d, %s: %w", i+1, w.name, err)
				}
				toExec = append(toExec, at.Sub(res.readyAt))
			}
		}
		b.progress("notice %d/%d (%s): %s", i+1, b.cfg.noticeTrials, describe(phases), strings.Join(said, ", "))
	}
	what := func(stat string) string {
		return fmt.Sprintf("notice: ready → command start, %s (%s, 0 ms per answer)", stat, count(b.cfg.noticeTrials, "trial"))
	}
	stat := func(q float64) []string {
		return each(late, func(ds []time.Duration) string { return ms(quantile(ds, q)) })
	}
	p50, p99 := quantile(late[0], 0.5), quantile(late[0], 0.99)
	// The gate's own part ends at its execve: after that the command's
	// start-up is the same with or without a gate (see direct exec).
	exec := func(stat string) string {
		return fmt.Sprintf("notice: ready → meshgate's execve, %s (%s, 0 ms per answer)", stat, count(b.cfg.noticeTrials, "trial"))
	}
	e50, e99 := quantile(toExec, 0.5), quantile(toExec, 0.99)
	gateOnly := func(d time.Duration) []string {
		vals := []string{ms(d)}
		for range ws[1:] {
			vals = append(vals, "—")
		}
		return vals
	}
	return []row{
		withTarget(what("p50"), stat(0.5), "≤ "+ms(targetNoticeP50), p50 <= targetNoticeP50),
		plain(what("p90"), stat(0.9)),
		withTarget(what("p99"), stat(0.99), "≤ "+ms(targetNoticeP99), p99 <= targetNoticeP99),
		plain(what("max"), stat(1)),
		withTarget(exec("p50"), gateOnly(e50), "≤ "+ms(targetNoticeP50), e50 <= targetNoticeP50),
		withTarget(exec("p99"), gateOnly(e99), "≤ "+ms(targetNoticeP99), e99 <= targetNoticeP99),
	}, nil
}

// execAt finds when meshgate logged its "exec" line, by the line's own
// time stamp: the last thing it does before execve.
func execAt(lines []line) (time.Time, error) {
	for _, l := range lines {
		var m struct {
			Msg string `json:"msg"`
			TS  string `json:"ts"`
		}
		if json.Unmarshal([]byte(l.text), &m) == nil && m.Msg == "exec" {
			return time.Parse(time.RFC3339Nano, m.TS)
		}
	}
	return time.Time{}, fmt.Errorf("meshgate logged no exec line")
}

// noticePhases draws a proxy: closed for U(0, max), 503 for U(min, max),
// then ready.
func (b *bench) noticePhases(r *rand.Rand) []sidecar.Phase {
	uniform := func(lo, hi time.Duration) time.Duration {
		return lo + time.Duration(r.Float64()*float64(hi-lo))
	}
	var phases []sidecar.Phase
	// A phase of no duration would wait for a signal; a proxy closed for
	// no time is one that starts with 503.
	if closed := uniform(0, b.cfg.noticeClosedMax).Round(time.Millisecond); closed > 0 {
		phases = append(phases, sidecar.Phase{State: sidecar.Closed, For: closed})
	}
	notReady := uniform(b.cfg.noticeNotReadyMin, b.cfg.noticeNotReadyMax).Round(time.Millisecond)
	return append(phases, sidecar.Phase{State: "503", For: notReady}, sidecar.Phase{State: "200"})
}

// overhead measures what meshgate adds to a start when the proxy is ready
// from the first attempt, against exec'ing the command directly.
func (b *bench) overhead(ctx context.Context) ([]row, error) {
	addr, err := b.ports.take()
	if err != nil {
		return nil, err
	}
	e := &sidecar.Emulator{Addr: addr, Path: readyPath}
	if err := e.Set("200"); err != nil {
		return nil, err
	}
	defer e.Close()
	ways := [][]string{b.waiters()[0].wrap("http://" + addr + readyPath), {b.cfg.app}}
	took := make([][]time.Duration, len(ways))
	// Round 0 is not kept: the first run of each binary pays for reading
	// it from disk.
	for i := range b.cfg.overheadRuns + 1 {
		for k := range ways {
			// Alternate which goes first, so that neither always
			// follows the other.
			k = (k + i) % len(ways)
			d, err := b.startDelay(ctx, ways[k])
			if err != nil {
				return nil, err
			}
			if i > 0 {
				took[k] = append(took[k], d)
			}
		}
		if i%10 == 0 && i > 0 || i == b.cfg.overheadRuns {
			b.progress("overhead %d/%d: median %s behind meshgate, %s direct", i, b.cfg.overheadRuns,
				ms(quantile(took[0], 0.5)), ms(quantile(took[1], 0.5)))
		}
	}
	what := func(stat string) string {
		return fmt.Sprintf("already ready: launch → command start, %s (%s)", stat, count(b.cfg.overheadRuns, "run"))
	}
	direct := func(q float64) string { return ms(quantile(took[1], q)) + " (direct exec)" }
	diff := quantile(took[0], 0.5) - quantile(took[1], 0.5)
	return []row{
		plain(what("median"), []string{ms(quantile(took[0], 0.5)), direct(0.5)}),
		plain(what("p90"), []string{ms(quantile(took[0], 0.9)), direct(0.9)}),
		withTarget("already ready: overhead over direct exec, difference of medians", []string{ms(diff)},
			"≤ "+ms(targetOverhead), diff <= targetOverhead),
	}, nil
}

// startDelay runs argv, which runs the app, and returns how long after the
// instant before cmd.Start the app started.
func (b *bench) startDelay(ctx context.Context, argv []string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, trialSlack)
	defer cancel()
	report := b.reportPath()
	var out lineWriter
	cmd := b.command(ctx, argv, []string{"APP_REPORT=" + report})
	cmd.Stderr = &out
	before := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%s: %w%s", filepath.Base(argv[0]), err, out.tail())
	}
	start, err := readStart(report)
	return start.Sub(before), err
}

// load measures how often each waiter knocks: on the closed port (which
// costs the proxy nothing but costs us), and on the proxy answering 503,
// where each answer costs it the given time.
func (b *bench) load(ctx context.Context) ([]row, error) {
	ws := b.waiters()
	phases := []sidecar.Phase{{State: sidecar.Closed, For: b.cfg.loadClosed}, {State: "503", For: b.cfg.loadNotReady}, {State: "200"}}
	type tally struct {
		attempts int64
		window   time.Duration
		busy     time.Duration
	}
	shut := make([]tally, len(ws))
	var rows []row
	for _, cost := range b.cfg.loadCosts {
		open := make([]tally, len(ws))
		for t := range b.cfg.loadTrials {
			var said []string
			for j, w := range ws {
				res, err := b.runPhases(ctx, phaseRun{phases: phases, cost: cost, argv: w.watch})
				if err != nil {
					return rows, fmt.Errorf("%s per answer, trial %d, %s: %w", costText(cost), t+1, w.name, err)
				}
				c0, c1, ok1 := res.span(sidecar.Closed)
				n0, n1, ok2 := res.span("503")
				if !ok1 || !ok2 {
					return rows, fmt.Errorf("%s per answer, trial %d, %s: the emulator did not go through its phases", costText(cost), t+1, w.name)
				}
				// The waiter starts a little after the port's closed
				// phase does; count its time there only.
				from := later(c0.at, res.launched)
				shut[j].attempts += int64(w.refused(res.lines, from, c1.at))
				shut[j].window += c1.at.Sub(from)
				open[j].attempts += n1.requests - n0.requests
				open[j].busy += n1.busy - n0.busy
				open[j].window += n1.at.Sub(n0.at)
				said = append(said, fmt.Sprintf("%s %s on 503, busy %s", w.name,
					perSecond(n1.requests-n0.requests, n1.at.Sub(n0.at)), (n1.busy-n0.busy).Round(time.Millisecond)))
			}
			b.progress("load %s per answer, trial %d/%d: %s", costText(cost), t+1, b.cfg.loadTrials, strings.Join(said, "; "))
		}
		what := func(figure string) string {
			return fmt.Sprintf("load, 503 at %s per answer: %s (%s)", costText(cost), figure, count(b.cfg.loadTrials, "trial"))
		}
		rates := each(open, func(t tally) string { return perSecond(t.attempts, t.window) })
		shares := make([]float64, len(open))
		for j, t := range open {
			shares[j] = t.busy.Seconds() / t.window.Seconds()
		}
		rows = append(rows, plain(what("requests answered per second"), rates))
		shareText := each(shares, func(s float64) string { return fmt.Sprintf("%.2f%%", 100*s) })
		if cost == shareCost {
			rows = append(rows, withTarget(what("proxy's share of busy time"), shareText,
				fmt.Sprintf("≤ %.0f%%", 100*targetShare), shares[0] <= targetShare))
		} else {
			rows = append(rows, plain(what("proxy's share of busy time"), shareText))
		}
	}
	closed := plain(fmt.Sprintf("load, port closed: attempts refused per second (%s)", count(len(b.cfg.loadCosts)*b.cfg.loadTrials, "trial")),
		each(shut, func(t tally) string { return perSecond(t.attempts, t.window) }))
	return append([]row{closed}, rows...), nil
}

// cost measures meshgate's CPU and memory while it waits, and its size.
// CPU per second of waiting leaves out the start-up cost, measured apart
// against a proxy ready from the first attempt.
func (b *bench) cost(ctx context.Context) ([]row, error) {
	ws := b.waiters()
	waiting := []sidecar.Phase{{State: sidecar.Closed, For: b.cfg.costClosed}, {State: "503", For: b.cfg.costWait}, {State: "200"}}
	ready := []sidecar.Phase{{State: "200"}}
	startup := make([]time.Duration, len(ws))
	perSec := make([]time.Duration, len(ws))
	rss := make([]int64, len(ws))
	for j, w := range ws {
		var cpus []time.Duration
		for range b.cfg.startupRuns {
			res, err := b.runPhases(ctx, phaseRun{phases: ready, argv: w.wait, detach: true})
			if err == nil && res.usage == nil {
				err = errors.New("no resource usage")
			}
			if err != nil {
				return nil, fmt.Errorf("%s, start-up: %w", w.name, err)
			}
			cpus = append(cpus, cpu(res.usage))
			rss[j] = max(rss[j], res.usage.Maxrss<<10)
		}
		startup[j] = quantile(cpus, 0.5)
		res, err := b.runPhases(ctx, phaseRun{phases: waiting, argv: w.wait, detach: true})
		if err == nil && res.usage == nil {
			err = errors.New("no resource usage")
		}
		if err != nil {
			return nil, fmt.Errorf("%s, waiting: %w", w.name, err)
		}
		waited := res.readyAt.Sub(res.launched)
		perSec[j] = time.Duration(float64(cpu(res.usage)-startup[j]) / waited.Seconds())
		rss[j] = max(rss[j], res.usage.Maxrss<<10)
		b.progress("cost, %s: %s CPU over %s of waiting, start-up %s", w.name, ms(cpu(res.usage)),
			waited.Round(time.Millisecond), ms(startup[j]))
	}
	fi, err := os.Stat(b.cfg.meshgate)
	if err != nil {
		return nil, err
	}
	return []row{
		withTarget(fmt.Sprintf("cost: CPU per second of waiting (closed %s, then 503 %s)", b.cfg.costClosed, b.cfg.costWait),
			each(perSec, func(d time.Duration) string { return ms(d) + "/s" }), "≤ "+ms(targetCPU)+"/s", perSec[0] <= targetCPU),
		plain(fmt.Sprintf("cost: start-up CPU, proxy ready at once (median of %d)", b.cfg.startupRuns),
			each(startup, ms)),
		withTarget("cost: peak RSS", each(rss, mib), "≤ "+mib(targetRSS), rss[0] <= targetRSS),
		withTarget("cost: size of the static binary", []string{mib(fi.Size())}, "≤ "+mib(targetBinary), fi.Size() <= targetBinary),
	}, nil
}

// cpu is the user and system time in a child's resource usage, which on
// Linux includes the children it waited for (the loop's curl and sleep).
func cpu(u *syscall.Rusage) time.Duration {
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}

// count writes n things: "1 trial", "3 trials".
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// costText writes a cost as the targets do: "0 ms", "20 ms".
func costText(d time.Duration) string {
	return fmt.Sprintf("%g ms", float64(d)/float64(time.Millisecond))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func describe(phases []sidecar.Phase) string {
	var parts []string
	for _, p := range phases {
		if p.For > 0 {
			parts = append(parts, fmt.Sprintf("%s %s", p.State, p.For))
		} else {
			parts = append(parts, string(p.State))
		}
	}
	return strings.Join(parts, " → ")
}

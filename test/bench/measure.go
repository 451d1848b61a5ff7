package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshgate/meshgate/test/sidecar"
)

// The goals, as ratios to the reference gates measured in the same run.
const (
	goalP50Over     = 6 * time.Millisecond  // notice p50 ≤ the no-pause loop's + this
	goalP99         = 35 * time.Millisecond // notice p99 ≤ this,
	goalP99Ratio    = 1.5                   // and ≤ the fixed 50 ms loop's ÷ this
	goalShare       = 0.05                  // of a proxy's time at --load-cost per answer
	goalOverheadAdd = time.Millisecond      // already-ready overhead ≤ the no-pause loop's + this
	goalHWM         = 10 << 20              // VmHWM after --cost-wait, and ≤ the fixed 10 ms loop's
	goalBinary      = 7 << 20
)

// figures is what the measurements found, by waiter name, for the goals.
type figures struct {
	p50, p99         map[string]map[string]time.Duration // by "idle"/"busy", then waiter
	share            map[string]float64
	overhead         map[string]time.Duration
	cpuPerAttempt    map[string]time.Duration
	hwm              map[string]int64
	binary           int64
	measuredNotice   map[string]bool
	measuredOverhead bool
	measuredLoad     bool
	measuredCost     bool
}

// measure makes the measurements asked for and gathers their rows. A
// measurement that fails leaves a note and does not stop the others.
func (b *bench) measure(ctx context.Context) *report {
	rep := &report{header: b.machine(ctx)}
	for _, w := range b.waiters() {
		rep.columns = append(rep.columns, w.name)
	}
	if b.curl == "" {
		rep.notes = append(rep.notes, "curl not found: no curl loop figures (apt-get install -y curl)")
	}
	f := &figures{p50: map[string]map[string]time.Duration{}, p99: map[string]map[string]time.Duration{},
		measuredNotice: map[string]bool{}}
	steps := []struct {
		name string
		run  func(context.Context, *figures) ([]row, error)
	}{
		{"notice", func(ctx context.Context, f *figures) ([]row, error) {
			return b.notice(ctx, f, "idle", b.cfg.noticeTrials)
		}},
		{"busy", b.busy},
		{"overhead", b.overhead},
		{"load", b.load},
		{"cost", b.cost},
	}
	for _, s := range steps {
		if !b.cfg.only[s.name] {
			continue
		}
		rows, err := s.run(ctx, f)
		rep.rows = append(rep.rows, rows...)
		if err != nil {
			rep.failed = true
			rep.notes = append(rep.notes, fmt.Sprintf("%s could not be measured: %v", s.name, err))
			b.progress("%s: %v", s.name, err)
		}
	}
	rep.goals = b.goals(f)
	rep.header = append(rep.header, "load average at the end: "+loadavg())
	return rep
}

// busy runs the notice trials with every core kept busy by yes(1), as on a
// busy node.
func (b *bench) busy(ctx context.Context, f *figures) ([]row, error) {
	var hogs []*exec.Cmd
	defer func() {
		for _, h := range hogs {
			_ = h.Process.Kill()
			_ = h.Wait()
		}
	}()
	for range runtime.NumCPU() {
		h := exec.CommandContext(ctx, "yes") // stdout: /dev/null
		if err := h.Start(); err != nil {
			return nil, fmt.Errorf("yes: %w", err)
		}
		hogs = append(hogs, h)
	}
	b.progress("busy: %d yes processes running", len(hogs))
	return b.notice(ctx, f, "busy", b.cfg.busyTrials)
}

// notice measures how long after the proxy turns ready the app starts.
// Each trial draws its phases once and runs every waiter through them, one
// after the other in an order that turns, so that the waiters meet the same
// proxies and none always follows another.
func (b *bench) notice(ctx context.Context, f *figures, mode string, trials int) ([]row, error) {
	ws := b.waiters()
	r := rand.New(rand.NewPCG(b.cfg.seed, b.cfg.seed))
	late := make([][]time.Duration, len(ws))
	requests := make([]int64, len(ws))
	window := make([]time.Duration, len(ws))
	for i := range trials {
		phases := b.noticePhases(r)
		said := make([]string, len(ws))
		for k := range ws {
			j := (k + i) % len(ws)
			w := ws[j]
			res, start, err := b.appStart(ctx, phaseRun{phases: phases, argv: w.wrap})
			if err != nil {
				return nil, fmt.Errorf("%s trial %d, %s: %w", mode, i+1, w.name, err)
			}
			d := start.Sub(res.readyAt)
			if d < 0 {
				return nil, fmt.Errorf("%s trial %d, %s: the app started %s before the proxy was ready", mode, i+1, w.name, ms(-d))
			}
			late[j] = append(late[j], d)
			if n0, n1, ok := res.span("503"); ok {
				requests[j] += n1.requests - n0.requests
				window[j] += n1.at.Sub(n0.at)
			}
			said[j] = w.name + " " + ms(d)
		}
		b.progress("notice, %s, %d/%d (%s): %s", mode, i+1, trials, describe(phases), strings.Join(said, ", "))
	}
	what := func(stat string) string {
		return fmt.Sprintf("notice, %s: proxy ready → app start, %s (%s)", mode, stat, count(trials, "trial"))
	}
	stat := func(q float64) []string {
		return each(late, func(ds []time.Duration) string { return ms(quantile(ds, q)) })
	}
	f.p50[mode], f.p99[mode] = map[string]time.Duration{}, map[string]time.Duration{}
	for j, w := range ws {
		f.p50[mode][w.name], f.p99[mode][w.name] = quantile(late[j], 0.5), quantile(late[j], 0.99)
	}
	f.measuredNotice[mode] = true
	rates := make([]string, len(ws))
	for j := range ws {
		rates[j] = perSecond(requests[j], window[j])
	}
	return []row{
		{what("p50"), stat(0.5)},
		{what("p90"), stat(0.9)},
		{what("p99"), stat(0.99)},
		{what("max"), stat(1)},
		{fmt.Sprintf("notice, %s: requests per second while the proxy answers 503 (0 ms per answer)", mode), rates},
	}, nil
}

// noticePhases draws a proxy: closed for U[0, max), 503 for U[min, max),
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

// overhead measures how much later the app starts behind each gate than
// when exec'd directly, with the proxy ready from the first attempt.
func (b *bench) overhead(ctx context.Context, f *figures) ([]row, error) {
	addr, err := b.ports.take()
	if err != nil {
		return nil, err
	}
	e := &sidecar.Emulator{Addr: addr, Path: readyPath}
	if err := e.Set("200"); err != nil {
		return nil, err
	}
	defer e.Close()
	ws := b.waiters()
	ways := [][]string{{b.cfg.app}}
	for _, w := range ws {
		ways = append(ways, w.wrap("http://"+addr+readyPath))
	}
	took := make([][]time.Duration, len(ways))
	// Round 0 is not kept: the first run of each binary pays for reading
	// it from disk.
	for i := range b.cfg.overheadRuns + 1 {
		for k := range ways {
			// Turn the order, so that none always follows another.
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
			b.progress("overhead %d/%d: median %s direct, %s behind meshgate, %s behind the no-pause loop", i, b.cfg.overheadRuns,
				ms(quantile(took[0], 0.5)), ms(quantile(took[1], 0.5)), ms(quantile(took[2], 0.5)))
		}
	}
	direct := quantile(took[0], 0.5)
	f.overhead = map[string]time.Duration{}
	medians, overs := make([]string, len(ws)), make([]string, len(ws))
	for j, w := range ws {
		m := quantile(took[j+1], 0.5)
		f.overhead[w.name] = m - direct
		medians[j], overs[j] = ms(m), ms(m-direct)
	}
	f.measuredOverhead = true
	return []row{
		{fmt.Sprintf("already ready: launch → app start, median of %d (direct exec: %s)", b.cfg.overheadRuns, ms(direct)), medians},
		{"already ready: overhead, that minus direct exec's", overs},
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
		return 0, fmt.Errorf("%s: %w%s", argv[0], err, out.tail())
	}
	start, err := readStart(report)
	return start.Sub(before), err
}

// load measures how hard each waiter works a proxy that takes
// --load-cost to answer: the share of the proxy's time spent answering it.
func (b *bench) load(ctx context.Context, f *figures) ([]row, error) {
	ws := b.waiters()
	phases := []sidecar.Phase{{State: sidecar.Closed, For: 300 * time.Millisecond}, {State: "503", For: b.cfg.loadNotReady}, {State: "200"}}
	type tally struct {
		requests int64
		window   time.Duration
		busy     time.Duration
	}
	open := make([]tally, len(ws))
	for t := range b.cfg.loadTrials {
		said := make([]string, len(ws))
		for k := range ws {
			j := (k + t) % len(ws)
			w := ws[j]
			res, err := b.runPhases(ctx, phaseRun{phases: phases, cost: b.cfg.loadCost, argv: w.wait})
			if err != nil {
				return nil, fmt.Errorf("trial %d, %s: %w", t+1, w.name, err)
			}
			n0, n1, ok := res.span("503")
			if !ok {
				return nil, fmt.Errorf("trial %d, %s: the emulator did not go through its phases", t+1, w.name)
			}
			open[j].requests += n1.requests - n0.requests
			open[j].busy += n1.busy - n0.busy
			open[j].window += n1.at.Sub(n0.at)
			said[j] = fmt.Sprintf("%s %s", w.name, perSecond(n1.requests-n0.requests, n1.at.Sub(n0.at)))
		}
		b.progress("load %s per answer, trial %d/%d: %s", ms(b.cfg.loadCost), t+1, b.cfg.loadTrials, strings.Join(said, "; "))
	}
	f.share = map[string]float64{}
	rates, shares := make([]string, len(ws)), make([]string, len(ws))
	for j, w := range ws {
		s := open[j].busy.Seconds() / open[j].window.Seconds()
		f.share[w.name] = s
		rates[j] = perSecond(open[j].requests, open[j].window)
		shares[j] = fmt.Sprintf("%.2f%%", 100*s)
	}
	f.measuredLoad = true
	what := func(figure string) string {
		return fmt.Sprintf("load, 503 at %s per answer: %s (%s)", ms(b.cfg.loadCost), figure, count(b.cfg.loadTrials, "trial"))
	}
	return []row{{what("requests per second"), rates}, {what("the proxy's busy share"), shares}}, nil
}

// cost measures each waiter's CPU and memory while it waits on a proxy
// that answers 503 at once: CPU between the end of --cost-warm-up and
// --cost-wait, per second and per attempt, and the gate's VmHWM at the end,
// read from /proc (a child's ru_maxrss would count the memory of the
// process it was forked from). It also weighs the binary.
func (b *bench) cost(ctx context.Context, f *figures) ([]row, error) {
	ws := b.waiters()
	f.cpuPerAttempt, f.hwm = map[string]time.Duration{}, map[string]int64{}
	perSec, perAttempt, hwm := make([]string, len(ws)), make([]string, len(ws)), make([]string, len(ws))
	for j, w := range ws {
		c, err := b.costOf(ctx, w)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", w.name, err)
		}
		perSec[j] = ms(time.Duration(float64(c.cpu)/c.window.Seconds())) + "/s"
		perAttempt[j] = "—"
		if c.attempts > 0 {
			per := c.cpu / time.Duration(c.attempts)
			f.cpuPerAttempt[w.name] = per
			perAttempt[j] = fmt.Sprintf("%.0f µs", float64(per)/float64(time.Microsecond))
		}
		hwm[j] = "—"
		if w.own {
			f.hwm[w.name] = c.hwm
			hwm[j] = mib(c.hwm)
		}
		b.progress("cost, %s: %s CPU over %s, %d attempts, VmHWM %s", w.name, ms(c.cpu), c.window.Round(time.Millisecond),
			c.attempts, mib(c.hwm))
	}
	fi, err := os.Stat(b.cfg.meshgate)
	if err != nil {
		return nil, err
	}
	f.binary = fi.Size()
	f.measuredCost = true
	waiting := fmt.Sprintf("waiting on 503 at 0 ms per answer, %s to %s", b.cfg.costWarmUp, b.cfg.costWait)
	size := make([]string, len(ws))
	for j := range ws {
		size[j] = "—"
	}
	size[0] = mib(fi.Size())
	return []row{
		{"cost: CPU per second, " + waiting, perSec},
		{"cost: CPU per attempt, " + waiting, perAttempt},
		{fmt.Sprintf("cost: VmHWM of the gate after %s of waiting", b.cfg.costWait), hwm},
		{"cost: size of the static binary", size},
	}, nil
}

// waitCost is what one waiter cost over the measured part of its wait.
type waitCost struct {
	cpu      time.Duration
	window   time.Duration
	attempts int64
	hwm      int64
}

func (b *bench) costOf(ctx context.Context, w waiter) (waitCost, error) {
	var c waitCost
	addr, err := b.ports.take()
	if err != nil {
		return c, err
	}
	e := &sidecar.Emulator{Addr: addr, Path: readyPath}
	if err := e.Set("503"); err != nil {
		return c, err
	}
	defer e.Close()
	ctx, cancel := context.WithTimeout(ctx, b.cfg.costWait+trialSlack)
	defer cancel()
	var out lineWriter
	cmd := b.command(ctx, w.wait("http://"+addr+readyPath), nil)
	cmd.Stderr = &out
	launched := time.Now()
	if err := cmd.Start(); err != nil {
		return c, err
	}
	pid := cmd.Process.Pid
	// Closed, not sent on: both a sample and the end wait for it.
	ended := make(chan struct{})
	var werr error
	go func() {
		werr = cmd.Wait()
		close(ended)
	}()
	sample := func(at time.Duration) (cpu time.Duration, requests int64, now time.Time, err error) {
		select {
		case <-ended:
			return 0, 0, now, fmt.Errorf("ended while waiting: %v%s", werr, out.tail())
		case <-time.After(time.Until(launched.Add(at))):
		}
		cpu, err = procCPU(pid)
		return cpu, e.Requests(), time.Now(), err
	}
	cpu0, req0, t0, err := sample(b.cfg.costWarmUp)
	if err == nil {
		cpu1, req1, t1, err1 := sample(b.cfg.costWait)
		if err = err1; err == nil {
			c.hwm, err = procHWM(pid)
		}
		c.cpu, c.attempts, c.window = cpu1-cpu0, req1-req0, t1.Sub(t0)
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-ended
	return c, err
}

// procCPU is the user and system time of a process, with that of the
// children it has waited for (the loop's curl and sleep).
func procCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields start
	// after its closing one, with the state (field 3).
	i := strings.LastIndexByte(string(data), ')')
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 15 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	var ticks int64
	for _, f := range fields[11:15] { // utime, stime, cutime, cstime
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	const hz = 100 // USER_HZ, fixed at 100 for user space on Linux
	return time.Duration(ticks) * time.Second / hz, nil
}

// procHWM is a process's peak resident set size, VmHWM.
func procHWM(pid int) (int64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM in /proc/PID/status")
}

// goals holds meshgate's figures to the goals, as ratios to the reference
// gates' figures of the same run.
func (b *bench) goals(f *figures) []goal {
	var gs []goal
	for _, mode := range []string{"idle", "busy"} {
		if !f.measuredNotice[mode] {
			continue
		}
		p50, p99 := f.p50[mode], f.p99[mode]
		bound := p50[nameNoPause] + goalP50Over
		gs = append(gs, goal{fmt.Sprintf("notice p50, %s ≤ no-pause loop's + %s", mode, ms(goalP50Over)),
			ms(p50[nameGate]), ms(bound), p50[nameGate] <= bound})
		bound = min(goalP99, time.Duration(float64(p99[name50])/goalP99Ratio))
		gs = append(gs, goal{fmt.Sprintf("notice p99, %s ≤ %s and ≤ fixed 50 ms loop's ÷ %g (%s)", mode, ms(goalP99), goalP99Ratio, ms(p99[name50])),
			ms(p99[nameGate]), ms(bound), p99[nameGate] <= bound})
	}
	if f.measuredLoad {
		s := f.share[nameGate]
		gs = append(gs, goal{fmt.Sprintf("busy share of a proxy at %s per answer", ms(b.cfg.loadCost)),
			fmt.Sprintf("%.2f%%", 100*s), fmt.Sprintf("%.0f%%", 100*goalShare), s <= goalShare})
	}
	if f.measuredCost {
		g, ref := f.cpuPerAttempt[nameGate], f.cpuPerAttempt[name10]
		gs = append(gs, goal{"CPU per attempt while waiting ≤ fixed 10 ms loop's", us(g), us(ref), g > 0 && g <= ref})
		h, bound := f.hwm[nameGate], min(int64(goalHWM), f.hwm[name10])
		gs = append(gs, goal{fmt.Sprintf("VmHWM after %s ≤ %s and ≤ fixed 10 ms loop's (%s)", b.cfg.costWait, mib(goalHWM), mib(f.hwm[name10])),
			mib(h), mib(bound), h <= bound})
		gs = append(gs, goal{"size of the static binary", mib(f.binary), mib(goalBinary), f.binary <= goalBinary})
	}
	if f.measuredOverhead {
		o, bound := f.overhead[nameGate], f.overhead[nameNoPause]+goalOverheadAdd
		gs = append(gs, goal{fmt.Sprintf("already-ready overhead ≤ no-pause loop's (%s) + %s", ms(f.overhead[nameNoPause]), ms(goalOverheadAdd)),
			ms(o), ms(bound), o <= bound})
	}
	return gs
}

// count writes n things: "1 trial", "3 trials".
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
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

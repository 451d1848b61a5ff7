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
	"sync"
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
	// The goals come in this order, whatever the order of measurement.
	goals := map[string][]goal{}
	steps := map[string]func(context.Context) ([]row, []goal, error){
		"busy": b.busy, "overhead": b.overhead, "load": b.load, "cost": b.cost,
		"notice": func(ctx context.Context) ([]row, []goal, error) { return b.notice(ctx, "idle", b.cfg.noticeTrials) },
	}
	for _, name := range measurements() {
		if !b.cfg.only[name] {
			continue
		}
		rows, gs, err := steps[name](ctx)
		rep.rows, goals[name] = append(rep.rows, rows...), gs
		if err != nil {
			rep.failed = true
			rep.notes = append(rep.notes, fmt.Sprintf("%s could not be measured: %v", name, err))
			b.progress("%s: %v", name, err)
		}
	}
	for _, name := range []string{"notice", "busy", "load", "cost", "overhead"} {
		rep.goals = append(rep.goals, goals[name]...)
	}
	rep.header = append(rep.header, "load average at the end: "+loadavg())
	return rep
}

// busy runs the notice trials with every core kept busy by yes(1), as on a
// busy node.
func (b *bench) busy(ctx context.Context) ([]row, []goal, error) {
	for range runtime.NumCPU() {
		h := exec.CommandContext(ctx, "yes") // stdout: /dev/null
		if err := h.Start(); err != nil {
			return nil, nil, fmt.Errorf("yes: %w", err)
		}
		defer func() {
			_ = h.Process.Kill()
			_ = h.Wait()
		}()
	}
	b.progress("busy: %d yes processes running", runtime.NumCPU())
	return b.notice(ctx, "busy", b.cfg.busyTrials)
}

// notice measures how long after the proxy turns ready the app starts.
// Each trial draws its phases once and runs every waiter through them, so
// that the waiters meet the same proxies.
func (b *bench) notice(ctx context.Context, mode string, trials int) ([]row, []goal, error) {
	ws := b.waiters()
	r := rand.New(rand.NewPCG(b.cfg.seed, b.cfg.seed))
	phases := make([][]sidecar.Phase, trials)
	for i := range phases {
		phases[i] = b.noticePhases(r)
	}
	late := make([][]time.Duration, len(ws))
	spent := make([]tally, len(ws))
	err := inTurns(trials, ws, func(i, j int) (string, error) {
		res, err := b.runTrial(ctx, trial{phases: phases[i], w: ws[j], app: true})
		if err == nil && res.appStart.Before(res.readyAt) {
			err = fmt.Errorf("the app started %s before the proxy was ready", ms(res.readyAt.Sub(res.appStart)))
		}
		d := res.appStart.Sub(res.readyAt)
		late[j] = append(late[j], d)
		spent[j].add(res.notReady)
		return ms(d), err
	}, func(i int, said string) {
		b.progress("notice, %s, %d/%d (%s): %s", mode, i+1, trials, describe(phases[i]), said)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%s %w", mode, err)
	}
	rows := make([]row, 5)
	for q, stat := range []string{"p50", "p90", "p99", "max"} {
		rows[q].what = fmt.Sprintf("notice, %s: proxy ready → app start, %s (%s)", mode, stat, count(trials, "trial"))
	}
	rows[4].what = fmt.Sprintf("notice, %s: requests per second while the proxy answers 503 (0 ms per answer)", mode)
	for j := range ws {
		for q, at := range []float64{0.5, 0.9, 0.99, 1} {
			rows[q].vals = append(rows[q].vals, ms(quantile(late[j], at)))
		}
		rows[4].vals = append(rows[4].vals, spent[j].rate())
	}
	p50, p99 := quantile(late[gateAt], 0.5), quantile(late[gateAt], 0.99)
	bound50 := quantile(late[noPauseAt], 0.5) + goalP50Over
	ref99 := quantile(late[fixed50At], 0.99)
	bound99 := min(goalP99, time.Duration(float64(ref99)/goalP99Ratio))
	return rows, []goal{
		{fmt.Sprintf("notice p50, %s ≤ no-pause loop's + %s", mode, ms(goalP50Over)), ms(p50), ms(bound50), p50 <= bound50},
		{fmt.Sprintf("notice p99, %s ≤ %s and ≤ fixed 50 ms loop's ÷ %g (%s)", mode, ms(goalP99), goalP99Ratio, ms(ref99)),
			ms(p99), ms(bound99), p99 <= bound99},
	}, nil
}

// inTurns runs rounds of one run of each waiter, in an order that turns
// from round to round, so that none always follows another. run(i, j)
// makes round i's run of waiter j and says how it went; done(i, said)
// hears what the runs of round i said.
func inTurns(rounds int, ws []waiter, run func(i, j int) (string, error), done func(i int, said string)) error {
	for i := range rounds {
		said := make([]string, len(ws))
		for k := range ws {
			j := (k + i) % len(ws)
			s, err := run(i, j)
			if err != nil {
				return fmt.Errorf("trial %d, %s: %w", i+1, ws[j].name, err)
			}
			said[j] = ws[j].name + " " + s
		}
		done(i, strings.Join(said, ", "))
	}
	return nil
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
func (b *bench) overhead(ctx context.Context) ([]row, []goal, error) {
	e, url, err := b.steady("200")
	if err != nil {
		return nil, nil, err
	}
	defer e.Close()
	ws := b.waiters()
	bare := waiter{name: "direct", argv: func(string, bool) []string { return []string{b.cfg.app} }}
	ways := append([]waiter{bare}, ws...)
	took := make([][]time.Duration, len(ways))
	// Round 0 is not kept: the first run of each binary pays for reading
	// it from disk.
	err = inTurns(b.cfg.overheadRuns+1, ways, func(i, k int) (string, error) {
		d, err := b.startDelay(ctx, ways[k].argv(url, true))
		if i > 0 {
			took[k] = append(took[k], d)
		}
		return ms(d), err
	}, func(i int, _ string) {
		if i%10 == 0 && i > 0 || i == b.cfg.overheadRuns {
			b.progress("overhead %d/%d: median %s direct, %s behind meshgate, %s behind the no-pause loop", i, b.cfg.overheadRuns,
				ms(quantile(took[0], 0.5)), ms(quantile(took[1], 0.5)), ms(quantile(took[2], 0.5)))
		}
	})
	if err != nil {
		return nil, nil, err
	}
	direct := quantile(took[0], 0.5)
	medians, overs := make([]string, len(ws)), make([]string, len(ws))
	for j := range ws {
		m := quantile(took[j+1], 0.5)
		medians[j], overs[j] = ms(m), ms(m-direct)
	}
	rows := []row{
		{fmt.Sprintf("already ready: launch → app start, median of %d (direct exec: %s)", b.cfg.overheadRuns, ms(direct)), medians},
		{"already ready: overhead, that minus direct exec's", overs},
	}
	o, ref := quantile(took[1+gateAt], 0.5)-direct, quantile(took[1+noPauseAt], 0.5)-direct
	return rows, []goal{{fmt.Sprintf("already-ready overhead ≤ no-pause loop's (%s) + %s", ms(ref), ms(goalOverheadAdd)),
		ms(o), ms(ref + goalOverheadAdd), o <= ref+goalOverheadAdd}}, nil
}

// startDelay runs argv, which runs the app, and returns how long after the
// instant before cmd.Start the app started.
func (b *bench) startDelay(ctx context.Context, argv []string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, trialSlack)
	defer cancel()
	path := b.reportPath()
	cmd, stderr := b.command(ctx, argv, []string{"APP_REPORT=" + path})
	before := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%s: %w%s", argv[0], err, tail(stderr))
	}
	start, err := readStart(path)
	return start.Sub(before), err
}

// load measures how hard each waiter works a proxy that takes
// --load-cost to answer: the share of the proxy's time spent answering it.
func (b *bench) load(ctx context.Context) ([]row, []goal, error) {
	ws := b.waiters()
	phases := []sidecar.Phase{{State: sidecar.Closed, For: 300 * time.Millisecond}, {State: "503", For: b.cfg.loadNotReady}, {State: "200"}}
	spent := make([]tally, len(ws))
	err := inTurns(b.cfg.loadTrials, ws, func(_, j int) (string, error) {
		res, err := b.runTrial(ctx, trial{phases: phases, cost: b.cfg.loadCost, w: ws[j]})
		if err == nil && res.notReady.window == 0 {
			err = errors.New("the emulator did not go through its phases")
		}
		spent[j].add(res.notReady)
		return res.notReady.rate(), err
	}, func(i int, said string) {
		b.progress("load %s per answer, trial %d/%d: %s", ms(b.cfg.loadCost), i+1, b.cfg.loadTrials, said)
	})
	if err != nil {
		return nil, nil, err
	}
	rates, shares := make([]string, len(ws)), make([]string, len(ws))
	for j, t := range spent {
		rates[j], shares[j] = t.rate(), fmt.Sprintf("%.2f%%", 100*t.share())
	}
	what := func(figure string) string {
		return fmt.Sprintf("load, 503 at %s per answer: %s (%s)", ms(b.cfg.loadCost), figure, count(b.cfg.loadTrials, "trial"))
	}
	return []row{{what("requests per second"), rates}, {what("the proxy's busy share"), shares}},
		[]goal{{fmt.Sprintf("busy share of a proxy at %s per answer", ms(b.cfg.loadCost)),
			shares[gateAt], fmt.Sprintf("%.0f%%", 100*goalShare), spent[gateAt].share() <= goalShare}}, nil
}

// cost measures each waiter's CPU, per second and per attempt, and its
// VmHWM while it waits on a proxy that answers 503 at once (from /proc: a
// child's ru_maxrss would count the memory of the process it was forked
// from). It also weighs the binary.
func (b *bench) cost(ctx context.Context) ([]row, []goal, error) {
	ws := b.waiters()
	costs, err := b.costsOf(ctx, ws)
	if err != nil {
		return nil, nil, err
	}
	perSec, perAttempt, hwm, size := make([]string, len(ws)), make([]string, len(ws)), make([]string, len(ws)), make([]string, len(ws))
	for j, w := range ws {
		c := costs[j]
		perSec[j] = ms(time.Duration(float64(c.cpu)/c.window.Seconds())) + "/s"
		perAttempt[j], hwm[j], size[j] = "—", "—", "—"
		if c.attempts > 0 {
			perAttempt[j] = us(c.perAttempt())
		}
		if w.own {
			hwm[j] = mib(c.hwm)
		}
		b.progress("cost, %s: %s CPU over %s, %d attempts, VmHWM %s", w.name, ms(c.cpu), c.window.Round(time.Millisecond),
			c.attempts, mib(c.hwm))
	}
	fi, err := os.Stat(b.cfg.meshgate)
	if err != nil {
		return nil, nil, err
	}
	size[0] = mib(fi.Size())
	waiting := fmt.Sprintf("waiting on 503 at 0 ms per answer, %s to %s", b.cfg.costWarmUp, b.cfg.costWait)
	rows := []row{
		{"cost: CPU per second, " + waiting, perSec},
		{"cost: CPU per attempt, " + waiting, perAttempt},
		{fmt.Sprintf("cost: VmHWM of the gate after %s of waiting", b.cfg.costWait), hwm},
		{"cost: size of the static binary", size},
	}
	g, ref := costs[gateAt], costs[fixed10At]
	hwmBound := min(int64(goalHWM), ref.hwm)
	return rows, []goal{
		{"CPU per attempt while waiting ≤ fixed 10 ms loop's", us(g.perAttempt()), us(ref.perAttempt()),
			g.perAttempt() > 0 && g.perAttempt() <= ref.perAttempt()},
		{fmt.Sprintf("VmHWM after %s ≤ %s and ≤ fixed 10 ms loop's (%s)", b.cfg.costWait, mib(goalHWM), mib(ref.hwm)),
			mib(g.hwm), mib(hwmBound), g.hwm <= hwmBound},
		{"size of the static binary", mib(fi.Size()), mib(goalBinary), fi.Size() <= goalBinary},
	}, nil
}

// costsOf measures the waiters side by side, in the same seconds, so that
// whatever else the machine does weighs on all of them alike: measured in
// turn, a burst of background load lands on one of them and decides the
// comparison. The no-pause loop goes alone, after the others: it keeps a
// core busy by itself.
func (b *bench) costsOf(ctx context.Context, ws []waiter) ([]waitCost, error) {
	costs, errs := make([]waitCost, len(ws)), make([]error, len(ws))
	var wg sync.WaitGroup
	for j, w := range ws {
		if j != noPauseAt {
			wg.Go(func() { costs[j], errs[j] = b.costOf(ctx, w) })
		}
	}
	wg.Wait()
	costs[noPauseAt], errs[noPauseAt] = b.costOf(ctx, ws[noPauseAt])
	for j, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ws[j].name, err)
		}
	}
	return costs, nil
}

// waitCost is what one waiter cost over the measured part of its wait.
type waitCost struct {
	cpu, window   time.Duration
	attempts, hwm int64
}

func (c waitCost) perAttempt() time.Duration {
	if c.attempts == 0 {
		return 0
	}
	return c.cpu / time.Duration(c.attempts)
}

// costOf runs w against a proxy that answers 503 at once and samples its
// CPU at the end of --cost-warm-up and of --cost-wait, and then its VmHWM.
func (b *bench) costOf(ctx context.Context, w waiter) (waitCost, error) {
	e, url, err := b.steady("503")
	if err != nil {
		return waitCost{}, err
	}
	defer e.Close()
	ctx, cancel := context.WithTimeout(ctx, b.cfg.costWait+trialSlack)
	defer cancel()
	cmd, stderr := b.command(ctx, w.argv(url, false), nil)
	launched := time.Now()
	if err := cmd.Start(); err != nil {
		return waitCost{}, err
	}
	pid, ended := cmd.Process.Pid, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(ended)
	}()
	defer func() {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-ended
	}()
	var at [2]waitCost
	for i, d := range []time.Duration{b.cfg.costWarmUp, b.cfg.costWait} {
		select {
		case <-ended:
			return waitCost{}, fmt.Errorf("ended while waiting: %v%s", cmd.ProcessState, tail(stderr))
		case <-time.After(time.Until(launched.Add(d))):
		}
		cpu, err := procCPU(pid)
		if err != nil {
			return waitCost{}, err
		}
		at[i] = waitCost{cpu: cpu, attempts: e.Requests(), window: time.Since(launched)}
	}
	hwm, err := procHWM(pid)
	return waitCost{at[1].cpu - at[0].cpu, at[1].window - at[0].window, at[1].attempts - at[0].attempts, hwm}, err
}

// procCPU is the user and system time of a process, with that of the
// children it has waited for (the loop's curl and sleep).
func procCPU(pid int) (time.Duration, error) {
	stat := readProc(strconv.Itoa(pid) + "/stat")
	// The command name, in parentheses, may hold spaces: fields start
	// after its closing one, with the state (field 3).
	fields := strings.Fields(stat[strings.LastIndexByte(stat, ')')+1:])
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

func procHWM(pid int) (int64, error) {
	v := procValue(strconv.Itoa(pid)+"/status", "VmHWM")
	kb, err := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/status: VmHWM: %w", pid, err)
	}
	return kb << 10, nil
}

// count writes n things: "1 trial", "3 trials".
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

func describe(phases []sidecar.Phase) string {
	parts := make([]string, len(phases))
	for i, p := range phases {
		parts[i] = string(p.State)
		if p.For > 0 {
			parts[i] += " " + p.For.String()
		}
	}
	return strings.Join(parts, " → ")
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// measurements are the names --only takes, in the order they run.
func measurements() []string { return []string{"notice", "busy", "overhead", "load", "cost"} }

// config is what the command line says.
type config struct {
	meshgate, app, refgate string
	also                   []extra // more gates to measure, such as another meshgate build
	only                   map[string]bool
	seed                   uint64

	noticeTrials, busyTrials, overheadRuns, loadTrials    int
	noticeClosedMax, noticeNotReadyMin, noticeNotReadyMax time.Duration
	loadCost, loadNotReady, costWarmUp, costWait          time.Duration
}

// extra is a gate given with --also: a binary that takes meshgate's flags.
type extra struct{ name, path string }

func parse(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: go run ./test/bench --meshgate bin/meshgate --app bin/app --refgate bin/refgate [flags]")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.meshgate, "meshgate", "bin/meshgate", "the meshgate binary to measure")
	fs.StringVar(&cfg.app, "app", "bin/app", "the app to start behind it (test/app)")
	fs.StringVar(&cfg.refgate, "refgate", "bin/refgate", "the reference gate (test/refgate), run with no pause, 10 ms and 50 ms")
	fs.Func("also", "NAME=PATH: another gate that takes meshgate's flags, measured beside it (repeatable)", func(s string) error {
		name, path, ok := strings.Cut(s, "=")
		if !ok || name == "" || path == "" {
			return errors.New("want NAME=PATH")
		}
		cfg.also = append(cfg.also, extra{name, path})
		return nil
	})
	only := fs.String("only", strings.Join(measurements(), ","), "measurements to make, comma-separated")
	fs.Uint64Var(&cfg.seed, "seed", 1, "seed of the notice trials' random phases, for repeatable runs")
	fs.IntVar(&cfg.noticeTrials, "notice-trials", 25, "notice: trials per gate on an idle machine")
	fs.IntVar(&cfg.busyTrials, "busy-trials", 15, "busy: notice trials per gate with every core kept busy by yes(1)")
	fs.DurationVar(&cfg.noticeClosedMax, "notice-closed-max", 300*time.Millisecond, "notice: the port is closed for U[0, this)")
	fs.DurationVar(&cfg.noticeNotReadyMin, "notice-503-min", 500*time.Millisecond, "notice: then answers 503 for U[this, --notice-503-max)")
	fs.DurationVar(&cfg.noticeNotReadyMax, "notice-503-max", 1500*time.Millisecond, "notice: see --notice-503-min")
	fs.IntVar(&cfg.overheadRuns, "overhead-runs", 60, "overhead: interleaved runs of each gate and of direct exec, proxy ready at once")
	fs.IntVar(&cfg.loadTrials, "load-trials", 2, "load: trials per gate")
	fs.DurationVar(&cfg.loadCost, "load-cost", 20*time.Millisecond, "load: the proxy's work per readiness answer")
	fs.DurationVar(&cfg.loadNotReady, "load-503", 5*time.Second, "load: the proxy answers 503 for this long")
	fs.DurationVar(&cfg.costWarmUp, "cost-warm-up", time.Second, "cost: waiting time left out of CPU figures (start-up)")
	fs.DurationVar(&cfg.costWait, "cost-wait", 10*time.Second, "cost: waiting time on a proxy that answers 503, after which VmHWM is read")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	var err error
	cfg.only, err = parseOnly(*only)
	switch {
	case fs.NArg() > 0:
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case err != nil:
		return cfg, err
	case cfg.noticeTrials < 1 || cfg.busyTrials < 1 || cfg.overheadRuns < 1 || cfg.loadTrials < 1:
		return cfg, errors.New("trial and run counts must be at least 1")
	case cfg.noticeClosedMax < 0 || cfg.noticeNotReadyMin <= 0 || cfg.noticeNotReadyMax < cfg.noticeNotReadyMin:
		return cfg, errors.New("notice phases: want --notice-closed-max ≥ 0 and 0 < --notice-503-min ≤ --notice-503-max")
	case cfg.loadCost <= 0 || cfg.loadNotReady <= 0 || cfg.costWarmUp <= 0 || cfg.costWait <= cfg.costWarmUp:
		return cfg, errors.New("load and cost durations must be positive, and --cost-wait longer than --cost-warm-up")
	}
	return cfg, nil
}

func parseOnly(list string) (map[string]bool, error) {
	only := map[string]bool{}
	for _, name := range strings.Split(list, ",") {
		if name = strings.TrimSpace(name); !slices.Contains(measurements(), name) {
			return nil, fmt.Errorf("--only: unknown measurement %q (want %s)", name, strings.Join(measurements(), ", "))
		}
		only[name] = true
	}
	return only, nil
}

// run is the benchmark from the command line to the exit code.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	cfg, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	// Absolute, so that the shell loop and meshgate find them whatever
	// their working directory.
	paths := []*string{&cfg.meshgate, &cfg.app, &cfg.refgate}
	for i := range cfg.also {
		paths = append(paths, &cfg.also[i].path)
	}
	for _, p := range paths {
		if *p, err = filepath.Abs(*p); err == nil {
			_, err = os.Stat(*p)
		}
		if err != nil {
			fmt.Fprintf(stderr, "bench: %v (make build tools builds bin/meshgate, bin/app and bin/refgate)\n", err)
			return 1
		}
	}
	b := &bench{cfg: cfg, env: childEnv(environ), log: stderr}
	// The children's PATH is ours, the one the shell loop will use.
	b.curl, _ = exec.LookPath("curl")
	if b.dir, err = os.MkdirTemp("", "meshgate-bench-"); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	defer os.RemoveAll(b.dir)
	began := time.Now()
	rep := b.measure(ctx)
	rep.write(stdout)
	b.progress("done in %s", time.Since(began).Round(time.Second))
	if rep.failed {
		return 1
	}
	return 0
}

// childEnv is the environment of every process the benchmark starts: ours,
// without what would change what is measured. MESHGATE_* would set
// meshgate's flags; APP_* the app's behaviour; proxy variables would send
// curl's requests elsewhere (meshgate ignores them).
func childEnv(environ []string) []string {
	var env []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		upper := strings.ToUpper(name)
		if strings.HasPrefix(name, "MESHGATE_") || strings.HasPrefix(name, "APP_") ||
			strings.HasSuffix(upper, "_PROXY") && upper != "NO_PROXY" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

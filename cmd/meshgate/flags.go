package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap/zapcore"

	"github.com/meshgate/meshgate/gate"
	"github.com/meshgate/meshgate/probe"
)

// envPrefix starts the name of the variable that stands for each flag.
const envPrefix = "MESHGATE_"

// defaultProbe is Istio's readiness endpoint, the most common mesh.
const defaultProbe = "http://localhost:15020/healthz/ready"

// defaultForward is the list of signals forwarded to a supervised command,
// besides the stop signals, which always are (they are listed for the
// reader).
const defaultForward = "TERM,INT,HUP,QUIT,USR1,USR2,WINCH"

// config is everything the command line and the environment say, checked
// and nothing more. run builds the components from it.
type config struct {
	mode           string // "" (wrap), "wait", "check", "quit", "install", "version", "help"
	probes         []string
	preset         string
	timeout        time.Duration
	attemptTimeout time.Duration
	pollRefused    time.Duration
	pollRefusedMax time.Duration
	pollMin        time.Duration
	pollMax        time.Duration
	pollShare      float64
	pollJitter     float64
	onTimeout      string
	insecure       bool
	disabled       bool
	quit           bool
	quitURLs       []string
	quitOn         string
	quitRemote     bool
	quitTimeout    time.Duration
	forward        []syscall.Signal
	logFormat      string
	logLevel       string
	command        []string        // the command to run; for install, the destination
	unknownEnv     []string        // MESHGATE_* variables that name no flag
	given          map[string]bool // flags set on the command line or by a variable
	fromEnv        map[string]bool // flags set by a variable
	overridden     []string        // variables the command line's --preset overrides
}

// fromVariable names the variable that set flag in err, if one did; an
// error about a flag's value names the value already.
func (c config) fromVariable(flag string, err error) error {
	if !c.fromEnv[flag] {
		return err
	}
	return gate.Usagef("%s: %v", envName(flag), err)
}

// src names where a flag's value came from, for an error: the variable
// that set it, or the flag.
func (c config) src(flag string) string {
	if c.fromEnv[flag] {
		return envName(flag)
	}
	return "--" + flag
}

// quits reports whether the proxy is to be told to quit after the command.
func (c config) quits() bool { return c.quit || len(c.quitURLs) > 0 }

// mode describes one subcommand and the flag groups it takes.
type mode struct {
	name     string
	synopsis string
	about    string
	probes   bool // --probe, --preset, --attempt-timeout, --disabled, ...
	waits    bool // --timeout, --on-timeout, --poll-*
	quits    bool // --quit-url, --quit-timeout, --quit-allow-remote
	flags    bool // takes flags at all
}

func modes() []mode {
	return []mode{
		{name: "", synopsis: "meshgate [flags] -- COMMAND [ARG...]", probes: true, waits: true, quits: true, flags: true,
			about: "Wait until the mesh proxy is ready, then replace meshgate with COMMAND (same PID,\n" +
				"same stdio, argv and environment as given). With --quit or --quit-url, run COMMAND as a\n" +
				"child instead, in a process group of its own, forward TERM, INT, HUP and QUIT and the\n" +
				"--forward-signals to it, and tell the proxy to quit when it ends (Jobs). Signals other\n" +
				"than those four that come before COMMAND runs are dropped."},
		{name: "wait", synopsis: "meshgate wait [flags]", probes: true, waits: true, flags: true,
			about: "Wait until the mesh proxy is ready, then exit 0 (postStart hooks, scripts)."},
		{name: "check", synopsis: "meshgate check [flags]", probes: true, flags: true,
			about: "Try every probe once: exit 0 if all are ready, 1 if not (exec probes)."},
		{name: "quit", synopsis: "meshgate quit [flags]", quits: true, flags: true,
			about: "Tell the proxy to quit now (the --preset's quit endpoint, default istio, or --quit-url):\n" +
				"exit 0 when every endpoint took it, 1 if not (Argo steps, scripts, preStop hooks)."},
		{name: "install", synopsis: "meshgate install [flags] DEST", flags: true,
			about: "Copy this binary to DEST/meshgate (DEST a directory, e.g. a shared emptyDir) or to the\n" +
				"file DEST, atomically: for init containers whose image has no cp."},
		{name: "version", synopsis: "meshgate version",
			about: "Print the version."},
		{name: "help", synopsis: "meshgate help [COMMAND]",
			about: "Show help for meshgate or one of its commands."},
	}
}

func lookupMode(name string) (mode, bool) {
	for _, m := range modes() {
		if m.name == name {
			return m, true
		}
	}
	return mode{}, false
}

// parse reads args and the environment into a config. The mode is set
// even when it fails, so that help can be shown for it.
func parse(args, environ []string) (config, error) {
	var cfg config
	if len(args) > 0 {
		if m, ok := lookupMode(args[0]); ok && m.name != "" {
			cfg.mode = m.name
			args = args[1:]
		} else if args[0] != "--" && !strings.HasPrefix(args[0], "-") {
			return cfg, gate.Usagef("unknown command %q (to run a command, put it after --)", args[0])
		}
	}
	m, _ := lookupMode(cfg.mode)
	if !m.flags {
		return parsePlain(cfg, m, args)
	}
	var forward string
	fs := newFlagSet(m, &cfg, &forward)
	if err := fs.Parse(args); err != nil {
		return cfg, gate.Usage(err)
	}
	if help, _ := fs.GetBool("help"); help {
		return cfg, pflag.ErrHelp
	}
	var err error
	cfg.fromEnv = map[string]bool{}
	if cfg.unknownEnv, cfg.overridden, err = applyEnv(fs, environ, cfg.fromEnv); err != nil {
		return cfg, err
	}
	if m.name == "" {
		if cfg.forward, err = parseSignals(forward); err != nil {
			return cfg, gate.Usagef("%s: %v", cfg.src("forward-signals"), err)
		}
	}
	if cfg.command, err = positional(m, fs.Args(), fs.ArgsLenAtDash()); err != nil {
		return cfg, err
	}
	cfg.given = map[string]bool{}
	fs.Visit(func(f *pflag.Flag) { cfg.given[f.Name] = true })
	return cfg, validate(cfg, m)
}

// positional checks the arguments that are not flags.
func positional(m mode, rest []string, dash int) ([]string, error) {
	switch {
	case m.name == "install" && len(rest) != 1:
		return nil, gate.Usagef("install takes one destination, got %d arguments", len(rest))
	case m.name == "install":
		return rest, nil
	case m.name != "" && len(rest) > 0:
		return nil, gate.Usagef("%s takes no arguments, got %q", m.name, rest[0])
	case m.name != "":
		return nil, nil
	case dash < 0 && len(rest) == 0:
		return nil, gate.Usagef("missing command: usage is meshgate [flags] -- COMMAND [ARG...]")
	case dash < 0:
		return nil, gate.Usagef("missing -- before the command %q", rest[0])
	case dash > 0:
		return nil, gate.Usagef("unexpected argument %q before --", rest[0])
	case len(rest) == 0:
		return nil, gate.Usagef("missing command after --")
	case rest[0] == "":
		return nil, gate.Usagef("empty command after --")
	}
	return rest, nil
}

// parsePlain handles the modes without flags.
func parsePlain(cfg config, m mode, args []string) (config, error) {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		return cfg, pflag.ErrHelp
	}
	switch {
	case m.name == "help" && len(args) <= 1:
		if len(args) == 1 {
			if _, ok := lookupMode(args[0]); !ok {
				return cfg, gate.Usagef("help: unknown command %q", args[0])
			}
		}
		cfg.command = args
		return cfg, nil
	case len(args) > 0:
		return cfg, gate.Usagef("%s takes no arguments, got %q", m.name, args[0])
	}
	return cfg, nil
}

func newFlagSet(m mode, cfg *config, forward *string) *pflag.FlagSet {
	fs := pflag.NewFlagSet("meshgate "+m.name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned and printed once by run
	fs.SortFlags = false
	if m.probes {
		fs.StringArrayVar(&cfg.probes, "probe", nil,
			"readiness probe, repeatable; all must pass: http://, https:// (ready on 2xx) or tcp://HOST:PORT (ready when it connects) (default "+defaultProbe+")")
	}
	if m.probes || m.quits {
		fs.StringVar(&cfg.preset, "preset", "", "use the endpoints of a mesh: "+presetNames()+"; --probe and --quit-url override them")
	}
	if m.waits {
		fs.DurationVar(&cfg.timeout, "timeout", gate.DefaultTimeout, "give up waiting after this long; 0 waits for ever")
		fs.StringVar(&cfg.onTimeout, "on-timeout", "fail", "after the timeout: fail (exit 69, the command never starts) or start (warn and go on)")
	}
	if m.probes {
		fs.DurationVar(&cfg.attemptTimeout, "attempt-timeout", gate.DefaultAttemptTimeout, "bound on each attempt of each probe")
	}
	if m.waits {
		fs.DurationVar(&cfg.pollRefused, "poll-refused", gate.DefaultRefused, "pause while the proxy's port refuses connections (costs the proxy nothing)")
		fs.DurationVar(&cfg.pollRefusedMax, "poll-refused-max", gate.DefaultRefusedMax, "the pause while refused grows by 10% an attempt up to this")
		fs.DurationVar(&cfg.pollMin, "poll-min", gate.DefaultPollMin, "shortest pause once the proxy answers")
		fs.DurationVar(&cfg.pollMax, "poll-max", gate.DefaultPollMax, "longest pause once the proxy answers")
		fs.Float64Var(&cfg.pollShare, "poll-share", gate.DefaultShare, "pace answered attempts so the proxy spends at most this share of its time answering (0.04 = 4%)")
		fs.Float64Var(&cfg.pollJitter, "poll-jitter", gate.DefaultJitter, "vary each pause by up to this fraction, so pods started together drift apart")
	}
	if m.probes || m.quits {
		fs.BoolVar(&cfg.insecure, "insecure-skip-verify", false, "do not verify the certificates of https probes and quit URLs")
	}
	if m.probes {
		fs.BoolVar(&cfg.disabled, "disabled", false, "do not wait: start the command (or pass the check) at once; does not turn off --quit")
	}
	if m.name == "" {
		fs.BoolVar(&cfg.quit, "quit", false, "supervise the command and tell the proxy to quit when it ends (the --preset's quit endpoint, default istio)")
	}
	if m.quits {
		fs.StringArrayVar(&cfg.quitURLs, "quit-url", nil, "quit endpoint to POST to (repeatable; implies --quit), e.g. another sidecar's")
	}
	if m.name == "" {
		fs.StringVar(&cfg.quitOn, "quit-on", "always", "when to quit: always, or success (only if the command exited 0; for restartPolicy: OnFailure)")
	}
	if m.quits {
		fs.DurationVar(&cfg.quitTimeout, "quit-timeout", gate.DefaultQuitLimit, "bound on the whole quit, retries included")
		fs.BoolVar(&cfg.quitRemote, "quit-allow-remote", false, "allow quit URLs whose host is not loopback")
	}
	if m.name == "" {
		fs.StringVar(forward, "forward-signals", defaultForward, "signals forwarded to a supervised command besides TERM, INT, HUP and QUIT, which always are (names, comma-separated; empty: no others)")
	}
	fs.StringVar(&cfg.logFormat, "log-format", "json", "log format on stderr: json or console")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolP("help", "h", false, "show this help")
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name != "help" {
			f.Usage += " [$" + envName(f.Name) + "]"
		}
	})
	return fs
}

func presetNames() string {
	var names []string
	for _, p := range probe.Presets() {
		names = append(names, p.Name)
	}
	return strings.Join(names, ", ")
}

// envName gives the variable that stands for a flag: --attempt-timeout is
// MESHGATE_ATTEMPT_TIMEOUT.
func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnv sets each flag not given on the command line from its variable,
// if that is set and not empty, and marks it in fromEnv. Repeatable flags
// take a comma-separated list. The command line wins as a whole: a
// --preset given there also wins over MESHGATE_PROBE and
// MESHGATE_QUIT_URL, which are returned as overridden. It returns the
// MESHGATE_ variables that name no flag of any mode, for a warning: a
// typo must not pass unseen, but a newer chart must not stop an older
// binary either.
func applyEnv(fs *pflag.FlagSet, environ []string, fromEnv map[string]bool) (unknown, overridden []string, err error) {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	presetGiven := fs.Changed("preset")
	fs.VisitAll(func(f *pflag.Flag) {
		v := env[envName(f.Name)]
		if err != nil || f.Changed || v == "" || f.Name == "help" {
			return
		}
		if presetGiven && (f.Name == "probe" || f.Name == "quit-url") {
			overridden = append(overridden, envName(f.Name))
			return
		}
		values := []string{v}
		if f.Value.Type() == "stringArray" {
			values = strings.Split(v, ",")
		}
		for _, one := range values {
			if e := fs.Set(f.Name, strings.TrimSpace(one)); e != nil {
				err = gate.Usagef("%s=%q: %v", envName(f.Name), probe.Redact(v), e)
				return
			}
		}
		fromEnv[f.Name] = true
	})
	if err != nil {
		return nil, nil, err
	}
	known := map[string]bool{}
	for _, m := range modes() {
		if m.flags {
			newFlagSet(m, &config{}, new(string)).VisitAll(func(f *pflag.Flag) { known[envName(f.Name)] = true })
		}
	}
	for k := range env {
		if strings.HasPrefix(k, envPrefix) && !known[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	return unknown, overridden, nil
}

// signalNumbers are the signals --forward-signals may name. Left out on
// purpose: KILL and STOP (cannot be caught), CHLD (ours, for reaping), and
// the synchronous ones (ILL, TRAP, ABRT, BUS, FPE, SEGV, SYS), which
// report a fault of the process that gets them.
func signalNumbers() map[string]syscall.Signal {
	return map[string]syscall.Signal{
		"HUP": syscall.SIGHUP, "INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT, "USR1": syscall.SIGUSR1,
		"USR2": syscall.SIGUSR2, "PIPE": syscall.SIGPIPE, "ALRM": syscall.SIGALRM, "TERM": syscall.SIGTERM,
		"CONT": syscall.SIGCONT, "TSTP": syscall.SIGTSTP, "TTIN": syscall.SIGTTIN, "TTOU": syscall.SIGTTOU,
		"URG": syscall.SIGURG, "XCPU": syscall.SIGXCPU, "XFSZ": syscall.SIGXFSZ, "VTALRM": syscall.SIGVTALRM,
		"PROF": syscall.SIGPROF, "WINCH": syscall.SIGWINCH, "IO": syscall.SIGIO, "PWR": syscall.SIGPWR,
	}
}

// parseSignals reads a list such as "TERM,SIGINT,usr1"; an empty list
// ("" or ",") forwards no signal besides the stop signals.
func parseSignals(list string) ([]syscall.Signal, error) {
	var sigs []syscall.Signal
	known := signalNumbers()
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(name)), "SIG")
		if name == "" {
			continue
		}
		s, ok := known[name]
		if !ok {
			return nil, fmt.Errorf("cannot forward signal %q", name)
		}
		sigs = append(sigs, s)
	}
	return sigs, nil
}

// Bounds past which a duration is a mistake (a missing unit, a typo), not
// a choice: a gate that waits a day for a proxy is broken either way.
const (
	maxTimeout = 24 * time.Hour
	maxPause   = time.Hour
)

// validate checks values that parse but make no sense, alone or together.
func validate(cfg config, m mode) error {
	if err := checkBounds(cfg, m); err != nil {
		return err
	}
	if err := checkTogether(cfg, m); err != nil {
		return err
	}
	if m.probes && cfg.attemptTimeout <= 0 {
		return gate.Usagef("%s must be positive, got %s", cfg.src("attempt-timeout"), cfg.attemptTimeout)
	}
	if m.waits {
		switch {
		case cfg.timeout < 0:
			return gate.Usagef("%s must not be negative, got %s (0 waits for ever)", cfg.src("timeout"), cfg.timeout)
		case cfg.pollRefused <= 0:
			return gate.Usagef("%s must be positive, got %s", cfg.src("poll-refused"), cfg.pollRefused)
		case cfg.pollRefusedMax < cfg.pollRefused:
			return gate.Usagef("%s (%s) must not be less than %s (%s)", cfg.src("poll-refused-max"), cfg.pollRefusedMax, cfg.src("poll-refused"), cfg.pollRefused)
		case cfg.pollMin <= 0:
			return gate.Usagef("%s must be positive, got %s", cfg.src("poll-min"), cfg.pollMin)
		case cfg.pollMax < cfg.pollMin:
			return gate.Usagef("%s (%s) must not be less than %s (%s)", cfg.src("poll-max"), cfg.pollMax, cfg.src("poll-min"), cfg.pollMin)
		case !(cfg.pollShare > 0 && cfg.pollShare < 1):
			return gate.Usagef("%s must be between 0 and 1 (exclusive), got %v", cfg.src("poll-share"), cfg.pollShare)
		case !(cfg.pollJitter >= 0 && cfg.pollJitter < 1):
			return gate.Usagef("%s must be at least 0 and less than 1, got %v", cfg.src("poll-jitter"), cfg.pollJitter)
		case cfg.onTimeout != "fail" && cfg.onTimeout != "start":
			return gate.Usagef("%s must be fail or start, got %q", cfg.src("on-timeout"), cfg.onTimeout)
		}
	}
	if m.quits && cfg.quitTimeout <= 0 {
		return gate.Usagef("%s must be positive, got %s", cfg.src("quit-timeout"), cfg.quitTimeout)
	}
	if m.name == "" && cfg.quitOn != "always" && cfg.quitOn != "success" {
		return gate.Usagef("%s must be always or success, got %q", cfg.src("quit-on"), cfg.quitOn)
	}
	if cfg.preset != "" {
		if _, err := probe.LookupPreset(cfg.preset); err != nil {
			return cfg.fromVariable("preset", gate.Usage(err))
		}
	}
	if cfg.logFormat != "json" && cfg.logFormat != "console" {
		return gate.Usagef("%s must be json or console, got %q", cfg.src("log-format"), cfg.logFormat)
	}
	if !knownLevel(cfg.logLevel) {
		return gate.Usagef("%s must be debug, info, warn or error, got %q", cfg.src("log-level"), cfg.logLevel)
	}
	if _, err := buildProbes(cfg); err != nil {
		return cfg.fromVariable("probe", err)
	}
	if _, err := quitURLs(cfg); err != nil {
		return cfg.fromVariable("quit-url", err)
	}
	return nil
}

// checkBounds rejects absurd durations.
func checkBounds(cfg config, m mode) error {
	limits := []struct {
		flag  string
		value time.Duration
		max   time.Duration
		ok    bool
	}{
		{"timeout", cfg.timeout, maxTimeout, m.waits},
		{"attempt-timeout", cfg.attemptTimeout, maxPause, m.probes},
		{"poll-refused", cfg.pollRefused, maxPause, m.waits},
		{"poll-refused-max", cfg.pollRefusedMax, maxPause, m.waits},
		{"poll-min", cfg.pollMin, maxPause, m.waits},
		{"poll-max", cfg.pollMax, maxPause, m.waits},
		{"quit-timeout", cfg.quitTimeout, maxPause, m.quits},
	}
	for _, l := range limits {
		if l.ok && l.value > l.max {
			return gate.Usagef("%s %s is more than %s: a missing unit?", cfg.src(l.flag), l.value, l.max)
		}
	}
	return nil
}

// checkTogether rejects options that contradict each other or do nothing
// without another: a setting that silently does nothing is a mistake the
// user would only find on the bad day.
func checkTogether(cfg config, m mode) error {
	if m.waits && cfg.onTimeout == "start" && cfg.timeout == 0 {
		return gate.Usagef("%s start needs a %s: with 0 the wait never times out", cfg.src("on-timeout"), cfg.src("timeout"))
	}
	// Only when both are chosen: a short --timeout with the default
	// attempt timeout is fine, the deadline cuts the attempt.
	if m.waits && m.probes && cfg.given["attempt-timeout"] && cfg.given["timeout"] && cfg.timeout > 0 && cfg.attemptTimeout > cfg.timeout {
		return gate.Usagef("%s (%s) is longer than %s (%s)", cfg.src("attempt-timeout"), cfg.attemptTimeout, cfg.src("timeout"), cfg.timeout)
	}
	if m.name != "" {
		return nil
	}
	if !cfg.quits() {
		for _, name := range []string{"quit-on", "quit-timeout", "quit-allow-remote", "forward-signals"} {
			if cfg.given[name] {
				return gate.Usagef("%s applies only with --quit or --quit-url", cfg.src(name))
			}
		}
	}
	return nil
}

func knownLevel(l string) bool {
	_, err := zapcore.ParseLevel(l)
	return err == nil && (l == "debug" || l == "info" || l == "warn" || l == "error")
}

// usage is the help text of a mode.
func usage(name string) string {
	m, _ := lookupMode(name)
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: %s\n", m.synopsis)
	if m.name == "" {
		for _, o := range modes()[1:] {
			fmt.Fprintf(&b, "       %s\n", o.synopsis)
		}
	}
	fmt.Fprintf(&b, "\n%s\n", m.about)
	if m.flags {
		fmt.Fprintf(&b, "\nFlags (each also read from the variable in brackets; the command line wins):\n%s",
			newFlagSet(m, &config{}, new(string)).FlagUsages())
	}
	if m.name == "" {
		b.WriteString("\nExit codes: the command's own once it runs (128+N if signal N killed a supervised command);\n" +
			"2 bad usage; 69 proxy not ready in time; 126 command not executable; 127 command not found;\n" +
			"128+N signal N while waiting; 1 other errors.\n")
	}
	return b.String()
}

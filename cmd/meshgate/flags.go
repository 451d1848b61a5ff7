package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
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

// config is what the command line and the environment say, checked and
// turned into the values the components take: run builds them from it
// alone, and hands the environment on only to the command.
type config struct {
	mode           string        // "" (wrap), "wait", "check", "quit", "install", "version", "help"
	probes         []probe.Probe // --probe, or the --preset's, or Istio's
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
	// supervise is set by --quit or --quit-url: the command runs as a
	// child, and the proxy is told to quit when it ends.
	supervise   bool
	quitURLs    []*url.URL // where a quit is POSTed: after a supervised command, or by the quit mode
	quitOn      string
	quitTimeout time.Duration
	forward     []os.Signal // besides the stop signals
	logFormat   string
	logLevel    string
	command     []string // wrap: the command and its arguments
	installDest string   // install: where the binary goes
	helpTopic   string   // help: the mode to show help for; "" for meshgate's own
	unknownEnv  []string // MESHGATE_* variables that name no flag
	overridden  []string // variables the command line's --preset overrides
}

// flagText holds the flags whose text parse turns into other values of
// the config.
type flagText struct {
	probes     []string
	preset     string
	quit       bool // --quit
	quitURLs   []string
	quitRemote bool
	forward    string
}

// parser holds what parse knows of where each flag's value came from.
type parser struct {
	m       mode
	fs      *pflag.FlagSet
	fromEnv map[string]bool // flags set by a variable
}

// fromVariable names the variable that set flag in err, if one did; an
// error about a flag's value names the value already.
func (p *parser) fromVariable(flag string, err error) error {
	if !p.fromEnv[flag] {
		return err
	}
	return gate.Usagef("%s: %v", envName(flag), err)
}

// src names where a flag's value came from, for an error: the variable
// that set it, or the flag.
func (p *parser) src(flag string) string {
	if p.fromEnv[flag] {
		return envName(flag)
	}
	return "--" + flag
}

// mode describes one subcommand and the flag groups it takes.
type mode struct {
	name       string
	synopsis   string
	about      string
	probeFlags bool // --probe, --preset, --attempt-timeout, --disabled, ...
	waitFlags  bool // --timeout, --on-timeout, --poll-*
	quitFlags  bool // --quit-url, --quit-timeout, --quit-allow-remote
	flags      bool // takes flags at all
}

func modes() []mode {
	return []mode{
		{name: "", synopsis: "meshgate [flags] -- COMMAND [ARG...]", probeFlags: true, waitFlags: true, quitFlags: true, flags: true,
			about: "Wait until the mesh proxy is ready, then replace meshgate with COMMAND (same PID,\n" +
				"same stdio, argv and environment as given). With --quit or --quit-url, run COMMAND as a\n" +
				"child instead, in a process group of its own, forward TERM, INT, HUP and QUIT and the\n" +
				"--forward-signals to it, and tell the proxy to quit when it ends (Jobs). Signals other\n" +
				"than those four that come before COMMAND runs are dropped."},
		{name: "wait", synopsis: "meshgate wait [flags]", probeFlags: true, waitFlags: true, flags: true,
			about: "Wait until the mesh proxy is ready, then exit 0 (postStart hooks, scripts)."},
		{name: "check", synopsis: "meshgate check [flags]", probeFlags: true, flags: true,
			about: "Try every probe once: exit 0 if all are ready, 1 if not (exec probes)."},
		{name: "quit", synopsis: "meshgate quit [flags]", quitFlags: true, flags: true,
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
	var text flagText
	p := &parser{m: m, fs: newFlagSet(m, &cfg, &text), fromEnv: map[string]bool{}}
	if err := p.fs.Parse(args); err != nil {
		return cfg, gate.Usage(err)
	}
	if help, _ := p.fs.GetBool("help"); help {
		return cfg, pflag.ErrHelp
	}
	var err error
	if cfg.unknownEnv, cfg.overridden, err = applyEnv(p.fs, environ, p.fromEnv); err != nil {
		return cfg, err
	}
	if cfg.forward, err = parseSignals(text.forward); err != nil {
		return cfg, gate.Usagef("%s: %v", p.src("forward-signals"), err)
	}
	rest, err := positional(m, p.fs.Args(), p.fs.ArgsLenAtDash())
	if err != nil {
		return cfg, err
	}
	if m.name == "install" {
		cfg.installDest = rest[0]
	} else {
		cfg.command = rest
	}
	cfg.supervise = text.quit || len(text.quitURLs) > 0
	if err := p.validate(cfg, text.preset); err != nil {
		return cfg, err
	}
	return cfg, p.build(&cfg, text)
}

// build turns the probes and the quit URLs into the values the components
// take.
func (p *parser) build(cfg *config, text flagText) error {
	opts := probe.Options{InsecureSkipVerify: cfg.insecure, UserAgent: "meshgate/" + version}
	var err error
	if p.m.probeFlags {
		if cfg.probes, err = buildProbes(text.probes, text.preset, opts); err != nil {
			return p.fromVariable("probe", err)
		}
	}
	if text.quit || cfg.mode == "quit" {
		if text.quitURLs, err = presetQuitURL(text.quitURLs, text.preset); err != nil {
			return p.fromVariable("quit-url", err)
		}
	}
	parseQuitURL := func(s string) (*url.URL, error) { return gate.ParseQuitURL(s, text.quitRemote) }
	if cfg.quitURLs, err = parseEach(text.quitURLs, parseQuitURL); err != nil {
		return p.fromVariable("quit-url", err)
	}
	return nil
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
		if len(args) == 1 {
			cfg.helpTopic = args[0]
		}
		return cfg, nil
	case len(args) > 0:
		return cfg, gate.Usagef("%s takes no arguments, got %q", m.name, args[0])
	}
	return cfg, nil
}

// newFlagSet defines the flags of mode m, bound to cfg and text. The order
// is the order of the help.
func newFlagSet(m mode, cfg *config, text *flagText) *pflag.FlagSet {
	fs := pflag.NewFlagSet("meshgate "+m.name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned and printed once by run
	fs.SortFlags = false
	addWaitFlags(fs, m, cfg, text)
	if m.probeFlags || m.quitFlags {
		fs.BoolVar(&cfg.insecure, "insecure-skip-verify", false, "do not verify the certificates of https probes and quit URLs")
	}
	if m.probeFlags {
		fs.BoolVar(&cfg.disabled, "disabled", false, "do not wait: start the command (or pass the check) at once; does not turn off --quit")
	}
	addQuitFlags(fs, m, cfg, text)
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

// addWaitFlags defines the flags of probes and of the wait.
func addWaitFlags(fs *pflag.FlagSet, m mode, cfg *config, text *flagText) {
	if m.probeFlags {
		fs.StringArrayVar(&text.probes, "probe", nil,
			"readiness probe, repeatable; all must pass: http://, https:// (ready on 2xx) or tcp://HOST:PORT (ready when it connects) (default "+defaultProbe+")")
	}
	if m.probeFlags || m.quitFlags {
		fs.StringVar(&text.preset, "preset", "", "use the endpoints of a mesh: "+presetNames()+"; --probe and --quit-url override them")
	}
	if m.waitFlags {
		fs.DurationVar(&cfg.timeout, "timeout", gate.DefaultTimeout, "give up waiting after this long; 0 waits for ever")
		fs.StringVar(&cfg.onTimeout, "on-timeout", "fail", "after the timeout: fail (exit 69, the command never starts) or start (warn and go on)")
	}
	if m.probeFlags {
		fs.DurationVar(&cfg.attemptTimeout, "attempt-timeout", gate.DefaultAttemptTimeout, "bound on each attempt of each probe")
	}
	if m.waitFlags {
		fs.DurationVar(&cfg.pollRefused, "poll-refused", gate.DefaultRefused, "pause while the proxy's port refuses connections (costs the proxy nothing)")
		fs.DurationVar(&cfg.pollRefusedMax, "poll-refused-max", gate.DefaultRefusedMax, "the pause while refused grows by 10% an attempt up to this")
		fs.DurationVar(&cfg.pollMin, "poll-min", gate.DefaultPollMin, "shortest pause once the proxy answers")
		fs.DurationVar(&cfg.pollMax, "poll-max", gate.DefaultPollMax, "longest pause once the proxy answers")
		fs.Float64Var(&cfg.pollShare, "poll-share", gate.DefaultShare, "pace answered attempts so the proxy spends at most this share of its time answering (0.04 = 4%)")
		fs.Float64Var(&cfg.pollJitter, "poll-jitter", gate.DefaultJitter, "vary each pause by up to this fraction, so pods started together drift apart")
	}
}

// addQuitFlags defines the flags of the quit and of supervising.
func addQuitFlags(fs *pflag.FlagSet, m mode, cfg *config, text *flagText) {
	wrap := m.name == ""
	if wrap {
		fs.BoolVar(&text.quit, "quit", false, "supervise the command and tell the proxy to quit when it ends (the --preset's quit endpoint, default istio)")
	}
	if m.quitFlags {
		fs.StringArrayVar(&text.quitURLs, "quit-url", nil, "quit endpoint to POST to (repeatable; implies --quit), e.g. another sidecar's")
	}
	if wrap {
		fs.StringVar(&cfg.quitOn, "quit-on", "always", "when to quit: always, or success (only if the command exited 0; for restartPolicy: OnFailure)")
	}
	if m.quitFlags {
		fs.DurationVar(&cfg.quitTimeout, "quit-timeout", gate.DefaultQuitLimit, "bound on the whole quit, retries included")
		fs.BoolVar(&text.quitRemote, "quit-allow-remote", false, "allow quit URLs whose host is not loopback")
	}
	if wrap {
		fs.StringVar(&text.forward, "forward-signals", defaultForward, "signals forwarded to a supervised command besides TERM, INT, HUP and QUIT, which always are (names, comma-separated; empty: no others)")
	}
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
	for k := range env {
		if strings.HasPrefix(k, envPrefix) && fs.Lookup(flagName(k)) == nil && !anyModeTakes(k) {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	return unknown, overridden, nil
}

// flagName is the flag a variable stands for (MESHGATE_ATTEMPT_TIMEOUT is
// --attempt-timeout), or "" if none: envName undoes it.
func flagName(variable string) string {
	name := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(variable, envPrefix), "_", "-"))
	if envName(name) != variable {
		return ""
	}
	return name
}

// anyModeTakes reports whether a variable stands for a flag of any mode.
// It builds every mode's flags, five times the work of a parse, so it is
// asked only about variables the mode at hand does not take: parsing is
// in the way of the first attempt.
func anyModeTakes(variable string) bool {
	for _, m := range modes() {
		if m.flags && newFlagSet(m, &config{}, &flagText{}).Lookup(flagName(variable)) != nil {
			return true
		}
	}
	return false
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
func parseSignals(list string) ([]os.Signal, error) {
	var sigs []os.Signal
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
func (p *parser) validate(cfg config, preset string) error {
	m := p.m
	if err := p.checkBounds(cfg); err != nil {
		return err
	}
	if err := p.checkTogether(cfg); err != nil {
		return err
	}
	if m.probeFlags && cfg.attemptTimeout <= 0 {
		return gate.Usagef("%s must be positive, got %s", p.src("attempt-timeout"), cfg.attemptTimeout)
	}
	if m.waitFlags {
		switch {
		case cfg.timeout < 0:
			return gate.Usagef("%s must not be negative, got %s (0 waits for ever)", p.src("timeout"), cfg.timeout)
		case cfg.pollRefused <= 0:
			return gate.Usagef("%s must be positive, got %s", p.src("poll-refused"), cfg.pollRefused)
		case cfg.pollRefusedMax < cfg.pollRefused:
			return gate.Usagef("%s (%s) must not be less than %s (%s)", p.src("poll-refused-max"), cfg.pollRefusedMax, p.src("poll-refused"), cfg.pollRefused)
		case cfg.pollMin <= 0:
			return gate.Usagef("%s must be positive, got %s", p.src("poll-min"), cfg.pollMin)
		case cfg.pollMax < cfg.pollMin:
			return gate.Usagef("%s (%s) must not be less than %s (%s)", p.src("poll-max"), cfg.pollMax, p.src("poll-min"), cfg.pollMin)
		case !(cfg.pollShare > 0 && cfg.pollShare < 1):
			return gate.Usagef("%s must be between 0 and 1 (exclusive), got %v", p.src("poll-share"), cfg.pollShare)
		case !(cfg.pollJitter >= 0 && cfg.pollJitter < 1):
			return gate.Usagef("%s must be at least 0 and less than 1, got %v", p.src("poll-jitter"), cfg.pollJitter)
		case cfg.onTimeout != "fail" && cfg.onTimeout != "start":
			return gate.Usagef("%s must be fail or start, got %q", p.src("on-timeout"), cfg.onTimeout)
		}
	}
	if m.quitFlags && cfg.quitTimeout <= 0 {
		return gate.Usagef("%s must be positive, got %s", p.src("quit-timeout"), cfg.quitTimeout)
	}
	if m.name == "" && cfg.quitOn != "always" && cfg.quitOn != "success" {
		return gate.Usagef("%s must be always or success, got %q", p.src("quit-on"), cfg.quitOn)
	}
	if preset != "" {
		if _, err := probe.LookupPreset(preset); err != nil {
			return p.fromVariable("preset", gate.Usage(err))
		}
	}
	if cfg.logFormat != "json" && cfg.logFormat != "console" {
		return gate.Usagef("%s must be json or console, got %q", p.src("log-format"), cfg.logFormat)
	}
	if !knownLevel(cfg.logLevel) {
		return gate.Usagef("%s must be debug, info, warn or error, got %q", p.src("log-level"), cfg.logLevel)
	}
	return nil
}

// checkBounds rejects absurd durations.
func (p *parser) checkBounds(cfg config) error {
	limits := []struct {
		flag  string
		value time.Duration
		max   time.Duration
		ok    bool
	}{
		{"timeout", cfg.timeout, maxTimeout, p.m.waitFlags},
		{"attempt-timeout", cfg.attemptTimeout, maxPause, p.m.probeFlags},
		{"poll-refused", cfg.pollRefused, maxPause, p.m.waitFlags},
		{"poll-refused-max", cfg.pollRefusedMax, maxPause, p.m.waitFlags},
		{"poll-min", cfg.pollMin, maxPause, p.m.waitFlags},
		{"poll-max", cfg.pollMax, maxPause, p.m.waitFlags},
		{"quit-timeout", cfg.quitTimeout, maxPause, p.m.quitFlags},
	}
	for _, l := range limits {
		if l.ok && l.value > l.max {
			return gate.Usagef("%s %s is more than %s: a missing unit?", p.src(l.flag), l.value, l.max)
		}
	}
	return nil
}

// checkTogether rejects options that contradict each other or do nothing
// without another: a setting that silently does nothing is a mistake the
// user would only find on the bad day.
func (p *parser) checkTogether(cfg config) error {
	if p.m.waitFlags && cfg.onTimeout == "start" && cfg.timeout == 0 {
		return gate.Usagef("%s start needs a %s: with 0 the wait never times out", p.src("on-timeout"), p.src("timeout"))
	}
	// Only when both are chosen: a short --timeout with the default
	// attempt timeout is fine, the deadline cuts the attempt.
	if p.m.waitFlags && p.m.probeFlags && p.fs.Changed("attempt-timeout") && p.fs.Changed("timeout") && cfg.timeout > 0 && cfg.attemptTimeout > cfg.timeout {
		return gate.Usagef("%s (%s) is longer than %s (%s)", p.src("attempt-timeout"), cfg.attemptTimeout, p.src("timeout"), cfg.timeout)
	}
	if p.m.name != "" {
		return nil
	}
	if !cfg.supervise {
		for _, name := range []string{"quit-on", "quit-timeout", "quit-allow-remote", "forward-signals"} {
			if p.fs.Changed(name) {
				return gate.Usagef("%s applies only with --quit or --quit-url", p.src(name))
			}
		}
	}
	return nil
}

// buildProbes makes the probes: those given, else the preset's readiness
// probe, else Istio's.
func buildProbes(specs []string, preset string, opts probe.Options) ([]probe.Probe, error) {
	if len(specs) == 0 {
		specs = []string{defaultProbe}
		if preset != "" {
			p, err := probe.LookupPreset(preset)
			if err != nil {
				return nil, gate.Usage(err)
			}
			specs = []string{p.Ready}
		}
	}
	return parseEach(specs, func(s string) (probe.Probe, error) { return probe.Parse(s, opts) })
}

// presetQuitURL gives the quit URLs of a run that quits: those given,
// else the preset's quit endpoint, Istio's by default.
func presetQuitURL(specs []string, preset string) ([]string, error) {
	if len(specs) > 0 {
		return specs, nil
	}
	if preset == "" {
		preset = "istio"
	}
	p, err := probe.LookupPreset(preset)
	if err != nil {
		return nil, gate.Usage(err)
	}
	if p.Quit == "" {
		return nil, gate.Usagef("preset %s: %s", p.Name, p.NoQuit)
	}
	return []string{p.Quit}, nil
}

// parseEach parses each spec; an error is a usage error.
func parseEach[T any](specs []string, parse func(string) (T, error)) ([]T, error) {
	var values []T
	for _, s := range specs {
		v, err := parse(s)
		if err != nil {
			return nil, gate.Usage(err)
		}
		values = append(values, v)
	}
	return values, nil
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
			newFlagSet(m, &config{}, &flagText{}).FlagUsages())
	}
	if m.name == "" {
		b.WriteString("\nExit codes: the command's own once it runs (128+N if signal N killed a supervised command);\n" +
			"2 bad usage; 69 proxy not ready in time; 126 command not executable; 127 command not found;\n" +
			"128+N signal N while waiting; 1 other errors.\n")
	}
	return b.String()
}

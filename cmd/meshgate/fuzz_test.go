package main

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/meshgate/meshgate/gate"
)

// The fuzz inputs are lists joined by NUL, the one byte that no argument
// or environment entry can hold, as in /proc/PID/cmdline and environ.
// The seeds are in testdata/fuzz.

// FuzzParseArgs checks that no command line makes parse panic or fail
// other than as a usage error.
func FuzzParseArgs(f *testing.F) {
	f.Fuzz(func(t *testing.T, args string) {
		var argv []string
		if args != "" {
			argv = strings.Split(args, "\x00")
		}
		cfg, err := parse(argv, nil)
		checkParsed(t, argv, nil, cfg, err)
		if errors.Is(err, pflag.ErrHelp) {
			_ = usage(cfg.mode) // help for the mode parse found must not panic
		}
	})
}

// envArgs are the command lines FuzzEnv pairs its environments with, one
// for each mode that takes flags.
var envArgs = [][]string{{"--", "/app"}, {"wait"}, {"check"}, {"quit"}, {"install", "/dst"}}

// FuzzEnv checks that no environment makes parse panic or fail other than
// as a usage error, and that it never asks for help.
func FuzzEnv(f *testing.F) {
	f.Fuzz(func(t *testing.T, mode byte, environ string) {
		args := envArgs[int(mode)%len(envArgs)]
		env := strings.Split(environ, "\x00")
		cfg, err := parse(args, env)
		checkParsed(t, args, env, cfg, err)
		if errors.Is(err, pflag.ErrHelp) {
			t.Errorf("parse(%q, %q) asks for help, want only the command line to do that", args, env)
		}
		foreign := func(name string) bool { return !strings.HasPrefix(name, envPrefix) }
		if !slices.IsSorted(cfg.unknownEnv) || slices.ContainsFunc(cfg.unknownEnv, foreign) {
			t.Errorf("parse(%q, %q) notes unknown variables %q, want only %s ones, sorted", args, env, cfg.unknownEnv, envPrefix)
		}
	})
}

// checkParsed fails the test unless err is nil, a request for help, or a
// usage error (exit code 2).
func checkParsed(t *testing.T, args, env []string, cfg config, err error) {
	t.Helper()
	switch {
	case err == nil:
		if cfg.mode == "" && len(cfg.command) == 0 {
			t.Errorf("parse(%q, %q) = no command and no error, want one of them", args, env)
		}
	case errors.Is(err, pflag.ErrHelp):
	case gate.ExitCode(err) != gate.ExitUsage:
		t.Errorf("parse(%q, %q) error %q exits %d, want %d (usage)", args, env, err, gate.ExitCode(err), gate.ExitUsage)
	}
}

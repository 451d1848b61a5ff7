package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/meshgate/meshgate/inject"
)

// version is set at link time (-X main.version=...).
var version = "dev"

const usage = `meshgate-inject wires meshgate into Kubernetes manifests.

Usage:
  meshgate-inject [flags] [FILE|DIR|-]...     rewrite manifests, write them to stdout
  meshgate-inject --uninject [FILE|DIR|-]...  take the wiring out again
  meshgate-inject webhook --tls-cert FILE --tls-key FILE [flags]
                                              serve it as a mutating admission webhook
                                              (meshgate-inject webhook --help)

With no FILE, or with -, it reads standard input (as a Helm post-renderer).
A KRM ResourceList on standard input is handled as a kustomize function.

Flags:
`

// usageError is a mistake in the flags or arguments: exit 2.
type usageError struct{ error }

// run is the whole program: flags, inputs, output. resolver replaces the
// registry in tests; nil means the real one.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, resolver inject.Resolver) int {
	var err error
	if len(args) > 0 && args[0] == "webhook" {
		err = serveWebhook(ctx, args[1:], stdout, stderr)
	} else {
		err = rewrite(ctx, args, stdin, stdout, stderr, resolver)
	}
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, pflag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "meshgate-inject:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "meshgate-inject:", err)
		return 1
	}
}

func rewrite(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, resolver inject.Resolver) error {
	fl := pflag.NewFlagSet("meshgate-inject", pflag.ContinueOnError)
	fl.SetOutput(io.Discard)
	var (
		inj                injectFlags
		opts               = &inj.opts
		resolve, uninject  bool
		showVersion, quiet bool
	)
	inj.register(fl, "the pod template")
	fl.BoolVar(&resolve, "resolve", false, "read missing ENTRYPOINTs and CMDs from the image registries (Docker config credentials)")
	fl.StringVar(&opts.Platform, "platform", "", "with --resolve: the platform of multi-platform images, e.g. linux/arm64 (default: every linux image, which must agree)")
	fl.BoolVar(&uninject, "uninject", false, "take meshgate's wiring out instead")
	fl.BoolVarP(&quiet, "quiet", "q", false, "no notes on standard error, only errors")
	fl.BoolVar(&showVersion, "version", false, "print the version and exit")
	if err := parseFlags(fl, args, stdout, usage); err != nil {
		return err
	}
	if showVersion {
		fmt.Fprintln(stdout, "meshgate-inject", version)
		return nil
	}
	if err := inj.parse(); err != nil {
		return usageError{err}
	}
	if opts.Platform != "" && !resolve {
		return usageError{errors.New("--platform needs --resolve")}
	}
	if err := opts.Validate(); err != nil {
		return usageError{err}
	}
	if resolver == nil {
		resolver = &inject.Registry{}
	}
	if resolve {
		opts.Resolver = resolver
	}
	s := &inject.Stream{Options: *opts, Uninject: uninject, Registry: resolver}
	if !quiet {
		s.Note = func(l string) { fmt.Fprintln(stderr, "meshgate-inject:", l) }
	}
	inputs, err := expand(fl.Args())
	if err != nil {
		return usageError{err}
	}
	out, err := process(ctx, s, inputs, stdin)
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}

// parseFlags parses args with fl and a --help of its own; after --help it
// has printed help, the usage text with the flags, to stdout and returns
// pflag.ErrHelp. A mistake in args is a usageError.
func parseFlags(fl *pflag.FlagSet, args []string, stdout io.Writer, help string) error {
	asked := fl.BoolP("help", "h", false, "show this help")
	if err := fl.Parse(args); err != nil {
		return usageError{err}
	}
	if *asked {
		fmt.Fprint(stdout, help+fl.FlagUsages())
		return pflag.ErrHelp
	}
	return nil
}

// process runs s over the inputs, in order, and joins what comes out into
// one YAML stream. All of it is built before anything is written: an error
// leaves standard output empty, never half a stream.
func process(ctx context.Context, s *inject.Stream, inputs []string, stdin io.Reader) ([]byte, error) {
	var out bytes.Buffer
	for i, in := range inputs {
		name, b, err := readInput(in, stdin)
		if err != nil {
			return nil, err
		}
		res, err := s.Process(ctx, name, b)
		if err != nil {
			return nil, err
		}
		if i > 0 && len(bytes.TrimSpace(res)) > 0 {
			if out.Len() > 0 && !bytes.HasSuffix(out.Bytes(), []byte("\n")) {
				out.WriteByte('\n')
			}
			if !bytes.HasPrefix(res, []byte("---")) {
				out.WriteString("---\n")
			}
		}
		out.Write(res)
	}
	return out.Bytes(), nil
}

// readInput reads one input, a file or "-" for stdin, and names it for
// messages.
func readInput(in string, stdin io.Reader) (string, []byte, error) {
	if in == "-" {
		b, err := io.ReadAll(stdin)
		return "<stdin>", b, err
	}
	b, err := os.ReadFile(in)
	return in, b, err
}

// injectFlags are the flags that say how to inject, shared by the
// rewriting command and the webhook so that both take the same options
// with the same meaning.
type injectFlags struct {
	opts              inject.Options
	entrypoints, cmds []string
	containers        string
}

// register defines the flags on fl; guessed names what the mesh is
// guessed from when --preset is not given.
func (f *injectFlags) register(fl *pflag.FlagSet, guessed string) {
	fl.StringVar(&f.opts.Image, "image", "", "install image (default "+inject.DefaultImage()+")")
	fl.StringVar(&f.containers, "containers", "", "containers to wrap, comma-separated (default: every app container)")
	fl.StringVar(&f.opts.Preset, "preset", "", "mesh: istio, linkerd, envoy, consul or kuma (default: guessed from "+guessed+")")
	fl.StringArrayVar(&f.opts.GateFlags, "gate-flag", nil, "a flag for the wrapped meshgate, e.g. --gate-flag=--timeout=5m (repeatable)")
	fl.StringArrayVar(&f.entrypoints, "entrypoint", nil, "CONTAINER=JSON-ARRAY: the image ENTRYPOINT of a container without a command (repeatable)")
	fl.StringArrayVar(&f.cmds, "cmd", nil, "CONTAINER=JSON-ARRAY: the image CMD of a container without command and args (repeatable)")
}

// parse fills opts from the parsed flags. The caller validates opts once
// its own flags are checked, so that the first error said stays the same.
func (f *injectFlags) parse() error {
	f.opts.Containers = inject.SplitList(f.containers)
	var err error
	if f.opts.Entrypoints, err = commands("--entrypoint", f.entrypoints); err != nil {
		return err
	}
	f.opts.Cmds, err = commands("--cmd", f.cmds)
	return err
}

func commands(flag string, specs []string) (map[string][]string, error) {
	m := map[string][]string{}
	for _, s := range specs {
		name, argv, err := inject.ParseCommand(flag, s)
		if err != nil {
			return nil, err
		}
		if _, dup := m[name]; dup {
			return nil, fmt.Errorf("%s: container %q given twice", flag, name)
		}
		m[name] = argv
	}
	return m, nil
}

// expand turns the arguments into the files to read: directories are
// walked for *.yaml, *.yml and *.json; no argument means standard input.
func expand(args []string) ([]string, error) {
	if len(args) == 0 {
		return []string{"-"}, nil
	}
	var files []string
	stdin := 0
	for _, a := range args {
		if a == "-" {
			stdin++
			files = append(files, a)
			continue
		}
		fi, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			files = append(files, a)
			continue
		}
		var found []string
		err = filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			ext := strings.ToLower(filepath.Ext(p))
			if !d.IsDir() && slices.Contains([]string{".yaml", ".yml", ".json"}, ext) {
				found = append(found, p)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("%s: no *.yaml, *.yml or *.json files in it", a)
		}
		files = append(files, found...)
	}
	if stdin > 1 {
		return nil, errors.New(`"-" (standard input) given more than once`)
	}
	return files, nil
}

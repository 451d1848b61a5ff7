package inject

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Names and paths of the wiring. They are part of what Uninject and the
// idempotence check recognise, so they never change between versions.
const (
	// Volume is the emptyDir that carries the binary.
	Volume = "meshgate"
	// InstallContainer is the init container that fills it.
	InstallContainer = "meshgate-install"
	// MountPath is where the volume is mounted, in the init container
	// (read-write) and in each wrapped container (read-only).
	MountPath = "/meshgate"
	// Gate is the path of the binary in the wrapped containers.
	Gate = MountPath + "/meshgate"
	// Repository is the image repository of meshgate's releases.
	Repository = "ghcr.io/meshgate/meshgate"
)

// Annotations meshgate-inject reads and writes on a pod template (and, for
// AnnotationInject, on the workload too).
const (
	// AnnotationInject set to "false" leaves the workload alone.
	AnnotationInject = "meshgate.io/inject"
	// AnnotationContainers chooses the containers to wrap: "a,b".
	AnnotationContainers = "meshgate.io/containers"
	// AnnotationPreset chooses the mesh preset for this pod template.
	AnnotationPreset = "meshgate.io/preset"
	// AnnotationInjected records what an injection changed, so that
	// Uninject can take exactly that out again and a second injection
	// can tell there is nothing left to do. Its value is JSON.
	AnnotationInjected = "meshgate.io/injected"
	// LinkerdShutdown is the annotation without which Linkerd's proxy
	// refuses the quit (404 "shutdown endpoint is not enabled").
	LinkerdShutdown = "config.linkerd.io/proxy-admin-shutdown"
)

// version is the injector's own version, set at link time
// (-X github.com/meshgate/meshgate/inject.version=v1.2.3).
var version string

// DefaultImage is the install image used when Options.Image is empty: the
// meshgate release of the injector's own version, or :latest for a build
// that is not a release.
func DefaultImage() string {
	if releaseTag.MatchString(version) && !strings.Contains(version, "dirty") {
		return Repository + ":" + version
	}
	return Repository + ":latest"
}

// image is the install image: Image, or DefaultImage().
func (o Options) image() string {
	if o.Image == "" {
		return DefaultImage()
	}
	return o.Image
}

var releaseTag = regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.]+)?$`)

// Presets are the values --preset and the meshgate.io/preset annotation
// take; they are meshgate's own presets.
var Presets = []string{"istio", "linkerd", "envoy", "consul", "kuma"}

// Options carries everything the transformation needs; the zero value
// means the defaults.
type Options struct {
	// Image is the install image; "" means DefaultImage().
	Image string
	// Containers names the containers to wrap; empty means every app
	// container (not the known proxies and agents, not those already
	// wrapped). The pod annotation meshgate.io/containers overrides it.
	Containers []string
	// Preset is the mesh: one of Presets; "" guesses it from the pod
	// template's annotations, labels and containers, and falls back to
	// meshgate's own default (no --preset in the command).
	Preset string
	// GateFlags are extra flags for the wrapped command, placed after
	// meshgate-inject's own (--preset, --quit) and before "--".
	GateFlags []string
	// Entrypoints gives the image ENTRYPOINT of containers by name, for
	// containers without a command.
	Entrypoints map[string][]string
	// Cmds gives the image CMD of containers by name, for containers that
	// set neither command nor args (an empty list: the image has none).
	Cmds map[string][]string
	// Resolver reads ENTRYPOINT and CMD from the registry for containers
	// whose command (and args) are missing and not in Entrypoints (and
	// Cmds); nil means no registry look-ups.
	Resolver Resolver
	// Platform, e.g. "linux/arm64", picks the image of a multi-platform
	// index; "" means every linux image of the index, which must agree.
	// Template hands it to a Resolver that is also a PlatformResolver
	// (Registry is).
	Platform string
}

// Resolver reads an image's ENTRYPOINT and CMD (go-containerregistry in
// production, see Registry).
type Resolver interface {
	ImageConfig(ctx context.Context, image string) (entrypoint, cmd []string, err error)
}

// PlatformResolver is a Resolver that can read the image of one platform
// of a multi-platform index.
type PlatformResolver interface {
	Resolver
	ImageConfigPlatform(ctx context.Context, image, platform string) (entrypoint, cmd []string, err error)
}

// Result says what Template did, for stderr or admission warnings.
type Result struct {
	Changed bool
	// Notes are human-readable, one line each: the preset chosen, why
	// nothing was done, what was read from a registry.
	Notes []string
}

func (r *Result) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// Validate checks the options that do not depend on a manifest, so that a
// bad flag is reported before any input is read.
func (o Options) Validate() error {
	if o.Preset != "" && !slices.Contains(Presets, o.Preset) {
		return fmt.Errorf("preset %q: want one of %s", o.Preset, strings.Join(Presets, ", "))
	}
	for _, f := range o.GateFlags {
		if err := checkGateFlag(f); err != nil {
			return err
		}
	}
	for _, c := range o.Containers {
		if c == "" {
			return fmt.Errorf("containers: empty container name")
		}
	}
	if o.Image != "" && strings.ContainsAny(o.Image, " \t\n") {
		return fmt.Errorf("image %q: contains white space", o.Image)
	}
	return nil
}

// WrapFlags returns the flags of meshgate's wrap mode (meshgate [flags] --
// COMMAND), each with whether it takes a value. A test of cmd/meshgate
// keeps it in step with the gate's own flag set, so that a flag mistyped
// in --gate-flag is caught when the manifest is written, not when the pod
// starts and exits 2.
func WrapFlags() map[string]bool {
	return map[string]bool{
		"probe": true, "preset": true, "timeout": true, "on-timeout": true, "attempt-timeout": true,
		"poll-refused": true, "poll-refused-max": true, "poll-min": true, "poll-max": true,
		"poll-share": true, "poll-jitter": true, "insecure-skip-verify": false, "disabled": false,
		"quit": false, "quit-url": true, "quit-on": true, "quit-timeout": true,
		"quit-allow-remote": false, "forward-signals": true, "log-format": true, "log-level": true,
	}
}

func checkGateFlag(f string) error {
	name, _, hasValue := strings.Cut(strings.TrimPrefix(f, "--"), "=")
	value, known := WrapFlags()[name]
	switch {
	case f == "--":
		return fmt.Errorf("gate flag %q: the \"--\" is added by meshgate-inject", f)
	case !strings.HasPrefix(f, "--"):
		return fmt.Errorf("gate flag %q: not a flag (write --gate-flag=--timeout=5m)", f)
	case name == "preset":
		return fmt.Errorf("gate flag %q: use --preset (or the %s annotation) instead", f, AnnotationPreset)
	case !known:
		return fmt.Errorf("gate flag %q: meshgate has no flag --%s", f, name)
	case value && !hasValue:
		return fmt.Errorf("gate flag %q: give the value in the same flag, as --%s=VALUE", f, name)
	}
	return nil
}

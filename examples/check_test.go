package examples_test

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
)

// Pod annotations that decide whether meshgate may quit the proxy.
const (
	linkerdInject   = "linkerd.io/inject"
	linkerdShutdown = "config.linkerd.io/proxy-admin-shutdown"
)

// call is a meshgate command line of a manifest, read as the binary reads
// it (pflag, with the flags its help lists). Whether it is valid is for the
// binary to say; the reading serves the checks around it (mode, --quit…).
type call struct {
	b         *binary
	container string
	mode      string            // "" (wrap or supervise), or the first word: "wait", "check", …
	args      []string          // what follows the binary's path
	dash      int               // index of "--" in args; -1 if none
	env       map[string]string // the container's MESHGATE_* variables that have a literal value
	flags     *pflag.FlagSet    // each flag set by its variable, then by the command line
}

func parseCall(b *binary, container string, env map[string]string, args []string) call {
	c := call{b: b, container: container, args: args, dash: slices.Index(args, "--"), env: env}
	c.flags = pflag.NewFlagSet("meshgate", pflag.ContinueOnError)
	c.flags.SetOutput(io.Discard)
	c.flags.ParseErrorsAllowlist.UnknownFlags = true // the binary will say what is wrong
	for flag, f := range b.flags {
		if f.value {
			c.flags.String(flag, f.def, "")
		} else {
			c.flags.Bool(flag, false, "")
		}
	}
	for v, value := range c.env {
		_ = c.flags.Set(b.vars[v], value)
	}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		c.mode, args = args[0], args[1:]
	}
	_ = c.flags.Parse(args)
	return c
}

// value is what meshgate takes for a flag.
func (c call) value(name string) string { return c.flags.Lookup(name).Value.String() }

// quits tells whether meshgate supervises the command and quits the proxy.
func (c call) quits() bool {
	return c.mode == "" && (c.value("quit") == "true" || c.value("quit-url") != "")
}

// trial turns the call into one that is safe to run: the same flags and
// variables, then --disabled=true (meshgate checks its flags before it
// skips the wait), "true" for the app and a short quit to the loopback
// address of a proxy that is not there. It returns the exit code to
// expect, and whether to run it at all.
func (c call) trial() (args, env []string, want int, run bool) {
	env, extra := environ(c.env), []string{"--disabled=true"}
	if c.mode != "" {
		// install and quit act; wait and check do nothing once disabled,
		// and a word that names no mode only makes meshgate complain.
		acts := c.b.modes[c.mode] && c.mode != "wait" && c.mode != "check"
		return slices.Concat(c.args, extra), env, 0, !acts
	}
	if c.quits() && !c.flags.Changed("quit-timeout") {
		extra = append(extra, "--quit-timeout=1s")
	}
	if c.quits() && !c.flags.Changed("quit-url") {
		// The preset's quit endpoint is a real proxy's port on this
		// machine, if one runs here: send the quit to a port where
		// nothing listens instead. The manifest's --quit is still checked.
		extra = append(extra, "--quit-url=http://127.0.0.1:9/quitquitquit")
	}
	command := []string{"true"}
	if c.quits() && c.value("quit-allow-remote") == "true" {
		// Never POST to another host from a test: after a failed command,
		// --quit-on=success sends no quit.
		extra = append(extra, "--quit-on=success")
		command, want = []string{"false"}, 1
	}
	if c.dash < 0 {
		return slices.Concat(c.args, extra), env, want, true
	}
	if c.dash+1 == len(c.args) || c.args[c.dash+1] == "" {
		command = c.args[c.dash+1:] // for meshgate to reject
	}
	return slices.Concat(c.args[:c.dash], extra, []string{"--"}, command), env, want, true
}

// use is one place where a container runs meshgate.
type use struct {
	where string        // "command", "postStart hook", "startupProbe", …
	mode  string        // the mode the place calls for; "none" where meshgate has no place
	argv  []string      // the binary first
	probe *corev1.Probe // for probes
}

// uses lists where a container runs meshgate: its command, its hooks and
// its exec probes.
func uses(c corev1.Container) []use {
	argv := func(e *corev1.ExecAction) []string { return cmp.Or(e, &corev1.ExecAction{}).Command }
	var command []string
	if len(c.Command) > 0 {
		command = slices.Concat(c.Command, c.Args)
	}
	l, none := cmp.Or(c.Lifecycle, &corev1.Lifecycle{}), &corev1.LifecycleHandler{}
	all := []use{
		{"command", "", command, nil},
		{"postStart hook", "wait", argv(cmp.Or(l.PostStart, none).Exec), nil},
		{"preStop hook", "none", argv(cmp.Or(l.PreStop, none).Exec), nil},
		{"startupProbe", "check", argv(cmp.Or(c.StartupProbe, &corev1.Probe{}).Exec), c.StartupProbe},
		{"readinessProbe", "check", argv(cmp.Or(c.ReadinessProbe, &corev1.Probe{}).Exec), c.ReadinessProbe},
		{"livenessProbe", "check", argv(cmp.Or(c.LivenessProbe, &corev1.Probe{}).Exec), c.LivenessProbe},
	}
	return slices.DeleteFunc(all, func(u use) bool { return len(u.argv) == 0 || path.Base(u.argv[0]) != "meshgate" })
}

// isInstaller tells whether a container runs the meshgate image itself,
// whose entrypoint is meshgate.
func isInstaller(c corev1.Container) bool {
	ref, err := name.ParseReference(c.Image)
	return err == nil && ref.Context().Name() == "ghcr.io/meshgate/meshgate"
}

// mountAt returns the volume mount of c at dir.
func mountAt(c corev1.Container, dir string) (corev1.VolumeMount, bool) {
	i := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return path.Clean(m.MountPath) == path.Clean(dir) })
	if i < 0 {
		return corev1.VolumeMount{}, false
	}
	return c.VolumeMounts[i], true
}

// podCheck gathers what is wrong with a pod template, the binary's
// verdict on its meshgate command lines included.
type podCheck struct {
	b    *binary
	tmpl corev1.PodTemplateSpec
	errs []error
}

func (p *podCheck) fail(format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf(format, args...))
}

// checkPod returns what is wrong with a pod template: its meshgate wiring,
// how the pod ends, and its securityContext.
func checkPod(b *binary, tmpl corev1.PodTemplateSpec) []error {
	p := &podCheck{b: b, tmpl: tmpl}
	p.end(p.wiring())
	p.hardened("pod", tmpl.Spec.SecurityContext, `{"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}`)
	// The kustomize component cannot rely on the pod's settings, so the
	// containers state theirs.
	for _, c := range slices.Concat(tmpl.Spec.InitContainers, tmpl.Spec.Containers) {
		p.hardened(fmt.Sprintf("container %q", c.Name), c.SecurityContext, `{"runAsNonRoot": true, "readOnlyRootFilesystem": true,
			"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}`)
	}
	return p.errs
}

// hardened checks that a securityContext has each field of want as want
// has it, and a runAsUser other than root.
func (p *podCheck) hardened(who string, sc any, want string) {
	var got, wanted map[string]any
	js, _ := json.Marshal(sc)
	if err := cmp.Or(json.Unmarshal(js, &got), json.Unmarshal([]byte(want), &wanted)); err != nil {
		panic(err)
	}
	for _, k := range slices.Sorted(maps.Keys(wanted)) {
		g, _ := json.Marshal(got[k])
		if w, _ := json.Marshal(wanted[k]); !bytes.Equal(g, w) {
			p.fail("%s securityContext.%s: got %s, want %s", who, k, g, w)
		}
	}
	if u, _ := json.Marshal(got["runAsUser"]); got["runAsUser"] == nil || got["runAsUser"] == 0.0 {
		p.fail("%s securityContext.runAsUser: got %s, want another user than root", who, u)
	}
}

// expect checks that a run of the binary for the manifest's args ended
// with exit code want.
func (p *podCheck) expect(who string, args []string, want int, res result) {
	if res.code != want {
		p.fail("%s: meshgate %s: got exit %d, want %d: %s", who, strings.Join(args, " "), res.code, want, res.line())
	}
}

// wiring checks that meshgate gets into the pod and that every container
// that runs it can reach it and calls it in a way the binary accepts. It
// returns the calls of the wrap.
func (p *podCheck) wiring() []call {
	spec := p.tmpl.Spec
	installed := map[string]bool{} // the volumes filled so far, in the order the containers start
	var wraps []call
	count := 0
	for i, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		if isInstaller(c) && i < len(spec.InitContainers) {
			if vol := p.installer(c); vol != "" {
				installed[vol] = true
			}
			continue
		}
		us, vars := uses(c), p.env(c)
		count += len(us)
		for _, u := range us {
			cl := parseCall(p.b, c.Name, vars, u.argv[1:])
			p.checkUse(c, u, cl, installed)
			if args, env, want, run := cl.trial(); run {
				p.expect(fmt.Sprintf("container %q, %s", c.Name, u.where), u.argv[1:], want, p.b.exec(args, env))
			}
			if u.where == "command" && cl.mode == "" {
				wraps = append(wraps, cl)
			}
		}
	}
	if count == 0 {
		p.fail("no container runs meshgate: want a container whose command starts with DIR/meshgate")
	}
	return wraps
}

// installer checks an init container that runs the meshgate image: it
// runs "install DIR" with DIR a writable mount of an emptyDir. It returns
// the volume so filled, if any.
func (p *podCheck) installer(c corev1.Container) string {
	env := p.env(c)
	// Its arguments follow the image's entrypoint, or its own command.
	argv := slices.Concat(c.Command[min(1, len(c.Command)):], c.Args)
	if len(argv) < 2 || argv[0] != "install" {
		p.fail("init container %q: got arguments %q, want install [flags] DIR", c.Name, argv)
		return ""
	}
	p.expect(fmt.Sprintf("init container %q", c.Name), argv, 0, p.b.install(argv, environ(env)))
	dir := argv[len(argv)-1]
	m, mounted := mountAt(c, dir)
	i := slices.IndexFunc(p.tmpl.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
	switch {
	case !mounted:
		p.fail("init container %q installs into %s: got no volume mounted there, want the shared emptyDir", c.Name, dir)
	case m.ReadOnly:
		p.fail("init container %q: got volume %q mounted read-only at %s, want it writable", c.Name, m.Name, dir)
	case i < 0:
		p.fail("init container %q mounts volume %q: got no such volume in the pod", c.Name, m.Name)
	case p.tmpl.Spec.Volumes[i].EmptyDir == nil:
		p.fail("volume %q: got another kind of volume, want an emptyDir", m.Name)
	default:
		return m.Name
	}
	return ""
}

// checkUse checks one place where container c runs meshgate, given the
// volumes that meshgate is installed into before c starts. The binary
// checks the command line; this checks what the binary cannot see: where
// it runs from and what the place it runs in needs.
func (p *podCheck) checkUse(c corev1.Container, u use, cl call, installed map[string]bool) {
	fail := func(format string, args ...any) {
		p.fail("container %q, %s: "+format, append([]any{c.Name, u.where}, args...)...)
	}
	bin, dir := u.argv[0], path.Dir(u.argv[0])
	m, mounted := mountAt(c, dir)
	switch {
	case !path.IsAbs(bin):
		fail("got %q, want the absolute path of the installed binary", bin)
	case !mounted:
		fail("runs %s: got no volume mounted at %s, want the volume meshgate is installed into", bin, dir)
	case !installed[m.Name]:
		fail("runs %s from volume %q: got no init container before it that installs meshgate there", bin, m.Name)
	case !m.ReadOnly:
		fail("got volume %q mounted writable at %s, want readOnly: true", m.Name, dir)
	}
	switch {
	case u.mode == "none":
		fail("got meshgate here, want it only in the command, a postStart hook or a probe")
	case cl.mode != u.mode:
		fail("got %s, want %s", cmp.Or(cl.mode, "the wrap"), cmp.Or(u.mode, "the wrap"))
	}
	// The kubelet's default timeoutSeconds is 1; meshgate needs its
	// attempt's time and a second more to start and answer.
	if attempt, err := time.ParseDuration(cl.value("attempt-timeout")); u.probe != nil && err == nil {
		timeout := time.Duration(max(u.probe.TimeoutSeconds, 1)) * time.Second
		if need := (attempt + 2*time.Second - 1) / time.Second; timeout < need*time.Second {
			fail("got timeoutSeconds %d, want at least %d: meshgate gives each attempt %s and needs time to start", u.probe.TimeoutSeconds, need, attempt)
		}
	}
}

// env returns the MESHGATE_* variables of a container that have a literal
// value (those from a ConfigMap or a Secret are not known here). It checks
// their names against those the binary reads; the runs check their values,
// but override MESHGATE_DISABLED with --disabled=true, so its value is
// checked here, as meshgate reads a boolean.
func (p *podCheck) env(c corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		if _, ok := p.b.vars[e.Name]; strings.HasPrefix(e.Name, "MESHGATE_") && !ok {
			p.fail("container %q env %s: got a variable meshgate does not read, want one that meshgate --help lists", c.Name, e.Name)
		}
		if _, err := strconv.ParseBool(e.Value); e.Name == p.b.flags["disabled"].env && e.ValueFrom == nil && err != nil {
			p.fail("container %q env %s=%q: want true or false", c.Name, e.Name, e.Value)
		}
		if strings.HasPrefix(e.Name, "MESHGATE_") && e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	return env
}

// end checks that the pod ends the way its restartPolicy means: a pod that
// runs to completion must stop its classic sidecar (--quit), and only such
// a pod may, with the mesh's consent and never under a native sidecar,
// which the kubelet stops itself and restarts when it exits.
func (p *podCheck) end(wraps []call) {
	policy := cmp.Or(p.tmpl.Spec.RestartPolicy, corev1.RestartPolicyAlways)
	completes := policy == corev1.RestartPolicyNever || policy == corev1.RestartPolicyOnFailure
	native := nativeReason(p.tmpl)
	for _, w := range wraps {
		linkerd := p.tmpl.Annotations[linkerdInject] == "enabled" || (w.value("preset") == "linkerd" && w.value("quit-url") == "")
		switch {
		case !w.quits() && completes && native == "":
			p.fail("container %q: got restartPolicy %s and no --quit, want --quit (or a native sidecar): a classic sidecar never stops, so the pod would never complete", w.container, policy)
		case !w.quits(): // what follows is about the quit
		case !completes:
			p.fail("container %q quits the proxy: got restartPolicy %s, want Never or OnFailure: only a pod that runs to completion may stop its proxy", w.container, policy)
		case native != "":
			p.fail("container %q quits the proxy: got %s, want no --quit: the kubelet stops a native sidecar itself and restarts one that exits", w.container, native)
		case policy == corev1.RestartPolicyOnFailure && w.value("quit-on") != "success":
			p.fail("container %q: got --quit-on %s with restartPolicy OnFailure, want success: a failed run restarts in the same pod and needs the proxy", w.container, w.value("quit-on"))
		case linkerd && p.tmpl.Annotations[linkerdShutdown] != "enabled":
			p.fail("container %q quits Linkerd's proxy: got no annotation %s: enabled on the pod, want it: the proxy refuses the quit (404) without it", w.container, linkerdShutdown)
		}
	}
}

// nativeReason says what makes the pod's proxy a native sidecar, or "".
func nativeReason(tmpl corev1.PodTemplateSpec) string {
	for _, c := range tmpl.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			return fmt.Sprintf("init container %q with restartPolicy Always", c.Name)
		}
	}
	// The annotations that make a mesh inject its proxy as a native sidecar.
	for _, a := range []string{
		"sidecar.istio.io/nativeSidecar",
		"config.beta.linkerd.io/proxy-enable-native-sidecar",
		"config.alpha.linkerd.io/proxy-enable-native-sidecar",
	} {
		if v := tmpl.Annotations[a]; v == "true" || v == "enabled" {
			return fmt.Sprintf("annotation %s: %q", a, v)
		}
	}
	return ""
}

// pod is what the cases below break.
type pod = corev1.PodTemplateSpec

// TestCheckPodFindsMistakes breaks good examples in the ways users do and
// expects checkPod to say so; where the mistake is in meshgate's command
// line or variables, in the words of the binary itself.
func TestCheckPodFindsMistakes(t *testing.T) {
	b := meshgate(t)
	const deployment, job, cronJob, linkerdJob = "istio/deployment.yaml", "istio/job.yaml", "istio/cronjob.yaml", "linkerd/job.yaml"
	app := func(s *pod) *corev1.Container { return &s.Spec.Containers[0] }
	install := func(s *pod) *corev1.Container { return &s.Spec.InitContainers[0] }
	// command sets the app's command to meshgate's with args; insert puts
	// flags right after the binary.
	command := func(s *pod, args ...string) { app(s).Command = append([]string{"/meshgate/meshgate"}, args...) }
	insert := func(s *pod, flags ...string) { app(s).Command = slices.Insert(app(s).Command, 1, flags...) }
	probe := func(timeout int32, args ...string) *corev1.Probe {
		return &corev1.Probe{TimeoutSeconds: timeout, ProbeHandler: corev1.ProbeHandler{
			Exec: &corev1.ExecAction{Command: append([]string{"/meshgate/meshgate"}, args...)}}}
	}
	env := func(s *pod, k, v string) { app(s).Env = append(app(s).Env, corev1.EnvVar{Name: k, Value: v}) }
	// The cases, by the example they break.
	tests := map[string][]struct {
		name   string
		mutate func(s *pod)
		want   string // part of one error; "" for none
	}{
		deployment: {
			{"volume not an emptyDir", func(s *pod) {
				s.Spec.Volumes[0].VolumeSource = corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/tmp"}}
			}, `volume "meshgate": got another kind of volume, want an emptyDir`},
			{"no volume", func(s *pod) { s.Spec.Volumes = nil }, `got no such volume`},
			{"no installer", func(s *pod) { s.Spec.InitContainers = nil }, `got no init container before it that installs meshgate there`},
			{"installer without install", func(s *pod) { install(s).Args = []string{"/meshgate"} }, `want install [flags] DIR`},
			{"installs elsewhere", func(s *pod) { install(s).Args = []string{"install", "/opt"} }, `installs into /opt: got no volume mounted there`},
			{"installer given a bad flag", func(s *pod) { install(s).Args = []string{"install", "--log-levl", "debug", "/meshgate"} },
				`init container "meshgate-install": meshgate install --log-levl debug /meshgate: got exit 2, want 0: meshgate: unknown flag: --log-levl`},
			{"installer mount read-only", func(s *pod) { install(s).VolumeMounts[0].ReadOnly = true }, `mounted read-only at /meshgate, want it writable`},
			{"app mount missing", func(s *pod) { app(s).VolumeMounts = nil }, `got no volume mounted at /meshgate`},
			{"app mount writable", func(s *pod) { app(s).VolumeMounts[0].ReadOnly = false }, `want readOnly: true`},
			{"binary by relative path", func(s *pod) { app(s).Command[0] = "meshgate" }, `want the absolute path`},
			{"no --", func(s *pod) { command(s, "--preset", "istio", "/app/server") }, `got exit 2, want 0: meshgate: missing -- before the command "/app/server"`},
			{"nothing after --", func(s *pod) { command(s, "--preset", "istio", "--") }, `meshgate: missing command after --`},
			{"app command in args", func(s *pod) { command(s, "--preset", "istio"); app(s).Args = []string{"/app/server"} },
				`meshgate: missing -- before the command "/app/server"`},
			{"unknown flag", func(s *pod) { app(s).Command[1] = "--mesh" }, `meshgate: unknown flag: --mesh`},
			{"boolean with a bad value", func(s *pod) { insert(s, "--disabled=yes") }, `invalid argument "yes" for "--disabled" flag`},
			{"unknown mode", func(s *pod) { command(s, "wiat", "--preset", "istio") }, `meshgate: unknown command "wiat"`},
			{"probe runs wait", func(s *pod) { app(s).StartupProbe = probe(2, "wait") }, `startupProbe: got wait, want check`},
			{"probe timeout too short", func(s *pod) { app(s).ReadinessProbe = probe(0, "check") }, `readinessProbe: got timeoutSeconds 0, want at least 2`},
			{"probe attempt from a variable", func(s *pod) { env(s, "MESHGATE_ATTEMPT_TIMEOUT", "5s"); app(s).ReadinessProbe = probe(2, "check") },
				`got timeoutSeconds 2, want at least 6`},
			{"check given a wait flag", func(s *pod) { app(s).ReadinessProbe = probe(2, "check", "--on-timeout", "start") },
				`readinessProbe: meshgate check --on-timeout start: got exit 2, want 0: meshgate: unknown flag: --on-timeout`},
			{"preStop hook", func(s *pod) {
				app(s).Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: probe(0, "wait").Exec}}
			}, `preStop hook: got meshgate here`},
			{"init container before the installer", func(s *pod) { s.Spec.InitContainers = slices.Insert(s.Spec.InitContainers, 0, *app(s)) },
				`"app", command: runs /meshgate/meshgate from volume "meshgate": got no init container before it`},
			{"installed but unused", func(s *pod) { app(s).Command = []string{"/app/server"} }, `no container runs meshgate`},
			{"pod not non-root", func(s *pod) { s.Spec.SecurityContext.RunAsNonRoot = nil }, `pod securityContext.runAsNonRoot: got null, want true`},
			{"app as root", func(s *pod) { *app(s).SecurityContext.RunAsUser = 0 }, `container "app" securityContext.runAsUser: got 0, want another user than root`},
			{"capabilities kept", func(s *pod) { app(s).SecurityContext.Capabilities.Drop = []corev1.Capability{"NET_RAW"} }, `securityContext.capabilities: got {"drop":["NET_RAW"]}, want {"drop":["ALL"]}`},
			{"no container securityContext", func(s *pod) { app(s).SecurityContext = nil }, `container "app" securityContext.runAsNonRoot: got null, want true`},
			{"misspelt variable", func(s *pod) { env(s, "MESHGATE_TIMOUT", "30s") }, `env MESHGATE_TIMOUT: got a variable meshgate does not read`},
			{"bad variable value", func(s *pod) { env(s, "MESHGATE_ON_TIMEOUT", "continue") }, `got exit 2, want 0: meshgate: MESHGATE_ON_TIMEOUT must be fail or start, got "continue"`},
			{"bad MESHGATE_DISABLED", func(s *pod) { env(s, "MESHGATE_DISABLED", "yes") }, `env MESHGATE_DISABLED="yes": want true or false`},
			{"good variables", func(s *pod) {
				env(s, "MESHGATE_TIMEOUT", "10s")
				env(s, "MESHGATE_DISABLED", "true")
				env(s, "MESHGATE_PROBE", "http://localhost:1/a, tcp://localhost:2")
			}, ""},
			{"quit in a Deployment", func(s *pod) { insert(s, "--quit") }, `container "app" quits the proxy: got restartPolicy Always, want Never or OnFailure`},
		},
		job: {
			{"Job without the quit", func(s *pod) { command(s, "--preset", "istio", "--", "/app/migrate") }, `container "migrate": got restartPolicy Never and no --quit, want --quit`},
			{"Job on a native sidecar without the quit", func(s *pod) {
				command(s, "--preset", "istio", "--", "/app/migrate")
				s.Annotations["sidecar.istio.io/nativeSidecar"] = "true"
			}, ""},
			{"quit with a native sidecar", func(s *pod) { s.Annotations["sidecar.istio.io/nativeSidecar"] = "true" }, `got annotation sidecar.istio.io/nativeSidecar: "true", want no --quit`},
			{"quit with a native sidecar in the spec", func(s *pod) {
				proxy := corev1.Container{Name: "proxy", Image: "example.com/proxy:1.0", RestartPolicy: new(corev1.ContainerRestartPolicyAlways)}
				s.Spec.InitContainers = append(s.Spec.InitContainers, proxy)
			}, `got init container "proxy" with restartPolicy Always, want no --quit`},
			{"remote quit URL", func(s *pod) { insert(s, "--quit-url", "http://10.0.0.1:15020/quitquitquit") }, `is not loopback`},
			{"remote quit URL allowed", func(s *pod) { insert(s, "--quit-url", "http://192.0.2.1:15020/quitquitquit", "--quit-allow-remote") }, ""},
			{"quit timeout not a duration", func(s *pod) { env(s, "MESHGATE_QUIT_TIMEOUT", "10") }, `MESHGATE_QUIT_TIMEOUT="10"`},
		},
		cronJob: {{"OnFailure quitting after a failure", func(s *pod) { command(s, "--preset", "istio", "--quit", "--", "/app/report") },
			`got --quit-on always with restartPolicy OnFailure, want success`}},
		linkerdJob: {{"Linkerd quit not enabled", func(s *pod) { delete(s.Annotations, linkerdShutdown) },
			`quits Linkerd's proxy: got no annotation config.linkerd.io/proxy-admin-shutdown: enabled`}},
	}
	for from, cases := range tests {
		for _, tt := range cases {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				var obj any
				docs, err := readDocuments(from) // a fresh copy for each case
				if err == nil {
					obj, err = decodeObject(docs[0].json)
				}
				if err != nil {
					t.Fatal(err)
				}
				tmpl := podTemplate(obj)
				tt.mutate(&tmpl)
				errs := checkPod(b, tmpl)
				found := slices.ContainsFunc(errs, func(err error) bool { return strings.Contains(err.Error(), tt.want) })
				if tt.want == "" && len(errs) > 0 || tt.want != "" && !found {
					t.Errorf("got %q, want an error containing %q (none if empty)", errs, tt.want)
				}
			})
		}
	}
}

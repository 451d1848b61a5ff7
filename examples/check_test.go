package examples_test

import (
	"cmp"
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// installImage is the repository of the image whose entrypoint is meshgate.
const installImage = "ghcr.io/meshgate/meshgate"

// envPrefix starts the variables that meshgate reads as flags.
const envPrefix = "MESHGATE_"

// Pod annotations that decide whether meshgate may quit the proxy.
const (
	linkerdInject   = "linkerd.io/inject"
	linkerdShutdown = "config.linkerd.io/proxy-admin-shutdown"
)

// nativeSidecar lists the annotations that make a mesh inject its proxy
// as a native sidecar (an init container with restartPolicy: Always).
var nativeSidecar = []string{
	"sidecar.istio.io/nativeSidecar",
	"config.beta.linkerd.io/proxy-enable-native-sidecar",
	"config.alpha.linkerd.io/proxy-enable-native-sidecar",
}

// call is a meshgate command line of a manifest, read with the flags that
// the binary's help lists. Whether it is valid is for the binary to say;
// the reading serves the checks around it (mode, --, --quit, ...).
type call struct {
	b     *binary
	mode  string            // "" (wrap or supervise), or the first word: "wait", "check", …
	args  []string          // what follows the binary's path
	dash  int               // index of "--" in args; -1 if none
	flags map[string]string // the last value of each known flag; a boolean without one holds "true"
	env   map[string]string // the container's MESHGATE_* variables that have a literal value
}

func parseCall(b *binary, args []string, env map[string]string) call {
	c := call{b: b, args: args, dash: -1, flags: map[string]string{}, env: env}
	i := 0
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		c.mode, i = args[0], 1
	}
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			c.dash = i
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		f, ok := b.flags[name]
		switch {
		case !strings.HasPrefix(a, "--") || !ok:
			continue // the binary will say what is wrong with it
		case hasValue:
		case !f.value:
			value = "true"
		case i+1 < len(args):
			i++
			value = args[i]
		}
		c.flags[name] = value
	}
	return c
}

// value is what meshgate takes for a flag: the command line's, else the
// variable's, else the default.
func (c call) value(name string) string {
	if v, ok := c.flags[name]; ok {
		return v
	}
	if v := c.env[c.b.flags[name].env]; v != "" {
		return v
	}
	return c.b.flags[name].def
}

func (c call) given(name string) bool {
	_, ok := c.flags[name]
	return ok || c.env[c.b.flags[name].env] != ""
}

func (c call) isTrue(name string) bool {
	v, _ := strconv.ParseBool(c.value(name))
	return v
}

// quits tells whether meshgate supervises the command and quits the proxy.
func (c call) quits() bool {
	return c.mode == "" && (c.isTrue("quit") || c.value("quit-url") != "")
}

// harmless tells whether the test may run the call's mode: the wrap, wait
// and check do nothing with the wait turned off, and a word that names
// no mode with flags only makes meshgate complain; install and quit act.
func (c call) harmless() bool {
	return c.mode == "" || c.mode == "wait" || c.mode == "check" || !c.b.modes[c.mode]
}

// trial turns the call into one that is safe to run: the same flags and
// variables, with the wait turned off (meshgate checks its flags before
// it skips the wait), "true" for the app and a short quit, which goes to
// the loopback address of a proxy that is not there. It returns the
// exit code to expect.
func (c call) trial() (args, env []string, want int) {
	disabled := c.b.flags["disabled"].env
	env = []string{"PATH=/usr/bin:/bin"}
	for _, k := range slices.Sorted(maps.Keys(c.env)) {
		if k != disabled {
			env = append(env, k+"="+c.env[k])
		}
	}
	env = append(env, disabled+"=true")
	var extra []string
	if _, ok := c.flags["disabled"]; ok {
		extra = append(extra, "--disabled=true") // the command line wins over the variable
	}
	if c.mode != "" {
		return slices.Concat(c.args, extra), env, 0
	}
	if c.quits() && !c.given("quit-timeout") {
		extra = append(extra, "--quit-timeout=1s")
	}
	if c.quits() && !c.given("quit-url") {
		// The preset's quit endpoint is a real proxy's port on this
		// machine, if one runs here: send the quit to a port where
		// nothing listens instead. The manifest's --quit is still checked.
		extra = append(extra, "--quit-url=http://127.0.0.1:9/quitquitquit")
	}
	command := []string{"true"}
	if c.quits() && c.isTrue("quit-allow-remote") {
		// Never POST to another host from a test: after a failed command,
		// --quit-on=success sends no quit.
		extra = append(extra, "--quit-on=success")
		command, want = []string{"false"}, 1
	}
	if c.dash < 0 {
		return slices.Concat(c.args, extra), env, want
	}
	if c.dash+1 == len(c.args) || c.args[c.dash+1] == "" {
		command = c.args[c.dash+1:] // for meshgate to reject
	}
	return slices.Concat(c.args[:c.dash], extra, []string{"--"}, command), env, want
}

// use is one place where a container runs meshgate.
type use struct {
	where string        // "command", "postStart hook", "startupProbe", …
	argv  []string      // the binary first
	probe *corev1.Probe // for probes
}

// isMeshgate tells whether an executable path names meshgate.
func isMeshgate(p string) bool { return path.Base(p) == "meshgate" }

// uses lists where a container runs meshgate: its command, its hooks and
// its exec probes.
func uses(c corev1.Container) []use {
	var out []use
	if len(c.Command) > 0 && isMeshgate(c.Command[0]) {
		out = append(out, use{where: "command", argv: slices.Concat(c.Command, c.Args)})
	}
	if c.Lifecycle != nil {
		for where, h := range map[string]*corev1.LifecycleHandler{
			"postStart hook": c.Lifecycle.PostStart,
			"preStop hook":   c.Lifecycle.PreStop,
		} {
			if h != nil && h.Exec != nil && len(h.Exec.Command) > 0 && isMeshgate(h.Exec.Command[0]) {
				out = append(out, use{where: where, argv: h.Exec.Command})
			}
		}
	}
	for where, p := range map[string]*corev1.Probe{
		"startupProbe":   c.StartupProbe,
		"readinessProbe": c.ReadinessProbe,
		"livenessProbe":  c.LivenessProbe,
	} {
		if p != nil && p.Exec != nil && len(p.Exec.Command) > 0 && isMeshgate(p.Exec.Command[0]) {
			out = append(out, use{where: where, argv: p.Exec.Command, probe: p})
		}
	}
	slices.SortFunc(out, func(a, b use) int { return strings.Compare(a.where, b.where) })
	return out
}

// isInstaller tells whether a container runs the meshgate image itself.
func isInstaller(c corev1.Container) bool {
	repo := c.Image
	if i := strings.Index(repo, "@"); i >= 0 {
		repo = repo[:i]
	}
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	return repo == installImage
}

// installArgs returns the arguments an installer container gives meshgate:
// its args after the image's entrypoint, or after its own command.
func installArgs(c corev1.Container) []string {
	if len(c.Command) == 0 {
		return c.Args
	}
	return slices.Concat(c.Command[1:], c.Args)
}

// mountAt returns the volume mount of c at dir.
func mountAt(c corev1.Container, dir string) (corev1.VolumeMount, bool) {
	for _, m := range c.VolumeMounts {
		if path.Clean(m.MountPath) == path.Clean(dir) {
			return m, true
		}
	}
	return corev1.VolumeMount{}, false
}

// meshgateEnv returns the MESHGATE_* variables of a container that have a
// literal value (those from a ConfigMap or a Secret are not known here).
func meshgateEnv(c corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, envPrefix) && e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	return env
}

// checkPod returns what is wrong with a pod template: its meshgate wiring,
// how the pod ends, and its securityContext.
func checkPod(b *binary, tmpl corev1.PodTemplateSpec) []error {
	return slices.Concat(checkWiring(b, tmpl), checkSecurity(tmpl.Spec))
}

// invocation is a run of the binary that a check asks for.
type invocation struct {
	who     string // where it comes from, for messages
	args    []string
	env     []string
	want    int
	install bool // args end with a destination to replace
}

// do runs r and reports how its end differs from what it wants.
func (r invocation) do(b *binary) error {
	var res result
	if r.install {
		res = b.install(r.args, r.env)
	} else {
		res = b.run(r.args, r.env)
	}
	line := "meshgate " + strings.Join(r.args, " ")
	switch {
	case res.err != nil:
		return fmt.Errorf("%s: %s: %v", r.who, line, res.err)
	case res.code != r.want:
		return fmt.Errorf("%s: %s: got exit %d, want %d: %s", r.who, line, res.code, r.want, res.line())
	}
	return nil
}

// checkWiring checks that the binary gets into the pod, that every
// container that runs it can reach it and calls it in a way the binary
// accepts, and that a pod that runs to completion can complete.
func checkWiring(b *binary, tmpl corev1.PodTemplateSpec) []error {
	spec := tmpl.Spec
	var errs []error
	var runs []invocation
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	volumes := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = v
	}
	installed := map[string]int{} // volume name → index of the init container that fills it
	for i, c := range spec.InitContainers {
		if !isInstaller(c) {
			continue
		}
		errs = append(errs, checkEnv(b, c)...)
		argv := installArgs(c)
		if len(argv) < 2 || argv[0] != "install" {
			fail("init container %q: got arguments %q, want install [flags] DIR", c.Name, argv)
			continue
		}
		runs = append(runs, invocation{who: fmt.Sprintf("init container %q", c.Name), args: argv,
			env: append([]string{"PATH=/usr/bin:/bin"}, envList(meshgateEnv(c))...), install: true})
		dir := argv[len(argv)-1]
		m, ok := mountAt(c, dir)
		switch {
		case !ok:
			fail("init container %q installs into %s: got no volume mounted there, want the shared emptyDir", c.Name, dir)
			continue
		case m.ReadOnly:
			fail("init container %q: got volume %q mounted read-only at %s, want it writable", c.Name, m.Name, dir)
		}
		switch v, ok := volumes[m.Name]; {
		case !ok:
			fail("init container %q mounts volume %q: got no such volume in the pod", c.Name, m.Name)
		case v.EmptyDir == nil:
			fail("volume %q: got %s, want an emptyDir", m.Name, volumeKind(v))
		default:
			installed[m.Name] = i
		}
	}
	count := 0
	var wraps []wrap
	all := slices.Concat(spec.InitContainers, spec.Containers)
	for i, c := range all {
		if isInstaller(c) {
			continue
		}
		// An init container starts after the ones before it, a regular
		// container after all of them.
		after := min(i, len(spec.InitContainers))
		us := uses(c)
		for _, u := range us {
			count++
			cl := parseCall(b, u.argv[1:], meshgateEnv(c))
			errs = append(errs, checkUse(c, u, cl, after, installed)...)
			if cl.harmless() {
				args, env, want := cl.trial()
				runs = append(runs, invocation{who: fmt.Sprintf("container %q, %s", c.Name, u.where), args: args, env: env, want: want})
			}
			if u.where == "command" && cl.mode == "" {
				wraps = append(wraps, wrap{container: c.Name, call: cl})
			}
		}
		if len(us) > 0 {
			errs = append(errs, checkEnv(b, c)...)
		}
	}
	switch {
	case count == 0 && len(installed) > 0:
		fail("meshgate is installed but no container runs it")
	case count == 0:
		fail("no container runs meshgate: want a container whose command starts with DIR/meshgate")
	}
	errs = append(errs, checkEnd(tmpl, wraps)...)

	// Each run takes a few milliseconds, one with a quit a few hundred:
	// run them side by side.
	results := make([]error, len(runs))
	var wg sync.WaitGroup
	for i, r := range runs {
		wg.Go(func() { results[i] = r.do(b) })
	}
	wg.Wait()
	for _, err := range results {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func envList(env map[string]string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(env)) {
		out = append(out, k+"="+env[k])
	}
	return out
}

func volumeKind(v corev1.Volume) string {
	switch {
	case v.HostPath != nil:
		return "a hostPath"
	case v.ConfigMap != nil:
		return "a configMap"
	case v.PersistentVolumeClaim != nil:
		return "a persistentVolumeClaim"
	case v.Ephemeral != nil:
		return "an ephemeral volume"
	}
	return "another kind of volume"
}

// modeFor is the mode that each place where meshgate may run calls for.
var modeFor = map[string]string{
	"command":        "",
	"postStart hook": "wait",
	"startupProbe":   "check",
	"readinessProbe": "check",
	"livenessProbe":  "check",
}

// checkUse checks one place where container c runs meshgate; c starts
// after the init containers before index after. The binary checks the
// flags; this checks what the binary cannot see: where it runs from and
// what the place it runs in needs.
func checkUse(c corev1.Container, u use, cl call, after int, installed map[string]int) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("container %q, %s: "+format, append([]any{c.Name, u.where}, args...)...))
	}
	bin := u.argv[0]
	dir := path.Dir(bin)
	m, mounted := mountAt(c, dir)
	at, isInstalled := installed[m.Name]
	switch {
	case !path.IsAbs(bin):
		fail("got %q, want the absolute path of the installed binary", bin)
	case !mounted:
		fail("runs %s: got no volume mounted at %s, want the volume meshgate is installed into", bin, dir)
	case !isInstalled:
		fail("runs %s from volume %q: got no init container that installs meshgate into it", bin, m.Name)
	case at >= after:
		fail("runs %s: got the init container that installs it later in the pod, want it earlier", bin)
	case !m.ReadOnly:
		fail("got volume %q mounted writable at %s, want readOnly: true", m.Name, dir)
	}

	mode, ok := modeFor[u.where]
	if !ok {
		fail("got meshgate here, want it only in the command, a postStart hook or a probe")
		return errs
	}
	if cl.mode != mode {
		fail("got %s, want %s", modeName(cl.mode), modeName(mode))
		return errs
	}
	switch {
	case mode == "" && cl.dash < 0:
		fail("got %q, want -- and then the app's command", u.argv)
	case mode == "" && (cl.dash+1 == len(cl.args) || cl.args[cl.dash+1] == ""):
		fail("got nothing after --, want the app's command")
	case mode != "" && cl.dash >= 0:
		fail("got -- in %s, which takes no command", mode)
	}
	if u.probe != nil {
		// The kubelet's default timeoutSeconds is 1; meshgate needs its
		// attempt's time and a second more to start and answer.
		if attempt, err := time.ParseDuration(cl.value("attempt-timeout")); err == nil {
			timeout := time.Duration(max(u.probe.TimeoutSeconds, 1)) * time.Second
			if need := (attempt + 2*time.Second - 1) / time.Second; timeout < need*time.Second {
				fail("got timeoutSeconds %d, want at least %d: meshgate gives each attempt %s and needs time to start",
					u.probe.TimeoutSeconds, need, attempt)
			}
		}
	}
	return errs
}

// checkEnv checks the names of the MESHGATE_* variables of a container
// that runs meshgate against those the binary reads; the runs check their
// values. MESHGATE_DISABLED is the exception: the runs set it to true, so
// its value is checked here, as meshgate reads a boolean.
func checkEnv(b *binary, c corev1.Container) []error {
	var errs []error
	disabled := b.flags["disabled"].env
	for _, e := range c.Env {
		if !strings.HasPrefix(e.Name, envPrefix) {
			continue
		}
		if _, ok := b.vars[e.Name]; !ok {
			errs = append(errs, fmt.Errorf("container %q env %s: got a variable meshgate does not read, want one that meshgate --help lists", c.Name, e.Name))
			continue
		}
		if e.Name == disabled && e.ValueFrom == nil {
			if _, err := strconv.ParseBool(e.Value); err != nil {
				errs = append(errs, fmt.Errorf("container %q env %s=%q: want true or false", c.Name, e.Name, e.Value))
			}
		}
	}
	return errs
}

// wrap is a container whose command is meshgate's wrap (or supervise).
type wrap struct {
	container string
	call      call
}

// checkEnd checks that the pod ends the way its restartPolicy means: a pod
// that runs to completion must stop its classic sidecar (--quit), and only
// such a pod may, with the mesh's consent and never under a native
// sidecar, which the kubelet stops itself and restarts when it exits.
func checkEnd(tmpl corev1.PodTemplateSpec, wraps []wrap) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	policy := cmp.Or(tmpl.Spec.RestartPolicy, corev1.RestartPolicyAlways)
	completes := policy == corev1.RestartPolicyNever || policy == corev1.RestartPolicyOnFailure
	native := nativeReason(tmpl)
	for _, w := range wraps {
		if !w.call.quits() {
			if completes && native == "" {
				fail("container %q: got restartPolicy %s and no --quit, want --quit (or a native sidecar): a classic sidecar never stops on its own, so the pod would never complete",
					w.container, policy)
			}
			continue
		}
		switch {
		case !completes:
			fail("container %q quits the proxy: got restartPolicy %s, want Never or OnFailure: only a pod that runs to completion may stop its proxy",
				w.container, policy)
		case policy == corev1.RestartPolicyOnFailure && w.call.value("quit-on") != "success":
			fail("container %q: got --quit-on %s with restartPolicy OnFailure, want success: a failed run restarts in the same pod and needs the proxy",
				w.container, w.call.value("quit-on"))
		}
		if native != "" {
			fail("container %q quits the proxy: got %s, want no --quit: the kubelet stops a native sidecar itself and restarts one that exits",
				w.container, native)
		}
		linkerd := tmpl.Annotations[linkerdInject] == "enabled" || (w.call.value("preset") == "linkerd" && w.call.value("quit-url") == "")
		if linkerd && tmpl.Annotations[linkerdShutdown] != "enabled" {
			fail("container %q quits Linkerd's proxy: got no annotation %s: enabled on the pod, want it: the proxy refuses the quit (404) without it",
				w.container, linkerdShutdown)
		}
	}
	return errs
}

// nativeReason says what makes the pod's proxy a native sidecar, or "".
func nativeReason(tmpl corev1.PodTemplateSpec) string {
	for _, c := range tmpl.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			return fmt.Sprintf("init container %q with restartPolicy Always", c.Name)
		}
	}
	for _, a := range nativeSidecar {
		if v := tmpl.Annotations[a]; v == "true" || v == "enabled" {
			return fmt.Sprintf("annotation %s: %q", a, v)
		}
	}
	return ""
}

// modeName names a mode of meshgate's in messages.
func modeName(mode string) string {
	if mode == "" {
		return "the wrap (meshgate [flags] -- COMMAND)"
	}
	return "meshgate " + mode
}

// checkSecurity checks the hardening that every example carries, on the
// pod and on each container (the kustomize component cannot rely on the
// pod's settings, so the containers state theirs).
func checkSecurity(spec corev1.PodSpec) []error {
	var errs []error
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	for _, e := range []struct {
		field     string
		got, want string
	}{
		{"runAsNonRoot", boolText(psc.RunAsNonRoot), "true"},
		{"runAsUser", nonRoot(psc.RunAsUser), "non-zero"},
		{"seccompProfile.type", seccomp(psc.SeccompProfile), string(corev1.SeccompProfileTypeRuntimeDefault)},
	} {
		if e.got != e.want {
			errs = append(errs, fmt.Errorf("pod securityContext.%s: got %s, want %s", e.field, e.got, e.want))
		}
	}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		drop := "unset"
		if sc.Capabilities != nil {
			drop = fmt.Sprint(sc.Capabilities.Drop)
			if slices.Contains(sc.Capabilities.Drop, "ALL") {
				drop = "ALL"
			}
		}
		for _, e := range []struct {
			field     string
			got, want string
		}{
			{"runAsNonRoot", boolText(sc.RunAsNonRoot), "true"},
			{"runAsUser", nonRoot(sc.RunAsUser), "non-zero"},
			{"readOnlyRootFilesystem", boolText(sc.ReadOnlyRootFilesystem), "true"},
			{"allowPrivilegeEscalation", boolText(sc.AllowPrivilegeEscalation), "false"},
			{"capabilities.drop", drop, "ALL"},
			{"seccompProfile.type", seccomp(sc.SeccompProfile), string(corev1.SeccompProfileTypeRuntimeDefault)},
		} {
			if e.got != e.want {
				errs = append(errs, fmt.Errorf("container %q securityContext.%s: got %s, want %s", c.Name, e.field, e.got, e.want))
			}
		}
	}
	return errs
}

func boolText(b *bool) string {
	if b == nil {
		return "unset"
	}
	return strconv.FormatBool(*b)
}

func nonRoot(uid *int64) string {
	switch {
	case uid == nil:
		return "unset"
	case *uid == 0:
		return "0"
	}
	return "non-zero"
}

func seccomp(p *corev1.SeccompProfile) string {
	if p == nil {
		return "unset"
	}
	return string(p.Type)
}

// TestCheckPodFindsMistakes breaks good examples in the ways users do and
// expects checkPod to say so; where the mistake is in meshgate's flags or
// variables, in the words of the binary itself.
func TestCheckPodFindsMistakes(t *testing.T) {
	b := meshgate(t)
	const (
		deployment = "istio/deployment.yaml"
		job        = "istio/job.yaml"
		cronJob    = "istio/cronjob.yaml"
		linkerdJob = "linkerd/job.yaml"
	)
	docs := map[string][]byte{}
	for _, file := range []string{deployment, job, cronJob, linkerdJob} {
		d, err := readDocuments(file)
		if err != nil {
			t.Fatal(err)
		}
		docs[file] = d[0].json
	}
	app := func(s *corev1.PodTemplateSpec) *corev1.Container { return &s.Spec.Containers[0] }
	install := func(s *corev1.PodTemplateSpec) *corev1.Container { return &s.Spec.InitContainers[0] }
	// insert puts flags right after the binary.
	insert := func(s *corev1.PodTemplateSpec, flags ...string) {
		app(s).Command = slices.Insert(app(s).Command, 1, flags...)
	}
	// drop takes n words, from word on, out of the app's command; if word
	// is missing, the case fails on what checkPod says of the example.
	drop := func(s *corev1.PodTemplateSpec, word string, n int) {
		if i := slices.Index(app(s).Command, word); i >= 0 {
			app(s).Command = slices.Delete(app(s).Command, i, i+n)
		}
	}
	tests := []struct {
		name   string
		from   string // the example to break; deployment if empty
		mutate func(s *corev1.PodTemplateSpec)
		want   string
	}{
		{"good as it is", "", func(*corev1.PodTemplateSpec) {}, ""},
		{"volume not an emptyDir", "", func(s *corev1.PodTemplateSpec) {
			s.Spec.Volumes[0].VolumeSource = corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/tmp"}}
		}, `volume "meshgate": got a hostPath, want an emptyDir`},
		{"no volume", "", func(s *corev1.PodTemplateSpec) { s.Spec.Volumes = nil }, `got no such volume`},
		{"no installer", "", func(s *corev1.PodTemplateSpec) { s.Spec.InitContainers = nil }, `got no init container that installs meshgate`},
		{"installer without install", "", func(s *corev1.PodTemplateSpec) { install(s).Args = []string{"/meshgate"} }, `want install [flags] DIR`},
		{"installs elsewhere", "", func(s *corev1.PodTemplateSpec) { install(s).Args = []string{"install", "/opt"} }, `installs into /opt: got no volume mounted there`},
		{"installer given a bad flag", "", func(s *corev1.PodTemplateSpec) {
			install(s).Args = []string{"install", "--log-levl", "debug", "/meshgate"}
		}, `init container "meshgate-install": meshgate install --log-levl debug /meshgate: got exit 2, want 0: meshgate: unknown flag: --log-levl`},
		{"installer mount read-only", "", func(s *corev1.PodTemplateSpec) { install(s).VolumeMounts[0].ReadOnly = true }, `mounted read-only at /meshgate, want it writable`},
		{"app mount missing", "", func(s *corev1.PodTemplateSpec) { app(s).VolumeMounts = nil }, `got no volume mounted at /meshgate`},
		{"app mount writable", "", func(s *corev1.PodTemplateSpec) { app(s).VolumeMounts[0].ReadOnly = false }, `want readOnly: true`},
		{"binary by relative path", "", func(s *corev1.PodTemplateSpec) { app(s).Command[0] = "meshgate" }, `want the absolute path`},
		{"no --", "", func(s *corev1.PodTemplateSpec) {
			app(s).Command = []string{"/meshgate/meshgate", "--preset", "istio", "/app/server"}
		}, `got exit 2, want 0: meshgate: missing -- before the command "/app/server"`},
		{"nothing after --", "", func(s *corev1.PodTemplateSpec) {
			app(s).Command = []string{"/meshgate/meshgate", "--preset", "istio", "--"}
		}, `meshgate: missing command after --`},
		{"app command in args", "", func(s *corev1.PodTemplateSpec) {
			app(s).Command = []string{"/meshgate/meshgate", "--preset", "istio"}
			app(s).Args = []string{"/app/server"}
		}, `meshgate: missing -- before the command "/app/server"`},
		{"unknown flag", "", func(s *corev1.PodTemplateSpec) { app(s).Command[1] = "--mesh" }, `meshgate: unknown flag: --mesh`},
		{"unknown preset", "", func(s *corev1.PodTemplateSpec) { app(s).Command[2] = "istoi" }, `meshgate: unknown preset "istoi"`},
		{"flag without value", "", func(s *corev1.PodTemplateSpec) {
			app(s).Command = []string{"/meshgate/meshgate", "--timeout"}
		}, `meshgate: flag needs an argument: --timeout`},
		{"bad duration", "", func(s *corev1.PodTemplateSpec) { insert(s, "--timeout=2") }, `invalid argument "2" for "--timeout" flag`},
		{"boolean given a separate value", "", func(s *corev1.PodTemplateSpec) { insert(s, "--disabled", "true") }, `meshgate: unexpected argument "true" before --`},
		{"boolean with a bad value", "", func(s *corev1.PodTemplateSpec) { insert(s, "--disabled=yes") }, `invalid argument "yes" for "--disabled" flag`},
		{"wait in the command", "", func(s *corev1.PodTemplateSpec) {
			app(s).Command = []string{"/meshgate/meshgate", "wait", "--preset", "istio"}
		}, `got meshgate wait, want the wrap`},
		{"unknown mode", "", func(s *corev1.PodTemplateSpec) {
			app(s).Command = []string{"/meshgate/meshgate", "wiat", "--preset", "istio"}
		}, `meshgate: unknown command "wiat"`},
		{"probe runs wait", "", func(s *corev1.PodTemplateSpec) {
			app(s).StartupProbe = &corev1.Probe{TimeoutSeconds: 2, ProbeHandler: corev1.ProbeHandler{
				Exec: &corev1.ExecAction{Command: []string{"/meshgate/meshgate", "wait"}}}}
		}, `startupProbe: got meshgate wait, want meshgate check`},
		{"probe timeout too short", "", func(s *corev1.PodTemplateSpec) {
			app(s).ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
				Exec: &corev1.ExecAction{Command: []string{"/meshgate/meshgate", "check"}}}}
		}, `readinessProbe: got timeoutSeconds 0, want at least 2`},
		{"probe shorter than the attempt", "", func(s *corev1.PodTemplateSpec) {
			app(s).ReadinessProbe = &corev1.Probe{TimeoutSeconds: 2, ProbeHandler: corev1.ProbeHandler{
				Exec: &corev1.ExecAction{Command: []string{"/meshgate/meshgate", "check", "--attempt-timeout=3s"}}}}
		}, `got timeoutSeconds 2, want at least 4`},
		{"probe attempt from a variable", "", func(s *corev1.PodTemplateSpec) {
			app(s).Env = []corev1.EnvVar{{Name: "MESHGATE_ATTEMPT_TIMEOUT", Value: "5s"}}
			app(s).ReadinessProbe = &corev1.Probe{TimeoutSeconds: 2, ProbeHandler: corev1.ProbeHandler{
				Exec: &corev1.ExecAction{Command: []string{"/meshgate/meshgate", "check"}}}}
		}, `got timeoutSeconds 2, want at least 6`},
		{"check given a wait flag", "", func(s *corev1.PodTemplateSpec) {
			app(s).ReadinessProbe = &corev1.Probe{TimeoutSeconds: 2, ProbeHandler: corev1.ProbeHandler{
				Exec: &corev1.ExecAction{Command: []string{"/meshgate/meshgate", "check", "--on-timeout", "start"}}}}
		}, `readinessProbe: meshgate check --on-timeout start: got exit 2, want 0: meshgate: unknown flag: --on-timeout`},
		{"preStop hook", "", func(s *corev1.PodTemplateSpec) {
			app(s).Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
				Exec: &corev1.ExecAction{Command: []string{"/meshgate/meshgate", "wait"}}}}
		}, `preStop hook: got meshgate here`},
		{"init container before the installer", "", func(s *corev1.PodTemplateSpec) {
			s.Spec.InitContainers = slices.Insert(s.Spec.InitContainers, 0, *app(s))
		}, `got the init container that installs it later in the pod`},
		{"installed but unused", "", func(s *corev1.PodTemplateSpec) {
			app(s).Command = []string{"/app/server"}
		}, `meshgate is installed but no container runs it`},
		{"pod not non-root", "", func(s *corev1.PodTemplateSpec) { s.Spec.SecurityContext.RunAsNonRoot = nil }, `pod securityContext.runAsNonRoot: got unset, want true`},
		{"pod without seccomp", "", func(s *corev1.PodTemplateSpec) { s.Spec.SecurityContext.SeccompProfile = nil }, `pod securityContext.seccompProfile.type: got unset, want RuntimeDefault`},
		{"app as root", "", func(s *corev1.PodTemplateSpec) { *app(s).SecurityContext.RunAsUser = 0 }, `container "app" securityContext.runAsUser: got 0, want non-zero`},
		{"installer with a writable root", "", func(s *corev1.PodTemplateSpec) {
			install(s).SecurityContext.ReadOnlyRootFilesystem = nil
		}, `container "meshgate-install" securityContext.readOnlyRootFilesystem: got unset, want true`},
		{"privilege escalation", "", func(s *corev1.PodTemplateSpec) {
			*app(s).SecurityContext.AllowPrivilegeEscalation = true
		}, `securityContext.allowPrivilegeEscalation: got true, want false`},
		{"capabilities kept", "", func(s *corev1.PodTemplateSpec) {
			app(s).SecurityContext.Capabilities.Drop = []corev1.Capability{"NET_RAW"}
		}, `securityContext.capabilities.drop: got [NET_RAW], want ALL`},
		{"misspelt variable", "", func(s *corev1.PodTemplateSpec) {
			app(s).Env = []corev1.EnvVar{{Name: "MESHGATE_TIMOUT", Value: "30s"}}
		}, `env MESHGATE_TIMOUT: got a variable meshgate does not read`},
		{"bad variable value", "", func(s *corev1.PodTemplateSpec) {
			app(s).Env = []corev1.EnvVar{{Name: "MESHGATE_ON_TIMEOUT", Value: "continue"}}
		}, `got exit 2, want 0: meshgate: MESHGATE_ON_TIMEOUT must be fail or start, got "continue"`},
		{"bad MESHGATE_DISABLED", "", func(s *corev1.PodTemplateSpec) {
			app(s).Env = []corev1.EnvVar{{Name: "MESHGATE_DISABLED", Value: "yes"}}
		}, `env MESHGATE_DISABLED="yes": want true or false`},
		{"good variables", "", func(s *corev1.PodTemplateSpec) {
			app(s).Env = []corev1.EnvVar{{Name: "MESHGATE_TIMEOUT", Value: "10s"}, {Name: "MESHGATE_DISABLED", Value: "true"},
				{Name: "MESHGATE_PROBE", Value: "http://localhost:1/a, tcp://localhost:2"}}
		}, ""},
		{"no container securityContext", "", func(s *corev1.PodTemplateSpec) { app(s).SecurityContext = nil }, `container "app" securityContext.runAsNonRoot: got unset, want true`},

		// Jobs, and the quit.
		{"good Job", job, func(*corev1.PodTemplateSpec) {}, ""},
		{"good CronJob", cronJob, func(*corev1.PodTemplateSpec) {}, ""},
		{"good Linkerd Job", linkerdJob, func(*corev1.PodTemplateSpec) {}, ""},
		{"quit in a Deployment", "", func(s *corev1.PodTemplateSpec) { insert(s, "--quit") },
			`container "app" quits the proxy: got restartPolicy Always, want Never or OnFailure`},
		{"quit from a variable in a Deployment", "", func(s *corev1.PodTemplateSpec) {
			app(s).Env = []corev1.EnvVar{{Name: "MESHGATE_QUIT", Value: "true"}}
		}, `got restartPolicy Always, want Never or OnFailure`},
		{"Job without the quit", job, func(s *corev1.PodTemplateSpec) { drop(s, "--quit", 1) },
			`container "migrate": got restartPolicy Never and no --quit, want --quit`},
		{"Job on a native sidecar without the quit", job, func(s *corev1.PodTemplateSpec) {
			drop(s, "--quit", 1)
			s.Annotations["sidecar.istio.io/nativeSidecar"] = "true"
		}, ""},
		{"quit with a native sidecar", job, func(s *corev1.PodTemplateSpec) {
			s.Annotations["sidecar.istio.io/nativeSidecar"] = "true"
		}, `got annotation sidecar.istio.io/nativeSidecar: "true", want no --quit`},
		{"quit with a native sidecar in the spec", job, func(s *corev1.PodTemplateSpec) {
			proxy := *install(s)
			proxy.Name, proxy.Image, proxy.Args = "proxy", "example.com/proxy:1.0", nil
			proxy.RestartPolicy = new(corev1.ContainerRestartPolicyAlways)
			s.Spec.InitContainers = append(s.Spec.InitContainers, proxy)
		}, `got init container "proxy" with restartPolicy Always, want no --quit`},
		{"OnFailure quitting after a failure", cronJob, func(s *corev1.PodTemplateSpec) { drop(s, "--quit-on", 2) },
			`got --quit-on always with restartPolicy OnFailure, want success`},
		{"quit-on misspelt", cronJob, func(s *corev1.PodTemplateSpec) {
			drop(s, "--quit-on", 2)
			insert(s, "--quit-on", "sucess")
		}, `meshgate: --quit-on must be always or success, got "sucess"`},
		{"remote quit URL", job, func(s *corev1.PodTemplateSpec) {
			insert(s, "--quit-url", "http://10.0.0.1:15020/quitquitquit")
		}, `is not loopback`},
		{"remote quit URL allowed", job, func(s *corev1.PodTemplateSpec) {
			insert(s, "--quit-url", "http://192.0.2.1:15020/quitquitquit", "--quit-allow-remote")
		}, ""},
		{"signal that cannot be forwarded", job, func(s *corev1.PodTemplateSpec) {
			insert(s, "--forward-signals", "TERM,KIL")
		}, `meshgate: --forward-signals: cannot forward signal "KIL"`},
		{"quit timeout not a duration", job, func(s *corev1.PodTemplateSpec) {
			app(s).Env = []corev1.EnvVar{{Name: "MESHGATE_QUIT_TIMEOUT", Value: "10"}}
		}, `MESHGATE_QUIT_TIMEOUT="10"`},
		{"Linkerd quit not enabled", linkerdJob, func(s *corev1.PodTemplateSpec) {
			delete(s.Annotations, linkerdShutdown)
		}, `quits Linkerd's proxy: got no annotation config.linkerd.io/proxy-admin-shutdown: enabled`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			obj, err := decodeObject(docs[cmp.Or(tt.from, deployment)]) // a fresh copy for each case
			if err != nil {
				t.Fatal(err)
			}
			tmpl := podTemplate(obj)
			tt.mutate(&tmpl)
			errs := checkPod(b, tmpl)
			if tt.want == "" {
				if len(errs) > 0 {
					t.Errorf("got %q, want no error", errs)
				}
				return
			}
			for _, err := range errs {
				if strings.Contains(err.Error(), tt.want) {
					return
				}
			}
			t.Errorf("got %q, want an error containing %q", errs, tt.want)
		})
	}
}

package inject

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"sigs.k8s.io/kustomize/kyaml/yaml"

	"github.com/meshgate/meshgate/probe"
)

// proxies are the containers of known mesh proxies, by the mesh whose
// preset they imply.
var proxies = map[string]string{
	"istio-proxy":      "istio",
	"linkerd-proxy":    "linkerd",
	"consul-dataplane": "consul",
	"envoy-sidecar":    "consul", // consul-k8s before consul-dataplane
	"kuma-sidecar":     "kuma",
}

// agents are other injected containers that are never the app.
var agents = []string{"consul-sidecar", "vault-agent", "vault-agent-init", "linkerd-debug", "istio-validation"}

// record is the value of AnnotationInjected: what the injection added
// beyond the fixed pieces (the volume, the init container, the mounts and
// the command prefix), so that Uninject removes exactly that.
type record struct {
	Containers []wrapped `json:"containers"`
	// Each is true when the injection created the key (rather than adding
	// to what was there).
	Volumes        bool `json:"volumes,omitempty"`
	InitContainers bool `json:"initContainers,omitempty"`
	Annotations    bool `json:"annotations,omitempty"`
	Metadata       bool `json:"metadata,omitempty"`
	// Nulls holds the keys that were there with a null value (such as a
	// bare "annotations:"), which the injection turned into a mapping or
	// list in place, with the null's text: "spec.volumes",
	// "containers.app.volumeMounts" → "" or "~" or "null".
	Nulls map[string]string `json:"nulls,omitempty"`
	// LinkerdShutdown is nil when the injection left Linkerd's shutdown
	// annotation alone, "" when it added it, and the former value when it
	// changed it to "enabled".
	LinkerdShutdown *string `json:"linkerdShutdown,omitempty"`
}

type wrapped struct {
	Name string `json:"name"`
	// Command is true when the container had no command and got the
	// image's ENTRYPOINT behind the prefix; Args when it had no args
	// either and got the image's CMD; Mounts when it had no volumeMounts.
	Command bool `json:"command,omitempty"`
	Args    bool `json:"args,omitempty"`
	Mounts  bool `json:"volumeMounts,omitempty"`
}

// plan is what Template will do to one container, worked out before any
// change is made.
type plan struct {
	node    *yaml.Node
	name    string
	command []string // the image's ENTRYPOINT when the container has no command
	args    []string // the image's CMD when it has neither command nor args
	addCmd  bool
	addArgs bool
}

// Template rewrites, in place, a pod template: an RNode holding metadata
// and spec (a PodTemplateSpec, or a whole Pod, whose metadata and spec
// have the same shape). jobLike says whether the pod ends (Job, CronJob,
// restartPolicy Never or OnFailure), so that the wrapped command gets
// --quit; a spec.restartPolicy of Never or OnFailure counts as jobLike
// too.
//
// It leaves the template unchanged, saying why in the notes, when the
// template opts out (meshgate.io/inject: "false"), opts out of the mesh
// (sidecar.istio.io/inject: "false" and the like, without another mesh),
// is already injected (meshgate.io/injected), runs its proxy as a native
// sidecar (NativeSidecar), or has no container left to wrap. An error
// means nothing was changed.
func Template(ctx context.Context, tmpl *yaml.RNode, jobLike bool, opts Options) (Result, error) {
	var res Result
	if err := opts.Validate(); err != nil {
		return res, err
	}
	p, err := readPod(tmpl)
	if err != nil {
		return res, err
	}
	if why := leftAlone(tmpl, p.ann); why != "" {
		res.note("%s", why)
		return res, nil
	}
	if err := p.check(); err != nil {
		return res, err
	}
	preset, ok, err := p.preset(opts, &res)
	if err != nil || !ok {
		return res, err
	}
	chosen, err := choose(p.spec, p.containers, p.ann, opts, &res)
	if err != nil {
		return res, err
	}
	if len(chosen) == 0 {
		res.note("no container left to wrap: unchanged")
		return res, nil
	}
	if err := p.checkFree(); err != nil {
		return res, err
	}
	prefix, jobLike := p.prefix(preset, jobLike, opts, &res)
	plans := make([]plan, 0, len(chosen))
	for _, c := range chosen {
		pl, err := planContainer(ctx, c, opts, &res)
		if err != nil {
			return res, err
		}
		plans = append(plans, pl)
	}
	// Everything is known: change the template.
	rec := p.wire(plans, prefix, opts.image(), jobLike && preset == "linkerd", &res)
	b, err := json.Marshal(rec)
	if err != nil {
		return res, err
	}
	set(p.ann, AnnotationInjected, str(string(b)))
	res.Changed = true
	return res, nil
}

// pod holds the nodes of a pod template that Template reads and edits;
// meta, ann and labels are nil where the template has none.
type pod struct {
	root, meta, ann, labels, spec, containers *yaml.Node
}

func readPod(tmpl *yaml.RNode) (*pod, error) {
	p := &pod{root: tmpl.YNode()}
	if p.root == nil || p.root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("pod template is not a mapping")
	}
	p.spec = get(p.root, "spec")
	if p.spec == nil || p.spec.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("pod template has no spec")
	}
	p.meta = get(p.root, "metadata")
	p.ann, p.labels = get(p.meta, "annotations"), get(p.meta, "labels")
	p.containers = get(p.spec, "containers")
	return p, nil
}

// leftAlone says why a template that opts out, is injected already or has
// a native sidecar proxy is left unchanged, or "" if it is not.
func leftAlone(tmpl *yaml.RNode, ann *yaml.Node) string {
	if v := scalar(get(ann, AnnotationInject)); v == "false" {
		return fmt.Sprintf("%s is \"false\": left alone", AnnotationInject)
	}
	if get(ann, AnnotationInjected) != nil {
		return "already injected: unchanged"
	}
	if native, why := NativeSidecar(tmpl); native {
		return fmt.Sprintf("native sidecar (%s): the kubelet starts the app after the proxy's startup probe and stops the proxy after a Job, so no gate is needed; unchanged", why)
	}
	return ""
}

// check checks that the template has containers and that what Template
// edits has the shape it expects.
func (p *pod) check() error {
	if p.containers == nil || p.containers.Kind != yaml.SequenceNode || len(p.containers.Content) == 0 {
		return fmt.Errorf("pod template has no containers")
	}
	return checkShape(p.root, p.meta, p.spec)
}

// preset is the mesh whose preset the gate gets: the annotation's, else
// --preset, else the one the template shows; "" for meshgate's default.
// It reports false when the template turns its mesh off, so that there is
// no proxy to wait for.
func (p *pod) preset(opts Options, res *Result) (string, bool, error) {
	preset, why := opts.Preset, "--preset"
	if a := scalar(get(p.ann, AnnotationPreset)); a != "" {
		if !slices.Contains(Presets, a) {
			return "", false, fmt.Errorf("annotation %s: preset %q: want one of %s", AnnotationPreset, a, strings.Join(Presets, ", "))
		}
		preset, why = a, "annotation "+AnnotationPreset
	}
	guessed, guessWhy, off := guessPreset(p.spec, p.ann, p.labels)
	switch {
	case guessed == "" && off != "" && why != "annotation "+AnnotationPreset:
		// Even with --preset: this workload has no proxy, and a gate
		// would hold it until the timeout.
		res.note("%s: the pod has no mesh proxy, so there is nothing to wait for; unchanged", off)
		return "", false, nil
	case preset == "":
		preset, why = guessed, guessWhy
	case guessed != "" && guessed != preset:
		res.note("the pod template says %s (%s), but %s says %s", guessed, guessWhy, why, preset)
	}
	if preset != "" {
		res.note("preset %s (%s)", preset, why)
	} else {
		res.note("no mesh found in the pod template's annotations, labels or containers: meshgate's default probe (Istio's); set --preset or the %s annotation if that is wrong", AnnotationPreset)
	}
	return preset, true, nil
}

// checkFree refuses a pod that has meshgate's volume or init container
// already, without the annotation that says the injection added them.
func (p *pod) checkFree() error {
	for _, c := range []struct{ list, name, what string }{
		{"volumes", Volume, "a volume"},
		{"initContainers", InstallContainer, "an init container"},
	} {
		if _, i := named(get(p.spec, c.list), c.name); i >= 0 {
			return fmt.Errorf("the pod already has %s %q that meshgate-inject did not add: finish the wiring by hand, or remove it and inject again", c.what, c.name)
		}
	}
	return nil
}

// prefix is the gate's command line that goes before each wrapped
// command, up to and including "--"; jobLike is false if the mesh cannot
// be told to quit.
func (p *pod) prefix(preset string, jobLike bool, opts Options, res *Result) ([]string, bool) {
	policy := scalar(get(p.spec, "restartPolicy"))
	if policy == "Never" || policy == "OnFailure" {
		jobLike = true
	}
	prefix := []string{Gate}
	if preset != "" {
		prefix = append(prefix, "--preset", preset)
	}
	if pr, err := probe.LookupPreset(preset); jobLike && err == nil && pr.Quit == "" {
		// The mesh has no quit endpoint meshgate could use: --quit would
		// be refused. The sidecar has to stop some other way.
		res.note("no --quit for this Job-like pod: %s", pr.NoQuit)
		jobLike = false
	}
	if jobLike {
		prefix = append(prefix, "--quit")
		if policy == "OnFailure" {
			// A restarted command would otherwise wait for a proxy that
			// was told to quit after the failed run.
			prefix = append(prefix, "--quit-on", "success")
		}
	}
	return append(append(prefix, opts.GateFlags...), "--"), jobLike
}

// wire adds meshgate to the pod: the volume, the init container that
// installs meshgate from image, and the wrapped commands, with Linkerd's
// shutdown annotation when linkerdQuit. It returns the record of what it
// created or filled in.
func (p *pod) wire(plans []plan, prefix []string, image string, linkerdQuit bool, res *Result) record {
	var rec record
	p.meta, rec.Metadata = rec.ensure(p.meta, "metadata", yaml.MappingNode, func(n *yaml.Node) {
		set(p.root, "metadata", n)
	})
	p.ann, rec.Annotations = rec.ensure(p.ann, "metadata.annotations", yaml.MappingNode, func(n *yaml.Node) {
		setAfter(p.meta, "annotations", n, "labels", "name", "namespace")
	})
	if linkerdQuit {
		rec.LinkerdShutdown = linkerdShutdown(p.ann, res)
	}
	volumes, created := rec.ensure(get(p.spec, "volumes"), "spec.volumes", yaml.SequenceNode, func(n *yaml.Node) {
		set(p.spec, "volumes", n)
	})
	rec.Volumes = created
	volumes.Content = append(volumes.Content, volume())
	inits, created := rec.ensure(get(p.spec, "initContainers"), "spec.initContainers", yaml.SequenceNode, func(n *yaml.Node) {
		setBefore(p.spec, "initContainers", n, "containers")
	})
	rec.InitContainers = created
	inits.Content = append(inits.Content, installContainer(image))
	for _, pl := range plans {
		rec.Containers = append(rec.Containers, rec.wrap(pl, prefix))
		res.note("wrapped container %s: %s", pl.name, strings.Join(prefix, " "))
	}
	return rec
}

// linkerdShutdown sets Linkerd's shutdown annotation to "enabled", without
// which Linkerd refuses the quit, and returns what rec keeps of it: nil if
// it was so already, "" if it was added, else the former value.
func linkerdShutdown(ann *yaml.Node, res *Result) *string {
	v := get(ann, LinkerdShutdown)
	switch {
	case v == nil:
		set(ann, LinkerdShutdown, str("enabled"))
		res.note("added %s: enabled, without which Linkerd refuses the quit", LinkerdShutdown)
		return new(string)
	case v.Value != "enabled":
		old := v.Value
		v.Value = "enabled"
		res.note("set %s to enabled (was %q), without which Linkerd refuses the quit", LinkerdShutdown, old)
		return &old
	}
	return nil
}

// wrap puts prefix before the command of the planned container and mounts
// meshgate's volume in it.
func (rec *record) wrap(p plan, prefix []string) wrapped {
	w := wrapped{Name: p.name}
	key := "containers." + p.name + "."
	if p.addCmd {
		w.Command = rec.setList(p.node, key+"command", "command", append(slices.Clone(prefix), p.command...), "image", "name")
	} else {
		cmd := get(p.node, "command")
		pre := strSeq(prefix).Content
		for _, n := range pre {
			n.Style = cmd.Content[0].Style // quoted like the command
		}
		cmd.Content = append(pre, cmd.Content...)
	}
	if p.addArgs {
		w.Args = rec.setList(p.node, key+"args", "args", p.args, "command")
	}
	mounts, created := rec.ensure(get(p.node, "volumeMounts"), key+"volumeMounts", yaml.SequenceNode, func(n *yaml.Node) {
		set(p.node, "volumeMounts", n)
	})
	w.Mounts = created
	mounts.Content = append(mounts.Content, mapping("name", Volume, "mountPath", MountPath, "readOnly", boolean(true)))
	return w
}

// ensure returns n, a mapping or list of kind that the injection adds to.
// When there is none, it makes an empty one, which add puts in its place,
// and reports true; a null n it makes empty in place, recording the null
// under path for Uninject.
func (rec *record) ensure(n *yaml.Node, path string, kind yaml.Kind, add func(*yaml.Node)) (*yaml.Node, bool) {
	if n == nil {
		n = seq()
		if kind == yaml.MappingNode {
			n = mapping()
		}
		add(n)
		return n, true
	}
	if null(n) {
		rec.fill(n, path, kind)
	}
	return n, false
}

// setList sets key of container c to list: in place of a null that was
// there (recorded under path), or as a new key after the first of after
// that c has, in which case it reports true.
func (rec *record) setList(c *yaml.Node, path, key string, list []string, after ...string) bool {
	l := strSeq(list)
	if old := get(c, key); old != nil {
		rec.fill(old, path, yaml.SequenceNode)
		old.Content = l.Content
		return false
	}
	setAfter(c, key, l, after...)
	return true
}

// undo takes back what ensure did to m's key once meshgate's entries are
// out of it: it deletes the key if the injection created it (see
// delCreated), or turns it back into the null it was.
func (rec *record) undo(m *yaml.Node, key, path string, created bool) {
	if created {
		delCreated(m, key)
		return
	}
	rec.unfill(get(m, key), path)
}

// checkShape checks the kinds of the nodes Template edits, so that a
// malformed manifest is an error and not a stranger one.
func checkShape(root, meta, spec *yaml.Node) error {
	want := func(n *yaml.Node, kind yaml.Kind, what string) error {
		if n == nil || null(n) || n.Kind == kind {
			return nil
		}
		if kind == yaml.MappingNode {
			return fmt.Errorf("%s is not a mapping", what)
		}
		return fmt.Errorf("%s is not a list", what)
	}
	checks := []struct {
		n    *yaml.Node
		kind yaml.Kind
		what string
	}{
		{meta, yaml.MappingNode, "metadata"},
		{get(meta, "annotations"), yaml.MappingNode, "metadata.annotations"},
		{get(spec, "volumes"), yaml.SequenceNode, "spec.volumes"},
		{get(spec, "initContainers"), yaml.SequenceNode, "spec.initContainers"},
	}
	for _, list := range []string{"containers", "initContainers"} {
		l := get(spec, list)
		if l == nil || l.Kind != yaml.SequenceNode {
			continue
		}
		for i, c := range l.Content {
			if c.Kind != yaml.MappingNode || scalar(get(c, "name")) == "" {
				return fmt.Errorf("spec.%s[%d] is not a container with a name", list, i)
			}
			checks = append(checks, struct {
				n    *yaml.Node
				kind yaml.Kind
				what string
			}{get(c, "volumeMounts"), yaml.SequenceNode, fmt.Sprintf("container %s: volumeMounts", scalar(get(c, "name")))})
		}
	}
	for _, c := range checks {
		if err := want(c.n, c.kind, c.what); err != nil {
			return err
		}
	}
	if a := get(meta, "annotations"); a != nil && a.Kind == yaml.MappingNode {
		for i := 1; i < len(a.Content); i += 2 {
			if a.Content[i].Kind != yaml.ScalarNode {
				return fmt.Errorf("annotation %s is not a string", a.Content[i-1].Value)
			}
		}
	}
	return nil
}

// fill turns a null node into an empty mapping or list, in place, and
// records the null's text under key.
func (rec *record) fill(n *yaml.Node, key string, kind yaml.Kind) {
	if rec.Nulls == nil {
		rec.Nulls = map[string]string{}
	}
	rec.Nulls[key] = n.Value
	n.Kind, n.Value, n.Style, n.Content = kind, "", 0, nil
	n.Tag = yaml.NodeTagMap
	if kind == yaml.SequenceNode {
		n.Tag = yaml.NodeTagSeq
	}
}

// unfill turns n back into the null it was, if key was one.
func (rec *record) unfill(n *yaml.Node, key string) {
	v, ok := rec.Nulls[key]
	if !ok || n == nil {
		return
	}
	n.Kind, n.Tag, n.Value, n.Style, n.Content = yaml.ScalarNode, yaml.NodeTagNull, v, 0, nil
}

// choose returns the containers to wrap: those named by the annotation or
// Options.Containers, or else every app container.
func choose(spec, containers, ann *yaml.Node, opts Options, res *Result) ([]*yaml.Node, error) {
	names, from := opts.Containers, "--containers"
	if v := scalar(get(ann, AnnotationContainers)); v != "" {
		names, from = nil, "annotation "+AnnotationContainers
		for _, n := range strings.Split(v, ",") {
			if n = strings.TrimSpace(n); n != "" {
				names = append(names, n)
			}
		}
	}
	var all []string
	for _, c := range containers.Content {
		all = append(all, scalar(get(c, "name")))
	}
	var chosen []*yaml.Node
	if len(names) > 0 {
		for _, n := range names {
			c, i := named(containers, n)
			if i < 0 {
				return nil, fmt.Errorf("container %q (from %s): no such container; the pod has %s", n, from, strings.Join(all, ", "))
			}
			if wrappedBy(c) {
				res.note("container %s already runs meshgate: left as it is", n)
				continue
			}
			chosen = append(chosen, c)
		}
		return chosen, nil
	}
	for _, c := range containers.Content {
		n := scalar(get(c, "name"))
		switch {
		case proxies[n] != "" || slices.Contains(agents, n):
			res.note("container %s is a mesh proxy or agent: not wrapped", n)
		case wrappedBy(c):
			res.note("container %s already runs meshgate: left as it is", n)
		default:
			chosen = append(chosen, c)
		}
	}
	return chosen, nil
}

// wrappedBy reports whether container c already runs meshgate.
func wrappedBy(c *yaml.Node) bool {
	cmd, _ := stringList(get(c, "command"))
	return len(cmd) > 0 && (cmd[0] == "meshgate" || strings.HasSuffix(cmd[0], "/meshgate"))
}

// planContainer works out the command and args of one container, reading
// the image's ENTRYPOINT and CMD where the kubelet would use them.
func planContainer(ctx context.Context, c *yaml.Node, opts Options, res *Result) (plan, error) {
	name := scalar(get(c, "name"))
	p := plan{node: c, name: name}
	cmdNode, argsNode := get(c, "command"), get(c, "args")
	for key, n := range map[string]*yaml.Node{"command": cmdNode, "args": argsNode} {
		if null(n) {
			continue
		}
		if _, ok := stringList(n); !ok {
			return p, fmt.Errorf("container %s: %s is not a list of strings", name, key)
		}
		if len(n.Content) == 0 {
			return p, fmt.Errorf("container %s: %s is an empty list, which Kubernetes reads as unset: remove it or write it out", name, key)
		}
	}
	if !null(cmdNode) {
		// The kubelet runs command with args: prefix command, keep args.
		return p, nil
	}
	hasArgs := !null(argsNode)
	entry, haveEntry := opts.Entrypoints[name]
	cmd, haveCmd := opts.Cmds[name]
	if !haveEntry || (!hasArgs && !haveCmd) {
		imageEntry, imageCmd, err := resolveImage(ctx, c, hasArgs, opts, res)
		if err != nil {
			return p, err
		}
		if !haveEntry {
			entry = imageEntry
		}
		if !haveCmd {
			cmd = imageCmd
		}
	}
	p.addCmd, p.command = true, entry
	if !hasArgs && len(cmd) > 0 {
		p.addArgs, p.args = true, cmd
	}
	if len(entry) == 0 && !hasArgs && len(cmd) == 0 {
		return p, fmt.Errorf("container %s: its image has neither ENTRYPOINT nor CMD, so there is no command to wrap", name)
	}
	return p, nil
}

// resolveImage reads the ENTRYPOINT and CMD of container c's image with
// opts.Resolver, which the command line's --resolve gives.
func resolveImage(ctx context.Context, c *yaml.Node, hasArgs bool, opts Options, res *Result) (entry, cmd []string, err error) {
	name, image := scalar(get(c, "name")), scalar(get(c, "image"))
	if opts.Resolver == nil {
		need := "its image's ENTRYPOINT"
		hint := fmt.Sprintf("--entrypoint %s='[\"/path/to/app\"]'", name)
		if !hasArgs {
			need = "its image's ENTRYPOINT and CMD"
			hint += fmt.Sprintf(" and --cmd %s='[...]' (or '[]')", name)
		}
		return nil, nil, fmt.Errorf("container %s sets no command, so it runs %s, which the manifest does not show: pass %s, or --resolve to read them from the registry", name, need, hint)
	}
	if image == "" {
		return nil, nil, fmt.Errorf("container %s has neither a command nor an image", name)
	}
	if pr, ok := opts.Resolver.(PlatformResolver); ok && opts.Platform != "" {
		entry, cmd, err = pr.ImageConfigPlatform(ctx, image, opts.Platform)
	} else {
		entry, cmd, err = opts.Resolver.ImageConfig(ctx, image)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("container %s: %w", name, err)
	}
	res.note("container %s: image %s has ENTRYPOINT %s and CMD %s", name, image, jsonList(entry), jsonList(cmd))
	return entry, cmd, nil
}

func jsonList(l []string) string {
	if l == nil {
		l = []string{}
	}
	b, _ := json.Marshal(l)
	return string(b)
}

func volume() *yaml.Node {
	// On disk, not in memory: the binary would count against the pod's
	// memory otherwise. The limit leaves room for a larger release.
	return mapping("name", Volume, "emptyDir", mapping("sizeLimit", "32Mi"))
}

// installContainer is the init container that copies meshgate into the
// volume: as hardened as the restricted Pod Security Standard asks.
func installContainer(image string) *yaml.Node {
	return mapping(
		"name", InstallContainer,
		"image", image,
		"args", strSeq([]string{"install", MountPath}),
		"volumeMounts", seq(mapping("name", Volume, "mountPath", MountPath)),
		"resources", mapping(
			"requests", mapping("cpu", "10m", "memory", "16Mi"),
			"limits", mapping("memory", "32Mi")),
		"securityContext", mapping(
			"runAsNonRoot", boolean(true),
			"runAsUser", integer("65532"),
			"runAsGroup", integer("65532"),
			"readOnlyRootFilesystem", boolean(true),
			"allowPrivilegeEscalation", boolean(false),
			"capabilities", mapping("drop", strSeq([]string{"ALL"})),
			"seccompProfile", mapping("type", "RuntimeDefault")),
	)
}

// guessPreset reads the mesh from the pod template: the mesh's own
// injection annotations and labels, then the names of proxy containers
// already there. off names an annotation or label that turns the mesh's
// injection off, when no mesh was found.
func guessPreset(spec, ann, labels *yaml.Node) (preset, why, off string) {
	lookup := func(key string) (string, string) {
		if v := get(ann, key); v != nil {
			return v.Value, "annotation " + key
		}
		if v := get(labels, key); v != nil {
			return v.Value, "label " + key
		}
		return "", ""
	}
	type rule struct {
		key, mesh string
		on, off   []string
	}
	for _, r := range []rule{
		{"sidecar.istio.io/inject", "istio", []string{"true"}, []string{"false"}},
		{"istio.io/rev", "istio", nil, nil},
		{"linkerd.io/inject", "linkerd", []string{"enabled", "ingress"}, []string{"disabled"}},
		{"consul.hashicorp.com/connect-inject", "consul", []string{"true"}, []string{"false"}},
		{"kuma.io/sidecar-injection", "kuma", []string{"enabled", "true"}, []string{"disabled", "false"}},
	} {
		v, where := lookup(r.key)
		switch {
		case where == "":
		case r.on == nil && v != "" || slices.Contains(r.on, v):
			return r.mesh, fmt.Sprintf("%s: %q", where, v), ""
		case slices.Contains(r.off, v) && off == "":
			off = fmt.Sprintf("%s: %q", where, v)
		}
	}
	for _, list := range []string{"containers", "initContainers"} {
		l := get(spec, list)
		if l == nil || l.Kind != yaml.SequenceNode {
			continue
		}
		for _, c := range l.Content {
			if mesh := proxies[scalar(get(c, "name"))]; mesh != "" {
				return mesh, "container " + scalar(get(c, "name")), ""
			}
		}
	}
	return "", "", off
}

// NativeSidecar reports whether the pod's proxy is a native sidecar, or
// the pod asks its mesh for one, and why: an init container of a known
// proxy with restartPolicy: Always; Istio's sidecar.istio.io/nativeSidecar:
// "true"; Linkerd's config.beta.linkerd.io/proxy-enable-native-sidecar
// (config.alpha.linkerd.io/... in older releases) set to "true". Kuma
// chooses native sidecars in its control plane's configuration and Consul
// has no such mode, so for them only the init container tells. A mesh-wide
// default (recent Istio turns native sidecars on where the cluster has
// them) is not in the manifest and cannot be seen here.
func NativeSidecar(tmpl *yaml.RNode) (bool, string) {
	root := tmpl.YNode()
	spec := get(root, "spec")
	if inits := get(spec, "initContainers"); inits != nil && inits.Kind == yaml.SequenceNode {
		for _, c := range inits.Content {
			n := scalar(get(c, "name"))
			if proxies[n] != "" && scalar(get(c, "restartPolicy")) == "Always" {
				return true, fmt.Sprintf("init container %s has restartPolicy: Always", n)
			}
		}
	}
	ann := path(root, "metadata", "annotations")
	for _, key := range []string{
		"sidecar.istio.io/nativeSidecar",
		"config.beta.linkerd.io/proxy-enable-native-sidecar",
		"config.alpha.linkerd.io/proxy-enable-native-sidecar",
	} {
		if v := scalar(get(ann, key)); v == "true" {
			return true, fmt.Sprintf("annotation %s: %q", key, v)
		}
	}
	return false, ""
}

// Uninject takes meshgate's wiring out of a pod template again, exactly as
// the annotation meshgate.io/injected recorded it: a template injected
// and then uninjected is the template it was. A template without the
// annotation is left unchanged. An error means nothing was changed.
func Uninject(tmpl *yaml.RNode) (Result, error) {
	var res Result
	root := tmpl.YNode()
	if root == nil || root.Kind != yaml.MappingNode {
		return res, fmt.Errorf("pod template is not a mapping")
	}
	meta := get(root, "metadata")
	ann := get(meta, "annotations")
	recNode := get(ann, AnnotationInjected)
	if recNode == nil {
		res.note("not injected by meshgate-inject: unchanged")
		return res, nil
	}
	var rec record
	if err := json.Unmarshal([]byte(recNode.Value), &rec); err != nil {
		return res, fmt.Errorf("annotation %s: %v", AnnotationInjected, err)
	}
	spec := get(root, "spec")
	containers := get(spec, "containers")
	// Check everything first, so that nothing is half undone.
	cuts, err := rec.cuts(containers)
	if err != nil {
		return res, err
	}
	for i, w := range rec.Containers {
		c, _ := named(containers, w.Name)
		rec.unwrap(c, w, cuts[i])
		res.note("unwrapped container %s", w.Name)
	}
	removeNamed(get(spec, "initContainers"), InstallContainer)
	rec.undo(spec, "initContainers", "spec.initContainers", rec.InitContainers)
	removeNamed(get(spec, "volumes"), Volume)
	rec.undo(spec, "volumes", "spec.volumes", rec.Volumes)
	if rec.LinkerdShutdown != nil {
		if *rec.LinkerdShutdown == "" {
			del(ann, LinkerdShutdown)
		} else if v := get(ann, LinkerdShutdown); v != nil {
			v.Value = *rec.LinkerdShutdown
		}
	}
	del(ann, AnnotationInjected)
	rec.undo(meta, "annotations", "metadata.annotations", rec.Annotations)
	rec.undo(root, "metadata", "metadata", rec.Metadata)
	res.Changed = true
	return res, nil
}

// cuts finds, in the command of each container the record names, the
// index of the "--" that ends the gate's prefix; an error if a container
// is gone or its command changed since the injection.
func (rec *record) cuts(containers *yaml.Node) ([]int, error) {
	cuts := make([]int, len(rec.Containers))
	for i, w := range rec.Containers {
		c, at := named(containers, w.Name)
		if at < 0 {
			return nil, fmt.Errorf("container %s, which %s names, is gone", w.Name, AnnotationInjected)
		}
		cmd, _ := stringList(get(c, "command"))
		cuts[i] = slices.Index(cmd, "--")
		if len(cmd) == 0 || cmd[0] != Gate || cuts[i] < 0 {
			return nil, fmt.Errorf("container %s: command %s does not start with %s ... --: changed since the injection", w.Name, jsonList(cmd), Gate)
		}
	}
	return cuts, nil
}

// unwrap takes back what wrap did to container c, whose gate prefix ends
// at index cut of its command.
func (rec *record) unwrap(c *yaml.Node, w wrapped, cut int) {
	key := "containers." + w.Name + "."
	if w.Command {
		del(c, "command")
	} else {
		cmd := get(c, "command")
		cmd.Content = cmd.Content[cut+1:]
		rec.unfill(cmd, key+"command")
	}
	if w.Args {
		del(c, "args")
	} else {
		rec.unfill(get(c, "args"), key+"args")
	}
	removeNamed(get(c, "volumeMounts"), Volume)
	rec.undo(c, "volumeMounts", key+"volumeMounts", w.Mounts)
}

package pod

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Container describes one container of a pod, in the terms of a Kubernetes
// container spec. Exactly one of Rootfs and Image is set.
type Container struct {
	Name string // unique in the pod: lower-case letters, digits and dashes
	// Rootfs is a host directory made by Scratch, copied (cp -a, modes
	// kept) to be the container's root filesystem. The copy is private,
	// as a runtime's snapshot of an image is: the mount points runc
	// creates (an /etc/hosts file, say) and the container's writes reach
	// neither the original nor other containers.
	Rootfs string
	// Image is an OCI image unpacked with umoci; its entrypoint, command,
	// environment and user are the defaults of the fields below.
	Image *Image
	// Command replaces the image's entrypoint and Args its command, as in
	// Kubernetes: Command alone drops the image's command too. With
	// Rootfs there is no entrypoint, so Command is required.
	Command []string
	Args    []string
	// Env entries "NAME=value" replace the image's of the same name. As
	// with the kubelet, PATH has a default and HOSTNAME is the pod's name.
	Env []string
	// User is "UID" or "UID:GID", numeric, GID 0 when left out; empty
	// means the image's user, or root with Rootfs.
	User     string
	ReadOnly bool // as readOnlyRootFilesystem: true
	// Hosts mounts a kubelet-style /etc/hosts naming localhost: plain runc
	// mounts none, and a static Go program could not resolve "localhost".
	Hosts  bool
	Mounts []Mount
	// Files are read-only files, container path → content, bind-mounted
	// like ConfigMap items.
	Files map[string]string
}

// Mount mounts a pod volume (Pod.Volume, created on first use) at Path.
type Mount struct {
	Volume   string
	Path     string
	ReadOnly bool
}

// Result is how a container that ran to completion ended: the exit code
// of its process 1, and its output.
type Result struct {
	Code           int
	Stdout, Stderr string
}

// defaultPath is the PATH containerd gives images that set none.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// kubeletHosts holds the localhost lines of the /etc/hosts the kubelet
// writes for a pod: these pods have loopback only.
const kubeletHosts = `# Kubernetes-managed hosts file.
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
`

// Run runs c to completion, as an init container, and returns how it ended.
// It fails the test if runc could not start the container.
func (p *Pod) Run(c Container) Result {
	p.t.Helper()
	pr := p.Start(c)
	return Result{Code: pr.Wait(), Stdout: pr.Stdout(), Stderr: pr.Stderr()}
}

// Start starts c in the background and returns at once, before the
// container is necessarily running; Process.WaitOutput waits for it to be
// ready. It fails the test if the container cannot be prepared.
func (p *Pod) Start(c Container) *Process {
	p.t.Helper()
	p.checkNew(c.Name)
	if c.Image != nil {
		Available(p.t, "umoci")
	}
	dir := filepath.Join(p.dir, "containers", c.Name)
	bundle := filepath.Join(dir, "bundle")
	if err := p.bundle(c, dir, bundle); err != nil {
		p.t.Fatalf("container %s: %v", c.Name, err)
	}
	pr := &Process{
		Name: c.Name,
		ID:   p.Name + "-" + c.Name,
		pod:  p,
		log:  filepath.Join(dir, "runc.log"),
		done: make(chan struct{}),
	}
	if err := pr.launch(bundle); err != nil {
		p.t.Fatalf("container %s: %v", c.Name, err)
	}
	return pr
}

// checkNew fails the test unless name may name a new container of the pod.
func (p *Pod) checkNew(name string) {
	p.t.Helper()
	if !validName(name) {
		p.t.Fatalf("container %q: want lower-case letters, digits and inner dashes", name)
	}
	p.mu.Lock()
	dup := slices.ContainsFunc(p.procs, func(o *Process) bool { return o.Name == name })
	p.mu.Unlock()
	if dup {
		p.t.Fatalf("container %q: already in pod %s", name, p.Name)
	}
}

// launch starts runc run on the bundle and registers the container with
// its pod. Foreground runc run, not --detach: it returns the exit code of
// the container's process 1 (128+N when killed by signal N), and with no
// terminal it hands our pipes straight to that process. A detached
// container's exit status would be lost to whoever reaps it.
func (pr *Process) launch(bundle string) error {
	p := pr.pod
	cmd := exec.Command("runc", "--root", p.root, "--log", pr.log, "--log-format", "json",
		"run", "--bundle", bundle, pr.ID)
	cmd.Stdout = &pr.stdout
	cmd.Stderr = &pr.stderr
	// A process the container left behind could hold our pipes open.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return err
	}
	// Only now, as cleanup waits for the containers it knows to end.
	p.mu.Lock()
	p.procs = append(p.procs, pr)
	p.mu.Unlock()
	go func() {
		pr.code, pr.err = pr.exitStatus(cmd.Wait())
		close(pr.done)
	}()
	return nil
}

// bundle prepares the runc bundle of c: a root filesystem and a
// config.json, made by umoci (Image) or runc spec (Rootfs) and then edited
// for the pod.
func (p *Pod) bundle(c Container, dir, bundle string) error {
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var img imageConfig
	switch {
	case c.Image != nil && c.Rootfs != "":
		return errors.New("both Rootfs and Image set")
	case c.Image != nil:
		// As root, umoci needs no --rootless: it unpacks with the
		// image's owners, and the config it writes has no user namespace.
		if _, err := command(ctx, "umoci", "unpack", "--image", c.Image.String(), bundle); err != nil {
			return err
		}
		var err error
		if img, err = c.Image.config(); err != nil {
			return err
		}
	case c.Rootfs != "":
		if err := os.Mkdir(bundle, 0o755); err != nil {
			return err
		}
		if _, err := command(ctx, "cp", "-a", c.Rootfs, filepath.Join(bundle, "rootfs")); err != nil {
			return err
		}
		if _, err := command(ctx, "runc", "spec", "--bundle", bundle); err != nil {
			return err
		}
	default:
		return errors.New("neither Rootfs nor Image set")
	}

	configPath := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(configPath)
	if err != nil {
		return err
	}
	// Edited as plain JSON, so fields this package does not know about
	// (seccomp, masked paths, annotations) pass through untouched.
	var spec map[string]any
	if err := json.Unmarshal(b, &spec); err != nil {
		return fmt.Errorf("%s: %w", configPath, err)
	}
	if err := p.editSpec(spec, c, img, dir); err != nil {
		return err
	}
	if b, err = json.MarshalIndent(spec, "", "\t"); err != nil {
		return err
	}
	return os.WriteFile(configPath, b, 0o644)
}

// editSpec makes a generated config.json describe c as a member of the pod.
func (p *Pod) editSpec(spec map[string]any, c Container, img imageConfig, dir string) error {
	if err := p.editProcess(object(spec, "process"), c, img); err != nil {
		return err
	}
	object(spec, "root")["readonly"] = c.ReadOnly
	spec["hostname"] = p.Name
	p.joinNetwork(object(spec, "linux"))
	return p.addMounts(spec, c, dir)
}

// editProcess sets what c runs, with what environment, as whom.
func (p *Pod) editProcess(process map[string]any, c Container, img imageConfig) error {
	args := containerArgs(c, img)
	if len(args) == 0 {
		return errors.New("no command: set Command, or use an image with an entrypoint")
	}
	process["terminal"] = false
	process["args"] = args
	process["env"] = mergeEnv([]string{defaultPath}, img.Env, []string{"HOSTNAME=" + p.Name}, c.Env)
	if c.User != "" {
		uid, gid, err := parseUser(c.User)
		if err != nil {
			return err
		}
		process["user"] = map[string]any{"uid": uid, "gid": gid}
	}
	// None at all, not even in the bounding set: the least a non-root
	// app needs, and what a pod that drops ALL gets.
	none := []string{}
	process["capabilities"] = map[string]any{"bounding": none, "effective": none, "permitted": none}
	return nil
}

// joinNetwork puts the container in the pod's network namespace.
func (p *Pod) joinNetwork(linux map[string]any) {
	namespaces, _ := linux["namespaces"].([]any)
	joined := false
	for _, ns := range namespaces {
		if ns, ok := ns.(map[string]any); ok && ns["type"] == "network" {
			ns["path"] = "/run/netns/" + p.Name
			joined = true
		}
	}
	if !joined {
		namespaces = append(namespaces, map[string]any{"type": "network", "path": "/run/netns/" + p.Name})
	}
	linux["namespaces"] = namespaces
}

// addMounts mounts c's volumes and files, which it writes under dir.
func (p *Pod) addMounts(spec map[string]any, c Container, dir string) error {
	mounts, _ := spec["mounts"].([]any)
	for _, m := range c.Mounts {
		if !validName(m.Volume) {
			return fmt.Errorf("volume %q: want lower-case letters, digits and inner dashes", m.Volume)
		}
		if !path.IsAbs(m.Path) {
			return fmt.Errorf("volume %s: mount path %q is not absolute", m.Volume, m.Path)
		}
		mounts = append(mounts, bind(p.Volume(m.Volume), m.Path, m.ReadOnly))
	}
	files := map[string]string{}
	if c.Hosts {
		files["/etc/hosts"] = kubeletHosts
	}
	maps.Copy(files, c.Files)
	// Sorted, so mount order does not depend on map iteration.
	for i, name := range slices.Sorted(maps.Keys(files)) {
		if !path.IsAbs(name) {
			return fmt.Errorf("file %q: path is not absolute", name)
		}
		host := filepath.Join(dir, "files", strconv.Itoa(i))
		if err := writeFile(host, []byte(files[name]), 0o644); err != nil {
			return err
		}
		mounts = append(mounts, bind(host, name, true))
	}
	spec["mounts"] = mounts
	return nil
}

// containerArgs applies Kubernetes' rules for command and args over an
// image's entrypoint and command.
func containerArgs(c Container, img imageConfig) []string {
	switch {
	case c.Command != nil:
		return slices.Concat(c.Command, c.Args)
	case c.Args != nil:
		return slices.Concat(img.Entrypoint, c.Args)
	default:
		return slices.Concat(img.Entrypoint, img.Cmd)
	}
}

// bind returns a bind mount for config.json. rbind, so mounts below the
// source come along, as with the kubelet's bind mounts.
func bind(source, dest string, readOnly bool) map[string]any {
	mode := "rw"
	if readOnly {
		mode = "ro"
	}
	return map[string]any{
		"destination": dest,
		"type":        "bind",
		"source":      source,
		"options":     []string{"rbind", mode},
	}
}

// object returns spec[key] as an object, adding an empty one if missing.
func object(spec map[string]any, key string) map[string]any {
	if o, ok := spec[key].(map[string]any); ok {
		return o
	}
	o := map[string]any{}
	spec[key] = o
	return o
}

// mergeEnv concatenates environments, a later NAME=value replacing an
// earlier one in place: duplicates would leave which one wins to the
// program (Go's os.Getenv takes the first).
func mergeEnv(envs ...[]string) []string {
	var out []string
	index := map[string]int{}
	for _, env := range envs {
		for _, kv := range env {
			name, _, _ := strings.Cut(kv, "=")
			if i, ok := index[name]; ok {
				out[i] = kv
				continue
			}
			index[name] = len(out)
			out = append(out, kv)
		}
	}
	return out
}

// parseUser parses "UID" or "UID:GID". Names would need the image's
// /etc/passwd, which scratch images lack.
func parseUser(s string) (uid, gid uint32, err error) {
	u, g, hasGroup := strings.Cut(s, ":")
	n, err := strconv.ParseUint(u, 10, 32)
	var m uint64
	if err == nil && hasGroup {
		m, err = strconv.ParseUint(g, 10, 32)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("user %q: want numeric UID[:GID]", s)
	}
	return uint32(n), uint32(m), nil
}

// runcErrors returns the messages runc logged at level error or worse:
// they mean runc failed, and its exit code 1 is not the container's.
func runcErrors(log []byte) []string {
	var msgs []string
	sc := bufio.NewScanner(bytes.NewReader(log))
	for sc.Scan() {
		var entry struct{ Level, Msg string }
		if json.Unmarshal(sc.Bytes(), &entry) != nil {
			continue
		}
		switch entry.Level {
		case "error", "fatal", "panic":
			msgs = append(msgs, entry.Msg)
		}
	}
	return msgs
}

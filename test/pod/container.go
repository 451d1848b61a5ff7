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
	// Name is unique in the pod: lower-case letters, digits and dashes.
	Name string

	// Rootfs is a host directory, such as one made by Scratch, copied to
	// be the container's root filesystem (directories, regular files and
	// symbolic links, with their permission bits; the root gets 0755). The
	// copy is private, as a runtime's snapshot of an image is: the mount
	// points runc creates (an /etc/hosts file, say) and the container's
	// writes reach neither the original nor other containers.
	Rootfs string
	// Image is an OCI image unpacked with umoci to be the root filesystem.
	// Its entrypoint, command, environment and user are the defaults for
	// the fields below.
	Image *Image

	// Command replaces the image's entrypoint and Args its command, as in
	// Kubernetes: Command alone drops the image's command too. With
	// Rootfs there is no entrypoint, so Command is required.
	Command []string
	Args    []string
	// Env holds "NAME=value" entries added to the image's environment,
	// replacing those of the same name. As with the kubelet and
	// containerd, PATH has a default and HOSTNAME is the pod's name.
	Env []string
	// User is "UID" or "UID:GID", numeric; GID is 0 when left out. Empty
	// means the image's user, or root with Rootfs.
	User string
	// ReadOnly makes the root filesystem read-only, like
	// readOnlyRootFilesystem: true.
	ReadOnly bool
	// Hosts mounts a kubelet-style /etc/hosts naming localhost. Plain runc
	// mounts none, and without one a static Go program cannot resolve
	// "localhost".
	Hosts bool
	// Mounts are pod volumes mounted into the container.
	Mounts []Mount
	// Files are extra read-only files, container path → content,
	// bind-mounted like ConfigMap items.
	Files map[string]string
}

// Mount mounts a pod volume (Pod.Volume, created on first use) at Path.
type Mount struct {
	Volume   string
	Path     string
	ReadOnly bool
}

// Result is how a container that ran to completion ended.
type Result struct {
	Code   int // the exit code of the container's process 1
	Stdout string
	Stderr string
}

// defaultPath is the PATH containerd gives images that set none.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// kubeletHosts is the /etc/hosts the kubelet writes for a pod, without the
// pod IP line: these pods have loopback only.
const kubeletHosts = `# Kubernetes-managed hosts file.
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
fe00::0	ip6-localnet
fe00::0	ip6-mcastprefix
fe00::1	ip6-allnodes
fe00::2	ip6-allrouters
`

// Run runs c to completion, as an init container, and returns how it ended.
// It fails the test if runc could not start the container.
func (p *Pod) Run(c Container) Result {
	p.t.Helper()
	pr := p.Start(c)
	code := pr.Wait()
	return Result{Code: code, Stdout: pr.Stdout(), Stderr: pr.Stderr()}
}

// Start starts c in the background and returns at once, before the
// container is necessarily running; Process.WaitOutput waits for it to be
// ready. It fails the test if the container cannot be prepared.
func (p *Pod) Start(c Container) *Process {
	p.t.Helper()
	if !validName(c.Name) {
		p.t.Fatalf("container %q: want lower-case letters, digits and inner dashes", c.Name)
	}
	if c.Image != nil {
		Available(p.t, "umoci")
	}
	dir := filepath.Join(p.dir, "containers", c.Name)
	pr := &Process{
		Name: c.Name,
		ID:   p.Name + "-" + c.Name,
		pod:  p,
		log:  filepath.Join(dir, "runc.log"),
		done: make(chan struct{}),
	}
	p.mu.Lock()
	_, dup := p.procs[c.Name]
	if !dup {
		p.procs[c.Name] = pr
		p.order = append(p.order, c.Name)
	}
	p.mu.Unlock()
	if dup {
		p.t.Fatalf("container %q: already in pod %s", c.Name, p.Name)
	}

	// Until runc runs, done must still be closed on every way out,
	// t.Fatal and t.Skip included, or cleanup would wait for an exit.
	running := false
	defer func() {
		if !running {
			if pr.err == nil {
				pr.err = errors.New("not started")
			}
			close(pr.done)
		}
	}()

	bundle := filepath.Join(dir, "bundle")
	if err := p.bundle(c, dir, bundle); err != nil {
		pr.err = err
		p.t.Fatalf("container %s: %v", c.Name, err)
	}

	// Foreground runc run, not --detach: it returns the exit code of the
	// container's process 1 (128+N when killed by signal N), and with no
	// terminal it hands our pipes straight to that process. A detached
	// container's exit status would be lost to whoever reaps it.
	cmd := exec.Command("runc", "--root", p.root, "--log", pr.log, "--log-format", "json",
		"run", "--bundle", bundle, pr.ID)
	cmd.Stdout = &pr.stdout
	cmd.Stderr = &pr.stderr
	// A process the container left behind could hold our pipes open.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		pr.err = err
		p.t.Fatalf("container %s: %v", c.Name, err)
	}
	running = true
	go func() {
		pr.code, pr.err = pr.exitStatus(cmd.Wait())
		close(pr.done)
	}()
	return pr
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
		if err := copyTree(filepath.Join(bundle, "rootfs"), c.Rootfs); err != nil {
			return fmt.Errorf("copy rootfs: %w", err)
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
	args := containerArgs(c, img)
	if len(args) == 0 {
		return errors.New("no command: set Command, or use an image with an entrypoint")
	}
	process := object(spec, "process")
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

	object(spec, "root")["readonly"] = c.ReadOnly
	spec["hostname"] = p.Name

	linux := object(spec, "linux")
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
	files := maps.Clone(c.Files) // not to write into the caller's map
	if _, ok := files["/etc/hosts"]; c.Hosts && !ok {
		if files == nil {
			files = map[string]string{}
		}
		files["/etc/hosts"] = kubeletHosts
	}
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
	if err != nil {
		return 0, 0, fmt.Errorf("user %q: want numeric UID[:GID]", s)
	}
	var m uint64
	if hasGroup {
		if m, err = strconv.ParseUint(g, 10, 32); err != nil {
			return 0, 0, fmt.Errorf("user %q: want numeric UID[:GID]", s)
		}
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

package pod

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// buildTimeout bounds go build and buildah, which are slow on a cold cache.
const buildTimeout = 5 * time.Minute

// Image is one tagged image in an OCI image layout directory.
type Image struct {
	Layout string // holds oci-layout, index.json and blobs/
	Tag    string
}

// String returns the reference umoci and buildah's oci: transport take.
func (img *Image) String() string { return img.Layout + ":" + img.Tag }

// imageConfig is the part of an OCI image configuration a container uses.
type imageConfig struct {
	Entrypoint []string
	Cmd        []string
	Env        []string
}

// config reads the configuration of img from its layout: index.json names
// the manifest by tag, the manifest names the configuration blob.
func (img *Image) config() (imageConfig, error) {
	var index struct {
		Manifests []struct {
			MediaType   string            `json:"mediaType"`
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := img.readJSON(filepath.Join(img.Layout, "index.json"), &index); err != nil {
		return imageConfig{}, err
	}
	for _, m := range index.Manifests {
		if m.Annotations["org.opencontainers.image.ref.name"] != img.Tag {
			continue
		}
		if m.MediaType != "application/vnd.oci.image.manifest.v1+json" {
			return imageConfig{}, fmt.Errorf("image %s: %s, want a single-platform manifest", img, m.MediaType)
		}
		var manifest struct {
			Config struct {
				Digest string `json:"digest"`
			} `json:"config"`
		}
		if err := img.readBlob(m.Digest, &manifest); err != nil {
			return imageConfig{}, err
		}
		var config struct {
			Config imageConfig `json:"config"`
		}
		if err := img.readBlob(manifest.Config.Digest, &config); err != nil {
			return imageConfig{}, err
		}
		return config.Config, nil
	}
	return imageConfig{}, fmt.Errorf("image %s: tag not in index.json", img)
}

// Platform picks the image of one platform ("linux/amd64") out of img, a
// multi-platform index, as a container runtime does when it pulls, and
// returns it as its own single-image layout in the new directory dir,
// tagged "OS-ARCH". The blobs are hard links to img's, or copies where
// links cannot be made.
func (img *Image) Platform(dir, platform string) (*Image, error) {
	osName, arch, ok := strings.Cut(platform, "/")
	if !ok {
		return nil, fmt.Errorf("platform %q: want OS/ARCH", platform)
	}
	type descriptor struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Size        int64             `json:"size"`
		Annotations map[string]string `json:"annotations,omitempty"`
		Platform    *struct {
			OS           string `json:"os"`
			Architecture string `json:"architecture"`
			Variant      string `json:"variant,omitempty"`
		} `json:"platform,omitempty"`
	}
	type index struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType,omitempty"`
		Manifests     []descriptor `json:"manifests"`
	}
	var top index
	if err := img.readJSON(filepath.Join(img.Layout, "index.json"), &top); err != nil {
		return nil, err
	}
	var list *index
	for _, m := range top.Manifests {
		if m.Annotations["org.opencontainers.image.ref.name"] != img.Tag {
			continue
		}
		if m.MediaType != "application/vnd.oci.image.index.v1+json" {
			return nil, fmt.Errorf("image %s: %s, want a multi-platform index", img, m.MediaType)
		}
		list = new(index)
		if err := img.readBlob(m.Digest, list); err != nil {
			return nil, err
		}
	}
	if list == nil {
		return nil, fmt.Errorf("image %s: tag not in index.json", img)
	}
	var picked []descriptor
	for _, m := range list.Manifests {
		if m.Platform != nil && m.Platform.OS == osName && m.Platform.Architecture == arch {
			picked = append(picked, m)
		}
	}
	if len(picked) != 1 {
		return nil, fmt.Errorf("image %s: %d images for %s, want 1", img, len(picked), platform)
	}
	tag := osName + "-" + arch
	picked[0].Annotations = map[string]string{"org.opencontainers.image.ref.name": tag}

	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(img.Layout, "blobs", "sha256"))
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", img, err)
	}
	for _, e := range entries {
		src, dst := filepath.Join(img.Layout, "blobs", "sha256", e.Name()), filepath.Join(blobs, e.Name())
		if err := os.Link(src, dst); err != nil {
			if err := copyFile(dst, src, 0o644); err != nil {
				return nil, err
			}
		}
	}
	b, err := json.Marshal(index{SchemaVersion: 2, MediaType: "application/vnd.oci.image.index.v1+json", Manifests: picked})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), b, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		return nil, err
	}
	return &Image{Layout: dir, Tag: tag}, nil
}

func (img *Image) readBlob(digest string, v any) error {
	alg, hex, ok := strings.Cut(digest, ":")
	if !ok || strings.ContainsAny(hex, `/\.`) {
		return fmt.Errorf("image %s: bad digest %q", img, digest)
	}
	return img.readJSON(filepath.Join(img.Layout, "blobs", alg, hex), v)
}

func (img *Image) readJSON(name string, v any) error {
	b, err := os.ReadFile(name)
	if err != nil {
		return fmt.Errorf("image %s: %w", img, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("image %s: %s: %w", img, filepath.Base(name), err)
	}
	return nil
}

// BuildImage builds the "prebuilt" target of dockerfile offline with
// buildah, packing binary as the context's "meshgate" file, and writes the
// image to a new OCI layout directory, layout, tagged "test".
//
// buildah's storage (vfs, so no overlay or fuse is needed) and temporary
// files live in a directory next to layout that is removed afterwards; as
// root, plain removal suffices. Only buildah's blob-info cache is left, in
// /var/lib/containers/cache.
func BuildImage(ctx context.Context, dockerfile, binary, layout string) (*Image, error) {
	work, err := os.MkdirTemp(filepath.Dir(layout), "buildah-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	buildContext := filepath.Join(work, "context")
	if err := copyFile(filepath.Join(buildContext, "meshgate"), binary, 0o755); err != nil {
		return nil, fmt.Errorf("build context: %w", err)
	}

	img := &Image{Layout: layout, Tag: "test"}
	name := "localhost/meshgate:" + img.Tag
	store := []string{
		"--root", filepath.Join(work, "root"),
		"--runroot", filepath.Join(work, "runroot"),
		"--storage-driver", "vfs",
	}
	buildah := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "buildah", append(store, args...)...)
		// buildah stages blobs in TMPDIR, /var/tmp by default.
		cmd.Env = append(os.Environ(), "TMPDIR="+work)
		_, err := run(cmd)
		return err
	}
	if err := buildah("bud", "--isolation", "chroot", "--pull=never", "--target", "prebuilt",
		"--file", dockerfile, "--tag", name, buildContext); err != nil {
		return nil, err
	}
	if err := buildah("push", name, "oci:"+img.String()); err != nil {
		return nil, err
	}
	return img, nil
}

// Scratch returns a new directory to use as a scratch root filesystem:
// only the given host files, container path → host path, with their modes.
// The files should be static binaries (CGO_ENABLED=0): there is no libc.
func Scratch(t testing.TB, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	// A root directory, like an image's, that any user may traverse.
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for dest, src := range files {
		fi, err := os.Stat(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := copyFile(filepath.Join(root, dest), src, fi.Mode().Perm()); err != nil {
			t.Fatalf("scratch rootfs: %v", err)
		}
	}
	return root
}

// Cache builds binaries and images at most once per test binary run and
// shares them between tests, parallel ones included. A test binary makes
// one in TestMain and closes it after m.Run, which removes what it built.
type Cache struct {
	dir string

	mu      sync.Mutex
	entries map[string]*entry
}

// entry is one build, done by the first test that asks for it; the others
// wait for it and get the same path, or the same error.
type entry struct {
	dir  string
	once sync.Once
	path string
	err  error
}

// NewCache returns an empty cache in a new temporary directory.
func NewCache() (*Cache, error) {
	dir, err := os.MkdirTemp("", "meshgate-pod-")
	if err != nil {
		return nil, err
	}
	return &Cache{dir: dir, entries: map[string]*entry{}}, nil
}

// Close removes everything the cache built.
func (c *Cache) Close() error { return os.RemoveAll(c.dir) }

// Binary builds the Go main package pkg ("./cmd/meshgate", relative to the
// module root, or an import path) as a static binary, with extra go build
// flags such as "-ldflags=-X main.version=test", and returns its path.
func (c *Cache) Binary(t testing.TB, pkg string, flags ...string) string {
	t.Helper()
	key := strings.Join(append([]string{"go build", pkg}, flags...), "\x00")
	path, err := c.do(key, func(dir string) (string, error) {
		root, err := moduleRoot()
		if err != nil {
			return "", err
		}
		out := filepath.Join(dir, filepath.Base(pkg))
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		args := append([]string{"build", "-trimpath", "-o", out}, flags...)
		cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
		cmd.Dir = root
		// Static: it runs in scratch root filesystems, without a libc.
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if _, err := run(cmd); err != nil {
			return "", err
		}
		return out, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// Image builds the image of the module's Dockerfile around binary, a static
// build of meshgate or a stand-in for it, as BuildImage does.
func (c *Cache) Image(t testing.TB, binary string) *Image {
	t.Helper()
	Available(t, "buildah")
	layout, err := c.do("image\x00"+binary, func(dir string) (string, error) {
		root, err := moduleRoot()
		if err != nil {
			return "", err
		}
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		img, err := BuildImage(ctx, filepath.Join(root, "Dockerfile"), binary, filepath.Join(dir, "oci"))
		if err != nil {
			return "", err
		}
		return img.Layout, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return &Image{Layout: layout, Tag: "test"}
}

// do runs build once per key, in a directory of its own.
func (c *Cache) do(key string, build func(dir string) (string, error)) (string, error) {
	c.mu.Lock()
	e, ok := c.entries[key]
	if !ok {
		e = &entry{dir: filepath.Join(c.dir, strconv.Itoa(len(c.entries)))}
		c.entries[key] = e
	}
	c.mu.Unlock()
	// Not t.Fatal inside: it would end the Once with no result recorded.
	e.once.Do(func() {
		if e.err = os.Mkdir(e.dir, 0o755); e.err == nil {
			e.path, e.err = build(e.dir)
		}
	})
	return e.path, e.err
}

// moduleRoot finds the directory of go.mod above the working directory,
// which for a test is its package directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

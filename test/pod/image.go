package pod

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshgate/meshgate/test/testkit"
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

// DockerfileImage builds the image of the module's Dockerfile around
// binary, a static build of meshgate, as BuildImage does, once per test
// binary (run through testkit.Main, which removes it).
func DockerfileImage(t testing.TB, binary string) *Image {
	t.Helper()
	Available(t, "buildah")
	layout, err := testkit.Once("image\x00"+binary, func(dir string) (string, error) {
		root, err := testkit.ModuleRoot()
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

package pod

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/meshgate/meshgate/test/testkit"
)

// Image is one tagged image in an OCI image layout directory.
type Image struct {
	Layout string // holds oci-layout, index.json and blobs/
	Tag    string
}

// String returns the reference umoci and buildah's oci: transport take.
func (img *Image) String() string { return img.Layout + ":" + img.Tag }

// imageConfig is the part of an OCI image configuration a container uses.
type imageConfig = v1.Config

// refName is the annotation that tags an image in an OCI layout.
const refName = "org.opencontainers.image.ref.name"

// tagged returns the layout's index and the descriptor tagged img.Tag.
func (img *Image) tagged() (v1.ImageIndex, v1.Descriptor, error) {
	index, err := layout.ImageIndexFromPath(img.Layout)
	if err != nil {
		return nil, v1.Descriptor{}, fmt.Errorf("image %s: %w", img, err)
	}
	m, err := index.IndexManifest()
	if err != nil {
		return nil, v1.Descriptor{}, fmt.Errorf("image %s: %w", img, err)
	}
	for _, d := range m.Manifests {
		if d.Annotations[refName] == img.Tag {
			return index, d, nil
		}
	}
	return nil, v1.Descriptor{}, fmt.Errorf("image %s: tag not in index.json", img)
}

// config reads the configuration of img, a single-platform image.
func (img *Image) config() (imageConfig, error) {
	index, d, err := img.tagged()
	if err != nil {
		return imageConfig{}, err
	}
	if d.MediaType != types.OCIManifestSchema1 {
		return imageConfig{}, fmt.Errorf("image %s: %s, want a single-platform manifest", img, d.MediaType)
	}
	i, err := index.Image(d.Digest)
	if err != nil {
		return imageConfig{}, err
	}
	cf, err := i.ConfigFile()
	if err != nil {
		return imageConfig{}, fmt.Errorf("image %s: %w", img, err)
	}
	return cf.Config, nil
}

// Platform picks the image of one platform ("linux/amd64") out of img, a
// multi-platform index, as a container runtime does when it pulls, and
// writes it as its own single-image layout to the new directory dir,
// tagged "OS-ARCH".
func (img *Image) Platform(dir, platform string) (*Image, error) {
	want, err := v1.ParsePlatform(platform)
	if err != nil {
		return nil, err
	}
	index, d, err := img.tagged()
	if err != nil {
		return nil, err
	}
	if d.MediaType != types.OCIImageIndex {
		return nil, fmt.Errorf("image %s: %s, want a multi-platform index", img, d.MediaType)
	}
	list, err := index.ImageIndex(d.Digest)
	if err != nil {
		return nil, err
	}
	m, err := list.IndexManifest()
	if err != nil {
		return nil, err
	}
	var picked []v1.Hash
	for _, d := range m.Manifests {
		if d.Platform != nil && d.Platform.OS == want.OS && d.Platform.Architecture == want.Architecture {
			picked = append(picked, d.Digest)
		}
	}
	if len(picked) != 1 {
		return nil, fmt.Errorf("image %s: %d images for %s, want 1", img, len(picked), platform)
	}
	i, err := list.Image(picked[0])
	if err != nil {
		return nil, err
	}
	tag := want.OS + "-" + want.Architecture
	out, err := layout.Write(dir, empty.Index)
	if err != nil {
		return nil, err
	}
	if err := out.AppendImage(i, layout.WithAnnotations(map[string]string{refName: tag})); err != nil {
		return nil, err
	}
	return &Image{Layout: dir, Tag: tag}, nil
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
		ctx, cancel := context.WithTimeout(context.Background(), testkit.BuildTimeout)
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

// Command release packs release binaries into the meshgate and
// meshgate-inject images, each as an OCI image layout holding one
// multi-platform index. `make release` runs it; nothing here depends on the
// clock, so the same binaries, version, revision, commit time (and CA
// bundle) always give the same digests.
//
//	release oci -o DIR [-name NAME] [-ca FILE] -version V -revision SHA -created UNIX -source URL OS/ARCH=BINARY...
//	release digest DIR [TAG]
//
// "oci" writes DIR afresh: index.json names the index by the version
// (org.opencontainers.image.ref.name), and the index holds one image per
// platform: FROM scratch, the binary at /usr/local/bin/NAME (meshgate, or
// meshgate-inject) owned by root and mode 0755, run as 65532:65532 with
// the binary as entrypoint, and the standard OCI annotations on the index
// and every manifest. With -ca, the image also holds FILE, a PEM bundle of
// CA certificates, at /etc/ssl/certs/ca-certificates.crt, where Go's
// crypto/x509 looks first on Linux: meshgate-inject reads registries over
// HTTPS. It prints the index's digest.
//
// "digest" prints the digest of the index a layout's index.json names, for
// signing what was pushed; with TAG, it fails unless the index is tagged
// TAG, so that a release is never published under another version's name.
//
// go-containerregistry writes the layout: it is what crane and ko are made
// of, it computes every digest and size from the bytes it writes, and with
// fixed inputs its output is byte for byte the same.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Where the binary lives in the image, and who runs it: the Dockerfile's
// choices, so both ways of building the image give the same container.
const (
	binaryDir = "/usr/local/bin"
	user      = "65532:65532"
	// caPath is the CA bundle's path in the image: Debian's, the first
	// place crypto/x509 reads on Linux.
	caPath = "/etc/ssl/certs/ca-certificates.crt"
)

// descriptions are the images release builds, by name, and what their
// annotations say of them.
var descriptions = map[string]string{
	"meshgate":        "Holds an app back until its mesh proxy is ready",
	"meshgate-inject": "Rewrites Kubernetes manifests, or pods at admission, to wait for their mesh proxy",
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		var u usageError
		if errors.As(err, &u) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ error }

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New("want a command: oci or digest")}
	}
	switch args[0] {
	case "oci":
		return runOCI(args[1:], stdout)
	case "digest":
		if len(args) != 2 && len(args) != 3 {
			return usageError{errors.New("digest takes a layout directory and an optional tag")}
		}
		d, err := indexDigest(args[1], args[2:]...)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, d)
		return nil
	default:
		return usageError{fmt.Errorf("unknown command %q: want oci or digest", args[0])}
	}
}

// release is what the annotations say about the build, and what the
// image is named.
type release struct {
	name                      string
	version, revision, source string
	created                   time.Time
}

// binaryPath is where the image holds its binary, its entrypoint.
func (r release) binaryPath() string { return binaryDir + "/" + r.name }

func runOCI(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("release oci", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	out := fs.String("o", "", "layout directory to write (replaced)")
	var r release
	fs.StringVar(&r.name, "name", "meshgate", "image name: meshgate or meshgate-inject")
	ca := fs.String("ca", "", "PEM bundle of CA certificates to put at "+caPath)
	fs.StringVar(&r.version, "version", "", "version, such as v1.2.3")
	fs.StringVar(&r.revision, "revision", "", "commit the binaries were built from")
	fs.StringVar(&r.source, "source", "", "URL of the source repository")
	created := fs.String("created", "", "commit time, in seconds since the epoch")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	for name, v := range map[string]string{"o": *out, "version": r.version, "revision": r.revision, "source": r.source, "created": *created} {
		if v == "" {
			return usageError{fmt.Errorf("-%s is required", name)}
		}
	}
	secs, err := strconv.ParseInt(*created, 10, 64)
	if err != nil || secs <= 0 {
		return usageError{fmt.Errorf("-created %q: want seconds since the epoch", *created)}
	}
	r.created = time.Unix(secs, 0).UTC()
	if _, ok := descriptions[r.name]; !ok {
		return usageError{fmt.Errorf("-name %q: want meshgate or meshgate-inject", r.name)}
	}
	caBundle, err := readCA(*ca)
	if err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return usageError{errors.New("want at least one OS/ARCH=BINARY")}
	}
	idx, err := r.index(fs.Args(), caBundle)
	if err != nil {
		return err
	}
	d, err := writeLayout(*out, idx, r.version)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, d)
	return nil
}

// readCA reads the -ca bundle, if one is named.
func readCA(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usageError{fmt.Errorf("-ca: %w", err)}
	}
	if !bytes.Contains(b, []byte("-----BEGIN CERTIFICATE-----")) {
		return nil, usageError{fmt.Errorf("-ca %s: no PEM certificate in it", path)}
	}
	return b, nil
}

// index is the multi-platform image of the binaries given as
// OS/ARCH=BINARY.
func (r release) index(binaries []string, caBundle []byte) (v1.ImageIndex, error) {
	var adds []mutate.IndexAddendum
	seen := map[string]bool{}
	for _, arg := range binaries {
		platform, binary, ok := strings.Cut(arg, "=")
		osName, arch, ok2 := strings.Cut(platform, "/")
		if !ok || !ok2 || osName == "" || arch == "" || binary == "" || strings.Contains(arch, "/") {
			return nil, usageError{fmt.Errorf("%q: want OS/ARCH=BINARY", arg)}
		}
		if seen[platform] {
			return nil, usageError{fmt.Errorf("%s given twice", platform)}
		}
		seen[platform] = true
		img, err := image(r, osName, arch, binary, caBundle)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", platform, err)
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: osName, Architecture: arch},
		}})
	}
	idx := mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.OCIImageIndex)
	return mutate.Annotations(idx, r.annotations()).(v1.ImageIndex), nil
}

// writeLayout replaces dir with an OCI layout that holds idx, named by
// version, and returns the index's digest.
func writeLayout(dir string, idx v1.ImageIndex, version string) (v1.Hash, error) {
	if err := os.RemoveAll(dir); err != nil {
		return v1.Hash{}, err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": version,
	})); err != nil {
		return v1.Hash{}, err
	}
	return idx.Digest()
}

// annotations are the standard OCI ones, on the index and on every
// manifest; the configuration carries them as labels too, where
// `docker inspect` shows them.
func (r release) annotations() map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":         r.name,
		"org.opencontainers.image.description":   descriptions[r.name],
		"org.opencontainers.image.url":           r.source,
		"org.opencontainers.image.source":        r.source,
		"org.opencontainers.image.documentation": r.source + "#readme",
		"org.opencontainers.image.revision":      r.revision,
		"org.opencontainers.image.version":       r.version,
		"org.opencontainers.image.created":       r.created.Format(time.RFC3339),
	}
}

// image is one platform's image: a single layer over nothing.
func image(r release, osName, arch, binary string, caBundle []byte) (v1.Image, error) {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	files := []file{}
	createdBy := "COPY " + r.name + " " + r.binaryPath()
	if caBundle != nil {
		files = append(files, file{path: caPath, mode: 0o644, data: caBundle})
		createdBy = "COPY ca-certificates.crt " + caPath + "; " + createdBy
	}
	files = append(files, file{path: r.binaryPath(), mode: 0o755, data: bin})
	layerTar, err := rootfs(files, r.created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Created:   v1.Time{Time: r.created},
		CreatedBy: createdBy,
		Comment:   r.name + " " + r.version + " for " + osName + "/" + arch,
	}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = osName, arch
	cf.Created = v1.Time{Time: r.created}
	cf.Config = v1.Config{
		User:       user,
		Entrypoint: []string{r.binaryPath()},
		// The PATH docker build and buildah give an image that sets none, so
		// that both ways of building the image give the same container.
		Env:    []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Labels: r.annotations(),
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	return mutate.Annotations(img, r.annotations()).(v1.Image), nil
}

// file is a regular file of an image's layer.
type file struct {
	path string
	mode int64
	data []byte
}

// rootfs is the layer's tar: each file, after the directories leading to
// it that no earlier file's did, all owned by root and dated at the commit.
func rootfs(files []file, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	written := map[string]bool{}
	for _, f := range files {
		var dirs []string
		for d := filepath.Dir(strings.TrimPrefix(f.path, "/")); d != "." && !written[d]; d = filepath.Dir(d) {
			dirs = append(dirs, d)
		}
		slices.Reverse(dirs)
		for _, d := range dirs {
			written[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755,
				ModTime: mtime}); err != nil {
				return nil, err
			}
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(f.path, "/"),
			Mode: f.mode, Size: int64(len(f.data)), ModTime: mtime}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// indexDigest is the digest of the one index dir's index.json names,
// which must be tagged tag if one is given.
func indexDigest(dir string, tag ...string) (v1.Hash, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return v1.Hash{}, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return v1.Hash{}, err
	}
	if len(m.Manifests) != 1 || !m.Manifests[0].MediaType.IsIndex() {
		return v1.Hash{}, fmt.Errorf("%s: index.json should name exactly one image index", dir)
	}
	if got := m.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; len(tag) > 0 && got != tag[0] {
		return v1.Hash{}, fmt.Errorf("%s holds the release %q, not %q", dir, got, tag[0])
	}
	return m.Manifests[0].Digest, nil
}

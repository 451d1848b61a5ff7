package test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"debug/macho"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log"
	"maps"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/meshgate/meshgate/test/pod"
	"github.com/meshgate/meshgate/test/testkit"
)

// releaseVersion is what the release test stamps.
const releaseVersion = "v1.2.3"

// releaseTimeout bounds one make release: on a cold module cache it
// fetches and builds the pinned tools.
const releaseTimeout = 20 * time.Minute

// TestRelease runs make release on a clean copy of the tree, twice, and
// checks what it wrote from the files alone: the checksums, the binaries,
// their SBOMs, the OCI layouts of the meshgate and meshgate-inject images,
// the amd64 images run in a pod, and that the second run gives the same
// bytes. Then make publish pushes both layouts to a registry on loopback.
//
// Not parallel: it cross-compiles for every platform, which on a cold build
// cache would starve the pods of the other tests of CPU.
func TestRelease(t *testing.T) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("make release builds every release binary twice; not in -short")
	}
	// The pod at the end needs root, runc and umoci; skipped (or, with
	// CI=true, failed) here rather than after minutes of building.
	pod.Available(t, "umoci", "git", "make")

	src := snapshot(t)
	dist := filepath.Join(t.TempDir(), "dist")
	refusals(t, src, dist)
	makeRelease(t, src, dist)
	rel := readRelease(t, src, dist)

	t.Run("checksums", rel.checkSums)
	t.Run("binaries", rel.checkBinaries)
	t.Run("sboms", rel.checkSBOMs)
	for _, img := range rel.images() {
		t.Run("image/"+img.name, func(t *testing.T) { rel.checkImage(t, img) })
	}
	t.Run("pod", rel.checkPod)
	if rel.inject {
		t.Run("pod/meshgate-inject", rel.checkInjectPod)
	}
	if t.Failed() {
		return
	}
	t.Run("reproducible", func(t *testing.T) {
		again := filepath.Join(t.TempDir(), "dist")
		makeRelease(t, src, again)
		if a, b := rel.file(t, "SHA256SUMS"), readFile(t, filepath.Join(again, "SHA256SUMS")); !bytes.Equal(a, b) {
			t.Errorf("SHA256SUMS differ between two runs:\n%s\n%s", a, b)
		}
		want, got := treeDigests(t, dist), treeDigests(t, again)
		for _, f := range slices.Sorted(maps.Keys(want)) {
			if got[f] != want[f] {
				t.Errorf("%s: %s in the first run, %s in the second", f, want[f], got[f])
			}
		}
		for f := range got {
			if _, ok := want[f]; !ok {
				t.Errorf("%s: only in the second run", f)
			}
		}
	})
	t.Run("publish", rel.checkPublish)
}

// release is what make release wrote, and what the tree says it should be.
type release struct {
	src, dist string
	revision  string
	created   time.Time
	sums      map[string]string // file name → SHA-256 in SHA256SUMS
	inject    bool              // cmd/meshgate-inject is in the tree
	caBundle  []byte            // the build machine's, which the meshgate-inject image holds
}

// snapshot commits the module's working tree, as it is (tracked and new
// files, not the ignored ones), into a fresh repository dated at HEAD's
// commit time: make release wants a clean tree, and runs there without
// touching the working tree's dist/.
func snapshot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	files := strings.Split(strings.TrimSuffix(git(t, root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"), "\x00"), "\x00")
	when := strings.TrimSpace(git(t, root, "log", "-1", "--format=%cI", "HEAD"))
	src := filepath.Join(t.TempDir(), "src")
	for _, f := range files {
		fi, err := os.Lstat(filepath.Join(root, f))
		if os.IsNotExist(err) {
			continue // deleted, not yet committed
		}
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(src, f)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case fi.Mode().IsRegular():
			if err := os.WriteFile(dst, readFile(t, filepath.Join(root, f)), fi.Mode().Perm()); err != nil {
				t.Fatal(err)
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			to, err := os.Readlink(filepath.Join(root, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(to, dst); err != nil {
				t.Fatal(err)
			}
		}
	}
	git(t, src, "init", "-q")
	git(t, src, "add", "-A")
	commit := exec.Command("git", "-c", "user.name=meshgate", "-c", "user.email=dev@meshgate.io",
		"commit", "-q", "--no-verify", "-m", "release test snapshot")
	commit.Dir = src
	commit.Env = append(os.Environ(), "GIT_AUTHOR_DATE="+when, "GIT_COMMITTER_DATE="+when)
	if out, err := commit.CombinedOutput(); err != nil {
		t.Fatalf("git commit: %v\n%s", err, out)
	}
	return src
}

// git runs git in dir and returns its output.
func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

// refusals: make release refuses a version that is not a tag's, a DIST
// that is the tree or the root, a missing CA bundle for the meshgate-inject
// image, and a tree with changes not committed,
// with a message naming the problem, and nothing written or removed.
func refusals(t *testing.T, src, dist string) {
	t.Helper()
	try := func(version, want string) {
		t.Helper()
		cmd := makeCommand(t, src, "release", "-s", "VERSION="+version, "DIST="+dist)
		out, err := cmd.CombinedOutput()
		if code := testkit.ExitCode(err); code == 0 || !strings.Contains(string(out), want) {
			t.Errorf("make release VERSION=%s: exit %d, %s; want a failure saying %q", version, code, out, want)
		}
		if _, err := os.Stat(dist); !os.IsNotExist(err) {
			t.Errorf("make release VERSION=%s wrote %s", version, dist)
		}
	}
	for _, v := range []string{"1.2.3", "v1.2", "v1.2.3 ", "latest", ""} {
		try(v, "is not a version tag such as v1.2.3")
	}
	for _, d := range []string{"", ".", "/"} {
		cmd := makeCommand(t, src, "release", "-s", "VERSION="+releaseVersion, "DIST="+d)
		out, err := cmd.CombinedOutput()
		if code := testkit.ExitCode(err); code == 0 || !strings.Contains(string(out), "would remove more than a release") {
			t.Errorf("make release DIST=%q: exit %d, %s; want a refusal", d, code, out)
		}
		if _, err := os.Stat(filepath.Join(src, "go.mod")); err != nil {
			t.Fatalf("make release DIST=%q removed the tree: %v", d, err)
		}
	}
	if _, err := os.Stat(filepath.Join(src, "cmd", "meshgate-inject")); err == nil {
		missing := filepath.Join(t.TempDir(), "ca-certificates.crt")
		cmd := makeCommand(t, src, "release", "-s", "VERSION="+releaseVersion, "DIST="+dist, "CA_BUNDLE="+missing)
		out, err := cmd.CombinedOutput()
		if code := testkit.ExitCode(err); code != 2 || !strings.Contains(string(out), "no CA bundle at CA_BUNDLE="+missing) {
			t.Errorf("make release CA_BUNDLE=%s: exit %d, %s; want a refusal naming it", missing, code, out)
		}
		if _, err := os.Stat(dist); !os.IsNotExist(err) {
			t.Errorf("make release CA_BUNDLE=%s wrote %s", missing, dist)
		}
	}
	stray := filepath.Join(src, "stray.go")
	if err := os.WriteFile(stray, []byte("package stray\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	try(releaseVersion, "?? stray.go")
	if err := os.Remove(stray); err != nil {
		t.Fatal(err)
	}
}

func makeRelease(t *testing.T, src, dist string) {
	t.Helper()
	cmd := makeCommand(t, src, "release", "VERSION="+releaseVersion, "DIST="+dist)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make release: %v\n%s", err, out)
	}
	t.Logf("make release in %v", time.Since(start).Round(time.Second))
}

// makeCommand runs make target in dir in a process group of its own, which
// is killed whole (make, go build, the tools) after releaseTimeout, or
// before the test binary's own deadline would end it and leave them behind.
func makeCommand(t *testing.T, dir, target string, vars ...string) *exec.Cmd {
	t.Helper()
	deadline := time.Now().Add(releaseTimeout)
	if d, ok := t.Deadline(); ok && d.Add(-30*time.Second).Before(deadline) {
		deadline = d.Add(-30 * time.Second)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, "make", append([]string{"-C", dir, "--no-print-directory", target}, vars...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd
}

func readRelease(t *testing.T, src, dist string) *release {
	t.Helper()
	r := &release{src: src, dist: dist, sums: map[string]string{},
		revision: strings.TrimSpace(git(t, src, "rev-parse", "HEAD"))}
	secs := strings.TrimSpace(git(t, src, "log", "-1", "--format=%ct", "HEAD"))
	var n int64
	if _, err := fmt.Sscan(secs, &n); err != nil {
		t.Fatal(err)
	}
	r.created = time.Unix(n, 0).UTC()
	_, err := os.Stat(filepath.Join(src, "cmd", "meshgate-inject"))
	r.inject = err == nil
	if r.inject {
		r.caBundle = readFile(t, caBundle)
	}

	sc := bufio.NewScanner(bytes.NewReader(readFile(t, filepath.Join(dist, "SHA256SUMS"))))
	for sc.Scan() {
		sum, file, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 {
			t.Fatalf("SHA256SUMS: line %q, want SUM  FILE", sc.Text())
		}
		if _, dup := r.sums[file]; dup {
			t.Fatalf("SHA256SUMS: %s twice", file)
		}
		r.sums[file] = sum
	}
	return r
}

func (r *release) file(t *testing.T, name string) []byte {
	t.Helper()
	return readFile(t, filepath.Join(r.dist, name))
}

// binaries are the release binaries the tree should give, name → GOOS/GOARCH.
func (r *release) binaries() map[string]string {
	bins := map[string]string{"meshgate-linux-amd64": "linux/amd64", "meshgate-linux-arm64": "linux/arm64"}
	if r.inject {
		for _, p := range []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64"} {
			bins["meshgate-inject-"+strings.ReplaceAll(p, "/", "-")] = p
		}
	}
	return bins
}

// Every file of the release, the layout's included, is in SHA256SUMS,
// with its sum.
func (r *release) checkSums(t *testing.T) {
	all := treeDigests(t, r.dist)
	delete(all, "SHA256SUMS")
	files := slices.Sorted(maps.Keys(all))
	var want []string
	for b := range r.binaries() {
		want = append(want, b, b+".cdx.json")
	}
	slices.Sort(want)
	if top := slices.DeleteFunc(slices.Clone(files), func(f string) bool { return strings.Contains(f, "/") }); !slices.Equal(top, want) {
		t.Errorf("release files %q, want %q", top, want)
	}
	if listed := slices.Sorted(maps.Keys(r.sums)); !slices.Equal(listed, files) {
		t.Errorf("SHA256SUMS lists %q, want every file: %q", listed, files)
	}
	for f, sum := range r.sums {
		if got := sha256Hex(r.file(t, f)); got != sum {
			t.Errorf("%s: SHA-256 %s, SHA256SUMS says %s", f, got, sum)
		}
	}
	// And as users check it.
	cmd := exec.Command("sha256sum", "--check", "--strict", "SHA256SUMS")
	cmd.Dir = r.dist
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("sha256sum --check: %v\n%s", err, out)
	}
}

// Each binary is static and stripped, for its platform, and stamped.
func (r *release) checkBinaries(t *testing.T) {
	for b, platform := range r.binaries() {
		goos, arch, _ := strings.Cut(platform, "/")
		path := filepath.Join(r.dist, b)
		if read := readers[goos]; read != nil {
			x, err := read(path)
			checkExecutable(t, b, arch, x, err)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm()&0o111 == 0 {
			t.Errorf("%s: not executable: %v", b, err)
		}
		if !bytes.Contains(r.file(t, b), []byte(releaseVersion)) {
			t.Errorf("%s: %s is nowhere in the binary", b, releaseVersion)
		}
		if goos == runtime.GOOS && arch == runtime.GOARCH {
			checkVersion(t, b, path, strings.TrimSuffix(b, "-"+goos+"-"+arch))
		}
	}
}

// checkExecutable checks that binary b, as read, is static and stripped
// and for arch.
func checkExecutable(t *testing.T, b, arch string, x executable, err error) {
	if err != nil {
		t.Errorf("%s: %v", b, err)
		return
	}
	if !x.exec || x.arch != arch {
		t.Errorf("%s: %s, want an executable for %s", b, x.header, arch)
	}
	if len(x.dynamic) > 0 {
		t.Errorf("%s: has %q: not static", b, x.dynamic)
	}
	if x.symbol != "" {
		t.Errorf("%s: defines symbols (%s): not stripped", b, x.symbol)
	}
}

// checkVersion runs the binary at path, of program prog, for its version.
func checkVersion(t *testing.T, b, path, prog string) {
	arg := "version" // meshgate's command; meshgate-inject's is a flag
	if prog == "meshgate-inject" {
		arg = "--version"
	}
	out, err := exec.Command(path, arg).Output()
	if err != nil || string(out) != prog+" "+releaseVersion+"\n" {
		t.Errorf("%s %s: %q, %v; want %q", b, arg, out, err, prog+" "+releaseVersion+"\n")
	}
}

// executable is what checkBinaries asks of a binary, whatever its format.
type executable struct {
	header  string   // the format, type and machine, for messages
	exec    bool     // of the executable type
	arch    string   // GOARCH of the machine; "" for others
	dynamic []string // what the binary needs of a dynamic loader
	symbol  string   // a symbol the binary defines: not stripped
}

// readers read a binary of each OS for checkBinaries.
var readers = map[string]func(string) (executable, error){
	"linux":  func(path string) (executable, error) { return read(path, "ELF", elf.Open, describeELF) },
	"darwin": func(path string) (executable, error) { return read(path, "Mach-O", macho.Open, describeMachO) },
}

// read opens the binary at path as a file of format and describes it.
func read[F io.Closer](path, format string, open func(string) (F, error), describe func(F) executable) (executable, error) {
	f, err := open(path)
	if err != nil {
		return executable{}, fmt.Errorf("not %s: %v", format, err)
	}
	defer f.Close()
	return describe(f), nil
}

func describeELF(f *elf.File) executable {
	x := executable{
		header: fmt.Sprintf("ELF %v %v", f.Type, f.Machine),
		exec:   f.Type == elf.ET_EXEC,
		arch:   map[elf.Machine]string{elf.EM_X86_64: "amd64", elf.EM_AARCH64: "arm64"}[f.Machine],
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			x.dynamic = append(x.dynamic, p.Type.String())
		}
	}
	libs, _ := f.ImportedLibraries()
	x.dynamic = append(x.dynamic, libs...)
	if f.Section(".symtab") != nil {
		x.symbol = "a symbol table"
	}
	return x
}

func describeMachO(f *macho.File) executable {
	x := executable{
		header: fmt.Sprintf("Mach-O %v %v", f.Type, f.Cpu),
		exec:   f.Type == macho.TypeExec,
		arch:   map[macho.Cpu]string{macho.CpuAmd64: "amd64", macho.CpuArm64: "arm64"}[f.Cpu],
	}
	// Stripped: only the undefined symbols, libSystem's, remain.
	if f.Symtab != nil {
		if i := slices.IndexFunc(f.Symtab.Syms, func(s macho.Symbol) bool { return s.Sect != 0 }); i >= 0 {
			x.symbol = f.Symtab.Syms[i].Name
		}
	}
	return x
}

// Each SBOM names its binary and lists exactly the modules go version -m
// finds in it, at the versions the module graph selects, and the Go
// standard library it was built with.
func (r *release) checkSBOMs(t *testing.T) {
	selected := map[string]string{}
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Path}} {{.Version}}", "all")
	cmd.Dir = r.src
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -m all: %v", err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if path, v, ok := strings.Cut(l, " "); ok {
			selected[path] = v
		}
	}
	for b := range r.binaries() {
		var bom struct {
			BOMFormat    string `json:"bomFormat"`
			SerialNumber string `json:"serialNumber"`
			Metadata     struct {
				Timestamp string `json:"timestamp"`
				Component struct {
					Name, Version string
				} `json:"component"`
			} `json:"metadata"`
			Components []struct {
				Type, Name, Version string
			} `json:"components"`
		}
		if err := json.Unmarshal(r.file(t, b+".cdx.json"), &bom); err != nil {
			t.Errorf("%s.cdx.json: %v", b, err)
			continue
		}
		if bom.BOMFormat != "CycloneDX" || bom.Metadata.Component.Name != "github.com/meshgate/meshgate" ||
			bom.Metadata.Component.Version != releaseVersion || bom.SerialNumber == "" {
			t.Errorf("%s.cdx.json: format %q, component %+v, serial %q; want CycloneDX for github.com/meshgate/meshgate %s with a serial number",
				b, bom.BOMFormat, bom.Metadata.Component, bom.SerialNumber, releaseVersion)
		}
		listed := map[string]string{}
		for _, c := range bom.Components {
			listed[c.Name] = c.Version
		}

		out, err := exec.Command("go", "version", "-m", filepath.Join(r.dist, b)).Output()
		if err != nil {
			t.Errorf("go version -m %s: %v", b, err)
			continue
		}
		linked := map[string]string{}
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			switch {
			case len(f) >= 3 && f[0] == "dep":
				linked[f[1]] = f[2]
			case len(f) >= 3 && f[0] == "=>":
				t.Errorf("%s: %s is replaced: %q", b, f[1], l)
			case len(f) == 2 && strings.HasSuffix(f[0], ":"):
				linked["std"] = f[1] // "dist/x: go1.26.8"
			}
		}
		if !maps.Equal(listed, linked) {
			t.Errorf("%s.cdx.json lists %v; go version -m finds %v", b, listed, linked)
		}
		for m, v := range linked {
			if m != "std" && selected[m] != v {
				t.Errorf("%s links %s %s; go.mod selects %q", b, m, v, selected[m])
			}
		}
	}
}

// ociDescriptor, ociManifest and ociConfig are the parts of the OCI image
// spec the test reads.
type ociDescriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
	Platform    *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant"`
	} `json:"platform"`
}

type ociIndex struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	Manifests     []ociDescriptor   `json:"manifests"`
	Annotations   map[string]string `json:"annotations"`
}

type ociManifest struct {
	MediaType   string            `json:"mediaType"`
	Config      ociDescriptor     `json:"config"`
	Layers      []ociDescriptor   `json:"layers"`
	Annotations map[string]string `json:"annotations"`
}

type ociConfig struct {
	Created      time.Time `json:"created"`
	OS           string    `json:"os"`
	Architecture string    `json:"architecture"`
	Config       struct {
		User       string   `json:"User"`
		Entrypoint []string `json:"Entrypoint"`
		Cmd        []string `json:"Cmd"`
		Env        []string `json:"Env"`
	} `json:"config"`
	RootFS struct {
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// blob reads a blob of the layout in DIST/dir, checking its digest and size.
func (r *release) blob(t *testing.T, dir string, d ociDescriptor) []byte {
	t.Helper()
	hexSum, ok := strings.CutPrefix(d.Digest, "sha256:")
	if !ok || len(hexSum) != 64 || strings.ContainsAny(hexSum, "/.") {
		t.Fatalf("digest %q: want sha256", d.Digest)
	}
	b := readFile(t, filepath.Join(r.dist, dir, "blobs", "sha256", hexSum))
	if got := sha256Hex(b); got != hexSum || int64(len(b)) != d.Size {
		t.Fatalf("blob %s: sha256:%s, %d bytes; descriptor says %d bytes", d.Digest, got, len(b), d.Size)
	}
	return b
}

func decode[T any](t *testing.T, what string, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return v
}

// releaseImage is an image make release should write: its name, the
// layout it is in, and the files its layer holds besides the binary.
type releaseImage struct {
	name, layout string
	files        []string
}

// caBundle is where the build machine's CA bundle is, and where the
// meshgate-inject image holds it.
const caBundle = "/etc/ssl/certs/ca-certificates.crt"

// images are the images the tree should give: meshgate's, and
// meshgate-inject's with the build machine's CA bundle.
func (r *release) images() []releaseImage {
	imgs := []releaseImage{{name: "meshgate", layout: "oci"}}
	if r.inject {
		imgs = append(imgs, releaseImage{name: "meshgate-inject", layout: "oci-inject", files: []string{
			"etc/ dir 755 0:0", "etc/ssl/ dir 755 0:0", "etc/ssl/certs/ dir 755 0:0",
			"etc/ssl/certs/ca-certificates.crt file 644 0:0 " + sha256Hex(r.caBundle)}})
	}
	return imgs
}

// The image's layout holds one index, tagged with the version, of exactly
// the linux/amd64 and linux/arm64 images, each holding its own binary.
func (r *release) checkImage(t *testing.T, img releaseImage) {
	wantAnnotations := map[string]string{
		"org.opencontainers.image.title":    img.name,
		"org.opencontainers.image.source":   "https://github.com/meshgate/meshgate",
		"org.opencontainers.image.revision": r.revision,
		"org.opencontainers.image.version":  releaseVersion,
		"org.opencontainers.image.created":  r.created.Format(time.RFC3339),
	}
	annotated := func(what string, got map[string]string) {
		for k, v := range wantAnnotations {
			if got[k] != v {
				t.Errorf("%s: annotation %s = %q, want %q", what, k, got[k], v)
			}
		}
	}
	if b := r.file(t, img.layout+"/oci-layout"); !bytes.Contains(b, []byte(`"imageLayoutVersion"`)) {
		t.Errorf("%s/oci-layout holds %s", img.layout, b)
	}
	top := decode[ociIndex](t, img.layout+"/index.json", r.file(t, img.layout+"/index.json"))
	if len(top.Manifests) != 1 || top.Manifests[0].MediaType != "application/vnd.oci.image.index.v1+json" ||
		top.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != releaseVersion {
		t.Fatalf("%s/index.json names %+v, want one image index tagged %s", img.layout, top.Manifests, releaseVersion)
	}
	idx := decode[ociIndex](t, "index", r.blob(t, img.layout, top.Manifests[0]))
	if idx.MediaType != "application/vnd.oci.image.index.v1+json" || idx.SchemaVersion != 2 {
		t.Errorf("index: media type %q, schema %d", idx.MediaType, idx.SchemaVersion)
	}
	annotated("index", idx.Annotations)
	var platforms []string
	for _, m := range idx.Manifests {
		if m.Platform == nil {
			t.Errorf("index: manifest %s has no platform", m.Digest)
			continue
		}
		platform := m.Platform.OS + "/" + m.Platform.Architecture
		if m.Platform.Variant != "" {
			platform += "/" + m.Platform.Variant
		}
		platforms = append(platforms, platform)
		if m.MediaType != "application/vnd.oci.image.manifest.v1+json" {
			t.Errorf("%s: media type %q", platform, m.MediaType)
			continue
		}
		man := decode[ociManifest](t, platform+" manifest", r.blob(t, img.layout, m))
		annotated(platform+" manifest", man.Annotations)
		r.checkPlatformImage(t, img, platform, man)
	}
	if slices.Sort(platforms); !slices.Equal(platforms, []string{"linux/amd64", "linux/arm64"}) {
		t.Errorf("index lists %q, want linux/amd64 and linux/arm64", platforms)
	}
}

// checkPlatformImage checks the image of one platform: its configuration,
// and its one layer, which holds the binary of SHA256SUMS.
func (r *release) checkPlatformImage(t *testing.T, img releaseImage, platform string, man ociManifest) {
	cfg := decode[ociConfig](t, platform+" config", r.blob(t, img.layout, man.Config))
	if cfg.OS+"/"+cfg.Architecture != platform {
		t.Errorf("%s: config for %s/%s", platform, cfg.OS, cfg.Architecture)
	}
	if cfg.Config.User != "65532:65532" || !slices.Equal(cfg.Config.Entrypoint, []string{"/usr/local/bin/" + img.name}) || cfg.Config.Cmd != nil {
		t.Errorf("%s: user %q, entrypoint %q, cmd %q; want 65532:65532, the binary, no cmd",
			platform, cfg.Config.User, cfg.Config.Entrypoint, cfg.Config.Cmd)
	}
	if want := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}; !slices.Equal(cfg.Config.Env, want) {
		t.Errorf("%s: env %q, want %q", platform, cfg.Config.Env, want)
	}
	if !cfg.Created.Equal(r.created) {
		t.Errorf("%s: created %v, want the commit's time %v", platform, cfg.Created, r.created)
	}
	if len(man.Layers) != 1 || man.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
		t.Errorf("%s: layers %+v, want one gzipped tar", platform, man.Layers)
		return
	}
	files, diffID := layerFiles(t, r.blob(t, img.layout, man.Layers[0]))
	if !slices.Equal(cfg.RootFS.DiffIDs, []string{diffID}) {
		t.Errorf("%s: diff_ids %q, want the layer's %s", platform, cfg.RootFS.DiffIDs, diffID)
	}
	binary := img.name + "-" + strings.ReplaceAll(platform, "/", "-")
	if r.sums[binary] == "" {
		t.Errorf("%s: SHA256SUMS has no %s", platform, binary)
	}
	want := append(slices.Clone(img.files), "usr/ dir 755 0:0", "usr/local/ dir 755 0:0", "usr/local/bin/ dir 755 0:0",
		"usr/local/bin/"+img.name+" file 755 0:0 "+r.sums[binary])
	if !slices.Equal(files, want) {
		t.Errorf("%s: layer holds\n%s\nwant\n%s", platform, strings.Join(files, "\n"), strings.Join(want, "\n"))
	}
}

// layerFiles lists a gzipped layer's entries as "name type mode uid:gid
// [sha256]", with the digest of the uncompressed tar.
func layerFiles(t *testing.T, gz []byte) ([]string, string) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		entry := fmt.Sprintf("%s %s %o %d:%d", h.Name, map[byte]string{tar.TypeDir: "dir", tar.TypeReg: "file"}[h.Typeflag],
			h.Mode, h.Uid, h.Gid)
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			entry += " " + sha256Hex(b)
		}
		files = append(files, entry)
	}
	return files, "sha256:" + sha256Hex(raw)
}

// The amd64 image is the init container of a pod: it installs the binary into an emptyDir as the
// image's user, and the app container runs it from there.
func (r *release) checkPod(t *testing.T) {
	img := r.amd64Image(t, "oci")
	p := pod.New(t)
	install := p.Run(pod.Container{Name: "meshgate-install", Image: img, ReadOnly: true,
		Args:   []string{"install", "/meshgate"},
		Mounts: []pod.Mount{{Volume: "meshgate", Path: "/meshgate"}}})
	if install.Code != 0 || !strings.Contains(install.Stderr, `"msg":"installed"`) {
		t.Fatalf("init container: exit %d\n%s%s", install.Code, install.Stdout, install.Stderr)
	}
	installed := readFile(t, filepath.Join(p.Volume("meshgate"), "meshgate"))
	if got := sha256Hex(installed); got != r.sums["meshgate-linux-amd64"] {
		t.Errorf("the emptyDir holds %s, want meshgate-linux-amd64 (%s)", got, r.sums["meshgate-linux-amd64"])
	}
	if !strings.Contains(install.Stderr, `"sha256":"`+r.sums["meshgate-linux-amd64"]+`"`) {
		t.Errorf("install log %s, want the checksum of meshgate-linux-amd64", install.Stderr)
	}
	app := p.Run(pod.Container{Name: "app", User: "65532:65532", ReadOnly: true,
		Rootfs:  pod.Scratch(t, nil),
		Command: []string{"/meshgate/meshgate", "version"},
		Mounts:  []pod.Mount{{Volume: "meshgate", Path: "/meshgate", ReadOnly: true}}})
	if app.Code != 0 || app.Stdout != "meshgate "+releaseVersion+"\n" {
		t.Errorf("app container: exit %d, %q%s; want meshgate %s", app.Code, app.Stdout, app.Stderr, releaseVersion)
	}
}

// amd64Image is the linux/amd64 image of the layout in dist, unpacked by
// umoci as a runtime would.
func (r *release) amd64Image(t *testing.T, layout string) *pod.Image {
	index := &pod.Image{Layout: filepath.Join(r.dist, layout), Tag: releaseVersion}
	img, err := index.Platform(filepath.Join(t.TempDir(), "amd64"), "linux/amd64")
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// The amd64 meshgate-inject image runs its binary, its entrypoint, as the image's user on a read-only root.
func (r *release) checkInjectPod(t *testing.T) {
	img := r.amd64Image(t, "oci-inject")
	p := pod.New(t)
	version := p.Run(pod.Container{Name: "meshgate-inject", Image: img, ReadOnly: true, Args: []string{"--version"}})
	if version.Code != 0 || version.Stdout != "meshgate-inject "+releaseVersion+"\n" {
		t.Errorf("meshgate-inject image --version: exit %d, %q%s; want meshgate-inject %s",
			version.Code, version.Stdout, version.Stderr, releaseVersion)
	}
}

// make publish pushes each image's index to its repository in a registry,
// here one on loopback, as the version and as latest, and both name the
// digest of the layout's index.
func (r *release) checkPublish(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	repos := map[string]string{} // image name → repository
	for _, img := range r.images() {
		repos[img.name] = host + "/meshgate/" + img.name
	}
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	publish := func(version string) ([]byte, error) {
		cmd := makeCommand(t, r.src, "publish", "VERSION="+version, "DIST="+r.dist,
			"IMAGE_REPO="+host+"/meshgate/meshgate", "INJECT_IMAGE_REPO="+host+"/meshgate/meshgate-inject")
		// No credentials of the machine: this registry asks for none.
		cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+t.TempDir())
		return cmd.CombinedOutput()
	}
	// The layout of one version is never pushed as another.
	if out, err := publish("v1.2.4"); err == nil || !strings.Contains(string(out), `holds the release "`+releaseVersion+`", not "v1.2.4"`) {
		t.Errorf("make publish VERSION=v1.2.4 of a %s layout: %v\n%s; want a refusal", releaseVersion, err, out)
	}
	for _, repo := range repos {
		repository, err := name.NewRepository(repo)
		if err != nil {
			t.Fatal(err)
		}
		if tags, err := remote.List(repository, remote.WithContext(ctx)); err == nil || len(tags) > 0 {
			t.Errorf("after a refused publish the registry lists %q in %s (%v), want no repository", tags, repo, err)
		}
	}
	out, err := publish(releaseVersion)
	if err != nil {
		t.Fatalf("make publish: %v\n%s", err, out)
	}
	for _, img := range r.images() {
		top := decode[ociIndex](t, img.layout+"/index.json", r.file(t, img.layout+"/index.json"))
		for _, tag := range []string{releaseVersion, "latest"} {
			ref, err := name.ParseReference(repos[img.name] + ":" + tag)
			if err != nil {
				t.Fatal(err)
			}
			d, err := remote.Head(ref, remote.WithContext(ctx))
			if err != nil {
				t.Errorf("%s after make publish: %v\n%s", ref, err, out)
				continue
			}
			if d.Digest.String() != top.Manifests[0].Digest || d.MediaType != "application/vnd.oci.image.index.v1+json" {
				t.Errorf("%s is %s %s, want the index %s of %s", ref, d.MediaType, d.Digest, top.Manifests[0].Digest, img.layout)
			}
			idx, err := remote.Index(ref, remote.WithContext(ctx))
			if err != nil {
				t.Errorf("%s: %v", ref, err)
				continue
			}
			m, err := idx.IndexManifest()
			if err != nil || len(m.Manifests) != 2 {
				t.Errorf("%s: %v, %d images, want 2", ref, err, len(m.Manifests))
			}
			for _, desc := range m.Manifests {
				platformImage, err := idx.Image(desc.Digest)
				if err == nil {
					_, err = platformImage.Layers()
				}
				if err != nil {
					t.Errorf("%s: image %s: %v", ref, desc.Digest, err)
				}
			}
		}
	}
}

// treeDigests maps every file under dir to its SHA-256.
func treeDigests(t *testing.T, dir string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		sums[rel] = sha256Hex(readFile(t, path))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sums
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

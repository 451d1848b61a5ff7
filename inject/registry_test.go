package inject

import (
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// testRegistry is go-containerregistry's registry on a loopback port,
// optionally behind basic auth. requests counts what reached it.
type testRegistry struct {
	host     string
	requests atomic.Int64
	hidden   sync.Map // blob digests answered with 404, as if lost
}

func newRegistry(t *testing.T, user, pass string) *testRegistry {
	t.Helper()
	r := &testRegistry{}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.requests.Add(1)
		if user != "" {
			if u, p, ok := req.BasicAuth(); !ok || u != user || p != pass {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"credentials required"}]}`, http.StatusUnauthorized)
				return
			}
		}
		if i := strings.LastIndex(req.URL.Path, "/blobs/"); i >= 0 {
			if _, gone := r.hidden.Load(req.URL.Path[i+len("/blobs/"):]); gone {
				http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}`, http.StatusNotFound)
				return
			}
		}
		reg.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// image builds an image whose config has this ENTRYPOINT and CMD.
func image(t *testing.T, platform string, entrypoint, cmd []string) v1.Image {
	t.Helper()
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		OS: p.OS, Architecture: p.Architecture, Variant: p.Variant,
		Config: v1.Config{Entrypoint: entrypoint, Cmd: cmd, User: "65532"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// push writes img (a v1.Image or a v1.ImageIndex) as repo:tag, with the
// given auth, and returns its reference.
func (r *testRegistry) push(t *testing.T, repo string, img any, opts ...remote.Option) string {
	t.Helper()
	ref, err := name.ParseReference(r.host + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	switch img := img.(type) {
	case v1.Image:
		err = remote.Write(ref, img, opts...)
	case v1.ImageIndex:
		err = remote.WriteIndex(ref, img, opts...)
	}
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref.String()
}

func index(t *testing.T, imgs map[string]v1.Image) v1.ImageIndex {
	t.Helper()
	var idx v1.ImageIndex = empty.Index
	for _, platform := range slices.Sorted(func(yield func(string) bool) {
		for p := range imgs {
			if !yield(p) {
				return
			}
		}
	}) {
		p, _ := v1.ParsePlatform(platform)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: imgs[platform],
			Descriptor: v1.Descriptor{Platform: p}})
	}
	return idx
}

// noDockerConfig points the default keychain at an empty Docker config.
func noDockerConfig(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
}

// TestRegistryCombinations reads every ENTRYPOINT/CMD combination from a
// real registry, and checks what Template makes of each container shape.
func TestRegistryCombinations(t *testing.T) {
	noDockerConfig(t)
	reg := newRegistry(t, "", "")
	images := map[string][2][]string{
		"both":       {{"/app/server"}, {"--port", "8080"}},
		"entrypoint": {{"/app/server", "--config", "/etc/app.yaml"}, nil},
		"cmd":        {nil, {"/app/server", "--port", "8080"}},
		"none":       {nil, nil},
	}
	refs := map[string]string{}
	for n, c := range images {
		refs[n] = reg.push(t, "app:"+n, image(t, "linux/amd64", c[0], c[1]))
	}
	r := &Registry{}
	for n, c := range images {
		e, cmd, err := r.ImageConfig(t.Context(), refs[n])
		if err != nil || !slices.Equal(e, c[0]) || !slices.Equal(cmd, c[1]) {
			t.Errorf("%s: got %q %q %v, want %q %q", n, e, cmd, err, c[0], c[1])
		}
	}

	for _, tc := range []struct {
		image, shape string
		want         string // command | args, as JSON, or an error
	}{
		{"both", "neither", `["/meshgate/meshgate","--","/app/server"] | ["--port","8080"]`},
		{"both", "args", `["/meshgate/meshgate","--","/app/server"] | ["--verbose"]`},
		{"both", "command", `["/meshgate/meshgate","--","/bin/app"] | []`},
		{"entrypoint", "neither", `["/meshgate/meshgate","--","/app/server","--config","/etc/app.yaml"] | []`},
		{"entrypoint", "args", `["/meshgate/meshgate","--","/app/server","--config","/etc/app.yaml"] | ["--verbose"]`},
		{"cmd", "neither", `["/meshgate/meshgate","--"] | ["/app/server","--port","8080"]`},
		{"cmd", "args", `["/meshgate/meshgate","--"] | ["--verbose"]`},
		{"none", "neither", `its image has neither ENTRYPOINT nor CMD`},
		{"none", "args", `["/meshgate/meshgate","--"] | ["--verbose"]`},
	} {
		t.Run(tc.image+"/"+tc.shape, func(t *testing.T) {
			doc := "spec:\n  containers:\n    - name: app\n      image: " + refs[tc.image] + "\n"
			switch tc.shape {
			case "args":
				doc += "      args: [--verbose]\n"
			case "command":
				doc += "      command: [/bin/app]\n"
			}
			tmpl := yaml.MustParse(doc)
			_, err := Template(t.Context(), tmpl, false, Options{Resolver: r})
			got := ""
			if err != nil {
				got = "error: " + err.Error()
			} else {
				ctr := get(get(tmpl.YNode(), "spec"), "containers").Content[0]
				cmd, _ := stringList(get(ctr, "command"))
				args, _ := stringList(get(ctr, "args"))
				got = jsonList(cmd) + " | " + jsonList(args)
			}
			if !strings.Contains(got, tc.want) {
				t.Errorf("got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestRegistryMultiPlatform(t *testing.T) {
	noDockerConfig(t)
	reg := newRegistry(t, "", "")
	same := reg.push(t, "multi:same", index(t, map[string]v1.Image{
		"linux/amd64":   image(t, "linux/amd64", []string{"/app"}, []string{"serve"}),
		"linux/arm64":   image(t, "linux/arm64", []string{"/app"}, []string{"serve"}),
		"windows/amd64": image(t, "windows/amd64", []string{`C:\app.exe`}, nil),
	}))
	differ := reg.push(t, "multi:differ", index(t, map[string]v1.Image{
		"linux/amd64":  image(t, "linux/amd64", []string{"/app-amd64"}, nil),
		"linux/arm/v7": image(t, "linux/arm/v7", []string{"/app-armv7"}, nil),
	}))
	r := &Registry{}
	check := func(image, platform, want string) {
		t.Helper()
		e, c, err := r.ImageConfigPlatform(t.Context(), image, platform)
		got := jsonList(e) + " " + jsonList(c)
		if err != nil {
			got = "error: " + err.Error()
		}
		if !strings.Contains(got, want) {
			t.Errorf("%s, platform %q: got %s, want %s", image, platform, got, want)
		}
	}
	check(same, "", `["/app"] ["serve"]`) // the linux images agree; windows is not asked
	check(same, "linux/arm64", `["/app"] ["serve"]`)
	check(same, "windows/amd64", `["C:\\app.exe"] []`)
	check(differ, "", "its platforms differ")
	check(differ, "", "choose one with --platform")
	check(differ, "linux/amd64", `["/app-amd64"]`)
	check(differ, "linux/arm/v7", `["/app-armv7"]`)
	check(differ, "linux/s390x", "no image for platform linux/s390x in the index (it has linux/amd64, linux/arm/v7)")
	single := reg.push(t, "single:1", image(t, "linux/amd64", []string{"/one"}, nil))
	check(single, "", `["/one"] []`)
	check(single, "linux/amd64", `["/one"] []`)
	check(single, "linux/arm64", "is for linux/amd64 only, not linux/arm64")

	// Options.Platform reaches the registry through Template.
	tmpl := yaml.MustParse("spec:\n  containers:\n    - name: app\n      image: " + differ + "\n")
	if _, err := Template(t.Context(), tmpl, false, Options{Resolver: r, Platform: "linux/arm/v7"}); err != nil {
		t.Fatal(err)
	}
	if cmd, _ := stringList(get(path(tmpl.YNode(), "spec", "containers").Content[0], "command")); !slices.Contains(cmd, "/app-armv7") {
		t.Errorf("command %q, want the arm/v7 image's entrypoint", cmd)
	}
}

func TestRegistryBasicAuth(t *testing.T) {
	reg := newRegistry(t, "puller", "s3cret")
	auth := remote.WithAuth(&authn.Basic{Username: "puller", Password: "s3cret"})
	ref := reg.push(t, "private/app:1", image(t, "linux/amd64", []string{"/app"}, nil), auth)

	// Without credentials: one line naming the image and the refusal.
	noDockerConfig(t)
	_, _, err := (&Registry{}).ImageConfig(t.Context(), ref)
	if err == nil || !strings.Contains(err.Error(), "image "+ref) || !strings.Contains(err.Error(), "401") && !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Errorf("without credentials: %v, want an error naming the image and the 401", err)
	}

	// With them in the Docker config file, as docker login writes it.
	dir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", dir)
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, reg.host, base64.StdEncoding.EncodeToString([]byte("puller:s3cret")))
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e, _, err := (&Registry{}).ImageConfig(t.Context(), ref)
	if err != nil || !slices.Equal(e, []string{"/app"}) {
		t.Errorf("with the Docker config: %q, %v", e, err)
	}

	// A wrong password in the Docker config.
	cfg = fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, reg.host, base64.StdEncoding.EncodeToString([]byte("puller:wrong")))
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := (&Registry{}).ImageConfig(t.Context(), ref); err == nil {
		t.Error("a wrong password was accepted")
	}
}

func TestRegistryErrors(t *testing.T) {
	noDockerConfig(t)
	reg := newRegistry(t, "", "")
	r := &Registry{}
	for _, tc := range []struct{ image, want string }{
		{reg.host + "/missing:1", "image " + reg.host + "/missing:1: "},
		{reg.host + "/Bad Name", "image " + reg.host + "/Bad Name: "},
	} {
		if _, _, err := r.ImageConfig(t.Context(), tc.image); err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want one line starting %q", tc.image, err, tc.want)
		}
	}
	// A closed port: nothing listens.
	closed := httptest.NewServer(http.NotFoundHandler())
	host := strings.TrimPrefix(closed.URL, "http://")
	closed.Close()
	if _, _, err := r.ImageConfig(t.Context(), host+"/app:1"); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("closed port: %v", err)
	}

	// A registry that accepts and never answers: the look-up is bounded.
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		<-req.Context().Done()
	}))
	defer hang.Close()
	hung := strings.TrimPrefix(hang.URL, "http://") + "/app:1"
	if _, _, err := (&Registry{Timeout: 200 * time.Millisecond}).ImageConfig(t.Context(), hung); err == nil ||
		!strings.Contains(err.Error(), "image "+hung+": ") || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Errorf("hung registry: %v, want a deadline error naming the image", err)
	}

	// An image whose config blob is gone.
	img := image(t, "linux/amd64", []string{"/lost"}, nil)
	lost := reg.push(t, "lost:1", img)
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	reg.hidden.Store(cfg.String(), true)
	if _, _, err := r.ImageConfig(t.Context(), lost); err == nil || !strings.Contains(err.Error(), "image "+lost+": reading its config: ") || strings.Contains(err.Error(), "\n") {
		t.Errorf("lost config: %v, want one line naming the image and its config", err)
	}

	// Answers are cached: a second look-up asks nothing.
	ref := reg.push(t, "cached:1", image(t, "linux/amd64", []string{"/app"}, nil))
	if _, _, err := r.ImageConfig(t.Context(), ref); err != nil {
		t.Fatal(err)
	}
	before := reg.requests.Load()
	if _, _, err := r.ImageConfig(t.Context(), ref); err != nil {
		t.Fatal(err)
	}
	if n := reg.requests.Load() - before; n != 0 {
		t.Errorf("the second look-up made %d requests, want 0", n)
	}
}

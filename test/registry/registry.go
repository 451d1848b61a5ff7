// Package registry runs a real OCI registry on loopback for tests
// (go-containerregistry's pkg/registry), optionally behind basic auth, and
// pushes images whose configs hold a given ENTRYPOINT and CMD.
package registry

import (
	"crypto/subtle"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry is a registry server on 127.0.0.1.
type Registry struct {
	// Host is HOST:PORT, the prefix of the registry's image names.
	Host       string
	user, pass string
	// Requests counts the requests to /v2/ paths other than /v2/ itself
	// (manifests and blobs).
	Requests atomic.Int64
	// Refused counts requests refused for lack of credentials.
	Refused atomic.Int64
	// Pings counts requests to /v2/, which clients make to learn how to
	// authenticate.
	Pings atomic.Int64
}

// Start serves a registry until the test ends. With a user, every request
// must carry that user and password (basic auth), as a private registry
// asks.
func Start(t testing.TB, user, pass string) *Registry {
	t.Helper()
	r := &Registry{user: user, pass: pass}
	inner := ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/v2/" {
			r.Pings.Add(1)
		}
		if r.user != "" {
			u, p, ok := req.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(u+"\x00"+p), []byte(r.user+"\x00"+r.pass)) != 1 {
				r.Refused.Add(1)
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"credentials required"}]}`, http.StatusUnauthorized)
				return
			}
		}
		if strings.HasPrefix(req.URL.Path, "/v2/") && req.URL.Path != "/v2/" {
			r.Requests.Add(1)
		}
		inner.ServeHTTP(w, req)
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	r.Host = ln.Addr().String()
	return r
}

// Auth is the registry's credentials for pushing.
func (r *Registry) Auth() authn.Authenticator {
	if r.user == "" {
		return authn.Anonymous
	}
	return &authn.Basic{Username: r.user, Password: r.pass}
}

// image makes an image for platform p whose config holds entrypoint and
// cmd (nil leaves either out), which is all a look-up reads: it has no
// layers.
func image(p v1.Platform, entrypoint, cmd []string) (v1.Image, error) {
	return mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		OS:           p.OS,
		Architecture: p.Architecture,
		Variant:      p.Variant,
		RootFS:       v1.RootFS{Type: "layers"},
		Config:       v1.Config{Entrypoint: entrypoint, Cmd: cmd},
	})
}

// Push writes an image for linux/amd64 with entrypoint and cmd as
// REPO:TAG and returns its name by tag and by digest.
func (r *Registry) Push(t testing.TB, repoTag string, entrypoint, cmd []string) (tagged, digested string) {
	t.Helper()
	img, err := image(v1.Platform{OS: "linux", Architecture: "amd64"}, entrypoint, cmd)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(r.Host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithAuth(r.Auth())); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return ref.String(), ref.Context().Digest(d.String()).String()
}

// PushIndex writes a multi-platform index as REPO:TAG with one image per
// platform ("linux/amd64", "linux/arm64/v8"), each with the entrypoint
// given for it, and returns its name by tag.
func (r *Registry) PushIndex(t testing.TB, repoTag string, entrypoints map[string][]string) string {
	t.Helper()
	var idx v1.ImageIndex = empty.Index
	for plat, ep := range entrypoints {
		p, err := v1.ParsePlatform(plat)
		if err != nil {
			t.Fatal(err)
		}
		img, err := image(*p, ep, nil)
		if err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}})
	}
	ref, err := name.ParseReference(r.Host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx, remote.WithAuth(r.Auth())); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref.String()
}

// DockerConfig is a kubernetes.io/dockerconfigjson payload with the
// registry's credentials.
func (r *Registry) DockerConfig() []byte {
	return []byte(fmt.Sprintf(`{"auths":{%q:{"username":%q,"password":%q}}}`, r.Host, r.user, r.pass))
}

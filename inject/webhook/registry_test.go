package webhook

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meshgate/meshgate/test/registry"
)

// secrets serves pull secrets from a map, NotFound for the others, and
// Forbidden for the name "forbidden"; it counts the reads.
type secrets struct {
	m     map[string]*corev1.Secret
	reads int
}

func (s *secrets) get(_ context.Context, ns, name string) (*corev1.Secret, error) {
	s.reads++
	if name == "forbidden" {
		return nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, name, errors.New("no RBAC"))
	}
	if sec, ok := s.m[ns+"/"+name]; ok {
		return sec, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, name)
}

func pullSecret(ns, name string, reg *registry.Registry) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: reg.DockerConfig()},
	}
}

// noRetry keeps the registry client from retrying refusals, so that
// request counts mean what they say.
var noRetry = []remote.Option{remote.WithRetryBackoff(remote.Backoff{Steps: 1})}

func TestRegistryPullSecrets(t *testing.T) {
	reg := registry.Start(t, "puller", "s3cret")
	tagged, _ := reg.Push(t, "team/app:1", []string{"/entry"}, []string{"serve"})
	s := &secrets{m: map[string]*corev1.Secret{"apps/regcred": pullSecret("apps", "regcred", reg)}}
	r := &Registry{Secrets: s.get, Options: noRetry}

	ep, cmd, err := r.For("apps", []string{"missing", "regcred"}).ImageConfig(context.Background(), tagged)
	if err != nil {
		t.Fatalf("with the pull secret: %v", err)
	}
	if !reflect.DeepEqual(ep, []string{"/entry"}) || !reflect.DeepEqual(cmd, []string{"serve"}) {
		t.Errorf("got entrypoint %q cmd %q, want [/entry] [serve]", ep, cmd)
	}

	// Another namespace does not have the secret: no credentials, and
	// the cached config is not handed out, since the tag is resolved
	// with the pod's own credentials.
	refused := reg.Refused.Load()
	_, _, err = r.For("other", []string{"regcred"}).ImageConfig(context.Background(), tagged)
	if err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Errorf("without the pull secret: got %v, want UNAUTHORIZED", err)
	}
	if reg.Refused.Load() == refused {
		t.Error("the registry refused nothing, want the anonymous request refused")
	}

	_, _, err = r.For("apps", []string{"forbidden", "regcred"}).ImageConfig(context.Background(), tagged)
	if err == nil || !strings.Contains(err.Error(), "pull secret apps/forbidden") || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("with an unreadable secret: got %v, want an error naming apps/forbidden", err)
	}
}

// TestRegistryCache checks that a digest read once is not read again, and
// that a tag costs one manifest request after that.
func TestRegistryCache(t *testing.T) {
	reg := registry.Start(t, "", "")
	tagged, digested := reg.Push(t, "app:1", []string{"/entry"}, nil)
	s := &secrets{}
	r := &Registry{Secrets: s.get, Options: noRetry}

	res := r.For("apps", []string{"regcred"})
	if _, _, err := res.ImageConfig(context.Background(), tagged); err != nil {
		t.Fatal(err)
	}
	if r.Len() != 1 {
		t.Fatalf("got %d cached configs, want 1", r.Len())
	}
	before := reg.Requests.Load()
	ep, _, err := r.For("apps", nil).ImageConfig(context.Background(), digested)
	if err != nil || !reflect.DeepEqual(ep, []string{"/entry"}) {
		t.Fatalf("by digest: got %q, %v, want [/entry]", ep, err)
	}
	if n := reg.Requests.Load() - before; n != 0 {
		t.Errorf("by digest: got %d registry requests, want 0 (cached)", n)
	}
	before, pings := reg.Requests.Load(), reg.Pings.Load()
	if _, _, err := r.For("apps", nil).ImageConfig(context.Background(), tagged); err != nil {
		t.Fatal(err)
	}
	if n, p := reg.Requests.Load()-before, reg.Pings.Load()-pings; n != 1 || p != 0 {
		t.Errorf("by tag: got %d registry requests and %d pings, want 1 (the manifest of the tag) and 0 (the client is kept)", n, p)
	}
	if s.reads != 1 {
		t.Errorf("got %d secret reads, want 1 (the first pod's; look-ups served by digest read none)", s.reads)
	}
}

func TestRegistryPlatform(t *testing.T) {
	reg := registry.Start(t, "", "")
	same := reg.PushIndex(t, "same:1", map[string][]string{"linux/amd64": {"/entry"}, "linux/arm64/v8": {"/entry"}})
	differ := reg.PushIndex(t, "differ:1", map[string][]string{"linux/amd64": {"/amd64"}, "linux/arm64/v8": {"/arm64"}})
	for _, tt := range []struct {
		image, platform string
		want            string // the entrypoint, or part of the error
	}{
		{same, "", "/entry"},
		{differ, "linux/arm64", "/arm64"},
		{differ, "linux/amd64", "/amd64"},
		{differ, "", "its platforms differ"},
	} {
		ep, _, err := (&Registry{Platform: tt.platform, Options: noRetry}).For("apps", nil).ImageConfig(context.Background(), tt.image)
		got := strings.Join(ep, " ")
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, tt.want) {
			t.Errorf("%s on %q: got %s, want %s", tt.image, tt.platform, got, tt.want)
		}
	}
}

func TestRegistryErrors(t *testing.T) {
	reg := registry.Start(t, "", "")
	r := &Registry{Options: noRetry}
	for _, tt := range []struct{ image, want string }{
		{"UPPER/case", "could not parse reference"},
		{reg.Host + "/absent:1", "NAME_UNKNOWN"},
	} {
		_, _, err := r.For("apps", nil).ImageConfig(context.Background(), tt.image)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: got %v, want one line containing %q", tt.image, err, tt.want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	_, _, err := r.For("apps", nil).ImageConfig(ctx, reg.Host+"/absent:1")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("expired context: got %v, want context.DeadlineExceeded", err)
	}
}

func TestRegistryCacheBound(t *testing.T) {
	r := &Registry{MaxEntries: 2}
	p := "linux/amd64"
	for _, d := range []string{"a", "b", "c"} {
		r.put(cacheKey(d, p), imageConfig{entrypoint: []string{d}})
	}
	if _, ok := r.get(cacheKey("a", p)); ok || r.Len() != 2 {
		t.Errorf("got %d entries with the oldest kept %v, want 2 without it", r.Len(), ok)
	}
}

package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	k8sauthn "github.com/google/go-containerregistry/pkg/authn/kubernetes"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/meshgate/meshgate/inject"
)

// SecretGetter reads one Secret; the webhook's RBAC lets it get secrets and
// nothing else.
type SecretGetter func(ctx context.Context, namespace, name string) (*corev1.Secret, error)

// Registry reads ENTRYPOINT and CMD from image configs in their
// registries, with the credentials of the pod's imagePullSecrets (and
// anonymously where none fits), and keeps them by image digest. A tag is
// resolved to its digest on each admission, one manifest request made with
// the pod's credentials, so that a tag that moved is seen and a pod without
// access learns nothing; a digest already read costs no request at all.
type Registry struct {
	// Secrets reads the pull secrets; nil means no credentials.
	Secrets SecretGetter
	// Platform ("linux/arm64") picks the image of a multi-platform index;
	// "" means every linux image of the index, which must agree, as
	// meshgate-inject --resolve reads them.
	Platform string
	// Transport is nil for remote.DefaultTransport.
	Transport http.RoundTripper
	// MaxEntries bounds the cache; zero means 4096.
	MaxEntries int
	// Options are extra options for the request that resolves a tag
	// (tests use remote.WithRetryBackoff).
	Options []remote.Option

	mu         sync.Mutex
	cache      map[string]imageConfig // by digest and platform
	order      []string               // cache keys, oldest first
	pullers    map[string]*remote.Puller
	pullerKeys []string // oldest first
}

type imageConfig struct{ entrypoint, cmd []string }

// For returns the resolver for one pod of namespace with the named
// imagePullSecrets. Secrets are read when the first look-up needs them.
func (r *Registry) For(namespace string, pullSecrets []string) Resolver {
	return &podResolver{reg: r, namespace: namespace, secrets: pullSecrets}
}

func (r *Registry) get(key string) (imageConfig, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.cache[key]
	return c, ok
}

func (r *Registry) put(key string, c imageConfig) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cache == nil {
		r.cache = map[string]imageConfig{}
	}
	if _, ok := r.cache[key]; ok {
		return
	}
	max := r.MaxEntries
	if max <= 0 {
		max = 4096
	}
	for len(r.order) >= max {
		delete(r.cache, r.order[0])
		r.order = r.order[1:]
	}
	r.cache[key] = c
	r.order = append(r.order, key)
}

// puller returns the client for a registry and one set of credentials,
// kept so that its handshake (the /v2/ ping, a bearer token) is done once
// and not on each admission. Pods share one only when their pull secrets
// hold the same credentials for that registry.
func (r *Registry) puller(reg name.Registry, auth authn.Authenticator) (*remote.Puller, error) {
	cfg, err := auth.Authorization()
	if err != nil {
		return nil, err
	}
	id, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(id)
	key := reg.RegistryStr() + " " + hex.EncodeToString(sum[:])
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.pullers[key]; ok {
		return p, nil
	}
	opts := append([]remote.Option{remote.WithAuth(auth)}, r.Options...)
	if r.Transport != nil {
		opts = append(opts, remote.WithTransport(r.Transport))
	}
	p, err := remote.NewPuller(opts...)
	if err != nil {
		return nil, err
	}
	if r.pullers == nil {
		r.pullers = map[string]*remote.Puller{}
	}
	for len(r.pullerKeys) >= maxPullers {
		delete(r.pullers, r.pullerKeys[0])
		r.pullerKeys = r.pullerKeys[1:]
	}
	r.pullers[key] = p
	r.pullerKeys = append(r.pullerKeys, key)
	return p, nil
}

// maxPullers bounds the registry clients kept: one per registry and set
// of credentials in use.
const maxPullers = 256

// Len tells how many image configs the cache holds.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.cache)
}

// podResolver is the Registry seen by one pod.
type podResolver struct {
	reg       *Registry
	namespace string
	secrets   []string

	once     sync.Once
	keychain authn.Keychain
	kcErr    error
}

// keys reads the pod's pull secrets once. A secret that does not exist is
// skipped, as the kubelet skips it; any other error fails the look-ups.
func (p *podResolver) keys(ctx context.Context) (authn.Keychain, error) {
	p.once.Do(func() {
		if p.reg.Secrets == nil || len(p.secrets) == 0 {
			p.keychain = authn.NewMultiKeychain() // anonymous
			return
		}
		var secrets []corev1.Secret
		for _, n := range p.secrets {
			s, err := p.reg.Secrets(ctx, p.namespace, n)
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				p.kcErr = fmt.Errorf("pull secret %s/%s: %w", p.namespace, n, err)
				return
			}
			secrets = append(secrets, *s)
		}
		p.keychain, p.kcErr = k8sauthn.NewFromPullSecrets(ctx, secrets)
	})
	return p.keychain, p.kcErr
}

// ImageConfig reads image's ENTRYPOINT and CMD: from the cache when its
// digest was read before, else from its config in the registry, the way
// meshgate-inject --resolve reads it.
func (p *podResolver) ImageConfig(ctx context.Context, image string) ([]string, []string, error) {
	ref, err := name.ParseReference(image)
	if err != nil {
		return nil, nil, fmt.Errorf("image %q: %w", image, err)
	}
	if d, ok := ref.(name.Digest); ok {
		if c, ok := p.reg.get(cacheKey(d.DigestStr(), p.reg.Platform)); ok {
			return c.entrypoint, c.cmd, nil
		}
	}
	kc, err := p.keys(ctx)
	if err != nil {
		return nil, nil, err
	}
	digest, ok := ref.(name.Digest)
	if !ok {
		// A GET of the manifest (not a HEAD, whose refusals carry no
		// reason) resolves the tag to its digest.
		auth, err := kc.Resolve(ref.Context())
		if err != nil {
			return nil, nil, err
		}
		puller, err := p.reg.puller(ref.Context().Registry, auth)
		if err != nil {
			return nil, nil, err
		}
		desc, err := puller.Get(ctx, ref)
		if err != nil {
			return nil, nil, explain(err)
		}
		digest = ref.Context().Digest(desc.Digest.String())
	}
	key := cacheKey(digest.DigestStr(), p.reg.Platform)
	if c, ok := p.reg.get(key); ok {
		return c.entrypoint, c.cmd, nil
	}
	read := &inject.Registry{Keychain: kc, Transport: p.reg.Transport}
	ep, cmd, err := read.ImageConfigPlatform(ctx, digest.String(), p.reg.Platform)
	if err != nil {
		return nil, nil, explain(err)
	}
	p.reg.put(key, imageConfig{entrypoint: ep, cmd: cmd})
	return ep, cmd, nil
}

func cacheKey(digest, platform string) string {
	return digest + " " + platform
}

// explain keeps the first line of a registry error, which is what a
// warning line can hold; errors.Is still sees the cause.
func explain(err error) error {
	msg := err.Error()
	i := strings.IndexByte(msg, '\n')
	if i < 0 {
		return err
	}
	return firstLine{msg[:i], err}
}

type firstLine struct {
	msg string
	err error
}

func (e firstLine) Error() string { return e.msg }
func (e firstLine) Unwrap() error { return e.err }

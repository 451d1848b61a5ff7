package inject

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry is the production Resolver: it reads image configs from their
// registries with go-containerregistry, the library crane, ko and most of
// the field use for this. Credentials come from the Docker config file
// (~/.docker/config.json, or $DOCKER_CONFIG/config.json, with its
// credential helpers), as docker and kubectl's image pulls use them.
// Answers are cached by image reference for the life of the Registry.
type Registry struct {
	// Keychain finds credentials; nil means authn.DefaultKeychain.
	Keychain authn.Keychain
	// Transport carries the requests; nil means remote.DefaultTransport.
	Transport http.RoundTripper
	// Timeout bounds each image's look-up, all requests and retries
	// included, so that a registry that accepts and never answers cannot
	// hold a deploy; 0 means DefaultRegistryTimeout.
	Timeout time.Duration

	mu    sync.Mutex
	cache map[string]imageConfig
}

// DefaultRegistryTimeout bounds an image look-up when Registry.Timeout is
// not set.
const DefaultRegistryTimeout = 30 * time.Second

type imageConfig struct {
	entrypoint, cmd []string
	err             error
}

// ImageConfig returns the ENTRYPOINT and CMD of image. For a
// multi-platform index it reads every linux image in it and requires them
// to agree (they almost always do); when they differ, it asks for a
// platform.
func (r *Registry) ImageConfig(ctx context.Context, image string) ([]string, []string, error) {
	return r.ImageConfigPlatform(ctx, image, "")
}

// ImageConfigPlatform returns the ENTRYPOINT and CMD of image for one
// platform ("linux/arm64", "linux/arm/v7"); "" means as ImageConfig.
func (r *Registry) ImageConfigPlatform(ctx context.Context, image, platform string) ([]string, []string, error) {
	key := image + "\x00" + platform
	r.mu.Lock()
	if c, ok := r.cache[key]; ok {
		r.mu.Unlock()
		return c.entrypoint, c.cmd, c.err
	}
	r.mu.Unlock()
	e, c, err := r.lookup(ctx, image, platform)
	if err != nil {
		err = fmt.Errorf("image %s: %w", image, err)
	}
	r.mu.Lock()
	if r.cache == nil {
		r.cache = map[string]imageConfig{}
	}
	r.cache[key] = imageConfig{e, c, err}
	r.mu.Unlock()
	return e, c, err
}

func (r *Registry) lookup(ctx context.Context, image, platform string) ([]string, []string, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultRegistryTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ref, err := name.ParseReference(image)
	if err != nil {
		return nil, nil, err
	}
	keychain := r.Keychain
	if keychain == nil {
		keychain = authn.DefaultKeychain
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(keychain)}
	if r.Transport != nil {
		opts = append(opts, remote.WithTransport(r.Transport))
	}
	var want *v1.Platform
	if platform != "" {
		if want, err = v1.ParsePlatform(platform); err != nil {
			return nil, nil, fmt.Errorf("platform %q: %w", platform, err)
		}
	}
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, nil, err
	}
	if !desc.MediaType.IsIndex() {
		img, err := desc.Image()
		if err != nil {
			return nil, nil, err
		}
		return fromImage(img, want)
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return nil, nil, err
	}
	return fromIndex(idx, want)
}

// fromImage is the ENTRYPOINT and CMD of a single-platform image, which
// must be for want, if given.
func fromImage(img v1.Image, want *v1.Platform) ([]string, []string, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, nil, fmt.Errorf("reading its config: %w", err)
	}
	if want != nil && cf.OS != "" && !(platformOf(cf).Satisfies(*want)) {
		return nil, nil, fmt.Errorf("is for %s only, not %s", platformOf(cf), want)
	}
	return cf.Config.Entrypoint, cf.Config.Cmd, nil
}

// fromIndex is the ENTRYPOINT and CMD of the image for want in a
// multi-platform index or, without want, those of its linux images, which
// must all agree.
func fromIndex(idx v1.ImageIndex, want *v1.Platform) ([]string, []string, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, nil, err
	}
	type found struct {
		platform        string
		entrypoint, cmd []string
	}
	var all []found
	var offered []string
	for _, d := range m.Manifests {
		if d.Platform == nil || !d.MediaType.IsImage() || d.Platform.OS == "unknown" {
			continue // attestations and the like
		}
		offered = append(offered, d.Platform.String())
		if want != nil && !d.Platform.Satisfies(*want) || want == nil && d.Platform.OS != "linux" {
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", d.Platform, err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: reading its config: %w", d.Platform, err)
		}
		all = append(all, found{d.Platform.String(), cf.Config.Entrypoint, cf.Config.Cmd})
		if want != nil {
			break
		}
	}
	if len(all) == 0 {
		if want != nil {
			return nil, nil, fmt.Errorf("no image for platform %s in the index (it has %s)", want, strings.Join(offered, ", "))
		}
		return nil, nil, fmt.Errorf("no linux image in the index (it has %s)", strings.Join(offered, ", "))
	}
	for _, f := range all[1:] {
		if !slices.Equal(f.entrypoint, all[0].entrypoint) || !slices.Equal(f.cmd, all[0].cmd) {
			return nil, nil, fmt.Errorf("its platforms differ: %s has ENTRYPOINT %s CMD %s, %s has ENTRYPOINT %s CMD %s: choose one with --platform",
				all[0].platform, jsonList(all[0].entrypoint), jsonList(all[0].cmd), f.platform, jsonList(f.entrypoint), jsonList(f.cmd))
		}
	}
	return all[0].entrypoint, all[0].cmd, nil
}

func platformOf(cf *v1.ConfigFile) v1.Platform {
	return v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant, OSVersion: cf.OSVersion}
}

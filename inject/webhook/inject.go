package webhook

import (
	"context"

	"sigs.k8s.io/kustomize/kyaml/yaml"

	"github.com/meshgate/meshgate/inject"
)

// Inject is the inject package's transformation with the options of the
// command line, the Transform the webhook serves with.
type Inject struct {
	Options inject.Options
}

// Inject runs inject.Template over the pod with resolver for the
// entrypoints that Options.Entrypoints does not give.
func (i Inject) Inject(ctx context.Context, pod *yaml.RNode, jobLike bool, resolver Resolver) (bool, []string, error) {
	opts := i.Options
	opts.Resolver = resolver
	res, err := inject.Template(ctx, pod, jobLike, opts)
	return res.Changed, res.Notes, err
}

// Uninject runs inject.Uninject.
func (Inject) Uninject(pod *yaml.RNode) (bool, []string, error) {
	res, err := inject.Uninject(pod)
	return res.Changed, res.Notes, err
}

// NativeSidecar runs inject.NativeSidecar.
func (Inject) NativeSidecar(pod *yaml.RNode) (bool, string) {
	return inject.NativeSidecar(pod)
}

package probe

import (
	"fmt"
	"strings"
)

// Preset holds the endpoints of one mesh's proxy, as the mesh ships them.
type Preset struct {
	Name  string
	Ready string // the readiness probe spec
	Quit  string // where a POST makes the proxy exit, for Jobs; empty: none
	// NoQuit says why a mesh has no quit endpoint and what to do instead.
	NoQuit string
}

// Presets lists the meshes that --preset knows, in the order of the docs.
func Presets() []Preset {
	return []Preset{
		// pilot-agent's status server: ready once Envoy is LIVE and has
		// received its listeners and clusters.
		// The quit endpoint takes POST from loopback callers only.
		{Name: "istio", Ready: "http://localhost:15020/healthz/ready", Quit: "http://localhost:15020/quitquitquit"},
		// Ready once the proxy holds its identity certificate.
		// Shutdown is off unless the pod has the annotation
		// config.linkerd.io/proxy-admin-shutdown: enabled.
		{Name: "linkerd", Ready: "http://localhost:4191/ready", Quit: "http://localhost:4191/shutdown"},
		// Envoy's admin listener; 9901 is the port Envoy's own docs use.
		{Name: "envoy", Ready: "http://localhost:9901/ready", Quit: "http://localhost:9901/quitquitquit"},
		// consul-dataplane's Envoy admin listener. Not /graceful_startup,
		// which answers 200 even when Envoy never became ready.
		// The quit port is consul-k8s's default for consul-dataplane.
		{Name: "consul", Ready: "http://127.0.0.1:19000/ready", Quit: "http://127.0.0.1:20600/graceful_shutdown"},
		// kuma-dp's own readiness server (KUMA_READINESS_PORT, 9902 by
		// default, since Kuma 2.9). Where Envoy's admin is on a Unix
		// socket (the Kubernetes default since 2.12) it proxies /ready to
		// Envoy's, and since 3.0 it does so whatever the admin transport:
		// ready once Envoy has its configuration. In 2.9 to 2.11 with
		// admin on TCP it answered as soon as kuma-dp was up; those want
		// --probe http://localhost:9901/ready. It serves /ready and
		// nothing else, and Envoy's admin may not listen on TCP at all:
		// there is no quit endpoint to rely on.
		{Name: "kuma", Ready: "http://localhost:9902/ready",
			NoQuit: "current Kuma has no HTTP quit endpoint (Envoy's admin is on a Unix socket, and kuma-dp's readiness port serves /ready only): " +
				"run kuma-sidecar as a native sidecar so the kubelet stops it, or give --quit-url where Envoy's admin listens on TCP (http://localhost:9901/quitquitquit)"},
	}
}

// LookupPreset returns the preset with the given name.
func LookupPreset(name string) (Preset, error) {
	var names []string
	for _, p := range Presets() {
		if p.Name == name {
			return p, nil
		}
		names = append(names, p.Name)
	}
	return Preset{}, fmt.Errorf("unknown preset %q: want one of %s", name, strings.Join(names, ", "))
}

// Command meshgate-inject wires meshgate into Kubernetes manifests.
//
// Usage:
//
//	meshgate-inject [flags] [FILE|DIR|-]...     rewrite manifests, write them to stdout
//	meshgate-inject --uninject [FILE|DIR|-]...  take the wiring out again
//	meshgate-inject webhook --tls-cert FILE --tls-key FILE [flags]
//
// It reads files, directories (recursively: *.yaml, *.yml, *.json, in
// lexical order) or standard input ("-", or no argument at all, which is
// how Helm calls a post-renderer), and writes the result to standard
// output: multi-document YAML, kind: List, JSON, or a KRM ResourceList when
// that is the input (a kustomize exec function; its functionConfig, a
// ConfigMap whose data keys are the flag names, carries the options).
// Documents it does not change come out byte for byte.
//
// In each Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet,
// ReplicationController, Job and CronJob it adds an emptyDir "meshgate", an
// init container "meshgate-install" that copies meshgate into it, and, in
// each app container, a read-only mount and the prefix
// "/meshgate/meshgate [--preset P] [--quit] [flags] --" in front of the
// command as the kubelet would run it: a container without a command runs
// its image's ENTRYPOINT (and CMD), which --entrypoint and --cmd give, or
// --resolve reads from the registry. What was changed is recorded in the
// pod template's annotation meshgate.io/injected, so that a second run
// changes nothing and --uninject gives the input back.
//
// Pods whose proxy is a native sidecar are left alone: the kubelet already
// orders their start and ends their Jobs. Notes on what was done, and why
// not, go to standard error.
//
// "webhook" serves the same transformation as a mutating admission webhook
// (package inject/webhook): POST /mutate answers AdmissionReviews for new
// Pods with a JSONPatch, GET /healthz and /readyz serve the kubelet's
// probes, all over TLS from --tls-cert and --tls-key, reloaded when the
// files change. Entrypoints come from the registry with the pod's
// imagePullSecrets, read from the API server (in-cluster credentials, or
// --kubeconfig), cached by digest and bounded by --lookup-timeout. A pod it
// cannot wire is admitted unchanged with a warning naming the container and
// the reason. It logs JSON to standard error and, on SIGTERM, fails /readyz
// for --drain, then stops serving: exit 0.
//
// Exit codes:
//
//	0  done
//	1  a manifest that cannot be read or injected, or a registry that
//	   cannot be read: one line names the file, document, workload and
//	   container; nothing is written to standard output
//	2  bad flags or arguments (webhook: also a TLS pair, kubeconfig or
//	   listen address that cannot be used)
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, nil)
	stop()
	os.Exit(code)
}

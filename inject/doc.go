// Package inject wires meshgate into Kubernetes pod templates, and takes
// the wiring out again.
//
// Template rewrites one pod template in place: an emptyDir volume
// "meshgate", an init container "meshgate-install" that copies the binary
// into it, and, in each app container, a read-only mount and the prefix
// "/meshgate/meshgate [--preset P] [--quit] [flags] --" in front of the
// command the kubelet would run (reading the image's ENTRYPOINT and CMD
// through a Resolver where the container does not set its command). It
// records what it changed in the annotation meshgate.io/injected, so that
// Uninject can remove exactly that and a second Template call changes
// nothing. It leaves pod templates alone whose proxy is a native sidecar
// (NativeSidecar), that opt out, or that have nothing to wrap, and says
// why in Result.Notes.
//
// A pod template is a *yaml.RNode of sigs.k8s.io/kustomize/kyaml/yaml
// holding metadata and spec: a PodTemplateSpec, or a whole Pod. Working on
// the YAML node tree rather than on API structs keeps every field the
// package does not touch, its order, comments and style, and fields of
// newer API versions that the k8s.io/api structs of this build would not
// know.
//
// Resource and UninjectResource apply Template and Uninject to each
// workload of an object (Pod, Deployment, StatefulSet, DaemonSet,
// ReplicaSet, ReplicationController, Job, CronJob, or a List of them), and
// Stream to whole files: YAML streams, JSON, and KRM ResourceLists.
// Registry is the Resolver that reads image configs from registries.
//
// A mutating admission webhook calls Template on the Pod it is given
// (jobLike from the Pod's restartPolicy), turns Result.Notes into
// warnings, and diffs the node before and after into its JSON patch.
// Template and Uninject only read and write the node they are given; they
// are safe for concurrent use on different nodes, and a Registry is safe
// for concurrent use.
package inject

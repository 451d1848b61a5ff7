package inject

import (
	"context"
	"fmt"
	"strings"

	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// podTemplate finds the pod template of a workload: the object itself for
// a Pod, spec.template for the controllers, spec.jobTemplate.spec.template
// for a CronJob. ok is false for every other kind, and for kinds of the
// same name in other API groups (a CRD's "Deployment").
func podTemplate(obj *yaml.Node) (tmpl *yaml.Node, jobLike, ok bool) {
	kind, api := scalar(get(obj, "kind")), scalar(get(obj, "apiVersion"))
	group := ""
	if i := strings.LastIndex(api, "/"); i >= 0 {
		group = api[:i]
	}
	switch {
	case group == "" && api != "" && kind == "Pod":
		return obj, false, true
	case group == "" && api != "" && kind == "ReplicationController":
		return path(obj, "spec", "template"), false, true
	case (group == "apps" || group == "extensions") && (kind == "Deployment" || kind == "StatefulSet" || kind == "DaemonSet" || kind == "ReplicaSet"):
		return path(obj, "spec", "template"), false, true
	case group == "batch" && kind == "Job":
		return path(obj, "spec", "template"), true, true
	case group == "batch" && kind == "CronJob":
		return path(obj, "spec", "jobTemplate", "spec", "template"), true, true
	}
	return nil, false, false
}

// isList reports whether obj is a kind: List (or a typed list such as
// DeploymentList) holding items.
func isList(obj *yaml.Node) bool {
	kind := scalar(get(obj, "kind"))
	items := get(obj, "items")
	return strings.HasSuffix(kind, "List") && kind != "ResourceList" && items != nil && items.Kind == yaml.SequenceNode
}

// Resource injects every workload in obj: a Pod, Deployment, StatefulSet,
// DaemonSet, ReplicaSet, ReplicationController, Job or CronJob, or a List
// of them. Other kinds are left alone. Notes and errors name the workload
// ("Deployment/app"). The annotation meshgate.io/inject: "false" on the
// workload itself opts it out as it does on its pod template.
func Resource(ctx context.Context, obj *yaml.RNode, opts Options) (Result, error) {
	return walk(obj.YNode(), func(tmpl *yaml.Node, jobLike bool, workload *yaml.Node) (Result, error) {
		if scalar(path(workload, "metadata", "annotations", AnnotationInject)) == "false" {
			return Result{Notes: []string{AnnotationInject + ` is "false": left alone`}}, nil
		}
		return Template(ctx, yaml.NewRNode(tmpl), jobLike, opts)
	})
}

// UninjectResource takes the wiring out of every workload in obj, as
// Uninject does for one pod template.
func UninjectResource(obj *yaml.RNode) (Result, error) {
	return walk(obj.YNode(), func(tmpl *yaml.Node, _ bool, _ *yaml.Node) (Result, error) {
		return Uninject(yaml.NewRNode(tmpl))
	})
}

func walk(obj *yaml.Node, fn func(tmpl *yaml.Node, jobLike bool, workload *yaml.Node) (Result, error)) (Result, error) {
	var res Result
	if obj == nil || obj.Kind != yaml.MappingNode {
		return res, nil
	}
	if isList(obj) {
		for _, item := range get(obj, "items").Content {
			r, err := walk(item, fn)
			res.Changed = res.Changed || r.Changed
			res.Notes = append(res.Notes, r.Notes...)
			if err != nil {
				return res, err
			}
		}
		return res, nil
	}
	tmpl, jobLike, ok := podTemplate(obj)
	if !ok {
		return res, nil
	}
	id := workloadID(obj)
	if tmpl == nil || tmpl.Kind != yaml.MappingNode {
		return res, fmt.Errorf("%s: no pod template", id)
	}
	r, err := fn(tmpl, jobLike, obj)
	for _, n := range r.Notes {
		res.Notes = append(res.Notes, id+": "+n)
	}
	res.Changed = r.Changed
	if err != nil {
		return res, fmt.Errorf("%s: %w", id, err)
	}
	return res, nil
}

// workloadID names a workload in notes and errors: Kind/name, or
// Kind/namespace/name.
func workloadID(obj *yaml.Node) string {
	id := scalar(get(obj, "kind")) + "/"
	if ns := scalar(path(obj, "metadata", "namespace")); ns != "" {
		id += ns + "/"
	}
	name := scalar(path(obj, "metadata", "name"))
	if name == "" {
		name = scalar(path(obj, "metadata", "generateName")) + "*"
	}
	return id + name
}

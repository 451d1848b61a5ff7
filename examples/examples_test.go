// Package examples_test checks the Kubernetes manifests under examples/.
//
// Every document must decode strictly into its Kubernetes type, and every
// pod template, including what kustomize builds of each overlay, must wire
// meshgate the way the real binary expects (check_test.go, meshgate_test.go).
// The manifests must work without this test: nothing here changes them.
package examples_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// document is one YAML document of an example file, converted to JSON.
type document struct {
	file  string // slash-separated, relative to examples/
	index int    // position in the file, from 0
	json  []byte
}

func (d document) String() string { return fmt.Sprintf("%s[%d]", d.file, d.index) }

// separator is a line that starts a new YAML document.
var separator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

// readDocuments splits a YAML file into its documents, leaving out the
// empty ones (comments only). Duplicate keys are errors, as they are for
// kubectl.
func readDocuments(file string) ([]document, error) {
	data, err := os.ReadFile(filepath.FromSlash(file))
	if err != nil {
		return nil, err
	}
	var docs []document
	for i, part := range separator.Split(string(data), -1) {
		js, err := yaml.YAMLToJSONStrict([]byte(part))
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", file, i, err)
		}
		if !bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			docs = append(docs, document{file: file, index: i, json: js})
		}
	}
	return docs, nil
}

// decodeStrict decodes JSON into v as the API server does with
// fieldValidation=Strict: an unknown field, or one in the wrong case, is
// an error.
func decodeStrict(data []byte, v any) error {
	strict, err := kjson.UnmarshalStrict(data, v)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// typeMeta is what tells which Go type a document decodes into.
type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// kinds maps "apiVersion kind" to the Go type of the workloads the
// examples hold.
var kinds = map[string]func() any{
	"apps/v1 Deployment": func() any { return new(appsv1.Deployment) },
	"batch/v1 Job":       func() any { return new(batchv1.Job) },
	"batch/v1 CronJob":   func() any { return new(batchv1.CronJob) },
}

// decodeObject decodes a Kubernetes object strictly into its Go type.
func decodeObject(data []byte) (any, error) {
	var tm typeMeta
	if err := kjson.UnmarshalCaseSensitivePreserveInts(data, &tm); err != nil {
		return nil, err
	}
	newObj, ok := kinds[tm.APIVersion+" "+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("apiVersion %q kind %q: not a kind this test knows (add it to kinds)", tm.APIVersion, tm.Kind)
	}
	obj := newObj()
	if err := decodeStrict(data, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	return obj, nil
}

// podTemplate returns the pod template of a workload.
func podTemplate(obj any) corev1.PodTemplateSpec {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return o.Spec.Template
	case *batchv1.Job:
		return o.Spec.Template
	case *batchv1.CronJob:
		return o.Spec.JobTemplate.Spec.Template
	}
	panic(fmt.Sprintf("podTemplate: no pod template in %T", obj))
}

// walkExamples returns the YAML files under examples/ that are manifests
// of their own, and the directories of kustomizations, whose files are
// checked through what kustomize builds of them (kustomize_test.go).
// inject/ holds manifests without meshgate and webhook/ the injector's
// deployment: inject_test.go and webhook_test.go check them.
func walkExamples(t *testing.T) (manifests, kustomizations []string) {
	t.Helper()
	err := filepath.WalkDir(".", func(p string, e fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case e.IsDir() && (p == "inject" || p == "webhook"):
			return fs.SkipDir
		case e.IsDir():
			if _, err := os.Stat(filepath.Join(p, "kustomization.yaml")); err == nil {
				kustomizations = append(kustomizations, filepath.ToSlash(p))
				return fs.SkipDir
			}
		case path.Ext(p) == ".yaml" || path.Ext(p) == ".yml":
			manifests = append(manifests, filepath.ToSlash(p))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return manifests, kustomizations
}

// TestExamples checks each workload: it decodes strictly, and its pod
// template is wired and hardened. What the comments say of the image's
// entrypoint must be what the Dockerfile builds.
func TestExamples(t *testing.T) {
	b := meshgate(t)
	df, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	entrypoint := regexp.MustCompile(`(?m)^ENTRYPOINT \["([^"]+)"\]`).FindAllSubmatch(df, -1)
	claims := 0
	files, _ := walkExamples(t)
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, claim := range regexp.MustCompile(`entrypoint is (\S+?);`).FindAllSubmatch(data, -1) {
			for _, e := range entrypoint {
				if claims++; !bytes.Equal(claim[1], e[1]) {
					t.Errorf("%s says the image's entrypoint is %s; the Dockerfile's is %s", file, claim[1], e[1])
				}
			}
		}
		docs, err := readDocuments(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range docs {
			t.Run(d.String(), func(t *testing.T) {
				t.Parallel()
				obj, err := decodeObject(d.json)
				if err != nil {
					t.Fatal(err)
				}
				for _, err := range checkPod(b, podTemplate(obj)) {
					t.Error(err)
				}
			})
		}
	}
	if claims == 0 {
		t.Error("found no ENTRYPOINT in the Dockerfile, or no comment that names it")
	}
}

// TestDecodeStrict checks that the decoding the examples go through
// rejects what the API server would reject.
func TestDecodeStrict(t *testing.T) {
	for yml, want := range map[string]string{
		"apiVersion: apps/v1\nkind: Deployment\nspec:\n  replicas: 1\n": "",
		"apiVersion: apps/v1\nkind: Deployment\nspec:\n  replicaz: 1\n": `unknown field "spec.replicaz"`,
		"apiVersion: apps/v1\nkind: Deployment\nspec:\n  Replicas: 1\n": `unknown field "spec.Replicas"`,
		"apiVersion: apps/v1beta1\nkind: Deployment\n":                  `apiVersion "apps/v1beta1" kind "Deployment": not a kind this test knows`,
	} {
		js, err := yaml.YAMLToJSONStrict([]byte(yml))
		if err == nil {
			_, err = decodeObject(js)
		}
		if (err == nil) != (want == "") || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("%q: got %v, want an error containing %q (none if empty)", yml, err, want)
		}
	}
}

// Package examples_test checks the Kubernetes manifests under examples/.
//
// Every document of every *.yaml file must decode strictly into its
// Kubernetes type (or, for kustomize files, into the fields this test
// knows), and every pod template, including what each kustomize overlay
// builds, must wire meshgate the way the binary expects: an emptyDir that
// an init container fills with "install DIR", mounted wherever meshgate
// runs, called with flags and variables that the real binary accepts (see
// meshgate_test.go), ending the way its restartPolicy needs, with a
// hardened securityContext.
//
// The manifests must work without this test: nothing here changes them.
package examples_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
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
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			continue
		}
		docs = append(docs, document{file: file, index: i, json: js})
	}
	return docs, nil
}

// decodeStrict decodes JSON into v, failing on fields that v does not have.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the object")
	}
	// encoding/json matches field names without regard to case, where the
	// API server rejects "runasnonroot": look for keys lost on the way back.
	var in, out any
	if err := json.Unmarshal(data, &in); err != nil {
		return err
	}
	back, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(back, &out); err != nil {
		return err
	}
	return lostKeys("", in, out)
}

// lostKeys reports the first key of in that out lacks while in gives it a
// value other than a zero one (zero values vanish through omitempty).
func lostKeys(at string, in, out any) error {
	switch in := in.(type) {
	case map[string]any:
		out, _ := out.(map[string]any)
		keys := make([]string, 0, len(in))
		for k := range in {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			o, ok := out[k]
			if !ok {
				if isZero(in[k]) {
					continue
				}
				return fmt.Errorf("unknown field %q (misspelt, or the wrong case?)", strings.TrimPrefix(at+"."+k, "."))
			}
			if err := lostKeys(at+"."+k, in[k], o); err != nil {
				return err
			}
		}
	case []any:
		out, _ := out.([]any)
		for i := range in {
			if i < len(out) {
				if err := lostKeys(fmt.Sprintf("%s[%d]", at, i), in[i], out[i]); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func isZero(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Map, reflect.Slice:
		return rv.Len() == 0
	}
	return rv.IsZero()
}

// typeMeta is what tells which Go type a document decodes into.
type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// kinds maps "apiVersion kind" to the Go type of the workloads the
// examples may hold.
var kinds = map[string]func() any{
	"v1 Pod":              func() any { return new(corev1.Pod) },
	"apps/v1 Deployment":  func() any { return new(appsv1.Deployment) },
	"apps/v1 StatefulSet": func() any { return new(appsv1.StatefulSet) },
	"apps/v1 DaemonSet":   func() any { return new(appsv1.DaemonSet) },
	"batch/v1 Job":        func() any { return new(batchv1.Job) },
	"batch/v1 CronJob":    func() any { return new(batchv1.CronJob) },
}

// decodeObject decodes a Kubernetes object strictly into its Go type.
func decodeObject(data []byte) (any, error) {
	var tm typeMeta
	if err := json.Unmarshal(data, &tm); err != nil {
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

// podTemplate returns the pod template of a workload (for a Pod, its
// metadata and spec).
func podTemplate(obj any) corev1.PodTemplateSpec {
	switch o := obj.(type) {
	case *corev1.Pod:
		return corev1.PodTemplateSpec{ObjectMeta: o.ObjectMeta, Spec: o.Spec}
	case *appsv1.Deployment:
		return o.Spec.Template
	case *appsv1.StatefulSet:
		return o.Spec.Template
	case *appsv1.DaemonSet:
		return o.Spec.Template
	case *batchv1.Job:
		return o.Spec.Template
	case *batchv1.CronJob:
		return o.Spec.JobTemplate.Spec.Template
	}
	panic(fmt.Sprintf("podTemplate: no pod template in %T", obj))
}

// examples is everything under examples/, sorted out by what each file is.
type examples struct {
	docs           []document               // every document, kustomize files included
	kustomizations map[string]kustomization // by directory, slash-separated
	patches        map[string]bool          // files that a kustomization uses as a patch
	resources      map[string]bool          // files that a kustomization uses as a resource
}

// isKustomization tells kustomize's own files by their name.
func isKustomization(file string) bool {
	switch path.Base(file) {
	case "kustomization.yaml", "kustomization.yml", "Kustomization":
		return true
	}
	return false
}

func loadExamples(t *testing.T) examples {
	t.Helper()
	ex := examples{
		kustomizations: map[string]kustomization{},
		patches:        map[string]bool{},
		resources:      map[string]bool{},
	}
	err := filepath.WalkDir(".", func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.IsDir() && p == "inject" {
			// Manifests without meshgate, and a Helm chart: inject_test.go
			// checks what meshgate-inject makes of them.
			return fs.SkipDir
		}
		if err == nil && e.IsDir() && p == "webhook" {
			// The injector's own deployment, not an app: webhook_test.go
			// checks it.
			return fs.SkipDir
		}
		if err != nil || e.IsDir() {
			return err
		}
		file := filepath.ToSlash(p)
		if ext := path.Ext(file); ext != ".yaml" && ext != ".yml" && !isKustomization(file) {
			return nil
		}
		docs, err := readDocuments(file)
		if err != nil {
			return err
		}
		ex.docs = append(ex.docs, docs...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ex.docs) == 0 {
		t.Fatal("found no YAML documents under examples/")
	}
	for _, d := range ex.docs {
		if !isKustomization(d.file) {
			continue
		}
		k, err := decodeKustomization(d.json)
		if err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		dir := path.Dir(d.file)
		ex.kustomizations[dir] = k
		for _, r := range k.Resources {
			ex.resources[path.Join(dir, r)] = true
		}
		for _, p := range k.Patches {
			if p.Path != "" {
				ex.patches[path.Join(dir, p.Path)] = true
			}
		}
	}
	return ex
}

// topLevel lists the directories of the kustomizations that no other one
// uses: the overlays a user builds.
func (ex examples) topLevel() []string {
	used := map[string]bool{}
	for dir, k := range ex.kustomizations {
		for _, r := range k.Resources {
			used[path.Join(dir, r)] = true
		}
		for _, c := range k.Components {
			used[path.Join(dir, c)] = true
		}
	}
	var top []string
	for dir, k := range ex.kustomizations {
		if k.Kind == "Kustomization" && !used[dir] {
			top = append(top, dir)
		}
	}
	sort.Strings(top)
	return top
}

// TestExamples checks each document on its own: kustomize files and the
// patches they name decode strictly; every workload decodes strictly and
// its pod template is wired and hardened. A workload that serves as a
// kustomize resource may leave meshgate out (the overlay adds it).
func TestExamples(t *testing.T) {
	b := meshgate(t)
	ex := loadExamples(t)
	for _, d := range ex.docs {
		t.Run(d.String(), func(t *testing.T) {
			t.Parallel()
			switch {
			case isKustomization(d.file):
				// Decoded strictly by loadExamples already.
			case ex.patches[d.file]:
				if err := checkPatch(d.json); err != nil {
					t.Errorf("patch: %v", err)
				}
			default:
				obj, err := decodeObject(d.json)
				if err != nil {
					t.Fatal(err)
				}
				for _, err := range checkPod(b, podTemplate(obj), !ex.resources[d.file]) {
					t.Error(err)
				}
			}
		})
	}
}

// TestKustomizeOverlays builds each overlay the way kustomize does and
// checks the pod templates it makes.
func TestKustomizeOverlays(t *testing.T) {
	b := meshgate(t)
	ex := loadExamples(t)
	top := ex.topLevel()
	if len(top) == 0 {
		t.Fatal("found no kustomize overlay")
	}
	for _, dir := range top {
		t.Run(dir, func(t *testing.T) {
			objs, err := build(dir)
			if err != nil {
				t.Fatalf("build: %v", err)
			}
			if len(objs) == 0 {
				t.Fatal("build: got no objects, want at least one workload")
			}
			for _, o := range objs {
				data, err := json.Marshal(o)
				if err != nil {
					t.Fatal(err)
				}
				obj, err := decodeObject(data)
				if err != nil {
					t.Fatalf("built object: %v", err)
				}
				for _, err := range checkPod(b, podTemplate(obj), true) {
					t.Errorf("%s: %v", objectName(o), err)
				}
			}
		})
	}
}

// TestDecodeStrict checks that the decoding the examples go through
// rejects what kubectl would reject.
func TestDecodeStrict(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // part of the error; "" for none
	}{
		{"good", "apiVersion: v1\nkind: Pod\nspec:\n  containers: [{name: a, image: b}]\n", ""},
		{"unknown field", "apiVersion: v1\nkind: Pod\nspec:\n  containerz: []\n", `unknown field "containerz"`},
		{"wrong case", "apiVersion: v1\nkind: Pod\nspec:\n  hostname: x\n  HostNetwork: true\n", `unknown field "spec.HostNetwork"`},
		{"duplicate key", "apiVersion: v1\nkind: Pod\nkind: Pod\n", `already set in map`},
		{"unknown kind", "apiVersion: v1\nkind: Pdo\n", `kind "Pdo": not a kind this test knows`},
		{"wrong apiVersion", "apiVersion: apps/v1beta1\nkind: Deployment\n", `apiVersion "apps/v1beta1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js, err := yaml.YAMLToJSONStrict([]byte(tt.yaml))
			if err == nil {
				_, err = decodeObject(js)
			}
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// What the manifests' comments say of the image is what the Dockerfile
// builds: its entrypoint.
func TestCommentsNameTheImagesEntrypoint(t *testing.T) {
	df, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	entry := regexp.MustCompile(`(?m)^ENTRYPOINT \["([^"]+)"\]`).FindAllStringSubmatch(string(df), -1)
	if len(entry) == 0 {
		t.Fatal("no ENTRYPOINT in the Dockerfile")
	}
	files, _ := filepath.Glob("*/*.yaml")
	claim := regexp.MustCompile(`entrypoint is (\S+?);`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range claim.FindAllStringSubmatch(string(b), -1) {
			for _, e := range entry {
				if m[1] != e[1] {
					t.Errorf("%s says the image's entrypoint is %s; the Dockerfile's is %s", f, m[1], e[1])
				}
			}
		}
	}
}

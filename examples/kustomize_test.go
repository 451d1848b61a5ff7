package examples_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"sigs.k8s.io/yaml"
)

// kustomization holds the fields of kustomization.yaml that the examples
// use. Decoding is strict, so a field this test does not build from fails
// instead of being skipped.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources,omitempty"`
	Components []string `json:"components,omitempty"`
	Patches    []patch  `json:"patches,omitempty"`
}

// patch is one entry of a kustomization's patches: a strategic merge patch
// or a JSON patch (RFC 6902), in a file (path) or inline (patch).
type patch struct {
	Path   string  `json:"path,omitempty"`
	Patch  string  `json:"patch,omitempty"`
	Target *target `json:"target,omitempty"`
}

// target selects the objects a patch applies to; empty fields match all.
type target struct {
	Group   string `json:"group,omitempty"`
	Version string `json:"version,omitempty"`
	Kind    string `json:"kind,omitempty"`
	Name    string `json:"name,omitempty"`
}

// jsonOp is one operation of a JSON patch.
type jsonOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	From  string          `json:"from,omitempty"`
	Value json.RawMessage `json:"value,omitempty"`
}

func decodeKustomization(data []byte) (kustomization, error) {
	var k kustomization
	if err := decodeStrict(data, &k); err != nil {
		return k, fmt.Errorf("kustomization: %w", err)
	}
	want := map[string]string{
		"Kustomization": "kustomize.config.k8s.io/v1beta1",
		"Component":     "kustomize.config.k8s.io/v1alpha1",
	}[k.Kind]
	if want == "" || k.APIVersion != want {
		return k, fmt.Errorf("kustomization: got apiVersion %q kind %q, want kind Kustomization (v1beta1) or Component (v1alpha1)", k.APIVersion, k.Kind)
	}
	for i, p := range k.Patches {
		if (p.Path == "") == (p.Patch == "") {
			return k, fmt.Errorf("patches[%d]: got path %q and an inline patch of %d bytes, want exactly one of them", i, p.Path, len(p.Patch))
		}
		if p.Patch != "" {
			js, err := yaml.YAMLToJSONStrict([]byte(p.Patch))
			if err != nil {
				return k, fmt.Errorf("patches[%d]: %w", i, err)
			}
			if err := checkPatch(js); err != nil {
				return k, fmt.Errorf("patches[%d]: %w", i, err)
			}
		}
	}
	return k, nil
}

// checkPatch decodes a patch strictly: a JSON patch into its operations, a
// strategic merge patch into the Go type of its kind.
func checkPatch(data []byte) error {
	if isJSONPatch(data) {
		_, err := decodeJSONPatch(data)
		return err
	}
	_, err := decodeObject(data)
	return err
}

func isJSONPatch(data []byte) bool {
	return bytes.HasPrefix(bytes.TrimSpace(data), []byte("["))
}

func decodeJSONPatch(data []byte) ([]jsonOp, error) {
	var ops []jsonOp
	if err := decodeStrict(data, &ops); err != nil {
		return nil, fmt.Errorf("JSON patch: %w", err)
	}
	for i, op := range ops {
		switch op.Op {
		case "add", "replace", "test":
			if op.Value == nil {
				return nil, fmt.Errorf("JSON patch [%d]: %s needs a value", i, op.Op)
			}
		case "remove":
		case "move", "copy":
			if !strings.HasPrefix(op.From, "/") {
				return nil, fmt.Errorf("JSON patch [%d]: got from %q, want a JSON pointer", i, op.From)
			}
		default:
			return nil, fmt.Errorf("JSON patch [%d]: got op %q, want add, remove, replace, move, copy or test", i, op.Op)
		}
		if !strings.HasPrefix(op.Path, "/") {
			return nil, fmt.Errorf("JSON patch [%d]: got path %q, want a JSON pointer", i, op.Path)
		}
	}
	return ops, nil
}

// object is a Kubernetes object as generic JSON.
type object = map[string]any

func objectName(o object) string {
	kind, _ := o["kind"].(string)
	meta, _ := o["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	return kind + "/" + name
}

// build does what "kustomize build DIR" does with the features the
// examples use: resources (files and directories), components, and
// patches with targets.
func build(dir string) ([]object, error) {
	return accumulate(dir, "Kustomization", nil)
}

// accumulate adds the resources of the kustomization in dir to objs, then
// applies its components and its patches to them all, in kustomize's
// order.
func accumulate(dir, kind string, objs []object) ([]object, error) {
	data, err := os.ReadFile(filepath.Join(filepath.FromSlash(dir), "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	k, err := decodeKustomization(js)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	if k.Kind != kind {
		return nil, fmt.Errorf("%s: got kind %s, want %s", dir, k.Kind, kind)
	}
	for _, r := range k.Resources {
		p := path.Join(dir, r)
		fi, err := os.Stat(filepath.FromSlash(p))
		if err != nil {
			return nil, err
		}
		if fi.IsDir() {
			if objs, err = accumulate(p, "Kustomization", objs); err != nil {
				return nil, err
			}
			continue
		}
		docs, err := readDocuments(p)
		if err != nil {
			return nil, err
		}
		for _, d := range docs {
			var o object
			if err := json.Unmarshal(d.json, &o); err != nil {
				return nil, fmt.Errorf("%s: %w", d, err)
			}
			objs = append(objs, o)
		}
	}
	for _, c := range k.Components {
		if objs, err = accumulate(path.Join(dir, c), "Component", objs); err != nil {
			return nil, err
		}
	}
	for i, p := range k.Patches {
		if objs, err = applyPatch(dir, p, objs); err != nil {
			return nil, fmt.Errorf("%s: patches[%d]: %w", dir, i, err)
		}
	}
	return objs, nil
}

// applyPatch applies one patch to every object its target selects.
func applyPatch(dir string, p patch, objs []object) ([]object, error) {
	text := []byte(p.Patch)
	if p.Path != "" {
		var err error
		if text, err = os.ReadFile(filepath.FromSlash(path.Join(dir, p.Path))); err != nil {
			return nil, err
		}
	}
	js, err := yaml.YAMLToJSONStrict(text)
	if err != nil {
		return nil, err
	}
	var ops []jsonOp
	var smp object
	if isJSONPatch(js) {
		if p.Target == nil {
			return nil, errors.New("a JSON patch needs a target")
		}
		if ops, err = decodeJSONPatch(js); err != nil {
			return nil, err
		}
	} else if err := json.Unmarshal(js, &smp); err != nil {
		return nil, err
	}
	sel := p.Target
	if sel == nil {
		// A strategic merge patch without a target names its object.
		var tm typeMeta
		_ = json.Unmarshal(js, &tm)
		sel = &target{Kind: tm.Kind, Name: nameOf(smp)}
	} else if smp != nil {
		// With a target, kustomize ignores the name the patch carries.
		if meta, ok := smp["metadata"].(map[string]any); ok {
			delete(meta, "name")
			delete(meta, "namespace")
		}
	}
	matched := 0
	for i, o := range objs {
		if !sel.matches(o) {
			continue
		}
		matched++
		if ops != nil {
			v, err := applyJSONPatch(o, ops)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", objectName(o), err)
			}
			objs[i] = v.(object)
			continue
		}
		if objs[i], err = strategicMerge(o, smp); err != nil {
			return nil, fmt.Errorf("%s: %w", objectName(o), err)
		}
	}
	if matched == 0 {
		return nil, fmt.Errorf("target %+v: matches no object", *sel)
	}
	return objs, nil
}

func nameOf(o object) string {
	meta, _ := o["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	return name
}

func (t target) matches(o object) bool {
	apiVersion, _ := o["apiVersion"].(string)
	group, version, ok := strings.Cut(apiVersion, "/")
	if !ok {
		group, version = "", apiVersion
	}
	kind, _ := o["kind"].(string)
	return (t.Group == "" || t.Group == group) &&
		(t.Version == "" || t.Version == version) &&
		(t.Kind == "" || t.Kind == kind) &&
		(t.Name == "" || t.Name == nameOf(o))
}

// strategicMerge applies a strategic merge patch with the Kubernetes
// implementation, which takes the merge keys from the Go type.
func strategicMerge(o, smp object) (object, error) {
	var tm typeMeta
	orig, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	_ = json.Unmarshal(orig, &tm)
	newObj, ok := kinds[tm.APIVersion+" "+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("apiVersion %q kind %q: not a kind this test knows", tm.APIVersion, tm.Kind)
	}
	p, err := json.Marshal(smp)
	if err != nil {
		return nil, err
	}
	merged, err := strategicpatch.StrategicMergePatch(orig, p, newObj())
	if err != nil {
		return nil, err
	}
	var out object
	err = json.Unmarshal(merged, &out)
	return out, err
}

// applyJSONPatch applies the operations of a JSON patch that the examples
// use: add only, which is all that a wrap needs.
func applyJSONPatch(doc any, ops []jsonOp) (any, error) {
	for i, op := range ops {
		if op.Op != "add" {
			return nil, fmt.Errorf("[%d]: op %q: this test applies only add", i, op.Op)
		}
		var v any
		if err := json.Unmarshal(op.Value, &v); err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		tokens := strings.Split(op.Path, "/")[1:]
		for j, tok := range tokens {
			tokens[j] = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		}
		var err error
		if doc, err = add(doc, tokens, v); err != nil {
			return nil, fmt.Errorf("[%d] add %s: %w", i, op.Path, err)
		}
	}
	return doc, nil
}

// add does RFC 6902's add: set a member, or insert into a list before the
// index given ("-" appends). Every parent must exist.
func add(doc any, tokens []string, v any) (any, error) {
	if len(tokens) == 0 {
		return v, nil
	}
	tok, last := tokens[0], len(tokens) == 1
	switch d := doc.(type) {
	case map[string]any:
		if last {
			d[tok] = v
			return d, nil
		}
		child, ok := d[tok]
		if !ok {
			return nil, fmt.Errorf("missing member %q", tok)
		}
		c, err := add(child, tokens[1:], v)
		d[tok] = c
		return d, err
	case []any:
		if last && tok == "-" {
			return append(d, v), nil
		}
		i, err := strconv.Atoi(tok)
		if err != nil || i < 0 || i > len(d) || (!last && i == len(d)) {
			return nil, fmt.Errorf("index %q out of range for a list of %d", tok, len(d))
		}
		if last {
			return append(d[:i], append([]any{v}, d[i:]...)...), nil
		}
		c, err := add(d[i], tokens[1:], v)
		d[i] = c
		return d, err
	}
	return nil, fmt.Errorf("cannot add into %T at %q", doc, tok)
}

// TestKustomizeMatchesKubectl checks that the overlays build with the real
// kustomize (the one in kubectl), and to the same objects as build, so
// that TestKustomizeOverlays checks what users get.
func TestKustomizeMatchesKubectl(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not found; TestKustomizeOverlays still checks the overlays")
	}
	for _, dir := range loadExamples(t).topLevel() {
		t.Run(dir, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var stderr bytes.Buffer
			cmd := exec.CommandContext(ctx, kubectl, "kustomize", filepath.FromSlash(dir))
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.Bytes())
			}
			var got []string
			for i, part := range separator.Split(string(out), -1) {
				js, err := yaml.YAMLToJSONStrict([]byte(part))
				if err != nil {
					t.Fatalf("kubectl kustomize output [%d]: %v", i, err)
				}
				if !bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
					got = append(got, normalize(t, js))
				}
			}
			objs, err := build(dir)
			if err != nil {
				t.Fatalf("build: %v", err)
			}
			var want []string
			for _, o := range objs {
				js, err := json.Marshal(o)
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, normalize(t, js))
			}
			sort.Strings(got)
			sort.Strings(want)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("kubectl kustomize %s:\ngot  %s\nwant %s", dir, strings.Join(got, "\n     "), strings.Join(want, "\n     "))
			}
		})
	}
}

// normalize decodes an object into its Go type and encodes it again, so
// that two builds compare equal when they mean the same.
func normalize(t *testing.T, data []byte) string {
	t.Helper()
	obj, err := decodeObject(data)
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return string(js)
}

// TestApplyJSONPatch checks the add operation against RFC 6902 and against
// what kustomize does with a missing list.
func TestApplyJSONPatch(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		ops  string
		want string // the result, or "error: " and part of the error
	}{
		{"insert at the front", `{"c":["a","b"]}`, `[{"op":"add","path":"/c/0","value":"x"},{"op":"add","path":"/c/1","value":"y"}]`, `{"c":["x","y","a","b"]}`},
		{"append", `{"c":["a"]}`, `[{"op":"add","path":"/c/-","value":"x"}]`, `{"c":["a","x"]}`},
		{"insert at the end", `{"c":["a"]}`, `[{"op":"add","path":"/c/1","value":"x"}]`, `{"c":["a","x"]}`},
		{"new member", `{"m":{}}`, `[{"op":"add","path":"/m/a~1b","value":1}]`, `{"m":{"a/b":1}}`},
		{"missing list", `{"m":{}}`, `[{"op":"add","path":"/m/c/-","value":"x"}]`, `error: missing member "c"`},
		{"past the end", `{"c":[]}`, `[{"op":"add","path":"/c/1","value":"x"}]`, `error: index "1" out of range`},
		{"other op", `{}`, `[{"op":"remove","path":"/a"}]`, `error: [0]: op "remove"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var doc any
			if err := json.Unmarshal([]byte(tt.doc), &doc); err != nil {
				t.Fatal(err)
			}
			ops, err := decodeJSONPatch([]byte(tt.ops))
			if err != nil {
				t.Fatal(err)
			}
			out, err := applyJSONPatch(doc, ops)
			if want, ok := strings.CutPrefix(tt.want, "error: "); ok {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("got error %v, want one containing %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want %s", err, tt.want)
			}
			if got, _ := json.Marshal(out); string(got) != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

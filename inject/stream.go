package inject

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// Stream rewrites whole files of manifests: multi-document YAML, JSON, or
// a KRM ResourceList (a kustomize function's input). Documents that it
// does not change come out byte for byte as they went in; a changed YAML
// document is written back by kyaml, which keeps its comments, key order,
// quoting and list indentation, with its blank lines put back (overlay),
// and a changed JSON document is written as JSON with the input's
// indentation and key order.
type Stream struct {
	Options Options
	// Uninject takes the wiring out instead of putting it in.
	Uninject bool
	// Registry is the Resolver used when a ResourceList's functionConfig
	// asks for resolve: "true" (Options.Resolver is used otherwise).
	Registry Resolver
	// Note receives one line for each note, prefixed with the file's name.
	Note func(string)
}

// Process rewrites the content of one file. name is used in errors and
// notes only. On error, the output is nil: never half a stream.
func (s *Stream) Process(ctx context.Context, name string, in []byte) ([]byte, error) {
	docs := splitDocuments(in)
	trimmed := bytes.TrimSpace(in)
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') && (len(docs) == 1 || json.Valid(trimmed)) {
		// JSON, and not a YAML stream that starts with a JSON document.
		return s.processJSON(ctx, name, in)
	}
	var out bytes.Buffer
	for i, d := range docs {
		node, err := decode(d.body)
		if err != nil {
			return nil, fmt.Errorf("%s:%s", name, yamlError(err, d.line))
		}
		if node == nil { // comments only, or empty
			out.Write(d.sep)
			out.Write(d.body)
			continue
		}
		obj := node.Content[0]
		original, err := decode(d.body) // kept as parsed, for overlay
		if err != nil {
			return nil, err
		}
		var changed bool
		if isResourceList(obj) && len(docs) == 1 {
			err = s.resourceList(ctx, name, obj)
			changed = true
		} else {
			changed, err = s.object(ctx, fmt.Sprintf("%s: document %d", name, i+1), obj)
		}
		if err != nil {
			return nil, err
		}
		out.Write(d.sep)
		if !changed {
			out.Write(d.body)
			continue
		}
		b, err := reencode(node, original, d.body)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %v", name, i+1, err)
		}
		out.Write(b)
	}
	return out.Bytes(), nil
}

// reencode writes node, the changed document whose text was body and
// which decoded as original, in the style of body: its list indentation,
// its blank lines where they can be kept, its line ends, and its final
// newline or lack of one.
func reencode(node, original *yaml.Node, body []byte) ([]byte, error) {
	crlf := bytes.Contains(body, []byte("\r\n"))
	if crlf { // written on Windows: kyaml writes "\n"
		body = bytes.ReplaceAll(body, []byte("\r\n"), []byte("\n"))
	}
	style := yaml.SequenceIndentStyle(yaml.DeriveSeqIndentStyle(string(body)))
	b, err := encode(node, style)
	if err != nil {
		return nil, err
	}
	// What kyaml drops (blank lines) is put back where it can be.
	if before, err := encode(original, style); err == nil {
		b = overlay(withNewline(body), before, b)
	}
	if !bytes.HasSuffix(body, []byte("\n")) {
		b = bytes.TrimSuffix(b, []byte("\n"))
	}
	if crlf {
		b = bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
	}
	return b, nil
}

func encode(node *yaml.Node, style yaml.SequenceIndentStyle) ([]byte, error) {
	var buf bytes.Buffer
	if err := yaml.NewEncoderWithOptions(&buf, &yaml.EncoderOptions{SeqIndent: style}).Encode(node); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func withNewline(b []byte) []byte {
	if bytes.HasSuffix(b, []byte("\n")) {
		return b
	}
	return append(b[:len(b):len(b)], '\n')
}

// object injects (or uninjects) one object and writes its notes.
func (s *Stream) object(ctx context.Context, where string, obj *yaml.Node) (bool, error) {
	var (
		res Result
		err error
	)
	if s.Uninject {
		res, err = UninjectResource(yaml.NewRNode(obj))
	} else {
		res, err = Resource(ctx, yaml.NewRNode(obj), s.Options)
	}
	if err != nil {
		return false, fmt.Errorf("%s: %w", where, err)
	}
	if s.Note != nil {
		for _, n := range res.Notes {
			s.Note(where + ": " + n)
		}
	}
	return res.Changed, nil
}

type document struct {
	sep  []byte // the "---" line that opened it, if any
	body []byte
	line int // the line its body starts on, from 1
}

// separator is a "---" line, alone or with a comment.
var separator = regexp.MustCompile(`^---[ \t]*(#.*)?\r?\n?$`)

// splitDocuments cuts a YAML stream at its "---" lines. A document
// separator starts at the first column; block scalars are indented, so
// their content never does.
func splitDocuments(in []byte) []document {
	var docs []document
	cur := document{line: 1}
	start, line := 0, 1
	for pos := 0; pos < len(in); {
		end := bytes.IndexByte(in[pos:], '\n')
		if end < 0 {
			end = len(in)
		} else {
			end += pos + 1
		}
		l := in[pos:end]
		if separator.Match(l) {
			cur.body = in[start:pos]
			if pos > 0 || len(cur.sep) > 0 {
				docs = append(docs, cur)
			}
			cur = document{sep: l, line: line + 1}
			start = end
		}
		pos = end
		line++
	}
	cur.body = in[start:]
	docs = append(docs, cur)
	return docs
}

// decode parses one YAML document; nil means it holds no object.
func decode(body []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(body))
	var node yaml.Node
	if err := dec.Decode(&node); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		if err == nil {
			err = errors.New("yaml: more than one document where one was expected")
		}
		return nil, err
	}
	if len(node.Content) == 0 || null(node.Content[0]) {
		return nil, nil
	}
	if node.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("yaml: line %d: a manifest must be a mapping", node.Content[0].Line)
	}
	return &node, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// yamlError turns yaml.v3's error into "LINE: message", the line counted
// in the whole file.
func yamlError(err error, first int) string {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return fmt.Sprintf("%d: %s", first+n-1, strings.TrimPrefix(msg, m[0]))
	}
	return fmt.Sprintf("%d: %s", first, strings.TrimPrefix(msg, "yaml: "))
}

func (s *Stream) processJSON(ctx context.Context, name string, in []byte) ([]byte, error) {
	var raw json.RawMessage
	if err := json.Unmarshal(in, &raw); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return nil, fmt.Errorf("%s:%d: %v", name, lineAt(in, syn.Offset), err)
		case errors.As(err, &typ):
			return nil, fmt.Errorf("%s:%d: %v", name, lineAt(in, typ.Offset), err)
		}
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	node, err := decode(in)
	if err != nil {
		return nil, fmt.Errorf("%s:%s", name, yamlError(err, 1))
	}
	if node == nil {
		return in, nil
	}
	obj := node.Content[0]
	var changed bool
	if isResourceList(obj) {
		err, changed = s.resourceList(ctx, name, obj), true
	} else {
		changed, err = s.object(ctx, name, obj)
	}
	if err != nil {
		return nil, err
	}
	if !changed {
		return in, nil
	}
	var buf bytes.Buffer
	if err := writeJSON(&buf, obj); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	out := buf.Bytes()
	if indent := jsonIndent(in); indent != "" {
		var ind bytes.Buffer
		if err := json.Indent(&ind, out, "", indent); err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		out = ind.Bytes()
	}
	if bytes.HasSuffix(in, []byte("\n")) {
		out = append(out, '\n')
	}
	return out, nil
}

func lineAt(in []byte, offset int64) int {
	return bytes.Count(in[:min(int(offset), len(in))], []byte("\n")) + 1
}

// jsonIndent returns the indentation of the input's second line, or ""
// for compact JSON.
func jsonIndent(in []byte) string {
	lines := bytes.SplitN(in, []byte("\n"), 3)
	if len(lines) < 2 {
		return ""
	}
	l := lines[1]
	return string(l[:len(l)-len(bytes.TrimLeft(l, " \t"))])
}

// writeJSON writes a node as compact JSON, keys in their order.
func writeJSON(w *bytes.Buffer, n *yaml.Node) error {
	switch n.Kind {
	case yaml.DocumentNode:
		return writeJSON(w, n.Content[0])
	case yaml.MappingNode:
		w.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			if i > 0 {
				w.WriteByte(',')
			}
			k, _ := json.Marshal(n.Content[i].Value)
			w.Write(k)
			w.WriteByte(':')
			if err := writeJSON(w, n.Content[i+1]); err != nil {
				return err
			}
		}
		w.WriteByte('}')
	case yaml.SequenceNode:
		w.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				w.WriteByte(',')
			}
			if err := writeJSON(w, c); err != nil {
				return err
			}
		}
		w.WriteByte(']')
	case yaml.ScalarNode:
		switch {
		case n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 || n.Tag == yaml.NodeTagString:
			b, _ := json.Marshal(n.Value)
			w.Write(b)
		case n.Tag == yaml.NodeTagNull:
			w.WriteString("null")
		default: // numbers and booleans, as written
			w.WriteString(n.Value)
		}
	case yaml.AliasNode:
		return writeJSON(w, n.Alias)
	}
	return nil
}

func isResourceList(obj *yaml.Node) bool {
	return scalar(get(obj, "kind")) == "ResourceList" && strings.HasPrefix(scalar(get(obj, "apiVersion")), "config.kubernetes.io/")
}

// functionConfigKeys are the data keys of a ConfigMap functionConfig: the
// flag names of meshgate-inject.
var functionConfigKeys = []string{"image", "containers", "preset", "gate-flag", "entrypoint", "cmd", "resolve", "platform", "uninject"}

// resourceList runs as a KRM function: the items are the resources, the
// functionConfig (a ConfigMap whose data keys are flag names) carries the
// options, over those of the Stream.
func (s *Stream) resourceList(ctx context.Context, name string, rl *yaml.Node) error {
	sub := *s
	if fc := get(rl, "functionConfig"); fc != nil && !null(fc) {
		if err := sub.configure(fc); err != nil {
			return fmt.Errorf("%s: functionConfig: %w", name, err)
		}
	}
	items := get(rl, "items")
	if items == nil || null(items) {
		return nil
	}
	if items.Kind != yaml.SequenceNode {
		return fmt.Errorf("%s: items is not a list", name)
	}
	for i, item := range items.Content {
		where := fmt.Sprintf("%s: item %d", name, i+1)
		if p := scalar(path(item, "metadata", "annotations", "config.kubernetes.io/path")); p != "" {
			where = fmt.Sprintf("%s: %s", name, p)
		}
		if _, err := sub.object(ctx, where, item); err != nil {
			return err
		}
	}
	return nil
}

func (s *Stream) configure(fc *yaml.Node) error {
	if kind := scalar(get(fc, "kind")); kind != "ConfigMap" {
		return fmt.Errorf("kind %q: want a ConfigMap whose data keys are meshgate-inject's flags", kind)
	}
	data := get(fc, "data")
	if data == nil || null(data) {
		return nil
	}
	if data.Kind != yaml.MappingNode {
		return fmt.Errorf("data is not a mapping")
	}
	o := &s.Options
	for i := 0; i+1 < len(data.Content); i += 2 {
		key, v := data.Content[i].Value, strings.TrimSpace(data.Content[i+1].Value)
		if !slices.Contains(functionConfigKeys, key) {
			return fmt.Errorf("data key %q: want one of %s", key, strings.Join(functionConfigKeys, ", "))
		}
		var err error
		switch key {
		case "image":
			o.Image = v
		case "containers":
			o.Containers = SplitList(v)
		case "preset":
			o.Preset = v
		case "gate-flag":
			o.GateFlags = strings.Fields(v)
		case "entrypoint":
			o.Entrypoints, err = parseCommands(key, strings.Split(v, "\n"))
		case "cmd":
			o.Cmds, err = parseCommands(key, strings.Split(v, "\n"))
		case "platform":
			o.Platform = v
		case "resolve", "uninject":
			b, perr := strconv.ParseBool(v)
			if perr != nil {
				return fmt.Errorf("data key %q: %q is not true or false", key, v)
			}
			if key == "uninject" {
				s.Uninject = b
			} else if b {
				o.Resolver = s.Registry
			} else {
				o.Resolver = nil
			}
		}
		if err != nil {
			return err
		}
	}
	return o.Validate()
}

// SplitList splits "a, b,c" into its non-empty items.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// ParseCommand parses "NAME=JSON-ARRAY", as --entrypoint and --cmd take it.
func ParseCommand(flag, s string) (string, []string, error) {
	name, list, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return "", nil, fmt.Errorf("%s %q: want CONTAINER=JSON-ARRAY, e.g. app='[\"/app/server\"]'", flag, s)
	}
	var argv []string
	if err := json.Unmarshal([]byte(list), &argv); err != nil || argv == nil {
		return "", nil, fmt.Errorf("%s %q: %s is not a JSON array of strings", flag, s, list)
	}
	return name, argv, nil
}

func parseCommands(flag string, lines []string) (map[string][]string, error) {
	m := map[string][]string{}
	for _, l := range lines {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		name, argv, err := ParseCommand(flag, l)
		if err != nil {
			return nil, err
		}
		m[name] = argv
	}
	return m, nil
}

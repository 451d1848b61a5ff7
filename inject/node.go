package inject

import (
	"slices"

	"sigs.k8s.io/kustomize/kyaml/yaml"
)

// Small helpers over yaml.v3 nodes (as kyaml re-exports them). They edit
// mappings and sequences in place and never reorder what they do not
// touch, which is what makes an injection exactly reversible: a key added
// goes to the end of its mapping and comes out again; an item added goes
// to the end of its list and comes out again.

// get returns the value of key in mapping m, or nil.
func get(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// path follows keys through nested mappings.
func path(m *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		m = get(m, k)
	}
	return m
}

// set appends key: value to mapping m. The caller has checked that key is
// not there yet.
func set(m *yaml.Node, key string, value *yaml.Node) {
	m.Content = append(m.Content, str(key), value)
}

// setBefore inserts key: value into mapping m just before the first of
// the keys before that m has, or at the end.
func setBefore(m *yaml.Node, key string, value *yaml.Node, before ...string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if slices.Contains(before, m.Content[i].Value) {
			m.Content = slices.Insert(m.Content, i, str(key), value)
			return
		}
	}
	set(m, key, value)
}

// setAfter inserts key: value into mapping m just after the first key of
// after (in that order of preference) that m has, or at the end.
func setAfter(m *yaml.Node, key string, value *yaml.Node, after ...string) {
	for _, a := range after {
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == a {
				m.Content = slices.Insert(m.Content, i+2, str(key), value)
				return
			}
		}
	}
	set(m, key, value)
}

// delCreated deletes key from m, a list or mapping that the injection
// created, once meshgate's entries are out of it; if anything else was
// added to it since (a later admission webhook's sidecar, volumes or
// annotations), it stays.
func delCreated(m *yaml.Node, key string) {
	if v := get(m, key); v == nil || len(v.Content) == 0 {
		del(m, key)
	}
}

// del removes key from mapping m and reports whether it was there.
func del(m *yaml.Node, key string) bool {
	if m == nil || m.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return true
		}
	}
	return false
}

// scalar returns the value of a scalar node, or "" for anything else.
func scalar(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

// null reports whether n is missing or an explicit null.
func null(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.Tag == yaml.NodeTagNull)
}

func str(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: yaml.NodeTagString, Value: s}
}

func boolean(b bool) *yaml.Node {
	v := "false"
	if b {
		v = "true"
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: yaml.NodeTagBool, Value: v}
}

func integer(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: yaml.NodeTagInt, Value: s}
}

func mapping(kv ...any) *yaml.Node {
	m := &yaml.Node{Kind: yaml.MappingNode, Tag: yaml.NodeTagMap}
	for i := 0; i+1 < len(kv); i += 2 {
		v, ok := kv[i+1].(*yaml.Node)
		if !ok {
			v = str(kv[i+1].(string))
		}
		m.Content = append(m.Content, str(kv[i].(string)), v)
	}
	return m
}

func seq(items ...*yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.SequenceNode, Tag: yaml.NodeTagSeq, Content: items}
}

func strSeq(ss []string) *yaml.Node {
	n := seq()
	for _, s := range ss {
		n.Content = append(n.Content, str(s))
	}
	return n
}

// strings returns the scalar values of sequence n, and false if n is not a
// sequence of scalars.
func stringList(n *yaml.Node) ([]string, bool) {
	if n == nil || n.Kind != yaml.SequenceNode {
		return nil, false
	}
	out := make([]string, 0, len(n.Content))
	for _, c := range n.Content {
		if c.Kind != yaml.ScalarNode {
			return nil, false
		}
		out = append(out, c.Value)
	}
	return out, true
}

// named returns the item of sequence n whose name is name, and its index.
func named(n *yaml.Node, name string) (*yaml.Node, int) {
	if n == nil || n.Kind != yaml.SequenceNode {
		return nil, -1
	}
	for i, c := range n.Content {
		if scalar(get(c, "name")) == name {
			return c, i
		}
	}
	return nil, -1
}

// removeNamed removes the item called name from sequence n.
func removeNamed(n *yaml.Node, name string) bool {
	_, i := named(n, name)
	if i < 0 {
		return false
	}
	n.Content = append(n.Content[:i], n.Content[i+1:]...)
	return true
}

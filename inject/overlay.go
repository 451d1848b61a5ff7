package inject

import "bytes"

// overlay lays the changes kyaml made to a document over its original
// text, so that what kyaml cannot keep survives where it can: blank lines.
// orig is the document as written, before the encoding of the document as
// parsed, after the encoding of the changed document. When orig is before
// plus blank lines (the usual case for hand-written manifests), the line
// edits from before to after are applied to orig (and a blank line kyaml
// adds after a head comment is left out); otherwise after is returned as
// it is.
func overlay(orig, before, after []byte) []byte {
	o, b, a := lines(orig), lines(before), lines(after)
	// at[i] is the line of orig that holds line i of before, or -1 for a
	// blank line that kyaml added (after a head comment); the lines of
	// orig in between are blank ones that kyaml dropped.
	at := make([]int, 0, len(b))
	differ := false
	for i := 0; i < len(o); {
		switch {
		case len(at) < len(b) && bytes.Equal(o[i], b[len(at)]):
			at = append(at, i)
			i++
		case len(bytes.TrimSpace(o[i])) == 0:
			differ = true
			i++
		case len(at) < len(b) && len(bytes.TrimSpace(b[len(at)])) == 0:
			at = append(at, -1)
			differ = true
		default:
			return after
		}
	}
	for len(at) < len(b) && len(bytes.TrimSpace(b[len(at)])) == 0 {
		at = append(at, -1)
		differ = true
	}
	if len(at) != len(b) || !differ || len(b)*len(a) > 4<<20 {
		return after
	}
	var out bytes.Buffer
	pos := 0
	for _, e := range edits(b, a) {
		switch e.op {
		case keep, drop:
			if at[e.i] < 0 {
				continue // a blank line orig does not have
			}
			for ; pos < at[e.i]; pos++ {
				out.Write(o[pos])
			}
			if e.op == keep {
				out.Write(o[pos])
			}
			pos++
		case add:
			out.Write(a[e.j])
		}
	}
	for ; pos < len(o); pos++ {
		out.Write(o[pos])
	}
	return out.Bytes()
}

// lines splits text after each newline; a last line without one ends
// the text.
func lines(text []byte) [][]byte {
	var out [][]byte
	for len(text) > 0 {
		n := bytes.IndexByte(text, '\n') + 1
		if n == 0 {
			n = len(text)
		}
		out = append(out, text[:n])
		text = text[n:]
	}
	return out
}

const (
	keep = iota
	drop
	add
)

// edit is one step from a to b: keep or drop line i of a, or add line j
// of b.
type edit struct{ op, i, j int }

// edits returns a shortest edit script from a to b (longest common
// subsequence). Manifests are small; overlay bounds the table's size.
func edits(a, b [][]byte) []edit {
	n, m := len(a), len(b)
	// lcs[i][j]: the longest common subsequence of a[i:] and b[j:].
	lcs := make([][]int32, n+1)
	for i := range lcs {
		lcs[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if bytes.Equal(a[i], b[j]) {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []edit
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && bytes.Equal(a[i], b[j]):
			out = append(out, edit{keep, i, j})
			i, j = i+1, j+1
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			// A drop before an add: a changed line stays where it was,
			// after the blank lines before it.
			out = append(out, edit{drop, i, j})
			i++
		default:
			out = append(out, edit{add, i, j})
			j++
		}
	}
	return out
}

package inject

import "testing"

func TestOverlay(t *testing.T) {
	for _, tc := range []struct{ name, orig, before, after, want string }{
		{"blank lines kept around an insertion",
			"a: 1\n\nb:\n  - x\n\n  - y\n", "a: 1\nb:\n  - x\n  - y\n", "a: 1\nb:\n  - x\n  - z\n  - y\n",
			"a: 1\n\nb:\n  - x\n  - z\n\n  - y\n"},
		{"a changed line, a dropped line",
			"a: 1\n\nb: 2\nc: 3\n", "a: 1\nb: 2\nc: 3\n", "a: 1\nb: 4\n",
			"a: 1\n\nb: 4\n"},
		{"no blank lines: kyaml's text",
			"a: 1\nb: 2\n", "a: 1\nb: 2\n", "a: 1\nb: 3\n", "a: 1\nb: 3\n"},
		{"other differences: kyaml's text",
			"a:   1\n\nb: 2\n", "a: 1\nb: 2\n", "a: 1\nb: 3\n", "a: 1\nb: 3\n"},
		{"a blank line kyaml adds after a head comment",
			"# c\na: 1\n\nb: 2\n", "# c\n\na: 1\nb: 2\n", "# c\n\na: 1\nb: 3\n", "# c\na: 1\n\nb: 3\n"},
		{"trailing blank lines",
			"a: 1\n\n\n", "a: 1\n", "a: 1\nb: 2\n", "a: 1\nb: 2\n\n\n"},
	} {
		if got := string(overlay([]byte(tc.orig), []byte(tc.before), []byte(tc.after))); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

package inject

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzStream feeds arbitrary files to Stream: it must never panic, an
// injected result must be stable under a second injection, and
// uninjecting and injecting it again must give the same bytes.
func FuzzStream(f *testing.F) {
	files, _ := filepath.Glob("testdata/golden/*.*")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("spec:\n  containers: [app]\n"))
	f.Add([]byte("apiVersion: v1\nkind: Pod\nmetadata: x\nspec:\n  containers:\n    - name: a\n      command: [/a]\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		opts := Options{Resolver: corpusImages, Entrypoints: map[string][]string{"app": {"/app"}}, Cmds: map[string][]string{"app": nil}}
		s := &Stream{Options: opts}
		out, err := s.Process(t.Context(), "fuzz", in)
		if err != nil {
			return
		}
		again, err := s.Process(t.Context(), "fuzz", out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("second injection: %v\nin:\n%s\nout:\n%s\nagain:\n%s", err, in, out, again)
		}
		back, err := (&Stream{Uninject: true}).Process(t.Context(), "fuzz", out)
		if err != nil {
			t.Fatalf("uninject: %v\n%s", err, out)
		}
		re, err := s.Process(t.Context(), "fuzz", back)
		if err != nil || !bytes.Equal(re, out) {
			t.Fatalf("inject after uninject: %v\nout:\n%s\nback:\n%s\nre:\n%s", err, out, back, re)
		}
	})
}

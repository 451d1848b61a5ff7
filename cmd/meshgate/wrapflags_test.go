package main

import (
	"testing"

	"github.com/spf13/pflag"

	"github.com/meshgate/meshgate/inject"
)

// TestWrapFlagsInStep: meshgate-inject checks --gate-flag against
// inject.WrapFlags, which must list exactly the wrap mode's flags.
func TestWrapFlagsInStep(t *testing.T) {
	m, ok := lookupMode("")
	if !ok {
		t.Fatal("no wrap mode")
	}
	got := map[string]bool{}
	newFlagSet(m, &config{}, &flagText{}).VisitAll(func(f *pflag.Flag) {
		if f.Name != "help" {
			got[f.Name] = f.Value.Type() != "bool"
		}
	})
	want := inject.WrapFlags()
	for name, value := range got {
		if w, ok := want[name]; !ok || w != value {
			t.Errorf("flag --%s (takes a value: %v) is missing or different in inject.WrapFlags", name, value)
		}
	}
	for name := range want {
		if _, ok := got[name]; !ok {
			t.Errorf("inject.WrapFlags lists --%s, which meshgate does not have", name)
		}
	}
}

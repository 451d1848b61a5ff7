package main

import (
	"reflect"
	"testing"

	"github.com/spf13/pflag"

	"github.com/meshgate/meshgate/inject"
)

// TestWrapFlagsInStep: meshgate-inject checks --gate-flag against
// inject.WrapFlags, which must list exactly the wrap mode's flags, each
// with whether it takes a value.
func TestWrapFlagsInStep(t *testing.T) {
	m, _ := lookupMode("")
	got := map[string]bool{}
	newFlagSet(m, &config{}, &flagText{}).VisitAll(func(f *pflag.Flag) {
		if f.Name != "help" {
			got[f.Name] = f.Value.Type() != "bool"
		}
	})
	if want := inject.WrapFlags(); !reflect.DeepEqual(got, want) {
		t.Errorf("the wrap mode's flags (name: takes a value) are\n%v\ninject.WrapFlags lists\n%v", got, want)
	}
}

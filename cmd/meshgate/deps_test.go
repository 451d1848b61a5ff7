package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestDependencies keeps the gate small: it links only backoff, pflag and
// zap (with zap's own multierr) besides the standard library and this
// module. The injector's libraries (kyaml, go-containerregistry) belong to
// cmd/meshgate-inject only.
func TestDependencies(t *testing.T) {
	allowed := []string{
		"github.com/meshgate/meshgate",
		"github.com/cenkalti/backoff/v4",
		"github.com/spf13/pflag",
		"go.uber.org/zap",
		"go.uber.org/multierr",
	}
	out, err := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{.Path}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	var modules []string
	for _, m := range strings.Fields(string(out)) {
		if !slices.Contains(modules, m) {
			modules = append(modules, m)
		}
	}
	for _, m := range modules {
		if !slices.Contains(allowed, m) {
			t.Errorf("cmd/meshgate depends on module %s; allowed: %s", m, strings.Join(allowed, ", "))
		}
	}
	for _, m := range allowed[1:4] {
		if !slices.Contains(modules, m) {
			t.Errorf("module %s is not among the dependencies any more (%s): does this test still look at the right thing?", m, strings.Join(modules, ", "))
		}
	}
	// The injector's own packages must not leak in either.
	pkgs, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, pkgs)
	}
	if strings.Contains(string(pkgs), "github.com/meshgate/meshgate/inject") {
		t.Error("cmd/meshgate imports the inject package")
	}
}

package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestDependencies keeps the gate small: it links only backoff, pflag and
// zap (with zap's own multierr) besides the standard library and this
// module. The injector's libraries (kyaml, go-containerregistry) and its
// own packages belong to cmd/meshgate-inject only.
func TestDependencies(t *testing.T) {
	allowed := []string{"github.com/meshgate/meshgate", "github.com/cenkalti/backoff/v4", "github.com/spf13/pflag", "go.uber.org/zap", "go.uber.org/multierr"}
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{with .Module}}{{.Path}}{{end}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	var modules []string
	for line := range strings.Lines(string(out)) {
		pkg, module, _ := strings.Cut(strings.TrimSpace(line), " ")
		if strings.HasPrefix(pkg, "github.com/meshgate/meshgate/inject") {
			t.Errorf("cmd/meshgate imports %s", pkg)
		}
		if module != "" && !slices.Contains(modules, module) {
			modules = append(modules, module)
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
}

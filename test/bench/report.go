package main

import (
	"context"
	"debug/buildinfo"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// report is the header, one table and the notes under it.
type report struct {
	header []string
	rows   []row
	notes  []string
	failed bool // a measurement could not be made
}

// row is one figure for meshgate and, where there is one, the baseline.
type row struct {
	what, gate, baseline, target, ok string
}

// withTarget is a row whose meshgate figure is held to a target.
func withTarget(what string, vals []string, target string, met bool) row {
	r := plain(what, vals)
	r.target, r.ok = target, "✗"
	if met {
		r.ok = "✓"
	}
	return r
}

// plain is a row without a target. vals holds meshgate's figure, then the
// baseline's if it was measured.
func plain(what string, vals []string) row {
	return row{what: what, gate: at(vals, 0), baseline: at(vals, 1)}
}

func at(vals []string, i int) string {
	if i < len(vals) {
		return vals[i]
	}
	return "—"
}

func (r *report) write(w io.Writer) {
	fmt.Fprintln(w, "## meshgate benchmark")
	fmt.Fprintln(w)
	for _, h := range r.header {
		fmt.Fprintf(w, "- %s\n", h)
	}
	fmt.Fprintln(w)
	cells := [][]string{{"measure", "meshgate", "baseline: curl loop", "target", "met"}}
	for _, row := range r.rows {
		cells = append(cells, []string{row.what, row.gate, row.baseline, row.target, row.ok})
	}
	writeTable(w, cells)
	if len(r.notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range r.notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
}

// writeTable pads the columns so that the table also reads as plain text.
func writeTable(w io.Writer, cells [][]string) {
	widths := make([]int, len(cells[0]))
	for _, row := range cells {
		for i, c := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	line := func(row []string) {
		for i, c := range row {
			fmt.Fprintf(w, "| %s%s ", c, strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)))
		}
		fmt.Fprintln(w, "|")
	}
	line(cells[0])
	rule := make([]string, len(widths))
	for i, n := range widths {
		rule[i] = strings.Repeat("-", n)
	}
	line(rule)
	for _, row := range cells[1:] {
		line(row)
	}
}

// machine describes what the figures were taken on and with.
func (b *bench) machine(ctx context.Context) []string {
	cpuModel := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpuModel = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "unknown"
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(data))
	}
	version := firstLine(ctx, b.cfg.meshgate, "version")
	if info, err := buildinfo.ReadFile(b.cfg.meshgate); err == nil {
		version += ", built with " + info.GoVersion
	}
	baseline := "baseline: none, curl not found"
	if b.curl != "" {
		curl := strings.Fields(firstLine(ctx, b.curl, "--version")) // "curl 7.88.1 (x86_64-pc-linux-gnu) ..."
		baseline = "baseline: `sh -c 'until curl -fs URL >/dev/null; do sleep 1; done; exec APP'`, " +
			strings.Join(curl[:min(2, len(curl))], " ")
	}
	return []string{
		fmt.Sprintf("machine: %s, %d cores, Linux %s; benchmark built with %s", cpuModel, runtime.NumCPU(), kernel, runtime.Version()),
		fmt.Sprintf("meshgate: %s (%s)", version, b.cfg.meshgate),
		baseline,
		fmt.Sprintf("the proxy is emulated in the benchmark's process, on a fresh 127.0.0.1 port per trial; trials run one at a time; seed %d", b.cfg.seed),
		"notice and already-ready times end at the command's first reading of its clock, so they include its own start-up (see direct exec)",
	}
}

// firstLine is the first line a program prints, or why there is none.
func firstLine(ctx context.Context, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return fmt.Sprintf("(%s: %v)", name, err)
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return first
}

// quantile is the q-quantile of ds, interpolating between the two nearest
// samples, so that with few samples p99 lies between the two largest.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	pos := q * float64(len(s)-1)
	i := int(pos)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + time.Duration((pos-float64(i))*float64(s[i+1]-s[i]))
}

func each[T any](xs []T, f func(T) string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func mib(bytes int64) string { return fmt.Sprintf("%.1f MiB", float64(bytes)/(1<<20)) }

func perSecond(n int64, over time.Duration) string {
	if over <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f/s", float64(n)/over.Seconds())
}

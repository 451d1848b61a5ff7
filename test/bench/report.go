package main

import (
	"cmp"
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

// report is the header, the table of figures, the goals and the notes.
type report struct {
	header  []string
	columns []string // the waiters
	rows    []row
	goals   []goal
	notes   []string
	failed  bool // a measurement could not be made
}

// row is one measure, with a figure for each waiter.
type row struct {
	what string
	vals []string
}

// goal is meshgate's figure held to a bound drawn from the same run.
type goal struct {
	what, value, bound string
	met                bool
}

func (r *report) write(w io.Writer) {
	fmt.Fprintf(w, "## meshgate benchmark\n\n- %s\n\n", strings.Join(r.header, "\n- "))
	cells := [][]string{append([]string{"measure"}, r.columns...)}
	for _, row := range r.rows {
		cells = append(cells, append([]string{row.what}, row.vals...))
	}
	writeTable(w, cells)
	if len(r.goals) > 0 {
		cells = [][]string{{"goal (meshgate)", "measured", "bound", "met"}}
		for _, g := range r.goals {
			cells = append(cells, []string{g.what, g.value, g.bound, map[bool]string{true: "✓", false: "✗"}[g.met]})
		}
		fmt.Fprintln(w)
		writeTable(w, cells)
	}
	if len(r.notes) > 0 {
		fmt.Fprintf(w, "\n- %s\n", strings.Join(r.notes, "\n- "))
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
	rule := make([]string, len(widths))
	for i, n := range widths {
		rule[i] = strings.Repeat("-", n)
	}
	for _, row := range slices.Insert(cells, 1, rule) {
		for i, c := range row {
			fmt.Fprintf(w, "| %s%s ", c, strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)))
		}
		fmt.Fprintln(w, "|")
	}
}

// machine describes what the figures were taken on and with.
func (b *bench) machine(ctx context.Context) []string {
	cpuModel := cmp.Or(procValue("cpuinfo", "model name"), "unknown CPU")
	kernel := cmp.Or(readProc("sys/kernel/osrelease"), "unknown")
	version := firstLine(ctx, b.cfg.meshgate, "version")
	if info, err := buildinfo.ReadFile(b.cfg.meshgate); err == nil {
		version += ", built with " + info.GoVersion
	}
	curlLoop := "curl loop: none, curl not found"
	if b.curl != "" {
		curl := strings.Fields(firstLine(ctx, b.curl, "--version")) // "curl 7.88.1 (x86_64-pc-linux-gnu) ..."
		curlLoop = "curl loop: `sh -c 'until curl -fs URL >/dev/null; do sleep 1; done; exec APP'`, " +
			strings.Join(curl[:min(2, len(curl))], " ")
	}
	h := []string{
		"date: " + time.Now().UTC().Format("2006-01-02 15:04 MST"),
		fmt.Sprintf("machine: %s, %d cores, Linux %s; benchmark built with %s", cpuModel, runtime.NumCPU(), kernel, runtime.Version()),
		"load average at the start: " + loadavg(),
		fmt.Sprintf("meshgate: %s (%s), defaults", version, b.cfg.meshgate),
		"reference gates (test/refgate): a Go loop with a keep-alive net/http client, pausing 0, 10 or 50 ms between attempts, then execve",
		curlLoop,
	}
	for _, x := range b.cfg.also {
		h = append(h, fmt.Sprintf("%s: %s, with meshgate's flags", x.name, x.path))
	}
	return append(h,
		fmt.Sprintf("the proxy is emulated in the benchmark's process, on a fresh 127.0.0.1 port per trial; trials run one at a time, gates interleaved; seed %d", b.cfg.seed),
		"notice and already-ready times end at the app's first reading of its clock; busy: every core kept busy by a yes(1) each",
	)
}

// loadavg is the machine's load average over 1, 5 and 15 minutes.
func loadavg() string {
	f := strings.Fields(readProc("loadavg"))
	if len(f) == 0 {
		return "unknown"
	}
	return strings.Join(f[:min(3, len(f))], " ")
}

// readProc is a file of /proc, trimmed, or "" where it cannot be read.
func readProc(name string) string {
	data, _ := os.ReadFile("/proc/" + name)
	return strings.TrimSpace(string(data))
}

// procValue is the value of the first "key: value" line of a file of
// /proc, or "".
func procValue(name, key string) string {
	for _, l := range strings.Split(readProc(name), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
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

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

func mib(bytes int64) string { return fmt.Sprintf("%.1f MiB", float64(bytes)/(1<<20)) }

func (t tally) rate() string {
	if t.window <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f/s", float64(t.requests)/t.window.Seconds())
}

func (t tally) share() float64 { return t.busy.Seconds() / t.window.Seconds() }

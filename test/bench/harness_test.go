// Package bench measures a real `pier serve` process ($PIER_BIN) with Go
// benchmarks, run once each by `make bench`.
//
// The machines these run on are noisy, so no figure stands alone: each is
// reported as a ratio to a limit measured in the same run on the same CPU and
// disk (sha256 throughput for pushes, a read of the same bytes from the page
// cache for pulls, GET /v2/ for request rates), or to its target where the
// target is the limit (RSS, binary size). Every figure goes to
// b.ReportMetric and to the summary table printed when the run ends.
//
// Adding a benchmark (GC, scrub, dedupe, ...): start a server with
// startPier (pierproc.Options carries storage keys such as "gc"), make
// content with randomBytes / newImage and push it with pushImage (opTimes
// shows where a push's time goes), take a limit from limits_test.go (or
// measure a new one there, once per run with sync.Once), time the
// operation with timed or bestOf, and record a row with record(b, ...) so
// it lands in the metrics and the table. The server's memory and I/O
// counters are in proc_test.go (procStatus, readProcIO, procCPU,
// ctxSwitches, traceSyscalls, traceSyncs). For whole-store passes, write
// a store straight to the disk with synthStore (layout_test.go), run the
// one-off commands with pierCommand (peak RSS, CPU) and time a start with
// serveTimed (commands_test.go).
//
// The benchmarks are meant for -benchtime 1x: each does its own repetitions
// (best of attempts) and records its rows once.
package bench

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/pier-oci/pier/test/internal/ociclient"
	"github.com/pier-oci/pier/test/internal/pierproc"
)

// MiB is the unit every size and rate is reported in.
const MiB = 1 << 20

// attempts is how many times a throughput is measured; the best counts,
// as for the limits it is compared with.
const attempts = 3

func TestMain(m *testing.M) {
	if os.Getenv(launcherEnv) != "" {
		os.Exit(launch()) // this binary started as pierCommand's launcher
	}
	code := m.Run()
	printSummary()
	os.Exit(code)
}

// pier is a running server with a client for it.
type pier struct {
	*pierproc.Server
	Client *ociclient.Client
	Pid    int
}

// startPier starts `pier serve` on an empty root in b's temp dir; it is
// killed, and the root removed, when b ends.
func startPier(b *testing.B, opts pierproc.Options) *pier {
	b.Helper()
	s := pierproc.Start(b, opts)
	return &pier{Server: s, Client: ociclient.New(s.Addr), Pid: s.Cmd.Process.Pid}
}

// bestOf runs f n times and returns its shortest duration.
func bestOf(b *testing.B, n int, f func() time.Duration) time.Duration {
	b.Helper()
	best := time.Duration(1<<63 - 1)
	for range n {
		best = min(best, f())
	}
	return best
}

// timed returns how long f took, failing b if f fails.
func timed(b *testing.B, f func() error) time.Duration {
	b.Helper()
	start := time.Now()
	if err := f(); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// mibps is a rate in MiB/s.
func mibps(bytes int64, d time.Duration) float64 { return float64(bytes) / MiB / d.Seconds() }

// A row is one line of the summary table.
type row struct {
	name   string // what was measured
	figure string // the measured value with its unit
	ratio  string // "= 0.71x sha256 (1140 MiB/s)"
	target string // ">= 0.60x", or "" when there is none
	status string // "OK", "MISS" or "info"
	note   bool   // a fact in words: printed below the table
}

var summary struct {
	mu   sync.Mutex
	rows []row
}

// A measure is a figure compared with a limit measured in the same run.
type measure struct {
	name      string  // row name, e.g. "push 256MiB stream"
	value     float64 // the figure
	unit      string  // its unit, e.g. "MiB/s"
	limit     float64 // the limit, in the same unit
	limitName string  // e.g. "sha256"; also the metric's unit suffix
	metric    string  // benchmark metric name for the ratio, e.g. "x_sha256"
}

func (m measure) ratio() float64 { return m.value / m.limit }

func (m measure) ratioText() string {
	return fmt.Sprintf("= %.3fx %s (%s)", m.ratio(), m.limitName, num(m.limit, m.unit))
}

// A target decides whether a measure meets its goal.
type target struct {
	text string
	met  func(measure) bool
}

// ratioAtLeast is a target on the ratio to the limit.
func ratioAtLeast(min float64) *target {
	return &target{fmt.Sprintf(">= %.2fx", min), func(m measure) bool { return m.ratio() >= min }}
}

// ratioAtMost is a target on the ratio to the limit.
func ratioAtMost(max float64) *target {
	return &target{fmt.Sprintf("<= %.2fx", max), func(m measure) bool { return m.ratio() <= max }}
}

// ratioBetween is a target on the ratio to the limit, from lo to hi.
func ratioBetween(lo, hi float64) *target {
	return &target{fmt.Sprintf("%.2fx-%.2fx", lo, hi), func(m measure) bool { return m.ratio() >= lo && m.ratio() <= hi }}
}

// valueAtLeast is a target on the figure itself.
func valueAtLeast(min float64, unit string) *target {
	return &target{">= " + num(min, unit), func(m measure) bool { return m.value >= min }}
}

// valueAtMost is a target on the figure itself.
func valueAtMost(max float64, unit string) *target {
	return &target{"<= " + num(max, unit), func(m measure) bool { return m.value <= max }}
}

// record reports m as benchmark metrics and adds it, judged by t (nil: no
// target, informational), to the summary table.
func record(b *testing.B, m measure, t *target) {
	b.Helper()
	b.ReportMetric(m.value, strings.ReplaceAll(m.unit, " ", "_"))
	b.ReportMetric(m.ratio(), m.metric)
	r := row{name: m.name, figure: num(m.value, m.unit), ratio: m.ratioText(), status: "info"}
	if t != nil {
		r.target = t.text
		r.status = "MISS"
		if t.met(m) {
			r.status = "OK"
		}
	}
	addRow(b, r)
}

// note adds a row that is a fact rather than a ratio (which syscalls moved
// the bytes, whether the binary is static).
func note(b *testing.B, name, text string, ok bool) {
	b.Helper()
	status := "MISS"
	if ok {
		status = "OK"
	}
	addRow(b, row{name: name, figure: text, status: status, note: true})
}

func addRow(b *testing.B, r row) {
	b.Logf("%s: %s %s  target %s  %s", r.name, r.figure, r.ratio, orDash(r.target), r.status)
	summary.mu.Lock()
	defer summary.mu.Unlock()
	summary.rows = append(summary.rows, r)
}

// printSummary prints the table of every row recorded in this run.
func printSummary() {
	summary.mu.Lock()
	defer summary.mu.Unlock()
	if len(summary.rows) == 0 {
		return
	}
	met, missed := 0, 0
	fmt.Println()
	fmt.Println("pier benchmark summary (each figure against a limit measured in this run)")
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "measure\tfigure\tratio to limit\ttarget\tstatus")
	var notes []row
	for _, r := range summary.rows {
		if r.note {
			notes = append(notes, r)
		} else {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.name, r.figure, r.ratio, orDash(r.target), r.status)
		}
		switch r.status {
		case "OK":
			met++
		case "MISS":
			missed++
		}
	}
	w.Flush()
	for _, r := range notes {
		fmt.Printf("%-4s  %s: %s\n", r.status, r.name, r.figure)
	}
	fmt.Printf("targets: %d met, %d missed\n", met, missed)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// num formats a value with its unit, with precision suited to its size.
func num(v float64, unit string) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f %s", v, unit)
	case v >= 10:
		return fmt.Sprintf("%.1f %s", v, unit)
	default:
		return fmt.Sprintf("%.2f %s", v, unit)
	}
}

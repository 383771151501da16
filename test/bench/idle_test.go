package bench

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/pierproc"
)

// Issue 4, "Frugal by default": no background loop that wakes up when
// there is nothing to do (zot polls every 50 ms).

const (
	idleSettle = 5 * time.Second
	idleWindow = 60 * time.Second
	// idleWakeupFlag is the rate of wake-ups this benchmark flags: more
	// than one every 0.6 s means something polls.
	idleWakeupFlag = 100
)

// BenchmarkIdle60s starts a server with every background job of the
// default config on (gc every hour, scrub every 24 h, dedupe and its
// watcher), pushes one image, lets it settle 5 s, then counts over 60 s
// the CPU it uses (utime + stime) and the context switches of all its
// threads (each voluntary one is a wake-up). A `sleep` process measured
// over the same window is the idle baseline. Target: <= 100 wake-ups a
// minute. PIER_BENCH_IDLE=0 skips it (it takes 65 s).
func BenchmarkIdle60s(b *testing.B) {
	if os.Getenv("PIER_BENCH_IDLE") == "0" {
		b.Skip("PIER_BENCH_IDLE=0")
	}
	type sample struct {
		cpu        time.Duration
		vol, invol int64
	}
	read := func(pid int) sample {
		cpu, err := procCPU(pid)
		if err != nil {
			b.Fatal(err)
		}
		vol, invol, err := ctxSwitches(pid)
		if err != nil {
			b.Fatal(err)
		}
		return sample{cpu, vol, invol}
	}
	var pierUse, sleepUse sample
	var rss int64
	var nthreads int
	for range b.N {
		p := startPier(b, pierproc.Options{
			Storage: map[string]any{"gc": true, "gcInterval": "1h", "dedupe": true},
			Extra: map[string]any{
				"log":        map[string]any{"level": "info"},
				"extensions": map[string]any{"scrub": map[string]any{"enable": true, "interval": "24h"}},
			},
		})
		img := newImage([]byte(`{"architecture":"arm64","os":"linux"}`), randomBytes(11, 4096), randomBytes(12, 4096))
		if _, err := pushImage(p.Client, "idle/app", "v1", img, "", nil, nil); err != nil {
			b.Fatal(err)
		}
		sleep := exec.Command("sleep", fmt.Sprint(int((idleSettle + idleWindow + 5*time.Second).Seconds())))
		if err := sleep.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { sleep.Process.Kill(); sleep.Wait() })
		time.Sleep(idleSettle)
		p0, s0 := read(p.Pid), read(sleep.Process.Pid)
		time.Sleep(idleWindow)
		p1, s1 := read(p.Pid), read(sleep.Process.Pid)
		pierUse = sample{p1.cpu - p0.cpu, p1.vol - p0.vol, p1.invol - p0.invol}
		sleepUse = sample{s1.cpu - s0.cpu, s1.vol - s0.vol, s1.invol - s0.invol}
		var err error
		if rss, _, err = procStatus(p.Pid); err != nil {
			b.Fatal(err)
		}
		nthreads = threads(p.Pid)
	}
	perMin := func(n int64) float64 { return float64(n) * float64(time.Minute) / float64(idleWindow) }
	wakeups := perMin(pierUse.vol + pierUse.invol)
	b.Logf("over %v idle: pier %v CPU, %d voluntary + %d involuntary switches over %d threads, VmRSS %.1f MiB; sleep %v CPU, %d + %d switches",
		idleWindow, pierUse.cpu, pierUse.vol, pierUse.invol, nthreads, float64(rss)/1024, sleepUse.cpu, sleepUse.vol, sleepUse.invol)
	record(b, measure{
		name: "idle CPU per minute (gc, scrub, dedupe on)", value: float64(pierUse.cpu.Microseconds()) / 1000 * float64(time.Minute) / float64(idleWindow), unit: "ms",
		limit: float64(time.Minute.Milliseconds()), limitName: "one core", metric: "x_core",
	}, nil)
	record(b, measure{
		name: "idle wake-ups per minute (context switches)", value: wakeups, unit: "/min",
		limit: idleWakeupFlag, limitName: "flag", metric: "x_flag",
	}, ratioAtMost(1))
	note(b, "idle 60 s", fmt.Sprintf("pier: %v CPU (/proc counts in 10 ms ticks), %d voluntary + %d involuntary context switches (%d threads), VmRSS %.1f MiB after; `sleep` baseline: %v CPU, %d + %d",
		pierUse.cpu, pierUse.vol, pierUse.invol, nthreads, float64(rss)/1024, sleepUse.cpu, sleepUse.vol, sleepUse.invol), wakeups <= idleWakeupFlag)
}

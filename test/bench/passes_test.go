package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/ociclient"
)

// The offline passes over a whole store: `pier gc CONFIG` and `pier scrub
// CONFIG`, measured from outside (peak RSS from getrusage, wall and CPU
// time) as an operator running them on a Pi would see them.

// The store of BenchmarkGCScrub: 2,000 repositories of 10 tagged images
// (config, a base layer shared by many repositories, an own layer of 1-4
// KiB), plus in each 2 untagged manifests and 2 orphan blobs for gc.
var gcStore = synthStore{Prefix: "fleet", Repos: 2000, Images: 10, Bases: 16, Untagged: 2, Orphans: 2}

var (
	gcSummary    = regexp.MustCompile(`gc: (\d+) repositories: removed (\d+) manifests, (\d+) referrers, (\d+) stale entries, (\d+) blobs, (\d+) uploads, (\d+) repositories; freed (.+) in (\S+)`)
	scrubSummary = regexp.MustCompile(`scrub: (\d+) repositories, (\d+) blobs, (.+) read: (\d+) ok, (\d+) corrupt, (\d+) missing, (\d+) unreferenced`)
)

// BenchmarkGCScrub runs `pier gc` (gcDelay 0s: every untagged manifest and
// orphan is garbage) and then `pier scrub` (unthrottled) over the
// 2,000 x 10 store. Both walk one repository at a time, so their memory is
// bounded by the largest repository, not the store. Target: peak RSS <=
// 40 MiB each.
func BenchmarkGCScrub(b *testing.B) {
	root, t := makeStore(b, gcStore)
	config, _ := writeConfig(b, root, map[string]any{"gcDelay": "0s"},
		map[string]any{"extensions": map[string]any{"scrub": map[string]any{"enable": true, "maxBytesPerSecond": 0}}})
	var gc commandRun
	scrubs := make([]commandRun, 0, 2)
	for range b.N {
		gc = pierCommand(b, "gc", config)
		if gc.Exit != 0 {
			b.Fatalf("pier gc exited %d\nstderr:\n%s", gc.Exit, tail(gc.Stderr))
		}
		// Scrub twice: the pass time is the better one, the peak RSS the
		// worse one.
		for range 2 {
			run := pierCommand(b, "scrub", config)
			if run.Exit != 0 {
				b.Fatalf("pier scrub exited %d\nstdout:\n%s\nstderr:\n%s", run.Exit, tail(run.Stdout), tail(run.Stderr))
			}
			scrubs = append(scrubs, run)
		}
	}
	label := fmt.Sprintf("%d repos x %d images", gcStore.Repos, gcStore.Images)

	m := gcSummary.FindStringSubmatch(gc.Stdout)
	if m == nil {
		b.Fatalf("pier gc printed no summary:\n%s", tail(gc.Stdout))
	}
	manifests, _ := strconv.Atoi(m[2])
	blobs, _ := strconv.Atoi(m[5])
	wantManifests := gcStore.Repos * gcStore.Untagged
	b.Logf("pier gc: %s (wall %v, CPU %v, peak RSS %.1f MiB)", m[0], gc.Wall.Round(time.Millisecond), gc.CPU.Round(time.Millisecond), float64(gc.MaxRSS)/MiB)
	record(b, measure{
		name: "gc peak RSS, " + label, value: float64(gc.MaxRSS) / MiB, unit: "MiB",
		limit: peakRSSTarget / MiB, limitName: "target", metric: "x_target_gc",
	}, ratioAtMost(1))
	note(b, "gc pass, "+label, fmt.Sprintf("removed %d manifests, %d blobs (want %d and %d), freed %s; pass %s, process wall %v, CPU %v",
		manifests, blobs, wantManifests, t.Garbage, m[8], m[9], gc.Wall.Round(time.Millisecond), gc.CPU.Round(time.Millisecond)),
		manifests == wantManifests && blobs == t.Garbage)

	best, peak := scrubs[0], scrubs[0]
	for _, r := range scrubs[1:] {
		if r.Wall < best.Wall {
			best = r
		}
		if r.MaxRSS > peak.MaxRSS {
			peak = r
		}
	}
	s := scrubSummary.FindStringSubmatch(best.Stdout)
	if s == nil {
		b.Fatalf("pier scrub printed no summary:\n%s", tail(best.Stdout))
	}
	res, err := loadScrubResult(root)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("pier scrub: %s (wall %v, CPU %v, peak RSS %.1f MiB)", s[0], best.Wall.Round(time.Millisecond), best.CPU.Round(time.Millisecond), float64(peak.MaxRSS)/MiB)
	record(b, measure{
		name: "scrub peak RSS, " + label, value: float64(peak.MaxRSS) / MiB, unit: "MiB",
		limit: peakRSSTarget / MiB, limitName: "target", metric: "x_target_scrub",
	}, ratioAtMost(1))
	ok, _ := strconv.Atoi(s[4])
	corrupt, _ := strconv.Atoi(s[5])
	missing, _ := strconv.Atoi(s[6])
	note(b, "scrub pass, "+label, fmt.Sprintf("%s blobs hashed (%s; hard-linked bases once), %d references ok, %d corrupt, %d missing, %s unreferenced; pass %v, process wall %v, CPU %v (best of %d)",
		s[2], s[3], ok, corrupt, missing, s[7], res.took().Round(time.Millisecond), best.Wall.Round(time.Millisecond), best.CPU.Round(time.Millisecond), len(scrubs)),
		ok == gcStore.Repos*gcStore.Images && corrupt+missing == 0)
}

// scrubThrottle is the throttle BenchmarkScrubThrottle sets.
const scrubThrottle = 32 * MiB

// BenchmarkScrubThrottle scrubs 256 MiB of blobs (4 repositories of one
// image of 8 layers of 8 MiB) with maxBytesPerSecond 32 MiB/s, then
// unthrottled. Throttled, the rate must stay at or under the throttle and
// close to it (target 0.90x to 1.01x: a pacer that charges a chunk after
// reading it lets the first 256 KiB through free, 0.1% of the pass, and
// the pass time is pier's own, to the millisecond); unthrottled, scrub is
// bound by sha256, like a push, and should reach most of it (target >=
// 0.80x; the files are in the page cache).
func BenchmarkScrubThrottle(b *testing.B) {
	data, _ := blob256(b)
	sha := sha256MiBs(b)
	root := filepath.Join(b.TempDir(), "data")
	var t synthTotals
	const repos, layers = 4, 8
	per := len(data) / (repos * layers)
	for r := range repos {
		w, err := newLayoutWriter(filepath.Join(root, "scrub", fmt.Sprintf("r%d", r)), &t)
		if err != nil {
			b.Fatal(err)
		}
		var ls [][]byte
		for j := range layers {
			off := (r*layers + j) * per
			ls = append(ls, data[off:off+per])
		}
		img := ociclient.ImageManifest(fmt.Appendf(nil, `{"architecture":"arm64","os":"linux","config":{"Labels":{"r":"%d"}}}`, r), ls...)
		for _, blob := range img.Blobs {
			if _, err := w.blob(blob, false); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := w.blob(img.Manifest, false); err != nil {
			b.Fatal(err)
		}
		w.entry(img, "v1")
		if err := w.close(); err != nil {
			b.Fatal(err)
		}
	}
	scrubWith := func(rate int64) (scrubResult, commandRun) {
		config, _ := writeConfig(b, root, nil,
			map[string]any{"extensions": map[string]any{"scrub": map[string]any{"enable": true, "maxBytesPerSecond": rate}}})
		run := pierCommand(b, "scrub", config)
		if run.Exit != 0 {
			b.Fatalf("pier scrub exited %d\nstdout:\n%s\nstderr:\n%s", run.Exit, tail(run.Stdout), tail(run.Stderr))
		}
		res, err := loadScrubResult(root)
		if err != nil {
			b.Fatal(err)
		}
		if res.Bytes < t.Bytes {
			b.Fatalf("scrub read %d bytes of %d", res.Bytes, t.Bytes)
		}
		return res, run
	}
	var throttled float64
	var free time.Duration
	var freeRes scrubResult
	for range b.N {
		res, run := scrubWith(scrubThrottle)
		throttled = mibps(res.Bytes, res.took())
		b.Logf("throttled to %d MiB/s: %.1f MiB in %v: %.2f MiB/s (process wall %v, CPU %v)",
			scrubThrottle/MiB, float64(res.Bytes)/MiB, res.took().Round(time.Millisecond), throttled, run.Wall.Round(time.Millisecond), run.CPU.Round(time.Millisecond))
		i := 0
		free = bestOf(b, attempts, func() time.Duration {
			i++
			res, run := scrubWith(0)
			b.Logf("unthrottled, attempt %d: %.1f MiB in %v: %.0f MiB/s (process wall %v, CPU %v)",
				i, float64(res.Bytes)/MiB, res.took().Round(time.Millisecond), mibps(res.Bytes, res.took()), run.Wall.Round(time.Millisecond), run.CPU.Round(time.Millisecond))
			freeRes = res
			return res.took()
		})
	}
	record(b, measure{
		name: fmt.Sprintf("scrub %.0f MiB, throttle %d MiB/s", float64(t.Bytes)/MiB, scrubThrottle/MiB), value: throttled, unit: "MiB/s",
		limit: scrubThrottle / MiB, limitName: "throttle", metric: "x_throttle",
	}, ratioBetween(0.9, 1.01))
	record(b, measure{
		name: fmt.Sprintf("scrub %.0f MiB, unthrottled", float64(freeRes.Bytes)/MiB), value: mibps(freeRes.Bytes, free), unit: "MiB/s",
		limit: sha, limitName: "sha256", metric: "x_sha256",
	}, ratioAtLeast(0.8))
}

// scrubResult is what pier keeps of its last scrub pass in
// <root>/.pier/scrub.json.
type scrubResult struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Blobs    int       `json:"blobs"`
	Bytes    int64     `json:"bytes"`
}

func (r scrubResult) took() time.Duration { return r.Finished.Sub(r.Started) }

func loadScrubResult(root string) (scrubResult, error) {
	var r scrubResult
	data, err := os.ReadFile(filepath.Join(root, ".pier", "scrub.json"))
	if err != nil {
		return r, fmt.Errorf("scrub result: %w", err)
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("scrub result: %w", err)
	}
	return r, nil
}

// tail is the end of a long output, for failure messages.
func tail(s string) string {
	const n = 4000
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/pierproc"
)

// Issue 15: pull times for retention without wearing the card, and what
// the metrics cost.

// pullWearTarget is the most a thousand pulls may write to the root.
const pullWearTarget = 64 << 10

// pullSaveWait covers the store's PullSaveInterval (1 min) and the write.
const pullSaveWait = 65 * time.Second

// BenchmarkPullWear pulls 1,000 manifests (10 repositories, by tag) from a
// pier whose retention counts pulls (pulledWithin), with gc, dedupe and
// scrub off so nothing else writes, waits for the pull times to be kept
// (once a minute), and counts what the process dirtied in files
// (/proc/<pid>/io write_bytes, which counts a write when it is made,
// fsync or not). Target: under 64 KiB per 1,000 pulls. The state file must
// hold every repository's pull times, or the figure would flatter a pier
// that keeps nothing.
// PIER_BENCH_IDLE=0 skips it (it waits 65 s).
func BenchmarkPullWear(b *testing.B) {
	if os.Getenv("PIER_BENCH_IDLE") == "0" {
		b.Skip("PIER_BENCH_IDLE=0")
	}
	const repos, pulls = 10, 1000
	var written int64
	var kept int
	for range b.N {
		p := startPier(b, pierproc.Options{Storage: map[string]any{"gc": false, "dedupe": false, "commit": true,
			"retention": map[string]any{"policies": []any{map[string]any{"keepTags": []any{map[string]any{"pulledWithin": "720h"}}}}}}})
		for i := range repos {
			img := newImage([]byte(fmt.Sprintf(`{"wear":%d}`, i)), randomBytes(uint64(900+i), 4096))
			if _, err := pushImage(p.Client, fmt.Sprintf("wear/app%02d", i), "v1", img, "", nil, nil); err != nil {
				b.Fatal(err)
			}
		}
		time.Sleep(time.Second) // the pushes' own writes settle
		before, err := readProcIO(p.Pid)
		if err != nil {
			b.Fatal(err)
		}
		for i := range pulls {
			if _, _, err := p.Client.GetManifest(fmt.Sprintf("wear/app%02d", i%repos), "v1"); err != nil {
				b.Fatal(err)
			}
		}
		time.Sleep(pullSaveWait)
		after, err := readProcIO(p.Pid)
		if err != nil {
			b.Fatal(err)
		}
		written = after.sub(before).WriteBytes
		data, err := os.ReadFile(filepath.Join(p.Root, ".pier", "pulls.json"))
		var times struct{ Repos map[string]map[string]int64 }
		if err == nil && json.Unmarshal(data, &times) == nil {
			kept = len(times.Repos)
		}
	}
	record(b, measure{
		name: "bytes written per 1,000 pulls (pull times kept)", value: float64(written) / 1024 * 1000 / pulls, unit: "KiB",
		limit: pullWearTarget / 1024, limitName: "target", metric: "x_target",
	}, ratioAtMost(1))
	note(b, "pull times kept", fmt.Sprintf("%d of %d repositories' pull times on disk after one save interval", kept, repos), kept == repos)
}

// metricsRSSTarget is the most the metrics may add to idle RSS.
const metricsRSSTarget = 2 * MiB

// BenchmarkMetricsIdleRSS starts two piers on the same content, one with
// extensions.metrics on, serves each the same requests (and the metrics
// one a scrape), lets them settle, and compares their resident memory:
// what turning metrics on costs. What linking client_golang costs every
// pier, on or off (its package init: the default registry's Go and
// process collectors, protobuf's descriptors), is not in this figure: it
// needs a binary built without it (measured by hand for issue 15: +2.0
// MiB VmRSS, 1.9 MiB of it pages of the binary). Target: at most 2 MiB.
func BenchmarkMetricsIdleRSS(b *testing.B) {
	var off, on int64
	for range b.N {
		rss := func(metrics bool) int64 {
			opts := pierproc.Options{}
			if metrics {
				opts.Extra = map[string]any{"extensions": map[string]any{"metrics": map[string]any{"enable": true}}}
			}
			p := startPier(b, opts)
			img := newImage([]byte(`{"rss":1}`), randomBytes(950, 64<<10))
			if _, err := pushImage(p.Client, "rss/app", "v1", img, "", nil, nil); err != nil {
				b.Fatal(err)
			}
			for range 20 {
				if _, _, err := p.Client.GetManifest("rss/app", "v1"); err != nil {
					b.Fatal(err)
				}
			}
			if metrics {
				resp, err := http.Get(p.URL("/metrics"))
				if err != nil || resp.StatusCode != http.StatusOK {
					b.Fatalf("GET /metrics: %v %v", resp, err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			time.Sleep(3 * time.Second)
			kb, _, err := procStatus(p.Pid)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
		off, on = rss(false), rss(true)
	}
	b.Logf("idle VmRSS: %.1f MiB without metrics, %.1f MiB with", float64(off)/MiB, float64(on)/MiB)
	record(b, measure{
		name: "idle RSS added by turning metrics on", value: float64(on-off) / MiB, unit: "MiB",
		limit: metricsRSSTarget / MiB, limitName: "target", metric: "x_target",
	}, ratioAtMost(1))
}

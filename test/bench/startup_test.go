package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pier-oci/pier/test/internal/pierproc"
)

// Starting pier on a full store: how soon it answers, and what the dedupe
// reconcile it runs in the background costs (issue 3: "ready in well
// under a second whatever the store's size"; zot's reconcile is quadratic,
// "2,000 blobs: 38 s of CPU on every start").

// readyTarget is "well under a second".
const readyTarget = 250 * time.Millisecond

// zotDedupeCPU is zot's reported cost of its dedupe pass on 2,000 blobs,
// on every start (issue 3).
const zotDedupeCPU = 38 * time.Second

// startupSizes are the stores BenchmarkStartup starts on: repositories of
// 10 images (config, shared base layer, own layer, manifest), so 40 blob
// paths a repository.
var startupSizes = []int{2000, 20000}

// BenchmarkStartup times `pier serve` (dedupe on, the default) from exec
// to its first 200 on /v2/, best of 3 starts, on stores of 2,000 and
// 20,000 blobs; the limit is the same measured on an empty store in this
// run. The first start on a store is a fresh one: no cache.db yet, so the
// dedupe reconcile starts in the background while pier comes up. Target:
// <= 250 ms ("well under a second").
func BenchmarkStartup(b *testing.B) {
	startAll := func(root string) (first, best time.Duration) {
		config, addr := writeConfig(b, root, nil, nil)
		best = time.Duration(1<<63 - 1)
		for i := range attempts {
			cmd, _, took := serveTimed(b, config, addr)
			stopServe(cmd)
			if i == 0 {
				first = took
			}
			best = min(best, took)
		}
		return first, best
	}
	var empty time.Duration
	type result struct {
		blobs       int
		first, best time.Duration
	}
	var results []result
	for range b.N {
		var first time.Duration
		first, empty = startAll(filepath.Join(b.TempDir(), "data"))
		b.Logf("empty store: ready after %v (first start %v), best of %d", empty.Round(time.Microsecond), first.Round(time.Microsecond), attempts)
		results = results[:0]
		for _, n := range startupSizes {
			root, t := makeStore(b, synthStore{Prefix: "app", Repos: n / 40, Images: 10, Bases: 16})
			first, best := startAll(root)
			b.Logf("%d blobs: ready after %v (first start %v), best of %d", t.Blobs, best.Round(time.Microsecond), first.Round(time.Microsecond), attempts)
			results = append(results, result{t.Blobs, first, best})
			os.RemoveAll(root)
		}
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for _, r := range results {
		record(b, measure{
			name: fmt.Sprintf("ready after start, %d blobs (first start %.0f ms)", r.blobs, ms(r.first)), value: ms(r.best), unit: "ms",
			limit: ms(empty), limitName: "empty store", metric: fmt.Sprintf("x_empty_%d", r.blobs),
		}, valueAtMost(ms(readyTarget), "ms"))
	}
}

// A dedupeCase is a store size for BenchmarkDedupeReconcile (half of it
// unlinked duplicates of the other half) and the commit setting served.
type dedupeCase struct {
	blobs  int
	commit bool
}

func (c dedupeCase) label() string {
	if c.commit {
		return ", commit on"
	}
	return ""
}

// dedupeCases: the default commit off, and commit on (as on a Pi, where
// every link costs a directory fsync) for the small store only.
var dedupeCases = []dedupeCase{{2000, false}, {20000, false}, {2000, true}}

// dedupeDone is the line pier logs (at info) when a reconcile pass ends.
var dedupeDone = regexp.MustCompile(`msg="dedupe pass done".*`)

var logField = regexp.MustCompile(`(\w+)=("[^"]*"|\S+)`)

// A dedupePass is what one reconcile pass did and cost.
type dedupePass struct {
	fields  map[string]string // the log line's fields: repos, blobs, recorded, linked, already_linked, bytes_freed, took
	cpu     time.Duration     // process CPU (user + system) when the line appeared, start-up included
	settled time.Duration     // process CPU 3 s later: what the watcher did after the pass
	io      procIO            // process I/O when the line appeared
}

func (p dedupePass) int(k string) int64 {
	n, _ := strconv.ParseInt(p.fields[k], 10, 64)
	return n
}

// runDedupePass starts `pier serve` (dedupe on) on root, waits for its
// "dedupe pass done" line and measures the process then and once the
// watcher has settled; it stops the server after.
func runDedupePass(b *testing.B, root string, commit bool) dedupePass {
	b.Helper()
	s := pierproc.Start(b, pierproc.Options{Root: root, Storage: map[string]any{"commit": commit},
		Extra: map[string]any{"log": map[string]any{"level": "info"}}})
	pid := s.Cmd.Process.Pid
	deadline := time.Now().Add(5 * time.Minute)
	var p dedupePass
	for {
		if line := dedupeDone.FindString(s.Stderr()); line != "" {
			var err error
			if p.cpu, err = procCPU(pid); err != nil {
				b.Fatal(err)
			}
			if p.io, err = readProcIO(pid); err != nil {
				b.Fatal(err)
			}
			p.fields = map[string]string{}
			for _, m := range logField.FindAllStringSubmatch(line, -1) {
				p.fields[m[1]] = m[2]
			}
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("no dedupe pass done after 5 minutes; stderr:\n%s", tail(s.Stderr()))
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // the watcher dedupes arrivals 2 s after they settle
	var err error
	if p.settled, err = procCPU(pid); err != nil {
		b.Fatal(err)
	}
	if code := s.Stop(b); code != 0 {
		b.Fatalf("pier serve exited %d; stderr:\n%s", code, tail(s.Stderr()))
	}
	return p
}

// BenchmarkDedupeReconcile starts pier on a root into which a copy of
// every repository was put as separate files (a zot root copied in, or an
// rsync without -H): half of its 2,000 (20,000) blobs are unlinked
// duplicates. The first start's reconcile links them; the second start's
// must only stat (linked=0, nothing recorded, no file's mtime or ctime
// changed). Wall time is the pass's own (took=), CPU the process's (user
// + system, start-up included) when the line appeared, compared with
// zot's 38 s of CPU for 2,000 blobs on every start. Commit is off (the
// default), and on for 2,000 blobs.
func BenchmarkDedupeReconcile(b *testing.B) {
	zotMS := float64(zotDedupeCPU.Milliseconds())
	var cpu2k [2]time.Duration
	for _, c := range dedupeCases {
		n := c.blobs
		b.Run(strings.ReplaceAll(fmt.Sprint(n, c.label()), ", ", "_"), func(b *testing.B) {
			var first, second dedupePass
			var t synthTotals
			var changed, total int
			var cacheSize int64 // of cache.db after the first pass
			for range b.N {
				var root string
				root, t = makeStore(b, synthStore{Prefix: "src", Copies: "zot", Repos: n / 80, Images: 10})
				first = runDedupePass(b, root, c.commit)
				fi, err := os.Stat(filepath.Join(root, "cache.db"))
				if err != nil {
					b.Fatal(err)
				}
				cacheSize = fi.Size()
				before, err := blobTimes(root)
				if err != nil {
					b.Fatal(err)
				}
				second = runDedupePass(b, root, c.commit)
				after, err := blobTimes(root)
				if err != nil {
					b.Fatal(err)
				}
				total, changed = len(before), 0
				for path, tm := range before {
					if after[path] != tm {
						changed++
					}
				}
			}
			for i, p := range []dedupePass{first, second} {
				b.Logf("pass %d: %v; process CPU %v at the line, %v 3 s later; wrote %d B (write_bytes)",
					i+1, p.fields, p.cpu, p.settled, p.io.WriteBytes)
			}
			if n == dedupeCases[0].blobs && !c.commit {
				cpu2k = [2]time.Duration{first.cpu, second.cpu}
			}
			for i, p := range []dedupePass{first, second} {
				which := [2]string{"1st pass (links)", "2nd pass (stats)"}[i]
				took, _ := time.ParseDuration(p.fields["took"])
				record(b, measure{
					name:  fmt.Sprintf("dedupe %s, %d blobs%s: CPU (wall %v)", which, t.Blobs, c.label(), took.Round(time.Millisecond)),
					value: float64(p.cpu.Milliseconds()), unit: "ms",
					limit: zotMS, limitName: "zot on 2,000 blobs", metric: fmt.Sprintf("x_zot_pass%d", i+1),
				}, nil)
			}
			wantLinked := int64(t.Blobs / 2)
			note(b, fmt.Sprintf("dedupe 1st pass, %d blobs%s", t.Blobs, c.label()),
				fmt.Sprintf("linked %d of %d duplicates, freed %.1f MiB of %.1f MiB; recorded %d paths; CPU %v (%v once the watcher settled); wrote %.1f MiB (write_bytes), cache.db %.1f MiB (%.1f KiB a digest)",
					first.int("linked"), wantLinked, float64(first.int("bytes_freed"))/MiB, float64(t.Bytes)/2/MiB, first.int("recorded"),
					first.cpu, first.settled, float64(first.io.WriteBytes)/MiB, float64(cacheSize)/MiB, float64(cacheSize)/1024/float64(t.Blobs/2)),
				first.int("linked") == wantLinked && first.int("bytes_freed") == t.Bytes/2)
			note(b, fmt.Sprintf("dedupe 2nd pass, %d blobs%s", t.Blobs, c.label()),
				fmt.Sprintf("linked=%d recorded=%d already_linked=%d; %d of %d blob files had mtime or ctime changed; wrote %d KiB (write_bytes); CPU %v (%v once settled)",
					second.int("linked"), second.int("recorded"), second.int("already_linked"), changed, total, second.io.WriteBytes>>10, second.cpu, second.settled),
				second.int("linked") == 0 && second.int("recorded") == 0 && changed == 0)
			if small := dedupeCases[0].blobs; n > small && !c.commit && cpu2k[0] > 0 {
				note(b, fmt.Sprintf("dedupe CPU growth %d -> %d blobs", small, n),
					fmt.Sprintf("1st pass %.1fx, 2nd pass %.1fx for %dx the blobs (linear: about %d)",
						float64(first.cpu)/float64(cpu2k[0]), float64(second.cpu)/float64(max(cpu2k[1], time.Millisecond)), n/small, n/small),
					first.cpu < cpu2k[0]*time.Duration(2*n/small))
			}
		})
	}
}

package bench

import (
	"bytes"
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/test/internal/pierproc"
)

// What a pushed blob costs the disk: the sync calls that wait for it
// (what an SD card feels most) and the bytes written (what wears it).
// Issue 3: "count and report the fsyncs per pushed blob".

// expectedSyncs is what a blob costs before it is acknowledged, with
// commit on: the upload file and the blobs directory after the rename (2
// fsyncs). The dedupe cache records the blob in the background, in BoltDB
// transactions (2 fdatasyncs each: data pages, then meta page) that every
// blob recorded within 100 ms shares.
const expectedSyncs = 2

// syncSlack allows, beyond expectedSyncs, the cache's shared transactions
// and bbolt's fsync when it grows cache.db: at most one extra sync call a
// blob, on average, even for blobs pushed one at a time.
const syncSlack = 1.5

// A syncCase is one way of pushing blobs.
type syncCase struct {
	size    int // bytes a blob
	n       int // blobs pushed
	clients int // pushing at once
	commit  bool
}

func (c syncCase) String() string {
	on := "commit on"
	if !c.commit {
		on = "commit off"
	}
	size := fmt.Sprintf("%dKiB", c.size>>10)
	if c.size >= MiB {
		size = fmt.Sprintf("%dMiB", c.size/MiB)
	}
	par := ""
	if c.clients > 1 {
		par = fmt.Sprintf(", %d clients", c.clients)
	}
	return fmt.Sprintf("%s x%d%s, %s", size, c.n, par, on)
}

var syncCases = []syncCase{
	{size: 4 << 10, n: 200, clients: 1, commit: true},
	{size: 4 << 10, n: 200, clients: 1, commit: false},
	{size: 1 << 20, n: 20, clients: 1, commit: true},
	{size: 1 << 20, n: 20, clients: 1, commit: false},
	{size: 4 << 10, n: 200, clients: 8, commit: true},
}

// BenchmarkPushSyncs pushes new blobs (POST + PUT, as clients push
// layers) to a server with dedupe on, commit on and off. Each case pushes
// twice, to two repositories, with different content: once untraced (time
// per blob, and bytes dirtied from /proc/<pid>/io write_bytes), once
// under strace -f -y (sync calls, by the file they were made on). The
// first blob of each repository, which also creates its layout, is pushed
// before. Targets: with commit on, at most 3 sync calls per blob pushed
// alone (2 for the blob before it is acknowledged, the rest the cache's
// shared transactions); with commit off, none.
func BenchmarkPushSyncs(b *testing.B) {
	for ci, c := range syncCases {
		b.Run(strings.NewReplacer(" ", "", ",", "_").Replace(c.String()), func(b *testing.B) {
			var took time.Duration
			var written int64
			var counts map[string]int64
			for range b.N {
				p := startPier(b, pierproc.Options{Storage: map[string]any{"commit": c.commit, "dedupe": true}})
				blobs := func(round int) [][]byte {
					out := make([][]byte, c.n)
					for i := range out {
						out[i] = randomBytes(uint64(ci)<<32|uint64(round)<<24|uint64(i), c.size)
					}
					return out
				}
				untraced, traced := blobs(0), blobs(1)
				// The first blob of a repository also creates its layout
				// (directories, oci-layout, index.json): pushed before the
				// count, so what is counted is the cost of a blob.
				for _, repo := range []string{"syncs/untraced", "syncs/traced"} {
					if err := pushBlobs(p, repo, [][]byte{randomBytes(uint64(ci)<<32|1<<31|uint64(len(repo)), 512)}, 1); err != nil {
						b.Fatal(err)
					}
				}
				before, err := readProcIO(p.Pid)
				if err != nil {
					b.Fatal(err)
				}
				took = timed(b, func() error { return pushBlobs(p, "syncs/untraced", untraced, c.clients) })
				after, err := readProcIO(p.Pid)
				if err != nil {
					b.Fatal(err)
				}
				written = after.sub(before).WriteBytes
				root := p.Root
				counts, err = traceSyncs(p.Pid, func(path string) string { return syncTarget(root, path) },
					func() error { return pushBlobs(p, "syncs/traced", traced, c.clients) })
				if err != nil {
					note(b, "push syncs "+c.String(), "strace could not trace: "+err.Error(), false)
					return
				}
			}
			var total int64
			var parts []string
			for _, k := range slices.Sorted(maps.Keys(counts)) {
				total += counts[k]
				parts = append(parts, fmt.Sprintf("%s %.2f", k, float64(counts[k])/float64(c.n)))
			}
			perBlob := float64(total) / float64(c.n)
			b.Logf("%s: %d sync calls for %d blobs: %s", c, total, c.n, strings.Join(parts, ", "))
			var t *target
			switch {
			case !c.commit:
				t = valueAtMost(0, "calls")
			case c.clients == 1:
				t = ratioAtMost(syncSlack)
			}
			record(b, measure{
				name: "sync calls per blob, " + c.String(), value: perBlob, unit: "calls",
				limit: expectedSyncs, limitName: "blob before its ack, commit on", metric: "x_expected",
			}, t)
			record(b, measure{
				name: "bytes written per blob, " + c.String(), value: float64(written) / float64(c.n) / 1024, unit: "KiB",
				limit: float64(c.size) / 1024, limitName: "blob", metric: "x_blob",
			}, nil)
			note(b, "push syncs "+c.String(), fmt.Sprintf("per blob: %s; %.2f ms a blob untraced",
				orDash(strings.Join(parts, ", ")), float64(took.Microseconds())/1000/float64(c.n)), t == nil || t.met(measure{value: perBlob, limit: expectedSyncs}))
		})
	}
}

// pushBlobs pushes every blob to repo, from clients clients at once.
func pushBlobs(p *pier, repo string, blobs [][]byte, clients int) error {
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for w := range clients {
		wg.Go(func() {
			for i := w; i < len(blobs); i += clients {
				d := digest.FromBytes(blobs[i])
				if err := p.Client.PushBlobStream(repo, d, bytes.NewReader(blobs[i]), int64(len(blobs[i]))); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

var hexRun = regexp.MustCompile(`[0-9a-f]{16,}|[0-9a-f]{8}-[0-9a-f-]{27}`)

// syncTarget names the file a sync call was made on, the same for every
// blob: relative to the root, hex names and upload ids replaced by "*".
func syncTarget(root, path string) string {
	if path == "" {
		return "(no file)"
	}
	rel, err := filepath.Rel(root, path)
	if err != nil || strings.HasPrefix(rel, "..") {
		return path
	}
	if rel == "." {
		return "root dir"
	}
	rel = strings.Replace(rel, "syncs/untraced", "<repo>", 1)
	rel = strings.Replace(rel, "syncs/traced", "<repo>", 1)
	return hexRun.ReplaceAllString(rel, "*")
}

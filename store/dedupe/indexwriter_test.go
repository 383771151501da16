package dedupe

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/cache"
)

// The index writer keeps order, shows queued puts to lookups until they
// are written, never blocks a producer (a change past a full queue is
// dropped and counted), and writes everything queued when it closes.
func TestIndexWriter(t *testing.T) {
	var mu sync.Mutex
	var written []cache.Op
	batches := 0
	release := make(chan struct{})
	var dropped atomic.Int64
	w := newIndexWriter(func(_ <-chan struct{}, ops []cache.Op) {
		<-release // the disk is slow
		mu.Lock()
		written = append(written, ops...)
		batches++
		mu.Unlock()
	}, 10*time.Millisecond, func() { dropped.Add(1) })
	d := digest.FromString("x")

	w.put(d, "a")
	w.put(d, "b")
	w.remove(d, "b") // cancels the queued put for lookups at once
	if got := fmt.Sprint(w.merge(d, nil)); got != "[a]" {
		t.Fatalf("lookups see %s while queued, want [a]", got)
	}

	// Many more changes than the queue holds while the writer is stuck:
	// no producer waits; what does not fit is dropped and counted.
	var wg sync.WaitGroup
	start := time.Now()
	for g := range 4 {
		wg.Go(func() {
			for i := range maxQueuedChanges {
				w.put(d, fmt.Sprintf("g%d/%d", g, i))
			}
		})
	}
	wg.Wait()
	if took := time.Since(start); took > time.Second {
		t.Fatalf("producers waited %v on a stuck writer", took)
	}
	close(release)
	w.close()
	w.put(d, "after-close") // dropped, not blocked

	mu.Lock()
	defer mu.Unlock()
	if got := int64(len(written)) + dropped.Load(); got != 3+4*maxQueuedChanges {
		t.Fatalf("%d changes written and %d dropped, want %d in all", len(written), dropped.Load(), 3+4*maxQueuedChanges)
	}
	// At most one batch in the writer and one full queue were kept.
	if dropped.Load() < 2*maxQueuedChanges-3 {
		t.Fatalf("only %d changes dropped past a full queue", dropped.Load())
	}
	if written[1].Path != "b" || written[2].Path != "b" || !written[2].Remove {
		t.Fatalf("order lost: %+v", written[:3])
	}
	if batches >= len(written) {
		t.Fatalf("%d batches for %d changes: not batched", batches, len(written))
	}
	if got := w.merge(d, nil); len(got) != 0 {
		t.Fatalf("written changes still pending for lookups: %d", len(got))
	}
}

// A batch [put P, remove P] is being written while P is put again: when
// that batch lands, P (on the disk again) must stay visible to lookups
// until the later put is written too.
func TestIndexWriterOverlayKeepsARePut(t *testing.T) {
	d := digest.FromString("x")
	var mu sync.Mutex
	inCache := map[string]bool{}
	entered := make(chan int)
	gate := make(chan struct{})
	calls := 0
	w := newIndexWriter(func(_ <-chan struct{}, ops []cache.Op) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		entered <- n
		<-gate
		mu.Lock()
		for _, op := range ops {
			inCache[op.Path] = !op.Remove
		}
		mu.Unlock()
	}, 0, func() { t.Error("a change was dropped") })
	defer func() { close(gate); w.close() }()
	lookup := func() []string {
		mu.Lock()
		var rels []string
		for p, ok := range inCache {
			if ok {
				rels = append(rels, p)
			}
		}
		mu.Unlock()
		return w.merge(d, rels)
	}

	w.put(d, "warm")
	<-entered // writer held in batch 1
	w.put(d, "P")
	w.remove(d, "P")
	gate <- struct{}{} // batch 1 done
	<-entered          // writer held in batch 2 = [put P, remove P]
	w.put(d, "P")      // re-put: P is on the disk again
	if !slices.Contains(lookup(), "P") {
		t.Fatalf("P not visible right after its put")
	}
	gate <- struct{}{} // batch 2 done
	<-entered          // writer held in batch 3 = [put P], not written yet
	if got := lookup(); !slices.Contains(got, "P") {
		t.Fatalf("P, put and not removed since, is hidden from lookups: %v", got)
	}
	gate <- struct{}{}
}

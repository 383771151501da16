package store

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/cache"
)

// The index writer keeps order, shows queued puts to lookups until they
// are written, never blocks a producer for long, and writes everything
// queued when it closes.
func TestIndexWriter(t *testing.T) {
	var mu sync.Mutex
	var written []cache.Op
	batches := 0
	release := make(chan struct{})
	w := newIndexWriter(func(ops []cache.Op) {
		<-release // the disk is slow
		mu.Lock()
		written = append(written, ops...)
		batches++
		mu.Unlock()
	}, 10*time.Millisecond)
	d := digest.FromString("x")

	w.put(d, "a")
	w.put(d, "b")
	w.remove(d, "b") // cancels the queued put for lookups at once
	if got := fmt.Sprint(w.merge(d, nil)); got != "[a]" {
		t.Fatalf("lookups see %s while queued, want [a]", got)
	}
	close(release)

	// Many more changes than the queue holds: producers wait for the
	// writer, none is lost, and order is kept.
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range maxQueuedChanges {
				w.put(d, fmt.Sprintf("g%d/%d", g, i))
			}
		})
	}
	wg.Wait()
	w.close()
	w.put(d, "after-close") // dropped, not blocked

	mu.Lock()
	defer mu.Unlock()
	if len(written) != 3+4*maxQueuedChanges {
		t.Fatalf("%d changes written, want %d", len(written), 3+4*maxQueuedChanges)
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

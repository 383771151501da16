package dedupe_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/dedupe"
)

// Review: issue 11 asks that "a full write queue never blocks a push or
// GC (drop the change and let the background walk record it)", and
// store/cache says every call gets a deadline. The index writer applies
// with context.Background() and, past maxQueuedChanges (4096), Record and
// Forget wait for it. commitBlob calls Record holding the repository's
// read lock and the blob's lock, applyCollection calls Forget holding the
// repository's write lock: an index that stalls (a disk that hangs on
// the BoltDB fsync, a Redis that stops answering) stops every push and
// every GC, and with them every other request on those repositories.
func TestReviewAStalledIndexNeverBlocksRecord(t *testing.T) {
	stall := make(chan struct{})
	defer close(stall)
	c := &stalledCache{stall: stall}
	dd := dedupe.New(dedupe.Options{Driver: openDriver(t, t.TempDir()), Cache: c, Repos: noLocks{}})
	defer func() { go dd.Close() }() // Close waits for the stalled write
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 10_000 { // what a GC pass over a large store forgets
			dd.Record(digest.FromString(fmt.Sprint(i)), fmt.Sprintf("r/blobs/sha256/%064d", i))
		}
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Record has blocked for 3 s behind an index that does not answer: pushes and GC wait with it, holding repository locks")
	}
}

// stalledCache answers lookups but never finishes a write until stall is
// closed, and ignores the context it is given.
type stalledCache struct{ stall chan struct{} }

func (c *stalledCache) Paths(context.Context, digest.Digest) ([]string, error) { return nil, nil }
func (c *stalledCache) Apply(ctx context.Context, _ []cache.Op) error {
	select {
	case <-c.stall:
		return nil
	case <-ctx.Done():
		return cache.ErrUnavailable
	}
}
func (c *stalledCache) Complete(context.Context) (bool, error) { return true, nil }
func (c *stalledCache) MarkComplete(context.Context) error     { return nil }
func (c *stalledCache) Close() error                           { return nil }

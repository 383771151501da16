// Package cache defines the dedupe index: for each digest, the paths
// (storage keys relative to a store root, like
// "library/alpine/blobs/sha256/<hex>") of the objects that hold it, one of
// them the original.
//
// A cache is an index, never the truth. The store checks every path it
// gets back against the storage, drops the ones that are gone, and
// rebuilds the whole index from the storage when it is lost. No request
// may fail because of the cache: every call gets a context with a
// deadline, and an index that errs or is slow costs dedupe, not service.
//
// Several processes may share one index (replicas on one bucket with a
// Redis or DynamoDB index): every method must stay correct when another
// process calls it at the same time for the same digest.
package cache

import (
	"cmp"
	"context"
	"errors"
	"sync"

	"github.com/opencontainers/go-digest"
)

var (
	// ErrUnavailable means the index cannot be reached or used right now
	// (closed, a server down, a deadline passed). The store carries on
	// without dedupe and tries again later; it does not rebuild.
	ErrUnavailable = errors.New("dedupe cache unavailable")
	// ErrCorrupt means the index's own data is damaged. The store replaces
	// it (when it owns it, as the BoltDB file) and rebuilds it.
	ErrCorrupt = errors.New("dedupe cache corrupt")
)

// Cache maps digests to the paths that hold them. Implementations are safe
// for concurrent use, by goroutines and by processes sharing the backend.
type Cache interface {
	// Paths returns the recorded paths of d, the original first; none is
	// not an error.
	Paths(ctx context.Context, d digest.Digest) ([]string, error)

	// Apply makes ops, in order. Recording a path twice, or forgetting one
	// not recorded, changes nothing. The first path recorded for a digest
	// is its original; when the original is forgotten, the remaining path
	// that sorts first (byte order) becomes the original, so that every
	// backend, and every process, picks the same one. A put made by one
	// process is never lost to another's concurrent change of the same
	// digest.
	//
	// A backend may split ops into several batches (DynamoDB takes at most
	// 25 writes at once), each applied in order; when one fails, the
	// earlier ones stay applied and the error is returned. That is safe:
	// the store records again, from the storage, what a failure lost.
	Apply(ctx context.Context, ops []Op) error

	// Complete reports whether the index was built from the whole storage
	// since it was created, or since it was last emptied (a new file, a
	// Redis FLUSHALL, a new table). Until it is, a path missing from the
	// index does not mean the content is absent, and nothing that could
	// remove the last copy of content may act on the index alone.
	Complete(ctx context.Context) (bool, error)

	// MarkComplete records that a full build from the storage finished.
	MarkComplete(ctx context.Context) error

	// Close releases the cache.
	Close() error
}

// Op is one change to the index: Path now holds Digest, or (Remove) no
// longer does.
type Op struct {
	Digest digest.Digest
	Path   string
	Remove bool
}

// ApplyByDigest makes ops with do, for the indexes whose writes are one
// round trip per op (a Redis cluster, DynamoDB): in order for each digest,
// so an add and a removal of one digest never cross, and the digests side
// by side, workers at once, so a batch costs its longest digest rather
// than the sum. A digest whose op fails is left at that op; the others go
// on. The first error is returned.
func ApplyByDigest(ops []Op, workers int, do func(Op) error) error {
	byDigest := map[digest.Digest][]Op{}
	var order []digest.Digest
	for _, op := range ops {
		if byDigest[op.Digest] == nil {
			order = append(order, op.Digest)
		}
		byDigest[op.Digest] = append(byDigest[op.Digest], op)
	}
	work := make(chan digest.Digest)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range min(workers, len(order)) {
		wg.Go(func() {
			for d := range work {
				for _, op := range byDigest[d] {
					if err := do(op); err != nil {
						mu.Lock()
						first = cmp.Or(first, err)
						mu.Unlock()
						break
					}
				}
			}
		})
	}
	for _, d := range order {
		work <- d
	}
	close(work)
	wg.Wait()
	return first
}

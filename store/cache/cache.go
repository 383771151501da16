// Package cache defines the dedupe index: for each digest, the paths
// (relative to a store root, like "library/alpine/blobs/sha256/<hex>") of
// the files that hold it, the first recorded one being the original.
//
// A cache is an index, never the truth. The store checks every path it
// gets back against the disk, drops the ones that are gone, and rebuilds
// the whole index from the disk when it is lost. No request may fail
// because of the cache.
package cache

import (
	"context"
	"errors"

	"github.com/opencontainers/go-digest"
)

// ErrUnavailable means the index cannot be used right now (corrupt, closed
// or unreachable); the store carries on without dedupe until it is rebuilt.
var ErrUnavailable = errors.New("dedupe cache unavailable")

// Cache maps digests to the paths that hold them. Implementations are safe
// for concurrent use.
type Cache interface {
	// Paths returns the recorded paths of d, the original first; none is
	// not an error.
	Paths(ctx context.Context, d digest.Digest) ([]string, error)
	// Apply makes changes, in order, at once (one transaction or round
	// trip where the backend has them). Recording a path twice, or
	// forgetting one not recorded, changes nothing. When the original of a
	// digest is forgotten, the next recorded path becomes the original.
	Apply(ctx context.Context, ops []Op) error
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

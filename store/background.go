package store

import (
	"context"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/dedupe"
)

// verifiedSaveInterval is how often the record of verified blobs is kept,
// when it changed: a power cut costs at most this much re-checking.
const verifiedSaveInterval = 10 * time.Minute

// Run does the store's own background work until ctx ends: the dedupe
// index kept in step with the storage (a pass at start, layouts that
// arrive), and the record of verified blobs kept in the root.
func (s *Store) Run(ctx context.Context) {
	if s.ro {
		return
	}
	if s.dedupe != nil {
		go s.dedupe.Run(ctx)
	}
	if s.lease != nil {
		go s.lease.keep(ctx)
	}
	t := time.NewTicker(verifiedSaveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.verified.save(ctx, s.drv, s.log)
		}
	}
}

// Reconcile runs one dedupe pass over the whole store now; one that
// recorded everything marks the index complete.
func (s *Store) Reconcile(ctx context.Context) (dedupe.Stats, error) {
	if s.dedupe == nil {
		return dedupe.Stats{}, nil
	}
	return s.dedupe.Pass(ctx)
}

// dedupeHost is the store as dedupe sees it.
type dedupeHost Store

func (h *dedupeHost) Repositories(ctx context.Context) ([]string, error) {
	return (*Store)(h).Repositories(ctx)
}

func (h *dedupeHost) RLock(repo string) func() { return h.locks.RLock(repo) }

func (h *dedupeHost) Checked(ctx context.Context, key string, d digest.Digest) {
	if info, err := h.drv.Stat(ctx, key); err == nil {
		h.verified.add(info.Content, d)
	}
}

func (h *dedupeHost) ReadState(ctx context.Context, name string) ([]byte, error) {
	return (*Store)(h).ReadState(ctx, name)
}

func (h *dedupeHost) WriteState(ctx context.Context, name string, data []byte) error {
	return (*Store)(h).WriteState(ctx, name, data)
}

package cachetest

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/cache"
)

// Memory is a dedupe index in memory: the contract in its plainest form,
// checked by the suite like any backend, for tests of the store that need
// an index they can stall, break or empty.
type Memory struct {
	mu       sync.Mutex
	original map[digest.Digest]string
	paths    map[digest.Digest]map[string]bool
	complete bool
}

var _ cache.Cache = (*Memory)(nil)

// NewMemory returns an empty index.
func NewMemory() *Memory {
	m := &Memory{}
	m.Empty()
	return m
}

// Empty drops every entry and the completeness mark, as a FLUSHALL would.
func (m *Memory) Empty() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.original = map[digest.Digest]string{}
	m.paths = map[digest.Digest]map[string]bool{}
	m.complete = false
}

func unavailable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", cache.ErrUnavailable, err)
	}
	return nil
}

// Paths implements cache.Cache.
func (m *Memory) Paths(ctx context.Context, d digest.Digest) ([]string, error) {
	if err := unavailable(ctx); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	orig, ok := m.original[d]
	if !ok {
		return nil, nil
	}
	out := []string{orig}
	for _, p := range slices.Sorted(func(yield func(string) bool) {
		for p := range m.paths[d] {
			if !yield(p) {
				return
			}
		}
	}) {
		if p != orig {
			out = append(out, p)
		}
	}
	return out, nil
}

// Apply implements cache.Cache.
func (m *Memory) Apply(ctx context.Context, ops []cache.Op) error {
	if err := unavailable(ctx); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, op := range ops {
		set := m.paths[op.Digest]
		if !op.Remove {
			if set == nil {
				set = map[string]bool{}
				m.paths[op.Digest] = set
				m.original[op.Digest] = op.Path
			}
			set[op.Path] = true
			continue
		}
		if !set[op.Path] {
			continue
		}
		delete(set, op.Path)
		if len(set) == 0 {
			delete(m.paths, op.Digest)
			delete(m.original, op.Digest)
		} else if m.original[op.Digest] == op.Path {
			var next string
			for p := range set {
				if next == "" || p < next {
					next = p
				}
			}
			m.original[op.Digest] = next
		}
	}
	return nil
}

// Complete implements cache.Cache.
func (m *Memory) Complete(ctx context.Context) (bool, error) {
	if err := unavailable(ctx); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.complete, nil
}

// MarkComplete implements cache.Cache.
func (m *Memory) MarkComplete(ctx context.Context) error {
	if err := unavailable(ctx); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.complete = true
	return nil
}

// Close implements cache.Cache.
func (m *Memory) Close() error { return nil }

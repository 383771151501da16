package store

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/driver"
)

// The bytes a root's blobs take, kept as pushes, deletes and collections
// change them, so that a quota costs no walk per push. A walk from the
// store's opening counts what is there; until it ends, the byte quotas are not
// enforced (the free-space guard is); a push waits for it a little.
//
// Hard links: a repository counts every blob it holds in full, shared or
// not (what it would take as a copy: that is what a per-repository quota
// bounds). The root counts each stored object once: a push that links an
// existing object adds nothing to it, and a delete frees its bytes only
// when it removes the last link. The walk at start shares each object's
// bytes among its links (size/links per link). Objects pier changes
// without a push or a delete (the dedupe pass linking copies, scrub moving
// a corrupt blob aside) leave the root's count high, never low, until the
// next start; every collection recounts the bytes of the repositories
// it visits.

type usage struct {
	mu      sync.Mutex
	ready   bool
	counted chan struct{} // closed once the count at start ended
	started atomic.Bool   // the count at start is under way
	end     sync.Once
	total   int64 // the root's, each object once
	repos   map[string]*repoUsage
}

type repoUsage struct {
	bytes int64 // every blob in full
	share int64 // what this repository added to total, and took from it
}

func newUsage() *usage { return &usage{repos: map[string]*repoUsage{}, counted: make(chan struct{})} }

// countWait bounds how long a push waits for the count at start before
// going on without the byte quotas: a root of a few hundred repositories
// is counted in well under it.
const countWait = 2 * time.Second

// waitCounted waits, within countWait, for the count at start, when one
// is under way.
func (u *usage) waitCounted(ctx context.Context) {
	if !u.started.Load() {
		return
	}
	t := time.NewTimer(countWait)
	defer t.Stop()
	select {
	case <-u.counted:
	case <-t.C:
	case <-ctx.Done():
	}
}

func (u *usage) repo(name string) *repoUsage {
	r := u.repos[name]
	if r == nil {
		r = &repoUsage{}
		u.repos[name] = r
	}
	return r
}

// counted records a blob of size bytes that appeared in repo: a new
// object, or another link to one already stored.
func (s *Store) counted(repo string, size int64, newObject bool) {
	u := s.usage
	u.mu.Lock()
	defer u.mu.Unlock()
	r := u.repo(repo)
	r.bytes += size
	if newObject {
		r.share += size
		u.total += size
	}
}

// uncounted records a blob of size bytes removed from repo; lastLink says
// the object went with it.
func (s *Store) uncounted(repo string, size int64, lastLink bool) {
	u := s.usage
	u.mu.Lock()
	defer u.mu.Unlock()
	r := u.repo(repo)
	r.bytes = max(r.bytes-size, 0)
	if lastLink {
		r.share -= size // may go below 0: the object's other links held the rest
		u.total = max(u.total-size, 0)
	}
}

// recount counts repo's blobs from a listing: their bytes, and with
// shares its part of the root's (at start; a collection, which counts
// what it removes as it goes, recounts the bytes only: another
// repository's share of an object it unlinked is not known here). The
// caller holds the repository's lock, which every change of the counts
// holds too.
func (s *Store) recount(ctx context.Context, repo string, shares bool) {
	var bytes, share int64
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		entries, err := s.drv.List(ctx, blobsDir(repo, alg))
		if err != nil {
			return // counted next time
		}
		for _, e := range entries {
			if e.IsDir {
				continue
			}
			bytes += e.Size
			share += e.Size / int64(max(e.Links, 1))
		}
	}
	u := s.usage
	u.mu.Lock()
	defer u.mu.Unlock()
	r := u.repo(repo)
	r.bytes = bytes
	if shares {
		u.total = max(u.total+share-r.share, 0)
		r.share = share
	}
	if bytes == 0 && r.share == 0 && !s.repoExists(ctx, repo) {
		delete(u.repos, repo)
	}
}

// countAll counts every repository once (at start, in the background).
func (s *Store) countAll(ctx context.Context) {
	s.usage.started.Store(true)
	defer s.usage.end.Do(func() { close(s.usage.counted) })
	repos, err := s.Repositories(ctx)
	if err != nil {
		s.log.Warn("cannot count the root's bytes; byte quotas are not enforced until the next start", "err", err)
		return
	}
	for _, repo := range repos {
		if ctx.Err() != nil {
			return
		}
		unlock := s.locks.Lock(repo)
		s.recount(ctx, repo, true)
		unlock()
	}
	s.usage.mu.Lock()
	s.usage.ready = true
	s.usage.mu.Unlock()
}

// Usage reports the bytes the root's blobs take (each stored object once)
// and the repositories counted; ok is false until the count at start has
// finished.
func (s *Store) Usage() (bytes int64, repos int, ok bool) {
	u := s.usage
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.total, len(u.repos), u.ready
}

// repoBytes is the bytes of repo's blobs, shared ones in full.
func (s *Store) repoBytes(repo string) int64 {
	u := s.usage
	u.mu.Lock()
	defer u.mu.Unlock()
	if r := u.repos[repo]; r != nil {
		return r.bytes
	}
	return 0
}

// Stats is what the store reports about its room, for metrics.
type Stats struct {
	Bytes    int64 // the blobs, each stored object once (Usage)
	Logical  int64 // the blobs, each repository's in full: Logical-Bytes is what hard links save
	Repos    int
	Counted  bool  // the count at start has finished
	Free     int64 // on the storage, -1 where the driver cannot tell
	Size     int64 // of the storage, -1 likewise
	Refusals int64 // pushes refused by a limit (storage.quota, maxRepos)
}

// Stats reports the store's room.
func (s *Store) Stats() Stats {
	u := s.usage
	u.mu.Lock()
	st := Stats{Bytes: u.total, Repos: len(u.repos), Counted: u.ready, Free: -1, Size: -1, Refusals: s.refused.Load()}
	for _, r := range u.repos {
		st.Logical += r.bytes
	}
	u.mu.Unlock()
	if sp, ok := s.drv.(driver.Spacer); ok {
		if free, total, err := sp.Space(); err == nil {
			st.Free, st.Size = free, total
		}
	}
	return st
}

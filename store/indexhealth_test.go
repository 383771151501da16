package store

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/cache/cachetest"
)

// flakyIndex is an index that works, is down (every call fails at once),
// or is stalled (every call hangs until its context ends, as a server
// that accepts connections and never answers).
type flakyIndex struct {
	*cachetest.Memory
	t    *testing.T
	mode atomic.Int32
}

const (
	indexUp = iota
	indexDown
	indexStalled
)

func (f *flakyIndex) gate(ctx context.Context) error {
	switch f.mode.Load() {
	case indexDown:
		return fmt.Errorf("%w: connection refused", cache.ErrUnavailable)
	case indexStalled:
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", cache.ErrUnavailable, ctx.Err())
		case <-time.After(time.Minute):
			f.t.Error("a cache call without a deadline")
			return cache.ErrUnavailable
		}
	}
	return nil
}

func (f *flakyIndex) Paths(ctx context.Context, d digest.Digest) ([]string, error) {
	if err := f.gate(ctx); err != nil {
		return nil, err
	}
	return f.Memory.Paths(ctx, d)
}

func (f *flakyIndex) Apply(ctx context.Context, ops []cache.Op) error {
	if err := f.gate(ctx); err != nil {
		return err
	}
	return f.Memory.Apply(ctx, ops)
}

func (f *flakyIndex) Complete(ctx context.Context) (bool, error) {
	if err := f.gate(ctx); err != nil {
		return false, err
	}
	return f.Memory.Complete(ctx)
}

func (f *flakyIndex) MarkComplete(ctx context.Context) error {
	if err := f.gate(ctx); err != nil {
		return err
	}
	return f.Memory.MarkComplete(ctx)
}

// runDedupe runs s's background dedupe job for the test.
func runDedupe(t *testing.T, s *Store) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.RunDedupe(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitLinked waits until repo's copies of d are one inode.
func waitLinked(t *testing.T, s *Store, d digest.Digest, repos ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		linked := true
		for _, r := range repos[1:] {
			if inode(t, s.blobPath(r, d)) != inode(t, s.blobPath(repos[0], d)) {
				linked = false
			}
		}
		if linked {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("copies of %s in %v not linked once the index was back", d, repos)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A down or stalled index never makes a push, a pull or a delete wait
// past the lookup deadline, a flood of changes never blocks, the store
// closes promptly, and once the index is back the pushes made meanwhile
// are recorded and linked.
func TestBrokenIndexNeverHoldsARequest(t *testing.T) {
	defer func(old time.Duration) { writeTimeout = old }(writeTimeout)
	writeTimeout = time.Second
	for _, mode := range []int32{indexDown, indexStalled} {
		t.Run(map[int32]string{indexDown: "down", indexStalled: "stalled"}[mode], func(t *testing.T) {
			idx := &flakyIndex{Memory: cachetest.NewMemory(), t: t}
			s, err := New(Options{Root: t.TempDir(), Dedupe: true, Cache: idx})
			if err != nil {
				t.Fatal(err)
			}
			runDedupe(t, s)
			time.Sleep(100 * time.Millisecond) // the start-up pass
			idx.mode.Store(mode)

			data := randomBytes(t, 64<<10)
			d := digest.FromBytes(data)
			var repos []string
			limit := lookupTimeout + 500*time.Millisecond
			for i := range 12 {
				repo := fmt.Sprint("r", i)
				repos = append(repos, repo)
				start := time.Now()
				pushBlob(t, s, repo, "x", data)
				if took := time.Since(start); took > limit {
					t.Fatalf("push %d took %v with the index %s", i, took, t.Name())
				}
				start = time.Now()
				assertBlob(t, s, repo, d, data)
				if took := time.Since(start); took > 200*time.Millisecond {
					t.Fatalf("pull took %v", took)
				}
				time.Sleep(100 * time.Millisecond)
			}
			start := time.Now()
			if _, err := s.FindBlob(ctx, d); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took > limit {
				t.Fatalf("an anonymous mount's lookup took %v", took)
			}
			// GC removing many paths at once never waits on the full
			// queue (waiting would last until the index is back).
			start = time.Now()
			for i := range 2 * maxQueuedChanges {
				s.dedupe.forget(ctx, digest.FromString(fmt.Sprint(i)), s.blobPath("gone", d))
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("%d removals took %v", 2*maxQueuedChanges, took)
			}

			idx.mode.Store(indexUp)
			waitLinked(t, s, d, repos...)
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				paths, _ := idx.Memory.Paths(ctx, d)
				if len(paths) == len(repos) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the index records %d paths of %d once back: %v", len(paths), len(repos), paths)
				}
			}

			idx.mode.Store(mode)
			start = time.Now()
			pushBlob(t, s, "last", "x", randomBytes(t, 1000))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took > closeTimeout+limit {
				t.Fatalf("closing with the index %s took %v", t.Name(), took)
			}
		})
	}
}

// An index emptied behind pier's back (a FLUSHALL) is found not complete
// and rebuilt from the disk, and dedupes again.
func TestEmptiedIndexIsRebuilt(t *testing.T) {
	defer func(old time.Duration) { completeCheckInterval = old }(completeCheckInterval)
	completeCheckInterval = 100 * time.Millisecond
	idx := &flakyIndex{Memory: cachetest.NewMemory(), t: t}
	s, err := New(Options{Root: t.TempDir(), Dedupe: true, Cache: idx})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	data := randomBytes(t, 10_000)
	d := pushBlob(t, s, "a", "x", data).Digest
	runDedupe(t, s)
	waitComplete(t, idx, true)
	idx.Empty()
	waitComplete(t, idx, true)
	if p, _ := idx.Memory.Paths(ctx, d); len(p) != 1 {
		t.Fatalf("the rebuilt index holds %v", p)
	}
	pushBlob(t, s, "b", "x", data)
	if inode(t, s.blobPath("a", d)) != inode(t, s.blobPath("b", d)) {
		t.Fatal("the rebuilt index does not dedupe")
	}
}

func waitComplete(t *testing.T, idx *flakyIndex, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if done, _ := idx.Memory.Complete(ctx); done == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the index never became complete=%v", want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A damaged cache.db found while serving is replaced and rebuilt.
func TestDamageFoundInUseIsReplaced(t *testing.T) {
	root := t.TempDir()
	s := newDedupeStore(t, root)
	data := randomBytes(t, 10_000)
	d := pushBlob(t, s, "a", "x", data).Digest
	runDedupe(t, s)
	time.Sleep(200 * time.Millisecond)
	if err := os.Truncate(s.cachePath(), int64(2*os.Getpagesize())); err != nil {
		t.Fatal(err)
	}
	pushBlob(t, s, "b", "x", data) // the lookup finds the damage
	waitLinked(t, s, d, "a", "b")
	pushBlob(t, s, "c", "x", data)
	if inode(t, s.blobPath("a", d)) != inode(t, s.blobPath("c", d)) {
		t.Fatal("the replaced index does not dedupe")
	}
}

package dedupe_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/cache/boltdb"
	"github.com/pier-oci/pier/store/cache/cachetest"
	"github.com/pier-oci/pier/store/dedupe"
	"github.com/pier-oci/pier/store/storetest"
)

var ctx = context.Background()

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

// runDedupe runs s's background work for the test.
func runDedupe(t *testing.T, s *store.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// withIndex opens a store on a new directory with idx as its index.
func withIndex(t *testing.T, idx cache.Cache) *store.Store {
	t.Helper()
	st, err := store.New(store.Options{Driver: openDriver(t, t.TempDir()), Cache: idx})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// sameObject reports whether repos a and b hold d as one object.
func sameObject(t *testing.T, s *store.Store, d digest.Digest, a, b string) bool {
	t.Helper()
	ia, err := s.Driver().Stat(ctx, a+"/blobs/sha256/"+d.Encoded())
	if err != nil {
		t.Fatal(err)
	}
	ib, err := s.Driver().Stat(ctx, b+"/blobs/sha256/"+d.Encoded())
	if err != nil {
		t.Fatal(err)
	}
	return ia.ID == ib.ID
}

func pushBlob(t *testing.T, s *store.Store, repo string, data []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(data)
	if _, err := s.PutBlob(ctx, repo, d, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	return d
}

func assertBlob(t *testing.T, s *store.Store, repo string, d digest.Digest, data []byte) {
	t.Helper()
	f, _, err := s.OpenBlob(ctx, repo, d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, _ := io.ReadAll(f); !bytes.Equal(got, data) {
		t.Fatalf("%s in %s differs", d, repo)
	}
}

// waitLinked waits until repo's copies of d are one object.
func waitLinked(t *testing.T, s *store.Store, d digest.Digest, repos ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		linked := true
		for _, r := range repos[1:] {
			if !sameObject(t, s, d, r, repos[0]) {
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
	defer dedupe.SetWriteTimeout(time.Second)()
	for _, mode := range []int32{indexDown, indexStalled} {
		t.Run(map[int32]string{indexDown: "down", indexStalled: "stalled"}[mode], func(t *testing.T) {
			idx := &flakyIndex{Memory: cachetest.NewMemory(), t: t}
			s := withIndex(t, idx)
			runDedupe(t, s)
			time.Sleep(100 * time.Millisecond) // the start-up pass
			idx.mode.Store(mode)

			data := storetest.RandomBytes(t, 64<<10)
			d := digest.FromBytes(data)
			var repos []string
			limit := dedupe.LookupTimeout + 500*time.Millisecond
			for i := range 12 {
				repo := fmt.Sprint("r", i)
				repos = append(repos, repo)
				start := time.Now()
				pushBlob(t, s, repo, data)
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
			dd := dedupe.New(dedupe.Options{Driver: s.Driver(), Cache: idx, Repos: noLocks{}})
			start = time.Now()
			for i := range 2 * dedupe.MaxQueuedChanges {
				dd.Forget(digest.FromString(fmt.Sprint(i)), "gone/blobs/sha256/"+d.Encoded())
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("%d removals took %v", 2*dedupe.MaxQueuedChanges, took)
			}
			dd.Close()

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
			pushBlob(t, s, "last", storetest.RandomBytes(t, 1000))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took > dedupe.CloseTimeout+limit {
				t.Fatalf("closing with the index %s took %v", t.Name(), took)
			}
		})
	}
}

// An index emptied behind pier's back (a FLUSHALL) is found not complete
// and rebuilt from the disk, and dedupes again.
func TestEmptiedIndexIsRebuilt(t *testing.T) {
	defer dedupe.SetCompleteCheckInterval(100 * time.Millisecond)()
	idx := &flakyIndex{Memory: cachetest.NewMemory(), t: t}
	s := withIndex(t, idx)
	t.Cleanup(func() { s.Close() })
	data := storetest.RandomBytes(t, 10_000)
	d := pushBlob(t, s, "a", data)
	runDedupe(t, s)
	waitComplete(t, idx, true)
	idx.Empty()
	waitComplete(t, idx, true)
	waitRecorded(t, idx.Memory, d, 1) // a pass may count a put still queued
	pushBlob(t, s, "b", data)
	if !sameObject(t, s, d, "a", "b") {
		t.Fatal("the rebuilt index does not dedupe")
	}
}

// An index emptied in the middle of a pass (after the pass recorded one
// repository, before the next) loses what the pass recorded: the pass
// must not mark it complete, or the lost entries would never come back
// and removals would trust an index that lacks them.
func TestIndexEmptiedDuringAPassIsNotMarkedComplete(t *testing.T) {
	defer dedupe.SetCompleteCheckInterval(100 * time.Millisecond)()
	idx := &emptyingIndex{Memory: cachetest.NewMemory()}
	s := withIndex(t, idx)
	t.Cleanup(func() { s.Close() })
	d1 := pushBlob(t, s, "a", storetest.RandomBytes(t, 1000))
	d2 := pushBlob(t, s, "b", storetest.RandomBytes(t, 1000))
	runDedupe(t, s)
	waitRecorded(t, idx.Memory, d1, 1)
	waitRecorded(t, idx.Memory, d2, 1)
	idx.emptyOn.Store(&d2) // the next pass: emptied as it reaches b, after it recorded a
	idx.Empty()
	deadline := time.Now().Add(10 * time.Second)
	for idx.emptyOn.Load() != nil || !idx.complete() {
		if time.Now().After(deadline) {
			t.Fatal("the index was never rebuilt")
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitRecorded(t, idx.Memory, d1, 1)
	waitRecorded(t, idx.Memory, d2, 1)
}

// emptyingIndex empties itself once, when a lookup of emptyOn comes.
type emptyingIndex struct {
	*cachetest.Memory
	emptyOn atomic.Pointer[digest.Digest]
}

func (e *emptyingIndex) Paths(ctx context.Context, d digest.Digest) ([]string, error) {
	if on := e.emptyOn.Load(); on != nil && *on == d && e.emptyOn.CompareAndSwap(on, nil) {
		e.Memory.Empty()
	}
	return e.Memory.Paths(ctx, d)
}

func (e *emptyingIndex) complete() bool {
	done, _ := e.Memory.Complete(ctx)
	return done
}

// waitRecorded waits until the index records n keys of d.
func waitRecorded(t *testing.T, idx *cachetest.Memory, d digest.Digest, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p, _ := idx.Paths(ctx, d)
		if len(p) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the index holds %v for %s, want %d keys", p, d, n)
		}
		time.Sleep(20 * time.Millisecond)
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
	bc, err := boltdb.Open(filepath.Join(root, "cache.db"), boltdb.Options{AsideDir: filepath.Join(root, ".pier")})
	if err != nil {
		t.Fatal(err)
	}
	s, err := store.New(store.Options{Driver: openDriver(t, root), Cache: bc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	data := storetest.RandomBytes(t, 10_000)
	d := pushBlob(t, s, "a", data)
	runDedupe(t, s)
	time.Sleep(200 * time.Millisecond)
	if err := os.Truncate(filepath.Join(root, "cache.db"), int64(2*os.Getpagesize())); err != nil {
		t.Fatal(err)
	}
	pushBlob(t, s, "b", data) // the lookup finds the damage
	waitLinked(t, s, d, "a", "b")
	pushBlob(t, s, "c", data)
	if !sameObject(t, s, d, "a", "c") {
		t.Fatal("the replaced index does not dedupe")
	}
}

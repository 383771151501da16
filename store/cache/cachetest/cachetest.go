// Package cachetest is the shared suite every dedupe index must pass
// (distribution's testsuites pattern): a backend's own _test.go calls Run
// with a way to open a new, empty index, and the suite pins the contract
// of store/cache: the original first, the original rule on removal, Apply's
// order and idempotence, large batches, completeness, several clients of
// one index writing the same digests at once, deadlines, and entries that
// point at nothing.
package cachetest

import (
	"context"
	_ "crypto/sha512" // digests of another algorithm
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/cache"
)

// Backend is the index under test.
type Backend struct {
	// New opens a new, empty index; the suite closes what it opens. Each
	// call must give an index of its own (a fresh file, key prefix or
	// table), so that the cases cannot see each other.
	New func(t *testing.T) cache.Cache

	// Replica opens another client of the index c uses, as a second pier
	// process on the same bucket would. Nil for a backend one process owns
	// (BoltDB): the suite then shares c between goroutines.
	Replica func(t *testing.T, c cache.Cache) cache.Cache

	// Empty empties c's index behind its back, as a Redis FLUSHALL or a
	// new table would. Nil skips the case.
	Empty func(t *testing.T, c cache.Cache)

	// Down returns a client of an index that cannot be reached (a closed
	// port), to check that calls fail with cache.ErrUnavailable within
	// their deadline. Nil skips the case.
	Down func(t *testing.T) cache.Cache
}

// Run runs the whole suite against b.
func Run(t *testing.T, b Backend) {
	t.Run("Empty", func(t *testing.T) { testEmpty(t, b) })
	t.Run("OriginalFirst", func(t *testing.T) { testOriginalFirst(t, b) })
	t.Run("OriginalRule", func(t *testing.T) { testOriginalRule(t, b) })
	t.Run("Idempotent", func(t *testing.T) { testIdempotent(t, b) })
	t.Run("BatchOrder", func(t *testing.T) { testBatchOrder(t, b) })
	t.Run("LargeBatch", func(t *testing.T) { testLargeBatch(t, b) })
	t.Run("Complete", func(t *testing.T) { testComplete(t, b) })
	t.Run("Replicas", func(t *testing.T) { testReplicas(t, b) })
	t.Run("ReplicasRemoveOriginals", func(t *testing.T) { testReplicasRemoveOriginals(t, b) })
	t.Run("PutRacesLastRemove", func(t *testing.T) { testPutRacesLastRemove(t, b) })
	t.Run("Deadlines", func(t *testing.T) { testDeadlines(t, b) })
	t.Run("Down", func(t *testing.T) { testDown(t, b) })
	t.Run("PathsAsGiven", func(t *testing.T) { testPathsAsGiven(t, b) })
}

// Promptly is how long a call with a cancelled or expired context may take
// to return.
const Promptly = 500 * time.Millisecond

var bg = context.Background()

func open(t *testing.T, b Backend) cache.Cache {
	t.Helper()
	c := b.New(t)
	t.Cleanup(func() { c.Close() })
	return c
}

func replica(t *testing.T, b Backend, c cache.Cache) cache.Cache {
	t.Helper()
	if b.Replica == nil {
		return c
	}
	r := b.Replica(t, c)
	t.Cleanup(func() { r.Close() })
	return r
}

// dg is a digest for a name; path is a blob path of it in repo.
func dg(name string) digest.Digest { return digest.FromString(name) }

func path(repo string, d digest.Digest) string {
	return repo + "/blobs/" + d.Algorithm().String() + "/" + d.Encoded()
}

func put(d digest.Digest, p string) cache.Op    { return cache.Op{Digest: d, Path: p} }
func remove(d digest.Digest, p string) cache.Op { return cache.Op{Digest: d, Path: p, Remove: true} }

func apply(t *testing.T, c cache.Cache, ops ...cache.Op) {
	t.Helper()
	if err := c.Apply(bg, ops); err != nil {
		t.Fatalf("Apply(%d ops): %v", len(ops), err)
	}
}

func paths(t *testing.T, c cache.Cache, d digest.Digest) []string {
	t.Helper()
	p, err := c.Paths(bg, d)
	if err != nil {
		t.Fatalf("Paths(%s): %v", d, err)
	}
	return p
}

// want checks that d's paths are original followed by rest, in any order.
func want(t *testing.T, c cache.Cache, d digest.Digest, original string, rest ...string) {
	t.Helper()
	got := paths(t, c, d)
	if original == "" {
		if len(got) != 0 {
			t.Fatalf("paths of %s = %q, want none", d.Encoded()[:8], got)
		}
		return
	}
	if len(got) == 0 || got[0] != original {
		t.Fatalf("paths of %s = %q, want the original %q first", d.Encoded()[:8], got, original)
	}
	a, b := slices.Sorted(slices.Values(got[1:])), slices.Sorted(slices.Values(rest))
	if !slices.Equal(a, b) {
		t.Fatalf("paths of %s = %q, want %q then %q in any order", d.Encoded()[:8], got, original, rest)
	}
}

func testEmpty(t *testing.T, b Backend) {
	c := open(t, b)
	want(t, c, dg("nothing"), "")
	apply(t, c) // no ops: nothing to do, no error
	apply(t, c, remove(dg("nothing"), "a/blobs/sha256/x"))
	want(t, c, dg("nothing"), "")
	if done, err := c.Complete(bg); err != nil || done {
		t.Fatalf("a new index: Complete = %v, %v; want false", done, err)
	}
}

// The original is the first path recorded, whatever it sorts as.
func testOriginalFirst(t *testing.T, b Backend) {
	c := open(t, b)
	d := dg("layer")
	apply(t, c, put(d, path("zeta", d)))
	apply(t, c, put(d, path("alpha", d)), put(d, path("mid", d)))
	want(t, c, d, path("zeta", d), path("alpha", d), path("mid", d))
	// Another digest is another entry.
	e := dg("other layer")
	apply(t, c, put(e, path("mid", e)))
	want(t, c, e, path("mid", e))
	want(t, c, d, path("zeta", d), path("alpha", d), path("mid", d))
}

// When the original goes, the remaining path that sorts first (bytes)
// becomes the original; removing another path leaves the original alone.
func testOriginalRule(t *testing.T, b Backend) {
	c := open(t, b)
	d := dg("rule")
	// Byte order, not a locale's: "B" sorts before "a", "-" before "/".
	ps := []string{path("zz", d), path("ab", d), path("a/b", d), path("a-b", d), path("B", d), path("a", d)}
	for _, p := range ps {
		apply(t, c, put(d, p))
	}
	want(t, c, d, ps[0], ps[1:]...)
	apply(t, c, remove(d, path("ab", d))) // not the original
	want(t, c, d, ps[0], path("a/b", d), path("a-b", d), path("B", d), path("a", d))
	apply(t, c, remove(d, ps[0]))
	want(t, c, d, path("B", d), path("a", d), path("a-b", d), path("a/b", d))
	apply(t, c, remove(d, path("B", d)))
	// "a-b/…" < "a/b/…" < "a/blobs/…": '-' < '/' < 'l'.
	want(t, c, d, path("a-b", d), path("a", d), path("a/b", d))
	apply(t, c, remove(d, path("a-b", d)))
	want(t, c, d, path("a/b", d), path("a", d))
	apply(t, c, remove(d, path("a/b", d)))
	want(t, c, d, path("a", d))
	apply(t, c, remove(d, path("a", d)))
	want(t, c, d, "")
	// A digest emptied and recorded again starts afresh.
	apply(t, c, put(d, path("zz", d)), put(d, path("a", d)))
	want(t, c, d, path("zz", d), path("a", d))
}

func testIdempotent(t *testing.T, b Backend) {
	c := open(t, b)
	d := dg("twice")
	a, z := path("a", d), path("z", d)
	apply(t, c, put(d, z), put(d, a))
	apply(t, c, put(d, z), put(d, a), put(d, a)) // already recorded
	want(t, c, d, z, a)
	apply(t, c, put(d, a)) // a second put of a non-original never makes it the original
	want(t, c, d, z, a)
	apply(t, c, remove(d, path("never", d)), remove(dg("never"), a))
	want(t, c, d, z, a)
	apply(t, c, remove(d, a), remove(d, a))
	want(t, c, d, z)
}

// Ops apply in order, within one batch too.
func testBatchOrder(t *testing.T, b Backend) {
	c := open(t, b)
	d := dg("order")
	p, q, r := path("p", d), path("q", d), path("r", d)

	apply(t, c, put(d, p), remove(d, p))
	want(t, c, d, "")

	apply(t, c, remove(d, p), put(d, p))
	want(t, c, d, p)

	apply(t, c, put(d, q), remove(d, p), put(d, p))
	want(t, c, d, q, p) // p went and came back: q was the original meanwhile

	apply(t, c, put(d, r), remove(d, q), remove(d, p), put(d, q))
	want(t, c, d, r, q)

	apply(t, c, remove(d, r), remove(d, q), put(d, r), remove(d, r), put(d, p))
	want(t, c, d, p)
}

// Thousands of ops in one Apply, over many digests, then their removal.
func testLargeBatch(t *testing.T, b Backend) {
	c := open(t, b)
	const digests, per = 600, 5
	var ops []cache.Op
	for i := range digests {
		d := dg(fmt.Sprint("large ", i))
		for j := range per {
			ops = append(ops, put(d, path(fmt.Sprintf("repo%d", per-j), d)))
		}
	}
	start := time.Now()
	apply(t, c, ops...)
	t.Logf("%d puts in one Apply: %v", len(ops), time.Since(start))
	for _, i := range []int{0, 1, digests / 2, digests - 1} {
		d := dg(fmt.Sprint("large ", i))
		want(t, c, d, path(fmt.Sprint("repo", per), d), path("repo1", d), path("repo2", d), path("repo3", d), path("repo4", d))
	}
	ops = ops[:0]
	for i := range digests {
		d := dg(fmt.Sprint("large ", i))
		ops = append(ops, remove(d, path(fmt.Sprint("repo", per), d)))
		if i%2 == 0 {
			for j := 1; j < per; j++ {
				ops = append(ops, remove(d, path(fmt.Sprint("repo", j), d)))
			}
		}
	}
	apply(t, c, ops...)
	for _, i := range []int{0, 1, digests / 2, digests - 1} {
		d := dg(fmt.Sprint("large ", i))
		if i%2 == 0 {
			want(t, c, d, "")
		} else {
			want(t, c, d, path("repo1", d), path("repo2", d), path("repo3", d), path("repo4", d))
		}
	}
}

func complete(t *testing.T, c cache.Cache) bool {
	t.Helper()
	done, err := c.Complete(bg)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	return done
}

func testComplete(t *testing.T, b Backend) {
	c := open(t, b)
	if complete(t, c) {
		t.Fatal("a new index is complete")
	}
	d := dg("complete")
	apply(t, c, put(d, path("a", d)))
	if complete(t, c) {
		t.Fatal("an index with entries but never marked is complete")
	}
	if err := c.MarkComplete(bg); err != nil {
		t.Fatal(err)
	}
	if !complete(t, c) {
		t.Fatal("MarkComplete did not make the index complete")
	}
	if err := c.MarkComplete(bg); err != nil { // twice is fine
		t.Fatal(err)
	}
	apply(t, c, remove(d, path("a", d)))
	if !complete(t, c) {
		t.Fatal("a removal made the index incomplete")
	}
	if r := replica(t, b, c); !complete(t, r) {
		t.Fatal("another client does not see the mark")
	}
	if other := open(t, b); complete(t, other) {
		t.Fatal("a second new index is complete: the mark leaked between indexes")
	}
	if b.Empty == nil {
		return
	}
	apply(t, c, put(d, path("b", d)))
	b.Empty(t, c)
	if complete(t, c) {
		t.Fatal("an emptied index is still complete")
	}
	want(t, c, d, "")
}

// Several clients put the same digests at once: no put is lost, and all
// agree on one original, which is one of the paths.
func testReplicas(t *testing.T, b Backend) {
	c := open(t, b)
	clients := []cache.Cache{c, replica(t, b, c), replica(t, b, c), replica(t, b, c)}
	const digests = 40
	var wg sync.WaitGroup
	errs := make(chan error, len(clients))
	for i, cl := range clients {
		wg.Go(func() {
			for k := range digests {
				d := dg(fmt.Sprint("shared ", k))
				// Each client writes its own path and one all write.
				ops := []cache.Op{put(d, path(fmt.Sprint("r", i), d)), put(d, path("common", d))}
				if k%3 == 0 {
					ops = append(ops, remove(d, path("common", d)))
				}
				if err := cl.Apply(bg, ops); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for k := range digests {
		d := dg(fmt.Sprint("shared ", k))
		var first []string
		for i, cl := range clients {
			got := paths(t, cl, d)
			for j := range clients {
				if !slices.Contains(got, path(fmt.Sprint("r", j), d)) {
					t.Fatalf("digest %d: client %d sees %q: the put of r%d was lost", k, i, got, j)
				}
			}
			if first == nil {
				first = got
			} else if got[0] != first[0] {
				t.Fatalf("digest %d: clients disagree on the original: %q and %q", k, first[0], got[0])
			}
		}
	}
}

// Several clients remove paths of the same digests at once, originals
// among them: the original is always one of the paths left, and, since
// each removal of an original promotes the first-sorting path left, the
// first-sorting one at the end.
func testReplicasRemoveOriginals(t *testing.T, b Backend) {
	c := open(t, b)
	clients := []cache.Cache{c, replica(t, b, c), replica(t, b, c)}
	const digests, per = 20, 9
	var setup []cache.Op
	for k := range digests {
		d := dg(fmt.Sprint("removed ", k))
		for j := per - 1; j >= 0; j-- { // the original sorts last
			setup = append(setup, put(d, path(fmt.Sprint("p", j), d)))
		}
	}
	apply(t, c, setup...)
	var wg sync.WaitGroup
	errs := make(chan error, len(clients))
	for i, cl := range clients {
		wg.Go(func() {
			for k := range digests {
				d := dg(fmt.Sprint("removed ", k))
				// Client i removes p<per-1-i> and p<i>: the original
				// (client 0's), and paths others are about to promote.
				ops := []cache.Op{remove(d, path(fmt.Sprint("p", per-1-i), d)), remove(d, path(fmt.Sprint("p", i), d))}
				if err := cl.Apply(bg, ops); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for k := range digests {
		d := dg(fmt.Sprint("removed ", k))
		var rest []string
		for j := len(clients); j < per-len(clients); j++ {
			rest = append(rest, path(fmt.Sprint("p", j), d))
		}
		for _, cl := range clients {
			want(t, cl, d, rest[0], rest[1:]...)
		}
	}
}

// One client records a new path while another removes what was the last
// one: the new path is never lost, and it is the original.
func testPutRacesLastRemove(t *testing.T, b Backend) {
	c := open(t, b)
	r := replica(t, b, c)
	const rounds = 60
	for k := range rounds {
		d := dg(fmt.Sprint("race ", k))
		apply(t, c, put(d, path("old", d)))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Go(func() {
		for k := range rounds {
			d := dg(fmt.Sprint("race ", k))
			if err := c.Apply(bg, []cache.Op{remove(d, path("old", d))}); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Go(func() {
		for k := range rounds {
			d := dg(fmt.Sprint("race ", k))
			if err := r.Apply(bg, []cache.Op{put(d, path("new", d))}); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for k := range rounds {
		d := dg(fmt.Sprint("race ", k))
		want(t, c, d, path("new", d))
		want(t, r, d, path("new", d))
	}
}

// A cancelled or expired context makes every call return promptly with
// an error that wraps cache.ErrUnavailable, and changes nothing.
func testDeadlines(t *testing.T, b Backend) {
	c := open(t, b)
	d := dg("deadline")
	apply(t, c, put(d, path("kept", d)))

	cancelled, cancel := context.WithCancel(bg)
	cancel()
	expired, cancel2 := context.WithDeadline(bg, time.Now().Add(-time.Second))
	defer cancel2()
	for name, ctx := range map[string]context.Context{"cancelled": cancelled, "expired": expired} {
		calls := map[string]func() error{
			"Paths":        func() error { _, err := c.Paths(ctx, d); return err },
			"Apply":        func() error { return c.Apply(ctx, []cache.Op{put(d, path("lost", d)), remove(d, path("kept", d))}) },
			"Complete":     func() error { _, err := c.Complete(ctx); return err },
			"MarkComplete": func() error { return c.MarkComplete(ctx) },
		}
		for call, fn := range calls {
			start := time.Now()
			err := fn()
			if took := time.Since(start); took > Promptly {
				t.Errorf("%s with a %s context took %v", call, name, took)
			}
			if !errors.Is(err, cache.ErrUnavailable) {
				t.Errorf("%s with a %s context: err = %v, want one that wraps cache.ErrUnavailable", call, name, err)
			}
		}
	}
	want(t, c, d, path("kept", d))
	if complete(t, c) {
		t.Fatal("MarkComplete with a cancelled context marked the index")
	}
}

// An index that cannot be reached fails every call, within its deadline,
// with an error that wraps cache.ErrUnavailable.
func testDown(t *testing.T, b Backend) {
	if b.Down == nil {
		t.Skip("the backend has no server to take down")
	}
	c := b.Down(t)
	t.Cleanup(func() { c.Close() })
	d := dg("down")
	const deadline = 300 * time.Millisecond
	calls := map[string]func(ctx context.Context) error{
		"Paths":        func(ctx context.Context) error { _, err := c.Paths(ctx, d); return err },
		"Apply":        func(ctx context.Context) error { return c.Apply(ctx, []cache.Op{put(d, path("a", d))}) },
		"Complete":     func(ctx context.Context) error { _, err := c.Complete(ctx); return err },
		"MarkComplete": func(ctx context.Context) error { return c.MarkComplete(ctx) },
	}
	for call, fn := range calls {
		ctx, cancel := context.WithTimeout(bg, deadline)
		start := time.Now()
		err := fn(ctx)
		took := time.Since(start)
		cancel()
		if took > deadline+Promptly {
			t.Errorf("%s on a down index took %v, past its %v deadline", call, took, deadline)
		}
		if !errors.Is(err, cache.ErrUnavailable) {
			t.Errorf("%s on a down index: err = %v, want one that wraps cache.ErrUnavailable", call, err)
		}
	}
}

// The index stores paths as given and never checks them against any
// storage: a path whose file is gone, or that never was, comes back until
// it is removed (the store drops such entries). Odd but valid characters
// survive the round trip.
func testPathsAsGiven(t *testing.T, b Backend) {
	c := open(t, b)
	d := dg("as given")
	odd := []string{
		path("gone/long/ago", d),
		path("a:b", d),
		path("x y", d),
		path("ünï/cödé", d),
		path("a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z", d),
		"not/a/blob/path",
	}
	for _, p := range odd {
		apply(t, c, put(d, p))
	}
	want(t, c, d, odd[0], odd[1:]...)
	// A digest of another algorithm is another entry.
	d512 := digest.SHA512.FromString("as given")
	apply(t, c, put(d512, path("big", d512)))
	want(t, c, d512, path("big", d512))
	want(t, c, d, odd[0], odd[1:]...)
	for _, p := range odd {
		apply(t, c, remove(d, p))
	}
	want(t, c, d, "")
}

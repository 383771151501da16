package dedupe_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/cache/cachetest"
	"github.com/pier-oci/pier/store/dedupe"
	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/driver/local"
)

// The placeholder protocol between two processes, interleaved by hand at
// the moments that matter: whatever runs in between, no placeholder is
// left naming content that is gone.

// bucket is a local directory without links, as a bucket is, with a hook
// run before each write of a key (another process acting right then).
type bucket struct {
	driver.Driver
	before map[string]func()
}

func (b *bucket) hook(key string) {
	if f := b.before[key]; f != nil {
		delete(b.before, key)
		f()
	}
}

func (b *bucket) WriteFile(ctx context.Context, key string, data []byte) (driver.Info, error) {
	b.hook(key)
	return b.Driver.WriteFile(ctx, key, data)
}

func (b *bucket) Delete(ctx context.Context, keys ...string) error {
	for _, k := range keys {
		b.hook("delete " + k)
	}
	return b.Driver.Delete(ctx, keys...)
}

func (b *bucket) Copy(ctx context.Context, src, dst string) error {
	b.hook(dst)
	return b.Driver.Copy(ctx, src, dst)
}

func newBucket(t *testing.T) *bucket {
	d, err := local.Open(t.TempDir(), local.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return &bucket{Driver: d, before: map[string]func(){}}
}

// deduper is one process's view of the shared bucket and index.
func deduper(t *testing.T, b *bucket, index cache.Cache) *dedupe.Deduper {
	d := dedupe.New(dedupe.Options{Driver: b, Cache: nopClose{index}, Repos: noLocks{}})
	t.Cleanup(func() { d.Close() })
	return d
}

type nopClose struct{ cache.Cache }

func (nopClose) Close() error { return nil }

func blob(t *testing.T, b *bucket, key string, data []byte) {
	t.Helper()
	if _, err := b.Driver.WriteFile(ctx, key, data); err != nil {
		t.Fatal(err)
	}
}

func trusted(driver.Info) bool { return true }

// contentOf reads what a key of dg gives a client: its own bytes, or a
// recorded holder's.
func contentOf(t *testing.T, b *bucket, d *dedupe.Deduper, dg digest.Digest, key string) ([]byte, error) {
	t.Helper()
	info, err := b.Stat(ctx, key)
	if err != nil {
		return nil, err
	}
	if !dedupe.IsPlaceholder(info, dg) {
		data, _, err := b.ReadFile(ctx, key, 1<<30)
		return data, err
	}
	hs := d.Holders(ctx, dg)
	if len(hs) == 0 {
		return nil, errors.New("a placeholder whose content is gone")
	}
	data, _, err := b.ReadFile(ctx, hs[0].Key, 1<<30)
	return data, err
}

func setup(t *testing.T) (*bucket, *cachetest.Memory, []byte, digest.Digest) {
	b := newBucket(t)
	index := cachetest.NewMemory()
	index.MarkComplete(ctx)
	data := make([]byte, 50_000)
	rand.Read(data)
	return b, index, data, digest.FromBytes(data)
}

// The holder is retired after a push chose it and recorded its
// placeholder, but before the placeholder is written: Place must report
// that it did not place, so the push stores the content itself.
func TestPlaceRacesRetireOfItsHolder(t *testing.T) {
	b, index, data, dg := setup(t)
	holder, dst := "a/blobs/sha256/"+dg.Encoded(), "b/blobs/sha256/"+dg.Encoded()
	blob(t, b, holder, data)
	index.Apply(ctx, []cache.Op{{Digest: dg, Path: holder}})
	pusher, collector := deduper(t, b, index), deduper(t, b, index)

	b.before[dst] = func() {
		if err := collector.Retire(ctx, dg, holder, nil); err != nil {
			t.Errorf("Retire: %v", err)
		}
	}
	placed, err := pusher.Place(ctx, dg, int64(len(data)), dst, trusted)
	if err != nil {
		t.Fatal(err)
	}
	if placed {
		if _, err := contentOf(t, b, pusher, dg, dst); err != nil {
			t.Fatalf("Place reported a placeholder whose holder was retired meanwhile: %v", err)
		}
	}
}

// hookedIndex runs a hook before a path is recorded (another process
// acting right then).
type hookedIndex struct {
	cache.Cache
	before map[string]func()
}

func (h *hookedIndex) Apply(ctx context.Context, ops []cache.Op) error {
	for _, op := range ops {
		if f := h.before[op.Path]; f != nil && !op.Remove {
			delete(h.before, op.Path)
			f()
		}
	}
	return h.Cache.Apply(ctx, ops)
}

// The collector forgets the holder and reads the index just before the
// push records its placeholder (so it does not see it), and deletes the
// holder only after the push has looked at it again: only the push's
// second read of the index can tell, and it must.
func TestPlaceRacesRetireThatMissedIt(t *testing.T) {
	b, mem, data, dg := setup(t)
	index := &hookedIndex{Cache: mem, before: map[string]func(){}}
	holder, dst := "a/blobs/sha256/"+dg.Encoded(), "b/blobs/sha256/"+dg.Encoded()
	blob(t, b, holder, data)
	mem.Apply(ctx, []cache.Op{{Digest: dg, Path: holder}})
	pusher, collector := deduper(t, b, index), deduper(t, b, index)

	deleting, release, retired := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	b.before["delete "+holder] = func() { close(deleting); <-release }
	index.before[dst] = func() {
		go func() { retired <- collector.Retire(ctx, dg, holder, nil) }()
		<-deleting // it decided, and waits to delete
	}
	placed, err := pusher.Place(ctx, dg, int64(len(data)), dst, trusted)
	close(release)
	if rerr := <-retired; rerr != nil {
		t.Fatal(rerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if placed {
		if _, err := contentOf(t, b, pusher, dg, dst); err != nil {
			t.Fatalf("Place reported a placeholder whose holder was being retired: %v", err)
		}
	}
}

// The holder is retired after the push's placeholder is written and
// checked: Retire must see it, and give it the content.
func TestRetireSeesAPlaceholderJustPlaced(t *testing.T) {
	b, index, data, dg := setup(t)
	holder, dst := "a/blobs/sha256/"+dg.Encoded(), "b/blobs/sha256/"+dg.Encoded()
	blob(t, b, holder, data)
	index.Apply(ctx, []cache.Op{{Digest: dg, Path: holder}})
	pusher, collector := deduper(t, b, index), deduper(t, b, index)
	if placed, err := pusher.Place(ctx, dg, int64(len(data)), dst, trusted); err != nil || !placed {
		t.Fatalf("Place = %v, %v", placed, err)
	}
	if err := collector.Retire(ctx, dg, holder, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := contentOf(t, b, pusher, dg, dst); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the placeholder after its holder was retired: %d bytes, %v", len(got), err)
	}
}

// The placeholder Retire hands the content to is retired itself while the
// content is being copied to it: Retire must hand it to another one.
func TestRetireRacesRetireOfItsHeir(t *testing.T) {
	b, index, data, dg := setup(t)
	holder := "a/blobs/sha256/" + dg.Encoded()
	heirs := []string{"b/blobs/sha256/" + dg.Encoded(), "c/blobs/sha256/" + dg.Encoded()}
	blob(t, b, holder, data)
	index.Apply(ctx, []cache.Op{{Digest: dg, Path: holder}})
	one, other := deduper(t, b, index), deduper(t, b, index)
	for _, h := range heirs {
		if placed, err := one.Place(ctx, dg, int64(len(data)), h, trusted); err != nil || !placed {
			t.Fatalf("Place %s = %v, %v", h, placed, err)
		}
	}
	paths, _ := index.Paths(ctx, dg)
	first := ""
	for _, p := range paths {
		if p != holder {
			first = p
			break
		}
	}
	survivor := heirs[0]
	if first == heirs[0] {
		survivor = heirs[1]
	}
	b.before[first] = func() {
		if err := other.Retire(ctx, dg, first, nil); err != nil {
			t.Errorf("Retire %s: %v", first, err)
		}
	}
	if err := one.Retire(ctx, dg, holder, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := contentOf(t, b, one, dg, survivor); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("%s after its holder and the first heir went: %d bytes, %v", survivor, len(got), err)
	}
}

// An index that is not complete (new, flushed) may not list every
// placeholder: nothing that holds content is removed until it is.
func TestRetireWaitsForACompleteIndex(t *testing.T) {
	b, _, data, dg := setup(t)
	index := cachetest.NewMemory() // never marked complete
	holder := "a/blobs/sha256/" + dg.Encoded()
	blob(t, b, holder, data)
	blob(t, b, "b/blobs/sha256/"+dg.Encoded(), nil) // a placeholder the index does not know
	d := deduper(t, b, index)
	if err := d.Retire(ctx, dg, holder, nil); !errors.Is(err, dedupe.ErrNotReady) {
		t.Fatalf("Retire with an incomplete index: %v, want ErrNotReady", err)
	}
	if _, err := b.Stat(ctx, holder); err != nil {
		t.Fatalf("the holder was removed: %v", err)
	}
}

// A removal that finds the index not yet complete while a pass is making
// it so (a new or emptied index, at start) waits for the pass, briefly,
// rather than being refused: a blob deleted in a new bucket's first
// moments is deleted.
func TestRetireWaitsForThePassUnderWay(t *testing.T) {
	b := newBucket(t)
	index := &slowComplete{Memory: cachetest.NewMemory(), reached: make(chan struct{}), release: make(chan struct{})}
	data := make([]byte, 1000)
	rand.Read(data)
	dg := digest.FromBytes(data)
	key := "r/blobs/sha256/" + dg.Encoded()
	blob(t, b, key, data)
	d := deduper(t, b, index)
	passed := make(chan error, 1)
	go func() { _, err := d.Pass(ctx); passed <- err }()
	<-index.reached // the pass is under way, about to mark the index complete
	retired := make(chan error, 1)
	go func() { retired <- d.Retire(ctx, dg, key, nil) }()
	select {
	case err := <-retired:
		t.Fatalf("Retire did not wait for the pass under way: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(index.release) // the pass marks the index complete
	if err := <-passed; err != nil {
		t.Fatal(err)
	}
	if err := <-retired; err != nil {
		t.Fatalf("Retire after the pass: %v", err)
	}
	if _, err := b.Stat(ctx, key); !driver.IsNotFound(err) {
		t.Fatalf("the blob is still there: %v", err)
	}
}

// slowComplete is an index whose MarkComplete closes reached, then waits
// for release.
type slowComplete struct {
	*cachetest.Memory
	reached, release chan struct{}
}

func (s *slowComplete) MarkComplete(ctx context.Context) error {
	close(s.reached)
	<-s.release
	return s.Memory.MarkComplete(ctx)
}

// Another process stores the content whole at the push's key just before
// a PlaceNew writes its placeholder (a replica whose commit found no
// holder): PlaceNew must not write over it, where Place would. It
// answers ErrTaken and the content stays.
func TestPlaceNewNeverReplacesAnObject(t *testing.T) {
	b, mem, data, dg := setup(t)
	index := &hookedIndex{Cache: mem, before: map[string]func(){}}
	holder, dst := "a/blobs/sha256/"+dg.Encoded(), "b/blobs/sha256/"+dg.Encoded()
	blob(t, b, holder, data)
	mem.Apply(ctx, []cache.Op{{Digest: dg, Path: holder}})
	pusher := deduper(t, b, index)
	index.before[dst] = func() { blob(t, b, dst, data) }
	placed, err := pusher.PlaceNew(ctx, dg, int64(len(data)), dst, trusted)
	if placed || !errors.Is(err, dedupe.ErrTaken) {
		t.Fatalf("PlaceNew over an object stored meanwhile: %v, %v; want ErrTaken", placed, err)
	}
	if got, _, err := b.ReadFile(ctx, dst, 1<<30); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the object at the key is now %d bytes, %v; want the content stored there", len(got), err)
	}
}

// Empty content has no holder: there is nothing to share, and a
// placeholder of it would be the content itself.
func TestEmptyContentHasNoHolder(t *testing.T) {
	b, mem, _, _ := setup(t)
	empty := digest.FromBytes(nil)
	blob(t, b, "a/blobs/sha256/"+empty.Encoded(), nil)
	mem.Apply(ctx, []cache.Op{{Digest: empty, Path: "a/blobs/sha256/" + empty.Encoded()}})
	if h, ok := deduper(t, b, mem).HolderNow(ctx, empty, -1, "b/blobs/sha256/"+empty.Encoded(), trusted); ok {
		t.Fatalf("the empty blob has a holder: %+v", h)
	}
}

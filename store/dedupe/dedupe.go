// Package dedupe stores each content once per store (zot's dedupe): a
// blob committed to a repository becomes another key of an object already
// in the store (a hard link locally), found through the dedupe index
// (store/cache). The index says where copies are; the storage says
// whether they are still there. Every index failure degrades to "no
// dedupe for this blob", never to a failed request.
//
// Three parts: the lookups and links a push uses (this file), the index
// writer that records changes in the background (indexwriter.go), and the
// passes that bring the index and the storage in step: a walk of the
// whole store at start (reconcile.go) and the pick-up of layouts copied
// in while pier runs (watch.go).
package dedupe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/driver"
)

// Repos is what dedupe needs of the store it serves.
type Repos interface {
	// Repositories lists the store's repositories, sorted.
	Repositories(ctx context.Context) ([]string, error)
	// RLock takes repo's read lock (which excludes deletes and garbage
	// collection of the repository) and returns its unlock.
	RLock(repo string) (unlock func())
	// Checked tells the store that the object at key was just found to
	// hold d (so it need not be checked again before it is served).
	Checked(ctx context.Context, key string, d digest.Digest)
	// ReadState and WriteState keep a small file of the store's own
	// state (the pass's progress).
	ReadState(ctx context.Context, name string) ([]byte, error)
	WriteState(ctx context.Context, name string, data []byte) error
}

// Options configures a Deduper.
type Options struct {
	Driver driver.Driver
	Cache  cache.Cache
	Repos  Repos
	Logger *slog.Logger
}

// Deduper dedupes one store.
type Deduper struct {
	drv   driver.Driver
	repos Repos
	log   *slog.Logger

	c cache.Cache

	index        *indexWriter  // every change to the cache, in the background
	health       indexHealth   // outages, back-off, changes lost meanwhile (health.go)
	damaged      atomic.Bool   // the index reported damage; Run replaces it
	kick         chan struct{} // asks Run for a pass (after damage, or lost changes)
	fallbackOnce sync.Once     // log "no hard links here" once

	passMu  sync.Mutex
	passEnd chan struct{} // closed when the pass under way ends; nil when none
}

// New starts a Deduper; Close stops it.
func New(opts Options) *Deduper {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Deduper{drv: opts.Driver, repos: opts.Repos, log: log, c: opts.Cache, kick: make(chan struct{}, 1)}
	d.index = newIndexWriter(d.write, indexBatchDelay, d.health.drop)
	return d
}

// Close writes what is queued (briefly, if the index is down) and closes
// the index.
func (d *Deduper) Close() error {
	d.index.close()
	return d.c.Close()
}

// failed notes an index error. A damaged index asks for a pass over the
// storage (after replacing the index when it can be); an unavailable one
// is left alone for a while (health.go), and costs no pass unless changes
// were lost meanwhile.
func (d *Deduper) failed(op string, err error) {
	switch {
	case errors.Is(err, cache.ErrCorrupt):
		d.health.lost()
		if d.damaged.CompareAndSwap(false, true) {
			d.log.Error("dedupe cache is damaged; replacing it and rebuilding it in the background", "op", op, "err", err)
			d.askPass()
		}
	case errors.Is(err, cache.ErrUnavailable):
		d.health.down(d.log, op, err)
	default:
		d.log.Warn("dedupe cache", "op", op, "err", err)
	}
}

// askPass asks Run for a pass over the storage.
func (d *Deduper) askPass() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Copies returns the keys the index records for dg. Each is checked
// before use: the index is input too (a zot root's cache.db comes with
// it), and only a key that ends in this digest's blobs/<alg>/<hex> is
// ever used.
func (d *Deduper) Copies(ctx context.Context, dg digest.Digest) []string {
	var keys []string
	if d.health.usable() && !d.damaged.Load() {
		lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		var err error
		keys, err = d.c.Paths(lctx, dg)
		cancel()
		if err != nil {
			d.failed("lookup", err)
			keys = nil
		} else {
			d.health.up(d)
		}
	}
	return usable(d, dg, d.index.merge(dg, keys))
}

// Record notes that key holds dg, and Forget that it no longer does. Both
// return at once: the index writer writes them in the background, and
// lookups see them meanwhile.
func (d *Deduper) Record(dg digest.Digest, key string) { d.index.put(dg, key) }

func (d *Deduper) Forget(dg digest.Digest, key string) { d.index.remove(dg, key) }

// existingCopy returns a recorded copy of dg that is still in the store
// with the expected size, other than exclude. Stale entries (missing or of
// the wrong size) are dropped from the index on the way.
func (d *Deduper) existingCopy(ctx context.Context, dg digest.Digest, size int64, exclude string) (string, driver.Info) {
	return d.firstValid(ctx, dg, size, exclude, d.Copies(ctx, dg))
}

// firstValid is existingCopy over copies already looked up.
func (d *Deduper) firstValid(ctx context.Context, dg digest.Digest, size int64, exclude string, copies []string) (string, driver.Info) {
	for _, k := range copies {
		if k == exclude {
			continue
		}
		info, err := d.drv.Stat(ctx, k)
		if err != nil || info.Size != size {
			d.Forget(dg, k)
			continue
		}
		return k, info
	}
	return "", driver.Info{}
}

// LinkExisting makes dst another key of a copy of dg already in the
// store, and reports whether it did. It never copies: when no link can be
// made the caller keeps its own object. compare is the verified upload the
// client sent; the copy is linked only if it still has the same bytes, so
// a copy that rotted never replaces a good push.
func (d *Deduper) LinkExisting(ctx context.Context, dg digest.Digest, size int64, compare, dst string) bool {
	l, ok := d.drv.(driver.Linker)
	if !ok {
		return false
	}
	src, _ := d.existingCopy(ctx, dg, size, dst)
	if src == "" {
		return false
	}
	same, err := d.sameContent(ctx, compare, src)
	if err != nil || !same {
		d.log.Warn("dedupe: the recorded copy differs from the verified upload; keeping the upload (scrub will quarantine the bad copy)",
			"digest", dg, "copy", src, "err", err)
		return false
	}
	if err := l.Link(ctx, src, dst); err != nil {
		d.LinkFailed(err)
		return false
	}
	return true
}

// LinkFailed logs, once, that this storage cannot link, or any other link
// error.
func (d *Deduper) LinkFailed(err error) {
	if errors.Is(err, driver.ErrUnsupported) {
		d.fallbackOnce.Do(func() {
			d.log.Warn("hard links are not possible here; dedupe falls back to copies", "storage", d.drv.String(), "err", err)
		})
		return
	}
	d.log.Warn("dedupe link failed; keeping a separate copy", "err", err)
}

// sameContent reports whether two objects hold the same bytes.
func (d *Deduper) sameContent(ctx context.Context, a, b string) (bool, error) {
	fa, _, err := d.drv.Open(ctx, a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, _, err := d.drv.Open(ctx, b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	return SameContent(fa, fb)
}

// SameContent reports whether two readers hold the same bytes. It
// compares rather than re-hashes: a compare costs a read of each, which
// the page cache mostly serves for an upload just written.
func SameContent(fa, fb io.Reader) (bool, error) {
	const chunk = 64 << 10
	bufA, bufB := make([]byte, chunk), make([]byte, chunk)
	for {
		na, errA := io.ReadFull(fa, bufA)
		nb, errB := io.ReadFull(fb, bufB)
		if na != nb || !bytes.Equal(bufA[:na], bufB[:nb]) {
			return false, nil
		}
		endA := errors.Is(errA, io.EOF) || errors.Is(errA, io.ErrUnexpectedEOF)
		endB := errors.Is(errB, io.EOF) || errors.Is(errB, io.ErrUnexpectedEOF)
		switch {
		case errA != nil && !endA:
			return false, fmt.Errorf("read: %w", errA)
		case errB != nil && !endB:
			return false, fmt.Errorf("read: %w", errB)
		case endA || endB:
			return endA == endB, nil
		}
	}
}

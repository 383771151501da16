package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/cache/boltdb"
	"github.com/pier-oci/pier/store/disk"
)

// deduper stores each content once per filesystem: a blob committed to a
// repository becomes a hard link to a copy already under the root. The
// cache says where copies are; the disk says whether they are still there.
// Every cache failure degrades to "no dedupe for this blob", never to a
// failed request.
type deduper struct {
	s *Store

	mu    sync.RWMutex
	c     cache.Cache
	owned bool // pier opened <root>/cache.db and may replace it

	pending      sync.WaitGroup // index writes in the background; close waits for them
	unwritten    pending        // paths recorded in the background, not yet in the cache
	kick         chan struct{}  // asks the background job to rebuild
	fallbackOnce sync.Once      // log "no hard links here" once
	broken       atomic.Bool    // a rebuild has been asked for
}

func (s *Store) cachePath() string { return filepath.Join(s.root, "cache.db") }

func newDeduper(s *Store, c cache.Cache) (*deduper, error) {
	d := &deduper{s: s, c: c, kick: make(chan struct{}, 1)}
	if c != nil {
		return d, nil
	}
	d.owned = true
	bc, err := boltdb.Open(s.cachePath(), s.fs.Sync)
	if errors.Is(err, boltdb.ErrCorrupt) {
		s.log.Warn("dedupe cache is corrupt; starting a new one and rebuilding it from the disk in the background", "err", err)
		if bc, err = d.replaceFile(); err == nil {
			d.kick <- struct{}{}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open dedupe cache (is another pier or zot serving %s?): %w", s.root, err)
	}
	d.c = bc
	return d, nil
}

// replaceFile moves a damaged cache.db aside (kept for inspection; only
// the latest, so that a cache that keeps failing cannot fill the card) and
// opens a new empty one.
func (d *deduper) replaceFile() (*boltdb.Cache, error) {
	path := d.s.cachePath()
	if old, err := filepath.Glob(path + ".corrupt-*"); err == nil {
		for _, o := range old {
			os.Remove(o)
		}
	}
	aside := fmt.Sprintf("%s.corrupt-%d", path, time.Now().Unix())
	if err := os.Rename(path, aside); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("move damaged cache aside: %w", err)
	}
	return boltdb.Open(path, d.s.fs.Sync)
}

// reset replaces a broken cache with an empty one; the caller rebuilds it.
func (d *deduper) reset() error {
	if !d.owned {
		return nil // a remote cache is not ours to replace
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.c.Close()
	bc, err := d.replaceFile()
	if err != nil {
		return err
	}
	d.c = bc
	d.broken.Store(false)
	return nil
}

func (d *deduper) cache() cache.Cache {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.c
}

func (d *deduper) close() error {
	d.pending.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.c.Close()
}

// failed notes a cache error; an unusable cache asks for a rebuild.
func (d *deduper) failed(op string, err error) {
	if errors.Is(err, cache.ErrUnavailable) || errors.Is(err, boltdb.ErrCorrupt) {
		if d.broken.CompareAndSwap(false, true) {
			d.s.log.Error("dedupe cache failed; rebuilding it in the background", "op", op, "err", err)
			select {
			case d.kick <- struct{}{}:
			default:
			}
		}
		return
	}
	d.s.log.Warn("dedupe cache", "op", op, "err", err)
}

// rel is path relative to the root, as the cache records it.
func (d *deduper) rel(path string) string {
	r, err := filepath.Rel(d.s.root, path)
	if err != nil {
		return path
	}
	return filepath.ToSlash(r)
}

// copies returns the absolute paths the cache records for dg. Each path is
// checked before it is joined to the root: the cache file is input too (a
// zot root's cache.db comes with it), and only a local path that ends in
// this digest's blobs/<alg>/<hex> is ever used.
func (d *deduper) copies(ctx context.Context, dg digest.Digest) []string {
	rels, err := d.cache().Paths(ctx, dg)
	if err != nil {
		d.failed("lookup", err)
		rels = nil
	}
	rels = d.unwritten.merge(dg, rels)
	suffix := "/blobs/" + dg.Algorithm().String() + "/" + dg.Encoded()
	out := make([]string, 0, len(rels))
	for _, r := range rels {
		if !filepath.IsLocal(r) || !strings.HasSuffix(r, suffix) {
			d.s.log.Warn("dedupe cache names an unusable path; ignoring it", "digest", dg, "path", r)
			continue
		}
		out = append(out, filepath.Join(d.s.root, filepath.FromSlash(r)))
	}
	return out
}

func (d *deduper) record(ctx context.Context, dg digest.Digest, path string) {
	if err := d.cache().Put(ctx, dg, d.rel(path)); err != nil {
		d.failed("record", err)
	}
}

// recordLater records path for dg in the background. A push is
// acknowledged once its blob is durable; it does not also wait for the
// index's own fsyncs. An entry lost to a crash only costs a missed link
// until the start-up reconcile, which records every blob path the index
// lacks.
func (d *deduper) recordLater(ctx context.Context, dg digest.Digest, path string) {
	ctx = context.WithoutCancel(ctx) // the request may be over before the write
	rel := d.rel(path)
	ticket := d.unwritten.add(dg, rel) // found by lookups at once, as if written
	d.pending.Go(func() {
		d.record(ctx, dg, path)
		if d.unwritten.done(dg, rel, ticket) {
			d.forget(ctx, dg, path) // deleted while being recorded
		}
	})
}

func (d *deduper) forget(ctx context.Context, dg digest.Digest, path string) {
	d.unwritten.forget(dg, d.rel(path))
	if err := d.cache().Remove(ctx, dg, d.rel(path)); err != nil {
		d.failed("forget", err)
	}
}

// existingCopy returns a recorded copy of dg that is still on the disk
// with the expected size, other than exclude. Stale entries (missing or of
// the wrong size) are dropped from the cache on the way.
func (d *deduper) existingCopy(ctx context.Context, dg digest.Digest, size int64, exclude string) (string, os.FileInfo) {
	return d.firstValid(ctx, dg, size, exclude, d.copies(ctx, dg))
}

// firstValid is existingCopy over copies already looked up.
func (d *deduper) firstValid(ctx context.Context, dg digest.Digest, size int64, exclude string, copies []string) (string, os.FileInfo) {
	for _, p := range copies {
		if p == exclude {
			continue
		}
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Size() != size {
			d.forget(ctx, dg, p)
			continue
		}
		return p, fi
	}
	return "", nil
}

// linkExisting makes dst a hard link to a copy of dg already under the
// root, and reports whether it did. It never copies: when no link can be
// made the caller keeps its own file. upload is the verified file the
// client sent; the copy is linked only if it still has the same bytes, so
// a copy that rotted on the disk never replaces a good push.
func (d *deduper) linkExisting(ctx context.Context, dg digest.Digest, size int64, upload, dst, tmpDir string) bool {
	src, _ := d.existingCopy(ctx, dg, size, dst)
	if src == "" {
		return false
	}
	same, err := sameContent(upload, src)
	if err != nil || !same {
		d.s.log.Warn("dedupe: the recorded copy differs from the verified upload; keeping the upload (scrub will quarantine the bad copy)",
			"digest", dg, "copy", src, "err", err)
		return false
	}
	if err := d.s.fs.Link(src, dst, tmpDir); err != nil {
		d.linkFailed(err)
		return false
	}
	return true
}

// linkFailed logs, once, that this filesystem cannot hard-link, or any
// other link error.
func (d *deduper) linkFailed(err error) {
	if errors.Is(err, disk.ErrLinkUnsupported) {
		d.fallbackOnce.Do(func() {
			d.s.log.Warn("hard links are not possible here; dedupe falls back to copies", "root", d.s.root, "err", err)
		})
		return
	}
	d.s.log.Warn("dedupe link failed; keeping a separate copy", "err", err)
}

// sameContent reports whether two files hold the same bytes. It compares
// rather than re-hashes: a compare costs a read of each file, which the
// page cache mostly serves for the upload just written.
func sameContent(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
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
			return false, fmt.Errorf("read %s: %w", a, errA)
		case errB != nil && !endB:
			return false, fmt.Errorf("read %s: %w", b, errB)
		case endA || endB:
			return endA == endB, nil
		}
	}
}

// pending tracks the paths being recorded in the background: each
// record holds a ticket, and a forget cancels the ticket, so that a
// record that lands after the forget is undone rather than left stale.
type pending struct {
	mu   sync.Mutex
	next uint64
	m    map[digest.Digest]map[string]uint64 // path -> ticket of its latest record
}

// add starts a background record of rel and returns its ticket.
func (p *pending) add(dg digest.Digest, rel string) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[digest.Digest]map[string]uint64{}
	}
	if p.m[dg] == nil {
		p.m[dg] = map[string]uint64{}
	}
	p.next++
	p.m[dg][rel] = p.next
	return p.next
}

// done ends the record with ticket t and reports whether it was forgotten
// meanwhile (and must be undone). A newer record of the same path is left
// to finish on its own.
func (p *pending) done(dg digest.Digest, rel string, t uint64) (forgotten bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur, ok := p.m[dg][rel]
	if ok && cur == t {
		p.drop(dg, rel)
	}
	return !ok
}

// forget cancels any record of rel in flight.
func (p *pending) forget(dg digest.Digest, rel string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drop(dg, rel)
}

func (p *pending) drop(dg digest.Digest, rel string) {
	delete(p.m[dg], rel)
	if len(p.m[dg]) == 0 {
		delete(p.m, dg)
	}
}

// merge returns rels followed by dg's paths being recorded that rels lacks.
func (p *pending) merge(dg digest.Digest, rels []string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	for r := range p.m[dg] {
		if !slices.Contains(rels, r) {
			rels = append(rels, r)
		}
	}
	return rels
}

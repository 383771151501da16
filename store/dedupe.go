package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
// failed or slow request: every call has a deadline (indexhealth.go), an
// index that errs is left alone for a while, and a full write queue drops
// changes for the next pass over the disk to record.
type deduper struct {
	s *Store
	c cache.Cache

	index        *indexWriter  // every change to the cache, in the background
	health       indexHealth   // outages, back-off, changes lost meanwhile
	damaged      atomic.Bool   // the index reported damage; RunDedupe replaces it
	kick         chan struct{} // asks the background job for a pass (after damage, or lost changes)
	fallbackOnce sync.Once     // log "no hard links here" once
}

func (s *Store) cachePath() string { return filepath.Join(s.root, "cache.db") }

// newDeduper uses c, or, when c is nil, the BoltDB index <root>/cache.db,
// which it owns: whatever that file holds, it opens (a damaged one is set
// aside under .pier/ and replaced by a new one that the first pass fills).
func newDeduper(s *Store, c cache.Cache) (*deduper, error) {
	d := &deduper{s: s, c: c, kick: make(chan struct{}, 1)}
	if c == nil {
		bc, err := boltdb.Open(s.cachePath(), boltdb.Options{Sync: s.fs.Sync, AsideDir: s.pierDir(), Logger: s.log})
		if err != nil {
			return nil, fmt.Errorf("open dedupe cache (is another pier or zot serving %s?): %w", s.root, err)
		}
		d.c = bc
	}
	var delay time.Duration
	if s.fs.Sync {
		delay = indexBatchDelay
	}
	d.index = newIndexWriter(d.write, delay, d.health.drop)
	return d, nil
}

func (d *deduper) cache() cache.Cache { return d.c }

func (d *deduper) close() error {
	d.index.close()
	return d.c.Close()
}

// failed notes a cache error. A damaged index asks for a pass over the
// disk (after replacing the index when pier owns it); an unavailable one
// is left alone for a while (indexhealth.go), and costs no pass unless
// changes were lost meanwhile.
func (d *deduper) failed(op string, err error) {
	switch {
	case errors.Is(err, cache.ErrCorrupt):
		d.health.lost()
		if d.damaged.CompareAndSwap(false, true) {
			d.s.log.Error("dedupe cache is damaged; replacing it and rebuilding it in the background", "op", op, "err", err)
			d.askPass()
		}
	case errors.Is(err, cache.ErrUnavailable):
		d.health.down(d.s.log, op, err)
	default:
		d.s.log.Warn("dedupe cache", "op", op, "err", err)
	}
}

// askPass asks RunDedupe for a pass over the disk.
func (d *deduper) askPass() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
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
	var rels []string
	if d.health.usable() && !d.damaged.Load() {
		ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		var err error
		rels, err = d.c.Paths(ctx, dg)
		cancel()
		if err != nil {
			d.failed("lookup", err)
			rels = nil
		} else {
			d.health.up(d)
		}
	}
	rels = d.index.merge(dg, rels)
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

// record notes that path holds dg, and forget that it no longer does. Both
// return at once: the index writer writes them in the background, and
// lookups see them meanwhile.
func (d *deduper) record(ctx context.Context, dg digest.Digest, path string) {
	d.index.put(dg, d.rel(path))
}

func (d *deduper) forget(ctx context.Context, dg digest.Digest, path string) {
	d.index.remove(dg, d.rel(path))
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

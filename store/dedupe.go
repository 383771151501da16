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
// failed request.
type deduper struct {
	s *Store

	mu    sync.RWMutex
	c     cache.Cache
	owned bool // pier opened <root>/cache.db and may replace it

	index        *indexWriter  // every change to the cache, in the background
	kick         chan struct{} // asks the background job to rebuild
	fallbackOnce sync.Once     // log "no hard links here" once
	broken       atomic.Bool   // a rebuild has been asked for
}

func (s *Store) cachePath() string { return filepath.Join(s.root, "cache.db") }

func newDeduper(s *Store, c cache.Cache) (*deduper, error) {
	d := &deduper{s: s, c: c, kick: make(chan struct{}, 1)}
	var delay time.Duration
	if s.fs.Sync {
		delay = indexBatchDelay
	}
	d.index = newIndexWriter(d.write, delay)
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
		d.index.close()
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
	d.index.close()
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

// write is the index writer's: one batch of changes to the cache.
func (d *deduper) write(ops []cache.Op) {
	if err := d.cache().Apply(context.Background(), ops); err != nil {
		d.failed("write", err)
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
	fa, err := openRegular(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := openRegular(b)
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

// Package boltdb is the dedupe index in a BoltDB file, <root>/cache.db, in
// zot's bucket layout so that a zot root and its cache carry over:
//
//	blobs/                     root bucket
//	  <alg>:<hex>/             one bucket per digest
//	    original/<path> = nil  the original
//	    duplicates/<path> = nil every path, the original included
//	pier/complete              pier's mark of a full build; zot ignores it
//
// Paths are relative to the root, as zot writes them for local storage.
// zot leaves a removed original in original/ while duplicates remain; such
// a stale original (not among the duplicates) is not returned, and the
// next change to its digest replaces it.
//
// The package owns the file: Open never fails on what the file holds (see
// file.go), and no read or write of a damaged file can take the process
// down (see guard).
package boltdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/pier-oci/pier/store/cache"
)

var (
	bucketPier       = []byte("pier") // pier's own marks; zot ignores the bucket
	keyComplete      = []byte("complete")
	bucketBlobs      = []byte("blobs")
	bucketOriginal   = []byte("original")
	bucketDuplicates = []byte("duplicates")
)

// ErrInUse means another process (a running pier, or zot) holds the file.
var ErrInUse = errors.New("cache database is in use by another process")

// Options configures Open.
type Options struct {
	// Sync fsyncs every commit (the root's commit setting). Off, the
	// index costs no fsync at all: pier rebuilds it from the disk.
	Sync bool
	// AsideDir is where a damaged file is kept for inspection, as
	// cache.db.damaged (only the latest). Empty: a damaged file is
	// removed.
	AsideDir string
	// Logger receives the one line logged for each damaged file; nil
	// discards it.
	Logger *slog.Logger
}

// Cache is a BoltDB dedupe index.
type Cache struct {
	path  string
	opts  Options
	log   *slog.Logger
	write chan struct{} // one writer at a time, waited for with the caller's deadline

	mu sync.RWMutex // guards db; Reset swaps it
	db *bolt.DB
}

var _ cache.Cache = (*Cache)(nil)

// openTimeout is how long Open waits for another process's lock.
const openTimeout = time.Second

// guard runs fn so that a damaged file cannot take the process down:
// bbolt panics on some damaged pages, and a page past the end of a file
// cut short (or changed behind its back) is a fault in its memory map,
// which SetPanicOnFault turns into a panic on this goroutine. Both come
// back as an error that wraps cache.ErrCorrupt.
func guard(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", cache.ErrCorrupt, r)
		}
	}()
	return fn()
}

// do runs fn on the open database, guarded, unless ctx is already done.
func (c *Cache) do(ctx context.Context, fn func(db *bolt.DB) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", cache.ErrUnavailable, err)
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.db == nil {
		return fmt.Errorf("%w: closed", cache.ErrUnavailable)
	}
	return guard(func() error { return fn(c.db) })
}

// update is do for a write: it waits for the writer's turn no longer than
// ctx allows (a commit with sync on can take a while on an SD card).
func (c *Cache) update(ctx context.Context, fn func(db *bolt.DB) error) error {
	select {
	case c.write <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", cache.ErrUnavailable, ctx.Err())
	}
	defer func() { <-c.write }()
	err := c.do(ctx, fn)
	if err != nil && !errors.Is(err, cache.ErrCorrupt) && !errors.Is(err, cache.ErrUnavailable) {
		// A write that fails but did not find damage: the disk is full,
		// or failing. The store tries again later.
		err = fmt.Errorf("%w: %w", cache.ErrUnavailable, err)
	}
	return err
}

// Check walks the whole index, every bucket and key, and reports damage
// found since it was opened (Open checked the file's structure) as an
// error that wraps cache.ErrCorrupt.
func (c *Cache) Check() error {
	return c.do(context.Background(), func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			if tx.Bucket(bucketBlobs) == nil {
				return fmt.Errorf("%w: no blobs bucket", cache.ErrCorrupt)
			}
			return tx.ForEach(func(name []byte, b *bolt.Bucket) error { return walk(b, 0) })
		})
	})
}

func walk(b *bolt.Bucket, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("%w: buckets nested deeper than %d", cache.ErrCorrupt, maxDepth)
	}
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			if sub := b.Bucket(k); sub != nil {
				return walk(sub, depth+1)
			}
		}
		return nil
	})
}

// Paths returns the paths recorded for d, the original first.
func (c *Cache) Paths(ctx context.Context, d digest.Digest) ([]string, error) {
	var out []string
	err := c.do(ctx, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			b := digestBucket(tx, d)
			if b == nil {
				return nil
			}
			dup := b.Bucket(bucketDuplicates)
			orig := first(b.Bucket(bucketOriginal))
			if orig == "" || dup == nil || dup.Get([]byte(orig)) == nil {
				orig = first(dup) // none, or zot's stale original
			}
			if orig == "" {
				return nil
			}
			out = append(out, orig)
			return dup.ForEach(func(k, _ []byte) error {
				if string(k) != orig {
					out = append(out, string(k))
				}
				return nil
			})
		})
	})
	return out, err
}

// Apply makes ops, in order, in one write transaction: with sync on, one
// commit's fdatasyncs for all of them. Ops that would change nothing (a
// path already recorded, or not recorded) are found by a read first, and
// a set of only those costs no write at all.
func (c *Cache) Apply(ctx context.Context, ops []cache.Op) error {
	if len(ops) == 0 {
		return nil
	}
	for _, op := range ops {
		if op.Path == "" {
			return fmt.Errorf("cache: an empty path for %s", op.Digest)
		}
	}
	return c.update(ctx, func(db *bolt.DB) error {
		var changes []cache.Op
		if err := db.View(func(tx *bolt.Tx) error {
			changes = changing(tx, ops)
			return nil
		}); err != nil || len(changes) == 0 {
			return err
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w: %w", cache.ErrUnavailable, err)
		}
		return db.Update(func(tx *bolt.Tx) error {
			blobs, err := tx.CreateBucketIfNotExists(bucketBlobs)
			if err != nil {
				return err
			}
			for _, op := range changes {
				if op.Remove {
					err = remove(blobs, op.Digest, op.Path)
				} else {
					err = put(blobs, op.Digest, op.Path)
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
	})
}

// changing drops from ops those that would change nothing. A put and a
// remove of the same path in one set are both kept: their order matters.
func changing(tx *bolt.Tx, ops []cache.Op) []cache.Op {
	type key struct {
		d    digest.Digest
		path string
	}
	touched := map[key]int{}
	for _, op := range ops {
		touched[key{op.Digest, op.Path}]++
	}
	var out []cache.Op
	for _, op := range ops {
		if touched[key{op.Digest, op.Path}] > 1 {
			out = append(out, op)
			continue
		}
		recorded := false
		if b := digestBucket(tx, op.Digest); b != nil {
			if dup := b.Bucket(bucketDuplicates); dup != nil && dup.Get([]byte(op.Path)) != nil {
				recorded = true
				// Under zot's stale original, a put is a change: it
				// repairs the original.
				if orig := first(b.Bucket(bucketOriginal)); !op.Remove && (orig == "" || dup.Get([]byte(orig)) == nil) {
					recorded = false
				}
			}
		}
		if recorded == op.Remove {
			out = append(out, op)
		}
	}
	return out
}

func put(blobs *bolt.Bucket, d digest.Digest, path string) error {
	b, err := blobs.CreateBucketIfNotExists([]byte(d.String()))
	if err != nil {
		return err
	}
	dup, err := b.CreateBucketIfNotExists(bucketDuplicates)
	if err != nil {
		return err
	}
	if err := dup.Put([]byte(path), []byte{}); err != nil {
		return err
	}
	orig := first(b.Bucket(bucketOriginal))
	switch {
	case orig == "":
		return setOriginal(b, path)
	case dup.Get([]byte(orig)) == nil:
		return setOriginal(b, first(dup)) // zot's stale original
	}
	return nil
}

func remove(blobs *bolt.Bucket, d digest.Digest, path string) error {
	b := blobs.Bucket([]byte(d.String()))
	if b == nil {
		return nil
	}
	dup := b.Bucket(bucketDuplicates)
	if dup != nil {
		if err := dup.Delete([]byte(path)); err != nil {
			return err
		}
	}
	next := first(dup)
	if next == "" {
		return blobs.DeleteBucket([]byte(d.String()))
	}
	if orig := first(b.Bucket(bucketOriginal)); orig == path || dup.Get([]byte(orig)) == nil {
		return setOriginal(b, next)
	}
	return nil
}

// setOriginal makes path the only key of d's original bucket.
func setOriginal(b *bolt.Bucket, path string) error {
	if b.Bucket(bucketOriginal) != nil {
		if err := b.DeleteBucket(bucketOriginal); err != nil {
			return err
		}
	}
	orig, err := b.CreateBucket(bucketOriginal)
	if err != nil {
		return err
	}
	return orig.Put([]byte(path), []byte{})
}

// Complete reports whether MarkComplete was called on this file.
func (c *Cache) Complete(ctx context.Context) (bool, error) {
	done := false
	err := c.do(ctx, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			if b := tx.Bucket(bucketPier); b != nil {
				done = b.Get(keyComplete) != nil
			}
			return nil
		})
	})
	return done, err
}

// MarkComplete records that the index was built from the whole store.
func (c *Cache) MarkComplete(ctx context.Context) error {
	return c.update(ctx, func(db *bolt.DB) error {
		return db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(bucketPier)
			if err != nil {
				return err
			}
			return b.Put(keyComplete, []byte{1})
		})
	})
}

// Close closes the database file.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.db == nil {
		return nil
	}
	err := guard(c.db.Close)
	c.db = nil
	return err
}

func digestBucket(tx *bolt.Tx, d digest.Digest) *bolt.Bucket {
	root := tx.Bucket(bucketBlobs)
	if root == nil {
		return nil
	}
	return root.Bucket([]byte(d.String()))
}

// first is the first key of b, or "".
func first(b *bolt.Bucket) string {
	if b == nil {
		return ""
	}
	k, _ := b.Cursor().First()
	return string(k)
}

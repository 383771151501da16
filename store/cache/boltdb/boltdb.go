// Package boltdb is the dedupe index in a BoltDB file, <root>/cache.db, in
// zot's bucket layout so that a zot root and its cache carry over:
//
//	blobs/                     root bucket
//	  <alg>:<hex>/             one bucket per digest
//	    original/<path> = nil  the first path recorded
//	    duplicates/<path> = nil every path, the original included
//
// Paths are relative to the root, as zot writes them for local storage.
package boltdb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

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

// ErrCorrupt means the file is not a usable BoltDB database.
var ErrCorrupt = errors.New("cache database is corrupt")

// Cache is a BoltDB dedupe index.
type Cache struct {
	db *bolt.DB
}

var _ cache.Cache = (*Cache)(nil)

// Open opens (creating) the cache at path. With sync false the database
// skips fsync: the cache is an index that pier rebuilds from the disk, so
// with commit off it need not cost a single fsync. The freelist is not
// synced either way. The store batches its writes (Apply), from one
// background writer.
func Open(path string, sync bool) (*Cache, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        time.Second,
		NoSync:         !sync,
		NoGrowSync:     !sync, // commit false: no fsync when the file grows either
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", ErrInUse, path)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	}
	c := &Cache{db: db}
	err = c.guard(func() error {
		return db.Update(func(tx *bolt.Tx) error {
			_, err := tx.CreateBucketIfNotExists(bucketBlobs)
			return err
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	}
	return c, nil
}

// OpenOrReplace opens the cache at path. A damaged file is moved into
// asideDir (only the latest one is kept, so that a cache that keeps
// breaking cannot fill the card) and a new, empty cache is started, for
// the store to rebuild; damage then says what was wrong with the old one.
func OpenOrReplace(path, asideDir string, sync bool) (c *Cache, damage, err error) {
	c, err = Open(path, sync)
	if !errors.Is(err, ErrCorrupt) {
		return c, nil, err
	}
	damage = err
	if old, gerr := filepath.Glob(filepath.Join(asideDir, filepath.Base(path)+".corrupt-*")); gerr == nil {
		for _, o := range old {
			os.RemoveAll(o)
		}
	}
	if err := os.MkdirAll(asideDir, 0o755); err != nil {
		return nil, damage, fmt.Errorf("move damaged cache aside: %w", err)
	}
	aside := filepath.Join(asideDir, fmt.Sprintf("%s.corrupt-%d", filepath.Base(path), time.Now().Unix()))
	if err := os.Rename(path, aside); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, damage, fmt.Errorf("move damaged cache aside: %w", err)
	}
	c, err = Open(path, sync)
	return c, damage, err
}

// guard turns a panic inside bbolt (which it raises on some corrupt pages)
// into an error, so a damaged cache can never take a request down.
func (c *Cache) guard(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", cache.ErrUnavailable, r)
		}
	}()
	return fn()
}

// Check walks the whole database and reports the first inconsistency.
func (c *Cache) Check() error {
	return c.guard(func() error {
		return c.db.View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				return fmt.Errorf("%w: %v", ErrCorrupt, err)
			}
			return nil
		})
	})
}

// Paths returns the paths recorded for d, the original first.
func (c *Cache) Paths(ctx context.Context, d digest.Digest) ([]string, error) {
	var out []string
	err := c.guard(func() error {
		return c.db.View(func(tx *bolt.Tx) error {
			b := digestBucket(tx, d)
			if b == nil {
				return nil
			}
			orig := first(b.Bucket(bucketOriginal))
			if orig != "" {
				out = append(out, orig)
			}
			if dup := b.Bucket(bucketDuplicates); dup != nil {
				return dup.ForEach(func(k, _ []byte) error {
					if string(k) != orig {
						out = append(out, string(k))
					}
					return nil
				})
			}
			return nil
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
	return c.guard(func() error {
		var changes []cache.Op
		err := c.db.View(func(tx *bolt.Tx) error {
			changes = changing(tx, ops)
			return nil
		})
		if err != nil || len(changes) == 0 {
			return err
		}
		return c.db.Update(func(tx *bolt.Tx) error {
			for _, op := range changes {
				var err error
				if op.Remove {
					err = remove(tx, op.Digest, op.Path)
				} else {
					err = put(tx, op.Digest, op.Path)
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
			}
		}
		if recorded == op.Remove {
			out = append(out, op)
		}
	}
	return out
}

func put(tx *bolt.Tx, d digest.Digest, path string) error {
	if path == "" {
		return errors.New("cache: empty path")
	}
	b, err := tx.Bucket(bucketBlobs).CreateBucketIfNotExists([]byte(d.String()))
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
	orig, err := b.CreateBucketIfNotExists(bucketOriginal)
	if err != nil {
		return err
	}
	if first(orig) == "" {
		return orig.Put([]byte(path), []byte{})
	}
	return nil
}

func remove(tx *bolt.Tx, d digest.Digest, path string) error {
	blobs := tx.Bucket(bucketBlobs)
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
	orig := b.Bucket(bucketOriginal)
	if orig != nil && orig.Get([]byte(path)) != nil {
		if err := orig.Delete([]byte(path)); err != nil {
			return err
		}
		return orig.Put([]byte(next), []byte{})
	}
	return nil
}

// Complete reports whether MarkComplete was called on this file.
func (c *Cache) Complete(ctx context.Context) (bool, error) {
	done := false
	err := c.guard(func() error {
		return c.db.View(func(tx *bolt.Tx) error {
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
	return c.guard(func() error {
		return c.db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(bucketPier)
			if err != nil {
				return err
			}
			return b.Put(keyComplete, []byte{1})
		})
	})
}

// Close closes the database file.
func (c *Cache) Close() error { return c.db.Close() }

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

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
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/pier-oci/pier/store/cache"
)

var (
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
	db   *bolt.DB
	sync bool
}

var _ cache.Cache = (*Cache)(nil)

// Open opens (creating) the cache at path. With sync false the database
// skips fsync: the cache is an index that pier rebuilds from the disk, so
// with commit off it need not cost a single fsync. Writes are batched and
// the freelist is not synced either way.
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
	// With fsync on, index writes made within MaxBatchDelay share one
	// transaction and its two fsyncs (see write). Pushes do not wait for
	// their index writes (the store records in the background), so the
	// delay bounds the cache's fsyncs to a few dozen a second however fast
	// blobs arrive, at no cost to a client.
	db.MaxBatchDelay = 20 * time.Millisecond
	c := &Cache{db: db, sync: sync}
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

// Put records path for d; a path already recorded costs no write.
func (c *Cache) Put(ctx context.Context, d digest.Digest, path string) error {
	known := false
	err := c.guard(func() error {
		return c.db.View(func(tx *bolt.Tx) error {
			if b := digestBucket(tx, d); b != nil {
				if dup := b.Bucket(bucketDuplicates); dup != nil && dup.Get([]byte(path)) != nil {
					known = true
				}
			}
			return nil
		})
	})
	if err != nil || known {
		return err
	}
	return c.guard(func() error { return c.write(func(tx *bolt.Tx) error { return put(tx, d, path) }) })
}

// write runs a write transaction: batched with others when every commit
// costs fsyncs, directly when it does not (a lone write would otherwise
// wait MaxBatchDelay for company it does not need).
func (c *Cache) write(fn func(*bolt.Tx) error) error {
	if c.sync {
		return c.db.Batch(fn)
	}
	return c.db.Update(fn)
}

// PutAll records many paths in one transaction.
func (c *Cache) PutAll(ctx context.Context, entries []cache.Entry) error {
	if len(entries) == 0 {
		return nil
	}
	return c.guard(func() error {
		return c.db.Update(func(tx *bolt.Tx) error {
			for _, e := range entries {
				if err := put(tx, e.Digest, e.Path); err != nil {
					return err
				}
			}
			return nil
		})
	})
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

// Remove forgets path for d, promoting another path to original when the
// original goes, and dropping the digest when no path is left.
func (c *Cache) Remove(ctx context.Context, d digest.Digest, path string) error {
	return c.guard(func() error {
		return c.write(func(tx *bolt.Tx) error {
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

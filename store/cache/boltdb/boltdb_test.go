package boltdb

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"

	"github.com/pier-oci/pier/store/cache"
)

var ctx = context.Background()

func open(t *testing.T) (*Cache, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cache.db")
	c, err := Open(path, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, path
}

func paths(t *testing.T, c *Cache, d digest.Digest) string {
	t.Helper()
	p, err := c.Paths(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(p)
}

func TestPutPathsRemove(t *testing.T) {
	c, _ := open(t)
	d := digest.FromString("layer")
	if got := paths(t, c, d); got != "[]" {
		t.Fatalf("empty cache: %s", got)
	}
	for _, p := range []string{"a/blobs/sha256/x", "b/blobs/sha256/x", "c/blobs/sha256/x", "a/blobs/sha256/x"} {
		if err := c.Apply(ctx, []cache.Op{{Digest: d, Path: p}}); err != nil {
			t.Fatal(err)
		}
	}
	if got := paths(t, c, d); got != "[a/blobs/sha256/x b/blobs/sha256/x c/blobs/sha256/x]" {
		t.Fatalf("paths = %s", got)
	}
	// Removing the original promotes another path; the rest stay.
	c.Apply(ctx, []cache.Op{{Digest: d, Path: "a/blobs/sha256/x", Remove: true}})
	if got := paths(t, c, d); got != "[b/blobs/sha256/x c/blobs/sha256/x]" {
		t.Fatalf("after removing the original: %s", got)
	}
	c.Apply(ctx, []cache.Op{{Digest: d, Path: "c/blobs/sha256/x", Remove: true}})
	c.Apply(ctx, []cache.Op{{Digest: d, Path: "b/blobs/sha256/x", Remove: true}})
	if got := paths(t, c, d); got != "[]" {
		t.Fatalf("after removing all: %s", got)
	}
	c.Apply(ctx, []cache.Op{{Digest: d, Path: "never/recorded", Remove: true}}) // no error for an unknown digest
}

// A cache.db written by zot (same buckets, nil values) is read as is.
func TestReadsZotLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("zot layer")
	db.Update(func(tx *bolt.Tx) error {
		root, _ := tx.CreateBucketIfNotExists([]byte("blobs"))
		b, _ := root.CreateBucket([]byte(d.String()))
		dup, _ := b.CreateBucket([]byte("duplicates"))
		dup.Put([]byte("zot/one/blobs/sha256/"+d.Encoded()), nil)
		dup.Put([]byte("zot/two/blobs/sha256/"+d.Encoded()), nil)
		orig, _ := b.CreateBucket([]byte("original"))
		return orig.Put([]byte("zot/two/blobs/sha256/"+d.Encoded()), nil)
	})
	db.Close()
	c, err := Open(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := fmt.Sprintf("[zot/two/blobs/sha256/%s zot/one/blobs/sha256/%s]", d.Encoded(), d.Encoded())
	if got := paths(t, c, d); got != want {
		t.Fatalf("paths = %s, want %s", got, want)
	}
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptAndInUse(t *testing.T) {
	_, path := open(t)
	if _, err := Open(path, true); !errors.Is(err, ErrInUse) {
		t.Fatalf("second open: %v, want ErrInUse", err)
	}
	garbage := filepath.Join(t.TempDir(), "cache.db")
	os.WriteFile(garbage, []byte("this is not a bolt database, just some bytes of junk to fill a page"), 0o600)
	if _, err := Open(garbage, true); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("garbage: %v, want ErrCorrupt", err)
	}
}

// Apply makes its changes in order, in one transaction, and a set that
// changes nothing writes nothing (no commit, so no fsync on an SD card).
func TestApply(t *testing.T) {
	c, _ := open(t)
	d := digest.FromString("layer")
	txid := func() int {
		var id int
		c.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
		return id
	}
	before := txid()
	err := c.Apply(ctx, []cache.Op{
		{Digest: d, Path: "a/blobs/sha256/x"},
		{Digest: d, Path: "b/blobs/sha256/x"},
		{Digest: d, Path: "a/blobs/sha256/x", Remove: true}, // after its put: gone
		{Digest: d, Path: "c/blobs/sha256/x", Remove: true}, // never recorded
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := paths(t, c, d); got != "[b/blobs/sha256/x]" {
		t.Fatalf("paths = %s", got)
	}
	if n := txid() - before; n != 1 {
		t.Fatalf("%d write transactions for one Apply, want 1", n)
	}
	before = txid()
	if err := c.Apply(ctx, []cache.Op{{Digest: d, Path: "b/blobs/sha256/x"}, {Digest: d, Path: "z/blobs/sha256/x", Remove: true}}); err != nil {
		t.Fatal(err)
	}
	if txid() != before {
		t.Fatal("a set of changes that change nothing was written")
	}
}

package dedupe_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/cache/boltdb"
	"github.com/pier-oci/pier/store/dedupe"
	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/driver/local"
)

// The pass decides without the repository lock and acts under it; what
// it acts on must still be what it decided on.

// A pass has decided to link b's copy to a's; a client deletes b's blob
// (202) before the link is made. The blob must stay deleted.
func TestReconcileNeverResurrectsADeletedBlob(t *testing.T) {
	root := t.TempDir()
	data := make([]byte, 10_000)
	rand.Read(data)
	d := digest.FromBytes(data)
	plain := open(t, root, false)
	for _, repo := range []string{"a", "b"} { // two separate copies, as layouts copied in would be
		if _, err := plain.PutBlob(ctx, repo, d, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	plain.Close()

	drv := openDriver(t, root)
	bc, err := boltdb.Open(filepath.Join(root, "cache.db"), boltdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(store.Options{Driver: drv, Cache: bc})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	keyA, keyB := "a/blobs/sha256/"+d.Encoded(), "b/blobs/sha256/"+d.Encoded()
	infoA, _ := drv.Stat(ctx, keyA)
	infoB, _ := drv.Stat(ctx, keyB)
	if err := st.DeleteBlob(ctx, "b", d); err != nil {
		t.Fatal(err)
	}
	// A deduper of its own on the same storage, deciding as the pass did.
	dd := dedupe.New(dedupe.Options{Driver: drv, Cache: nopCache{}, Repos: noLocks{}})
	defer dd.Close()
	if dedupe.LinkDuplicate(dd, ctx, "b", d, infoB, infoA) {
		t.Fatal("linked over a deleted blob")
	}
	if _, err := st.StatBlob(ctx, "b", d); !errors.Is(err, store.ErrBlobUnknown) {
		t.Fatalf("a deleted blob is served again after the pass: %v", err)
	}
}

func openDriver(t *testing.T, root string) *local.Driver {
	t.Helper()
	drv, err := local.Open(root, local.Options{Lock: true, TempDir: ".pier/tmp"})
	if err != nil {
		t.Fatal(err)
	}
	return drv
}

func open(t *testing.T, root string, dedupe bool) *store.Store {
	t.Helper()
	st, err := store.New(store.Options{Driver: openDriver(t, root)})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

type noLocks struct{}

func (noLocks) Repositories(context.Context) ([]string, error)    { return nil, nil }
func (noLocks) RLock(string) func()                               { return func() {} }
func (noLocks) Checked(context.Context, string, digest.Digest)    {}
func (noLocks) ReadState(context.Context, string) ([]byte, error) { return nil, driver.ErrNotFound }
func (noLocks) WriteState(context.Context, string, []byte) error  { return nil }

type nopCache struct{}

func (nopCache) Paths(context.Context, digest.Digest) ([]string, error) { return nil, nil }
func (nopCache) Apply(context.Context, []cache.Op) error                { return nil }
func (nopCache) Complete(context.Context) (bool, error)                 { return true, nil }
func (nopCache) MarkComplete(context.Context) error                     { return nil }
func (nopCache) Close() error                                           { return nil }

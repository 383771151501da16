// Package storetest is the store's shared test suite (Run), which every
// storage driver's tests call with a way to open that driver, and the
// helpers other packages' tests use to get a store.
package storetest

import (
	"path/filepath"
	"testing"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/cache/boltdb"
	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/driver/local"
)

// Local opens a store on the directory dir as pier serve does: under the
// directory's lock, durable when commit is set, with a BoltDB dedupe
// index in it when dedupe is set. It is closed when the test ends.
func Local(t testing.TB, dir string, commit, dedupe bool) *store.Store {
	t.Helper()
	drv, err := local.Open(dir, local.Options{Sync: commit, Lock: true, TempDir: store.StateDir + "/tmp", Reserve: store.ReserveSize})
	if err != nil {
		t.Fatal(err)
	}
	return New(t, drv, dedupe)
}

// New opens a store on drv (with a BoltDB index in a temporary directory
// when dedupe is set), closed when the test ends.
func New(t testing.TB, drv driver.Driver, dedupe bool) *store.Store {
	t.Helper()
	opts := store.Options{Driver: drv}
	if dedupe {
		bc, err := boltdb.Open(filepath.Join(t.TempDir(), "cache.db"), boltdb.Options{})
		if err != nil {
			t.Fatal(err)
		}
		opts.Cache = bc
	}
	st, err := store.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

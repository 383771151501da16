package local_test

import (
	"path/filepath"
	"testing"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/cache/boltdb"
	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/driver/local"
	"github.com/pier-oci/pier/store/storetest"
)

// The store's shared suite on a local directory with a BoltDB index, as
// pier serve opens them.
func TestStore(t *testing.T) {
	open := func(t *testing.T, dir string) driver.Driver {
		d, err := local.Open(dir, local.Options{Sync: true, Lock: true, TempDir: store.StateDir + "/tmp"})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	storetest.Run(t, storetest.Backend{
		New:    func(t *testing.T) driver.Driver { return open(t, t.TempDir()) },
		Reopen: func(t *testing.T, d driver.Driver) driver.Driver { return open(t, d.(*local.Driver).Dir()) },
		Cache: func(t *testing.T) cache.Cache {
			c, err := boltdb.Open(filepath.Join(t.TempDir(), "cache.db"), boltdb.Options{Sync: true})
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
	})
}

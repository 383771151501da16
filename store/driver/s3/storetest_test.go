package s3

import (
	"path/filepath"
	"testing"

	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/cache/boltdb"
	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/storetest"
)

// The store's shared suite on a bucket: each test on its own prefix of
// the test bucket, replicas as two drivers on one prefix, and a BoltDB
// index as pier serve opens one for an s3 root.
func TestStore(t *testing.T) {
	s := testServer(t)
	storetest.Run(t, storetest.Backend{
		New:    func(t *testing.T) driver.Driver { return mustNew(t, testConfig(t, s)) },
		Reopen: func(t *testing.T, d driver.Driver) driver.Driver { return mustNew(t, d.(*Driver).cfg) },
		Share:  func(t *testing.T, d driver.Driver) driver.Driver { return mustNew(t, d.(*Driver).cfg) },
		Cache: func(t *testing.T) cache.Cache {
			c, err := boltdb.Open(filepath.Join(t.TempDir(), "cache.db"), boltdb.Options{})
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
	})
}

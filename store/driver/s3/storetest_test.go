package s3

import (
	"path/filepath"
	"testing"

	"github.com/pier-oci/pier/store/budget"
	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/cache/boltdb"
	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/storetest"
)

// The store's shared suite on a bucket: each test on its own prefix of
// the test bucket, replicas as two drivers on one prefix, a BoltDB index
// as pier serve opens one for an s3 root, and one budget of chunk buffers
// for every driver, smaller than the suite's uploads at once.
func TestStore(t *testing.T) {
	s := testServer(t)
	chunks := budget.New(2 * MinChunkSize) // as pier serve shares one (store/backend)
	storetest.Run(t, storetest.Backend{
		New: func(t *testing.T) driver.Driver {
			cfg := testConfig(t, s)
			cfg.Buffers = chunks
			return mustNew(t, cfg)
		},
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

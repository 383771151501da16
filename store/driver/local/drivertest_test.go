package local_test

import (
	"testing"

	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/driver/drivertest"
	"github.com/pier-oci/pier/store/driver/local"
)

// The driver suite on a local directory, opened as pier serve opens it.
func TestDriver(t *testing.T) {
	drivertest.Run(t, func(t *testing.T) func() driver.Driver {
		dir := t.TempDir()
		return func() driver.Driver {
			d, err := local.Open(dir, local.Options{Sync: true, TempDir: ".pier/tmp"})
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
	})
}

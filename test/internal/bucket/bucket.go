// Package bucket gives an end-to-end test a place of its own in the S3
// server of test/services/s3.sh: a fresh prefix of the test bucket, as a
// pier storageDriver, and a driver on it to look at what pier left there.
package bucket

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/pier-oci/pier/store/driver"
	s3driver "github.com/pier-oci/pier/store/driver/s3"
)

// Bucket is one test's prefix of the test bucket.
type Bucket struct {
	Endpoint, Name, AccessKey, SecretKey, Region string
	// Root is the storageDriver's rootdirectory: "/e2e-<test>-<random>".
	Root string
}

// New is a fresh prefix of the test bucket. It fails, naming
// test/services.sh, when the S3 server's variables are not set.
func New(t testing.TB) Bucket {
	t.Helper()
	b := Bucket{
		Endpoint: os.Getenv("PIER_TEST_S3_ENDPOINT"), Name: os.Getenv("PIER_TEST_S3_BUCKET"),
		AccessKey: os.Getenv("PIER_TEST_S3_ACCESS_KEY"), SecretKey: os.Getenv("PIER_TEST_S3_SECRET_KEY"),
		Region: os.Getenv("PIER_TEST_S3_REGION"),
	}
	if b.Endpoint == "" || b.Name == "" {
		t.Fatal("no S3 server: PIER_TEST_S3_ENDPOINT and PIER_TEST_S3_BUCKET are unset; run the tests under test/services.sh (make test does)")
	}
	id := make([]byte, 4)
	rand.Read(id)
	name := strings.NewReplacer("/", "-", " ", "_", "'", "", ",", "").Replace(t.Name())
	b.Root = "/e2e-" + strings.ToLower(name) + "-" + hex.EncodeToString(id)
	return b
}

// Driver is the storageDriver section of a pier config for the prefix.
// extra keys are added (chunksize, requesttimeout, ...).
func (b Bucket) Driver(extra map[string]any) map[string]any {
	m := map[string]any{
		"name": "s3", "regionendpoint": b.Endpoint, "region": b.Region, "bucket": b.Name,
		"rootdirectory": b.Root, "accesskey": b.AccessKey, "secretkey": b.SecretKey,
	}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// Storage is a pier storage section on the prefix: storageDriver and the
// keys given (dedupe, cacheDriver, gc, ...).
func (b Bucket) Storage(keys map[string]any) map[string]any {
	m := map[string]any{"storageDriver": b.Driver(nil)}
	for k, v := range keys {
		m[k] = v
	}
	return m
}

// Open is a driver on the prefix, with pier's keys (zot's rootdirectory
// "/x" keeps the repositories at x/x/ in the bucket).
func (b Bucket) Open(t testing.TB) *s3driver.Driver {
	t.Helper()
	root := strings.Trim(b.Root, "/")
	d, err := s3driver.New(context.Background(), s3driver.Config{
		Endpoint: b.Endpoint, Bucket: b.Name, Region: b.Region, ForcePathStyle: true,
		AccessKey: b.AccessKey, SecretKey: b.SecretKey, Prefix: root + "/" + root + "/",
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Stored is how many bytes the objects below dir take in the bucket (a
// placeholder takes none), and how many there are.
func (b Bucket) Stored(t testing.TB, dir string) (bytes int64, objects int) {
	t.Helper()
	d := b.Open(t)
	err := d.Walk(context.Background(), dir, func(e driver.Info) error {
		if !e.IsDir {
			bytes += e.Size
			objects++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return bytes, objects
}

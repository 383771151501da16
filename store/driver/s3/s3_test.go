package s3

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/driver/drivertest"
)

// server is the S3 server of test/services/s3.sh.
type server struct {
	endpoint, bucket, access, secret, region string
}

func testServer(t testing.TB) server {
	t.Helper()
	s := server{
		endpoint: os.Getenv("PIER_TEST_S3_ENDPOINT"),
		bucket:   os.Getenv("PIER_TEST_S3_BUCKET"),
		access:   os.Getenv("PIER_TEST_S3_ACCESS_KEY"),
		secret:   os.Getenv("PIER_TEST_S3_SECRET_KEY"),
		region:   os.Getenv("PIER_TEST_S3_REGION"),
	}
	if s.endpoint == "" || s.bucket == "" {
		t.Fatal("no S3 server: PIER_TEST_S3_ENDPOINT and PIER_TEST_S3_BUCKET are unset; run the tests under test/services.sh (make test does)")
	}
	return s
}

// testConfig is a driver on its own prefix of the test bucket, with the
// smallest chunks, so that the suite's objects span several, and a low copy
// threshold, so that copies above it are multipart.
func testConfig(t testing.TB, s server) Config {
	b := make([]byte, 6)
	rand.Read(b)
	name := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	return Config{
		Endpoint: s.endpoint, Bucket: s.bucket, Region: s.region, ForcePathStyle: true,
		AccessKey: s.access, SecretKey: s.secret,
		Prefix:                      "drivertest/" + name + "-" + hex.EncodeToString(b) + "/",
		ChunkSize:                   MinChunkSize,
		MultipartCopyChunkSize:      MinChunkSize,
		MultipartCopyThresholdSize:  MinChunkSize,
		MultipartCopyMaxConcurrency: 4,
	}
}

func mustNew(t testing.TB, cfg Config) *Driver {
	t.Helper()
	d, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDriver(t *testing.T) {
	s := testServer(t)
	drivertest.Run(t, func(t *testing.T) func() driver.Driver {
		cfg := testConfig(t, s)
		return func() driver.Driver { return mustNew(t, cfg) }
	})
}

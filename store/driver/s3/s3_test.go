package s3

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pier-oci/pier/store/budget"
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

// A budget of chunk buffers bounds the chunks held at once: a writer past
// it waits, until its context ends (and its Write fails, taking nothing
// back from the upload), or until another writer gives its chunk back.
func TestChunkBudget(t *testing.T) {
	cfg := testConfig(t, testServer(t))
	cfg.Buffers = budget.New(MinChunkSize)
	d := mustNew(t, cfg)
	ctx := context.Background()
	first, err := d.Create(ctx, "r/.uploads/a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Write([]byte("holds the only chunk")); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	second, err := d.Create(short, "r/.uploads/b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := second.Write([]byte("waits")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a Write past the budget: %v, want it to wait until its context ends", err)
	}
	if second.Size() != 0 {
		t.Fatalf("a Write that got no chunk left the upload at %d bytes", second.Size())
	}
	second.Abort()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	third, err := d.Append(ctx, "r/.uploads/b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := third.Write([]byte("goes")); err != nil {
		t.Fatalf("a Write once the chunk was given back: %v", err)
	}
	if err := third.Close(); err != nil {
		t.Fatal(err)
	}
	if n := cfg.Buffers.InUse(); n != 0 {
		t.Fatalf("%d bytes of the budget still held after every writer closed", n)
	}
}

package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	goredis "github.com/redis/go-redis/v9"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/cache/redis"
	"github.com/pier-oci/pier/store/dedupe"
	"github.com/pier-oci/pier/store/driver"
)

// A monolithic push whose multipart upload is aborted under it (another
// replica's garbage collection sweeping writes older than an hour, or a
// bucket lifecycle rule) fails with a retryable error. S3 answers
// NoSuchUpload, which the driver reads as ErrNotFound, which the store
// reads, for a write, as "a file is across the repository's path":
// ErrNotRepository, a 400 NAME_INVALID no client retries.
func TestPlaceAbortedUnderThePushIsRetryable(t *testing.T) {
	d, st, chunks := bucketStore(t, nil, nil)
	ctx := context.Background()
	data := patterned(3*MinChunkSize + 11)
	dg := digest.FromBytes(data)
	var swept int
	body := &watchedBody{r: bytes.NewReader(data), at: 2*MinChunkSize + 10, check: func() {
		// Another replica's collection: its busy set does not know this push.
		swept, _ = d.Sweep(ctx, "app/blobs", time.Now().Add(2*time.Hour), nil)
	}}
	_, err := st.PutBlob(ctx, "app", dg, body)
	t.Logf("push error: %v", err)
	if swept != 1 {
		t.Fatalf("the sweep aborted %d writes, want the push's", swept)
	}
	if err == nil {
		t.Fatal("a push whose multipart upload was aborted succeeded")
	}
	if errors.Is(err, store.ErrNotRepository) || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("push whose write was aborted under it: %v; want ErrUnavailable (a retry succeeds), not ErrNotRepository (NAME_INVALID)", err)
	}
	if used := chunks.InUse(); used != 0 {
		t.Fatalf("%d bytes of the chunk budget still held", used)
	}
	if _, err := st.PutBlob(ctx, "app", dg, bytes.NewReader(data)); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	assertStoredBlob(t, st, "app", dg, data)
}

// statCounter is the s3 driver (a Placer, through embedding) counting the
// Stats the store makes.
type statCounter struct {
	*Driver
	stats atomic.Int64
}

func (c *statCounter) Stat(ctx context.Context, key string) (driver.Info, error) {
	c.stats.Add(1)
	return c.Driver.Stat(ctx, key)
}

func redisCache(t *testing.T) *redis.Cache {
	t.Helper()
	addr := os.Getenv("PIER_TEST_REDIS")
	if addr == "" {
		t.Fatal("PIER_TEST_REDIS is not set: run the tests under test/services.sh")
	}
	b := make([]byte, 6)
	rand.Read(b)
	c := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: []string{addr}, ContextTimeoutEnabled: true})
	return redis.New(redis.Options{Client: c, KeyPrefix: "review3-" + hex.EncodeToString(b)})
}

// With placeholders (s3 and a dedupe index), a monolithic push of content
// the index does not know looks for a holder with Store.holder, which
// after the index walks every repository, twice, with a Stat in each:
// every new layer pushed costs 2×(list of repositories + one HEAD per
// repository) before its first byte is read. The upload's way (commitBlob
// → placeBlob → dedupe.Place) asks the index only.
func TestPlaceDoesNotWalkEveryRepository(t *testing.T) {
	var c *statCounter
	_, st, _ := bucketStore(t, redisCache(t), func(d *Driver) driver.Driver {
		c = &statCounter{Driver: d}
		return c
	})
	ctx := context.Background()
	const repos = 40
	for i := range repos {
		small := []byte(fmt.Sprintf("repo %d", i))
		if _, err := st.PutBlob(ctx, fmt.Sprintf("r%02d", i), digest.FromBytes(small), bytes.NewReader(small)); err != nil {
			t.Fatal(err)
		}
	}
	data := patterned(MinChunkSize/2 + 3)
	c.stats.Store(0)
	if _, err := st.PutBlob(ctx, "app", digest.FromBytes(data), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if n := c.stats.Load(); n >= repos {
		t.Fatalf("one push of a new blob made %d Stats with %d repositories: it walked them all", n, repos)
	}
}

// Two pushes of one new layer to two repositories at once (a CI building
// from one base for many repositories): the upload's way judges the
// holder at commit, so the second to commit becomes a placeholder of the
// first; the place way judges it before the body streams, so both store
// the content whole.
func TestConcurrentPlacesOfOneContentDedupe(t *testing.T) {
	d, st, _ := bucketStore(t, redisCache(t), nil)
	ctx := context.Background()
	data := patterned(MinChunkSize + 99)
	dg := digest.FromBytes(data)
	// Both pushes start (each looks for a holder: none); the second's body
	// then waits, halfway, until the first's push is done.
	oneStarted, oneDone := make(chan struct{}), make(chan struct{})
	errs := make([]error, 2)
	go func() {
		defer close(oneDone)
		<-oneStarted
		_, errs[0] = st.PutBlob(ctx, "one", dg, bytes.NewReader(data))
	}()
	body := &watchedBody{r: bytes.NewReader(data), at: MinChunkSize / 2, check: func() {
		close(oneStarted)
		<-oneDone
	}}
	_, errs[1] = st.PutBlob(ctx, "two", dg, body)
	<-oneDone
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	var whole int
	for _, repo := range []string{"one", "two"} {
		info, err := d.Stat(ctx, repo+"/blobs/sha256/"+dg.Encoded())
		if err != nil {
			t.Fatal(err)
		}
		if !dedupe.IsPlaceholder(info, dg) {
			whole++
		}
		assertStoredBlob(t, st, repo, dg, data)
	}
	if whole != 1 {
		t.Fatalf("%d copies of the content stored whole, want 1 and a placeholder", whole)
	}
}

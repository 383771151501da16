package s3

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pier-oci/pier/store/budget"
	"github.com/pier-oci/pier/store/driver"
)

// expectations are what Place is told of data: nothing (parts), and its
// size and sha256 (one streamed PutObject above a chunk).
func expectations(data []byte) []driver.Expected {
	sum := sha256.Sum256(data)
	return []driver.Expected{{Size: -1}, {Size: int64(len(data)), SHA256: sum[:]}}
}

// Place writes an object of any length straight to its key: unseen there
// until Finish, whole after it, and nothing left behind (no multipart
// upload, no private object) either way.
func TestPlaceShowsTheObjectOnlyWhenFinished(t *testing.T) {
	cfg := testConfig(t, testServer(t))
	cfg.Buffers = budget.New(2 * MinChunkSize)
	d := mustNew(t, cfg)
	for _, size := range []int{0, 100, MinChunkSize, 2*MinChunkSize + 3, 3 * MinChunkSize} {
		for _, want := range expectations(patterned(size)) {
			placeAndCheck(t, d, cfg.Buffers, size, want)
		}
	}
}

func placeAndCheck(t *testing.T, d *Driver, buffers *budget.Budget, size int, want driver.Expected) {
	ctx := context.Background()
	{
		data := patterned(size)
		key := "r/blobs/sha256/placed"
		w, err := d.Place(ctx, key, want)
		if err != nil {
			t.Fatal(err)
		}
		// In odd pieces, as a request body arrives.
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 1<<20+13)
			if k, err := w.Write(rest[:n]); err != nil || k != n {
				t.Fatalf("%d bytes: Write = %d, %v", size, k, err)
			}
			rest = rest[n:]
		}
		if w.Size() != int64(size) {
			t.Fatalf("Size = %d, want %d", w.Size(), size)
		}
		if _, err := d.Stat(ctx, key); !driver.IsNotFound(err) {
			t.Fatalf("%d bytes: the key answers before Finish: %v", size, err)
		}
		if err := w.Finish(ctx); err != nil {
			t.Fatalf("%d bytes: Finish: %v", size, err)
		}
		if got := readObject(t, d, key); !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: the object holds %d other bytes", size, len(got))
		}
		objs, multiparts := rawObjects(t, d)
		if !slices.Equal(objs, []string{key}) || len(multiparts) != 0 {
			t.Fatalf("%d bytes: left in the bucket: objects %v, multipart uploads %v", size, objs, multiparts)
		}
		if used := buffers.InUse(); used != 0 {
			t.Fatalf("%d bytes: %d bytes of the chunk budget still held", size, used)
		}
		if err := d.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
}

// An aborted Place leaves the key as it was, and no parts.
func TestPlaceAbortLeavesTheKeyAsItWas(t *testing.T) {
	for _, want := range expectations(patterned(3*MinChunkSize + 5)) {
		placeAndAbort(t, want)
	}
}

func placeAndAbort(t *testing.T, want driver.Expected) {
	cfg := testConfig(t, testServer(t))
	cfg.Buffers = budget.New(2 * MinChunkSize)
	d := mustNew(t, cfg)
	ctx := context.Background()
	key := "r/blobs/sha256/kept"
	if _, err := d.WriteFile(ctx, key, []byte("old")); err != nil {
		t.Fatal(err)
	}
	w, err := d.Place(ctx, key, want)
	if err != nil {
		t.Fatal(err)
	}
	// All of it: a streamed write has sent every byte but its last.
	if _, err := w.Write(patterned(3*MinChunkSize + 5)); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if got := readObject(t, d, key); string(got) != "old" {
		t.Fatalf("after Abort the key holds %d bytes, not the old object", len(got))
	}
	if _, multiparts := rawObjects(t, d); len(multiparts) != 0 {
		t.Fatalf("parts left after Abort: %v", multiparts)
	}
	if err := w.Finish(ctx); err == nil {
		t.Fatal("Finish after Abort succeeded")
	}
	if used := cfg.Buffers.InUse(); used != 0 {
		t.Fatalf("%d bytes of the chunk budget still held", used)
	}
}

// A part that fails (the server gone) fails the Write or the Finish, not
// silently: the key stays empty.
func TestPlaceFailsWhenTheServerIsGone(t *testing.T) {
	data := append(patterned(MinChunkSize+1), patterned(2*MinChunkSize)...)
	for _, want := range expectations(data) {
		placeWithTheServerGone(t, want)
	}
}

func placeWithTheServerGone(t *testing.T, want driver.Expected) {
	g := newGateway(t)
	cfg := testConfig(t, testServer(t))
	cfg.Endpoint, cfg.Timeout = "http://"+g.addr, 3*time.Second
	d := mustNew(t, cfg)
	ctx := context.Background()
	if _, err := d.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(d.bucket)}); err != nil {
		t.Fatal(err)
	}
	w, err := d.Place(ctx, "r/blobs/sha256/gone", want)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(patterned(MinChunkSize + 1)); err != nil {
		t.Fatal(err)
	}
	g.kill()
	_, werr := w.Write(patterned(2 * MinChunkSize))
	ferr := w.Finish(ctx)
	if werr == nil && ferr == nil {
		t.Fatal("a Place with the server stopped finished")
	}
	if !errors.Is(errors.Join(werr, ferr), driver.ErrUnavailable) {
		t.Fatalf("errors %v, %v: not ErrUnavailable", werr, ferr)
	}
}

// A Place given its size takes exactly that many bytes: fewer fail the
// Finish, more the Write, and the key stays as it was.
func TestPlaceOfAKnownSizeTakesExactlyIt(t *testing.T) {
	d := mustNew(t, testConfig(t, testServer(t)))
	ctx := context.Background()
	size := 2*MinChunkSize + 9
	data := patterned(size + 1)
	key := "r/blobs/sha256/sized"
	sum := sha256.Sum256(data[:size])
	want := driver.Expected{Size: int64(size), SHA256: sum[:]}
	short, err := d.Place(ctx, key, want)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := short.Write(data[:size-1]); err != nil {
		t.Fatal(err)
	}
	if err := short.Finish(ctx); err == nil {
		t.Fatalf("Finish of %d bytes of the %d declared succeeded", size-1, size)
	}
	long, err := d.Place(ctx, key, want)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := long.Write(data[:size]); err != nil {
		t.Fatal(err)
	}
	if _, err := long.Write(data[size:]); err == nil {
		t.Fatalf("a Write past the %d bytes declared succeeded", size)
	}
	long.Abort()
	if _, err := d.Stat(ctx, key); !driver.IsNotFound(err) {
		t.Fatalf("after writes of the wrong length the key answers: %v", err)
	}
	if objs, multiparts := rawObjects(t, d); len(objs)+len(multiparts) != 0 {
		t.Fatalf("left in the bucket: objects %v, multipart uploads %v", objs, multiparts)
	}
}

// Sweep aborts the unfinished writes a process died in, older than its
// cut-off, and spares the ones it is told are busy.
func TestSweepAbortsUnfinishedWrites(t *testing.T) {
	d := mustNew(t, testConfig(t, testServer(t)))
	ctx := context.Background()
	for _, key := range []string{"r/blobs/sha256/dead", "r/blobs/sha256/busy", "other/blobs/sha256/dead"} {
		w, err := d.Place(ctx, key, driver.Expected{Size: -1})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(patterned(MinChunkSize)) // one part sent, then the process "dies"
	}
	if n, err := d.Sweep(ctx, "r/blobs", time.Now().Add(-time.Hour), nil); err != nil || n != 0 {
		t.Fatalf("Sweep of writes younger than the cut-off = %d, %v", n, err)
	}
	busy := func(key string) bool { return key == "r/blobs/sha256/busy" }
	if n, err := d.Sweep(ctx, "r/blobs", time.Now().Add(time.Minute), busy); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1", n, err)
	}
	_, multiparts := rawObjects(t, d)
	slices.Sort(multiparts)
	if want := []string{"other/blobs/sha256/dead", "r/blobs/sha256/busy"}; !slices.Equal(multiparts, want) {
		t.Fatalf("unfinished writes left %v, want %v", multiparts, want)
	}
}

func patterned(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + i>>13)
	}
	return b
}

func readObject(t *testing.T, d *Driver, key string) []byte {
	t.Helper()
	f, _, err := d.Open(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A streamed put whose body is all but sent waits for the store's verdict
// no longer than the driver's Timeout: a Finish after that fails, and the
// key stays empty, rather than a request held open for as long as a lock
// takes.
func TestPlaceStreamedWaitsForFinishWithinTheTimeout(t *testing.T) {
	d := faultDriver(t, testServer(t).endpoint) // Timeout 1 s
	ctx := context.Background()
	data := patterned(MinChunkSize + 11)
	sum := sha256.Sum256(data)
	key := "r/blobs/sha256/late"
	w, err := d.Place(ctx, key, driver.Expected{Size: int64(len(data)), SHA256: sum[:]})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if err := w.Finish(ctx); err == nil {
		t.Fatal("a Finish after the Timeout succeeded")
	}
	if _, err := d.Stat(ctx, key); !driver.IsNotFound(err) {
		t.Fatalf("after a late Finish the key answers: %v", err)
	}
}

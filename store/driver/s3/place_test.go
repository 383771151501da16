package s3

import (
	"bytes"
	"context"
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

// Place writes an object of any length straight to its key: unseen there
// until Finish, whole after it, and nothing left behind (no multipart
// upload, no private object) either way.
func TestPlaceShowsTheObjectOnlyWhenFinished(t *testing.T) {
	cfg := testConfig(t, testServer(t))
	cfg.Buffers = budget.New(2 * MinChunkSize)
	d := mustNew(t, cfg)
	ctx := context.Background()
	for _, size := range []int{0, 100, MinChunkSize, 2*MinChunkSize + 3, 3 * MinChunkSize} {
		data := patterned(size)
		key := "r/blobs/sha256/placed"
		w, err := d.Place(ctx, key)
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
		if used := cfg.Buffers.InUse(); used != 0 {
			t.Fatalf("%d bytes: %d bytes of the chunk budget still held", size, used)
		}
		if err := d.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
}

// An aborted Place leaves the key as it was, and no parts.
func TestPlaceAbortLeavesTheKeyAsItWas(t *testing.T) {
	cfg := testConfig(t, testServer(t))
	cfg.Buffers = budget.New(2 * MinChunkSize)
	d := mustNew(t, cfg)
	ctx := context.Background()
	key := "r/blobs/sha256/kept"
	if _, err := d.WriteFile(ctx, key, []byte("old")); err != nil {
		t.Fatal(err)
	}
	w, err := d.Place(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
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
	g := newGateway(t)
	cfg := testConfig(t, testServer(t))
	cfg.Endpoint, cfg.Timeout = "http://"+g.addr, 3*time.Second
	d := mustNew(t, cfg)
	ctx := context.Background()
	if _, err := d.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(d.bucket)}); err != nil {
		t.Fatal(err)
	}
	w, err := d.Place(ctx, "r/blobs/sha256/gone")
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

// Sweep aborts the unfinished writes a process died in, older than its
// cut-off, and spares the ones it is told are busy.
func TestSweepAbortsUnfinishedWrites(t *testing.T) {
	d := mustNew(t, testConfig(t, testServer(t)))
	ctx := context.Background()
	for _, key := range []string{"r/blobs/sha256/dead", "r/blobs/sha256/busy", "other/blobs/sha256/dead"} {
		w, err := d.Place(ctx, key)
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

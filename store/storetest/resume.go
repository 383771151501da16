package storetest

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/driver"
)

// reads counts the uploads a driver opens for reading: a store that
// resumes its hash from the writer's checkpoint never reads an upload
// back to commit it.
type reads struct {
	driver.Driver
	uploads atomic.Int64
}

func (r *reads) Open(ctx context.Context, key string) (io.ReadSeekCloser, driver.Info, error) {
	if strings.Contains(key, "/.uploads/") {
		r.uploads.Add(1)
	}
	return r.Driver.Open(ctx, key)
}

// checkpoints reports whether drv's writers keep a checkpoint.
func checkpoints(t *testing.T, drv driver.Driver) bool {
	t.Helper()
	w, err := drv.Create(ctx, "probe/.uploads/checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	_, ok := w.(driver.Checkpointer)
	w.Cancel(ctx)
	return ok
}

// testResume: where the driver keeps a checkpoint with each upload, a
// chunked push whose chunks go to different processes (replicas on one
// bucket, or one pier before and after a restart) is committed from the
// running hash: the upload is never read back.
func testResume(t *testing.T, b Backend) {
	drv := b.New(t)
	if !checkpoints(t, drv) {
		t.Skip("the driver's writers keep no checkpoint")
	}
	first := &reads{Driver: drv}
	stores := []*reads{first}
	a := New(t, first, false)
	var c = a
	if b.Share != nil {
		second := &reads{Driver: b.Share(t, drv)}
		stores = append(stores, second)
		c = New(t, second, false)
	}
	data := RandomBytes(t, 3<<20+999)
	id, err := a.NewUpload(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	var off int64
	for i, n := range []int{1 << 20, 7, 1<<20 + 5} {
		st := a
		if i%2 == 1 {
			st = c
		}
		size, err := st.WriteUpload(ctx, "app", id, off, bytes.NewReader(data[off:off+int64(n)]))
		if err != nil || size != off+int64(n) {
			t.Fatalf("chunk %d: size %d, %v", i, size, err)
		}
		off = size
	}
	// The last chunk and the commit on the store that did not write the
	// chunk before.
	d := digest.FromBytes(data)
	if _, err := c.CommitUpload(ctx, "app", id, bytes.NewReader(data[off:]), d); err != nil {
		t.Fatal(err)
	}
	if got := readBlob(t, a, "app", d); !bytes.Equal(got, data) {
		t.Fatal("the resumed upload pulled back different")
	}
	for i, r := range stores {
		if n := r.uploads.Load(); n != 0 {
			t.Errorf("store %d read the upload back %d times; the checkpoint should have spared it", i, n)
		}
	}
	// A wrong digest is still refused: the checkpoint is the hash of what
	// is there, not a claim.
	id, _ = c.NewUpload(ctx, "app")
	a.WriteUpload(ctx, "app", id, 0, bytes.NewReader(data[:1000]))
	if _, err := c.CommitUpload(ctx, "app", id, nil, digest.FromBytes(data[:999])); err == nil {
		t.Fatal("a commit under the digest of other bytes succeeded")
	}
}

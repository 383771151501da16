package store

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
)

// Background jobs decide without the repository lock and act under it;
// what they act on must still be what they decided on.

// separateCopies makes a root where repositories a and b hold the same
// blob as two files, as layouts copied in while pier was off would.
func separateCopies(t *testing.T) (root string, d digest.Digest, data []byte) {
	t.Helper()
	root = t.TempDir()
	plain := openStore(t, root, false, false)
	defer plain.Close()
	data = randomBytes(t, 10_000)
	d = pushBlob(t, plain, "a", "x", data).Digest
	pushBlob(t, plain, "b", "x", data)
	return root, d, data
}

// Scrub hashed b's rotten copy; before it quarantines, reconcile links
// a's good copy over b. Quarantine must move nothing: the file it hashed
// is gone, and the good copy must keep being served everywhere.
func TestQuarantineMovesOnlyTheFileItHashed(t *testing.T) {
	root, d, data := separateCopies(t)
	rottenPath := filepath.Join(root, "b", "blobs", "sha256", d.Encoded())
	flipByte(rottenPath) // b rots; a is fine; separate inodes
	s := newDedupeStore(t, root)
	rotten, err := s.drv.Stat(ctx, blobKey("b", d))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reconcile(ctx); err != nil { // links the good a over the rotten b
		t.Fatal(err)
	}
	s.quarantine(ctx, "b", d, &rotten)
	assertBlob(t, s, "a", d, data)
	assertBlob(t, s, "b", d, data)
}

// With gcDelay 0 every upload is "idle" by its time; one a request is
// writing or committing is not, and GC leaves it (the commit would fail
// with a 500 otherwise). Once the request is done, it goes.
func TestGCLeavesUploadsInUse(t *testing.T) {
	s := newStore(t, false)
	id, err := s.NewUpload(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteUpload(ctx, "r", id, 0, bytes.NewReader([]byte("partial"))); err != nil {
		t.Fatal(err)
	}
	o, err := s.openUpload(ctx, "r", id) // as a PATCH or PUT in progress holds it
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.CollectRepo(ctx, "r", 0)
	if err != nil || rep.Uploads != 0 {
		t.Fatalf("gc during a request removed %d uploads (%v)", rep.Uploads, err)
	}
	o.w.Close()
	o.session.mu.Unlock()
	if rep, err = s.CollectRepo(ctx, "r", 0); err != nil || rep.Uploads != 1 {
		t.Fatalf("gc after the request removed %d uploads (%v), want 1", rep.Uploads, err)
	}
	if _, err := s.UploadSize(ctx, "r", id); !errors.Is(err, ErrUploadUnknown) {
		t.Fatalf("collected upload: %v, want ErrUploadUnknown", err)
	}
}

// Monolithic pushes racing a collection with gcDelay 0 all succeed: the
// upload is held from its creation to its commit.
func TestMonolithicPushesRacingGC(t *testing.T) {
	s := newStore(t, false)
	pushBlob(t, s, "r", "x", []byte("keeps the repository")) // so GC has a repository to walk
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				s.CollectRepo(ctx, "r", 0)
			}
		}
	})
	for i := range 300 {
		data := []byte(fmt.Sprintf("blob %d", i))
		if _, err := s.PutBlob(ctx, "r", digest.FromBytes(data), bytes.NewReader(data)); err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("push %d racing gc: %v", i, err)
		}
	}
	close(stop)
	wg.Wait()
}

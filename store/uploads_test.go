package store

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestChunkedUpload(t *testing.T) {
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		t.Run(alg.String(), func(t *testing.T) {
			s := newStore(t, false)
			data := randomBytes(t, 1<<20+17)
			d := alg.FromBytes(data)
			id, err := s.NewUpload(ctx, "app")
			if err != nil {
				t.Fatal(err)
			}
			for off := 0; off < len(data); off += 300_000 {
				end := min(off+300_000, len(data))
				size, err := s.WriteUpload(ctx, "app", id, int64(off), bytes.NewReader(data[off:end]))
				if err != nil || size != int64(end) {
					t.Fatalf("chunk at %d: size %d err %v", off, size, err)
				}
			}
			if _, err := s.CommitUpload(ctx, "app", id, nil, d); err != nil {
				t.Fatal(err)
			}
			assertBlob(t, s, "app", d, data)
			if _, err := s.UploadSize(ctx, "app", id); !errors.Is(err, ErrUploadUnknown) {
				t.Errorf("upload still known after commit: %v", err)
			}
		})
	}
}

func assertBlob(t *testing.T, s *Store, repo string, d digest.Digest, want []byte) {
	t.Helper()
	f, info, err := s.OpenBlob(ctx, repo, d)
	if err != nil {
		t.Fatalf("OpenBlob %s: %v", d, err)
	}
	defer f.Close()
	got, _ := io.ReadAll(f)
	if !bytes.Equal(got, want) || info.Size != int64(len(want)) {
		t.Fatalf("blob %s: %d bytes, want %d", d, len(got), len(want))
	}
}

func TestOutOfOrderChunkWritesNothing(t *testing.T) {
	s := newStore(t, false)
	id, _ := s.NewUpload(ctx, "app")
	if _, err := s.WriteUpload(ctx, "app", id, 0, strings.NewReader("hello ")); err != nil {
		t.Fatal(err)
	}
	for _, start := range []int64{0, 3, 7, 100} {
		_, err := s.WriteUpload(ctx, "app", id, start, strings.NewReader("world"))
		var oe *OffsetError
		if !errors.As(err, &oe) || oe.Size != 6 {
			t.Fatalf("chunk at %d: err %v, want OffsetError{6}", start, err)
		}
	}
	if size, _ := s.UploadSize(ctx, "app", id); size != 6 {
		t.Fatalf("upload grew to %d after rejected chunks", size)
	}
	if _, err := s.WriteUpload(ctx, "app", id, -1, strings.NewReader("world")); err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("hello world")
	if _, err := s.CommitUpload(ctx, "app", id, nil, d); err != nil {
		t.Fatal(err)
	}
	assertBlob(t, s, "app", d, []byte("hello world"))
}

func TestDigestMismatchDeletesUploadAndChangesNothing(t *testing.T) {
	s := newStore(t, true)
	id, _ := s.NewUpload(ctx, "app")
	s.WriteUpload(ctx, "app", id, 0, strings.NewReader("some bytes"))
	before := snapshot(t, s.Root())
	wrong := digest.FromString("other bytes")
	_, err := s.CommitUpload(ctx, "app", id, strings.NewReader(" and more"), wrong)
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("err = %v, want ErrDigestMismatch", err)
	}
	after := snapshot(t, s.Root())
	delete(before, ".uploads/") // compare everything but the upload itself
	for k := range before {
		if strings.Contains(k, id) {
			delete(before, k)
		}
	}
	assertUnchanged(t, before, after)
	if _, err := s.UploadSize(ctx, "app", id); !errors.Is(err, ErrUploadUnknown) {
		t.Errorf("rejected upload still exists: %v", err)
	}
	if _, err := s.StatBlob(ctx, "app", wrong); !errors.Is(err, ErrBlobUnknown) {
		t.Errorf("blob exists after a mismatch: %v", err)
	}
}

// After a restart the in-memory hash is gone; the commit must hash the
// file again rather than trust a fresh (empty) hash state.
func TestUploadResumesAfterRestart(t *testing.T) {
	root := t.TempDir()
	s1 := openStore(t, root, false, false)
	id, _ := s1.NewUpload(ctx, "app")
	s1.WriteUpload(ctx, "app", id, 0, strings.NewReader("first half, "))

	s1.Close()
	s2 := openStore(t, root, false, false)
	size, err := s2.UploadSize(ctx, "app", id)
	if err != nil || size != 12 {
		t.Fatalf("size after restart = %d, %v", size, err)
	}
	s2.WriteUpload(ctx, "app", id, 12, strings.NewReader("second half"))
	d := digest.FromString("first half, second half")
	if _, err := s2.CommitUpload(ctx, "app", id, nil, d); err != nil {
		t.Fatal(err)
	}
	assertBlob(t, s2, "app", d, []byte("first half, second half"))
}

func TestUploadIDsAreValidated(t *testing.T) {
	s := newStore(t, false)
	s.NewUpload(ctx, "app")
	for _, id := range []string{"../index.json", "..", "x", "ABCDEF00-0000-4000-8000-000000000000", "00000000-0000-4000-8000-000000000000/.."} {
		if _, err := s.WriteUpload(ctx, "app", id, -1, strings.NewReader("x")); !errors.Is(err, ErrUploadUnknown) {
			t.Errorf("WriteUpload(%q) = %v, want ErrUploadUnknown", id, err)
		}
		if err := s.CancelUpload(ctx, "app", id); !errors.Is(err, ErrUploadUnknown) {
			t.Errorf("CancelUpload(%q) = %v, want ErrUploadUnknown", id, err)
		}
	}
	if _, err := os.Stat(s.indexPath("app")); err != nil {
		t.Fatalf("index.json harmed: %v", err)
	}
}

// An upload id belongs to its repository: another repository cannot
// write to it or commit it.
func TestUploadBelongsToItsRepo(t *testing.T) {
	s := newStore(t, false)
	id, _ := s.NewUpload(ctx, "a")
	s.NewUpload(ctx, "b")
	if _, err := s.WriteUpload(ctx, "b", id, -1, strings.NewReader("x")); !errors.Is(err, ErrUploadUnknown) {
		t.Fatalf("write through another repo: %v", err)
	}
}

// With commit on, a pushed blob costs two fsyncs: its data and the
// directory entry that names it.
func TestCommitFsyncsPerBlob(t *testing.T) {
	s := newStore(t, true)
	pushBlob(t, s, "app", "x", []byte("warm up: creates the repository"))
	for i := range 3 {
		before := s.Syncs()
		pushBlob(t, s, "app", "x", randomBytes(t, 1000+i))
		if n := s.Syncs() - before; n != 2 {
			t.Errorf("blob %d: %d fsyncs, want 2", i, n)
		}
	}
	off := newStore(t, false)
	pushBlob(t, off, "app", "x", []byte("no commit"))
	if off.Syncs() != 0 {
		t.Errorf("commit off made %d fsyncs", off.Syncs())
	}
}

func TestPushingAnExistingBlobKeepsTheFile(t *testing.T) {
	s := newStore(t, false)
	data := []byte("same content")
	desc := pushBlob(t, s, "app", "x", data)
	before, _ := os.Stat(s.blobPath("app", desc.Digest))
	pushBlob(t, s, "app", "x", data)
	after, _ := os.Stat(s.blobPath("app", desc.Digest))
	if !os.SameFile(before, after) {
		t.Fatal("re-pushing a blob replaced its file (would break hard links)")
	}
}

// A second push of a blob that is already in place is acknowledged only
// after the blob and the directory entry naming it are fsynced: the first
// push may still be between its rename and its own directory fsync, and a
// layout copied in by another tool may not be on the disk at all.
func TestRepushSyncsTheExistingEntry(t *testing.T) {
	s := newStore(t, true)
	data := randomBytes(t, 4096)
	pushBlob(t, s, "r", "x", data)
	before := s.Syncs()
	pushBlob(t, s, "r", "x", data)
	if got := s.Syncs() - before; got < 2 {
		t.Fatalf("re-push made %d fsyncs; want the blob and its directory (2)", got)
	}
}

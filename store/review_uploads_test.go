package store

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// Review: uploadDigest re-reads an upload whose running hash does not
// cover it (a sha512 digest, or after a restart) between closing its
// writer and opening a new one. When the new Append fails, o.w is left a
// nil interface and commitOpened calls o.w.Close() on it: a nil pointer
// panic in the request. Append fails when the upload went away during the
// re-read (removed by hand, or by another replica sharing the storage) or
// when the process is out of file descriptors.
func TestReviewCommitSurvivesAnUploadThatVanishesDuringTheRehash(t *testing.T) {
	s := newStore(t, false)
	data := randomBytes(t, 64<<20) // long enough to re-read that the removal lands during it
	d := digest.SHA512.FromBytes(data)
	id, err := s.NewUpload(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteUpload(ctx, "app", id, 0, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	path := s.uploadPath("app", id)
	go func() {
		time.Sleep(20 * time.Millisecond)
		os.Remove(path)
	}()
	var perr any
	func() {
		defer func() { perr = recover() }()
		_, err = s.CommitUpload(ctx, "app", id, nil, d)
	}()
	if perr != nil {
		t.Fatalf("CommitUpload panicked: %v", perr)
	}
	if err != nil && !errors.Is(err, ErrUploadUnknown) {
		t.Fatalf("CommitUpload = %v, want success or BLOB_UPLOAD_UNKNOWN", err)
	}
}

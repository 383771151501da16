package store

import (
	"bytes"
	"io"
	"os"
	"testing"

	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Review2: a cross-repository mount into a repository that already has a
// file at the blob's key acknowledges it (201 Created) without looking at
// what the file holds. With commit: false a power cut can leave a blob at
// its final name but empty (the case commitBlob and writeBlobBytes repair
// on a re-push); a client that mounts the layer from a good repository is
// told it is there, pushes its manifest, and the image cannot be pulled.
// PutBlob in the same situation replaces the damaged file; MountBlob, with
// a checked good copy in hand, should too (or answer ErrBlobUnknown so the
// client uploads).
func TestReview2MountOverADamagedBlobRepairsIt(t *testing.T) {
	for _, dedupe := range []bool{false, true} {
		name := "plain"
		if dedupe {
			name = "dedupe"
		}
		t.Run(name, func(t *testing.T) {
			s := openStore(t, t.TempDir(), false, dedupe)
			data := randomBytes(t, 10_000)
			d := pushBlob(t, s, "from", ispec.MediaTypeImageLayer, data).Digest
			// "app" had the blob too (a separate copy, as on a filesystem
			// without links), and a power cut emptied it.
			pushBlob(t, s, "app", ispec.MediaTypeImageLayer, randomBytes(t, 10)) // makes "app" a repository
			if err := os.MkdirAll(s.repoDir("app")+"/blobs/sha256", 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(s.blobPath("app", d), nil, 0o644); err != nil {
				t.Fatal(err)
			}

			if err := s.MountBlob(ctx, "app", "from", d); err != nil {
				t.Skipf("mount refused (the client would upload): %v", err)
			}
			f, info, err := s.OpenBlob(ctx, "app", d)
			if err != nil {
				t.Fatalf("mount was acknowledged but the blob cannot be pulled: %v", err)
			}
			got, _ := io.ReadAll(f)
			f.Close()
			if info.Size != int64(len(data)) || !bytes.Equal(got, data) {
				t.Fatalf("mount was acknowledged but the blob holds %d bytes, want %d", len(got), len(data))
			}
		})
	}
}

// Review2: pier import skips every blob the repository already has a file
// for, without looking at it. A blob that a power cut (commit: false)
// left empty at its key makes the import of a good layout fail — the
// manifest's descriptor and the file disagree on the size — and nothing
// short of deleting the file by hand repairs it, although the layout in
// hand holds the good bytes. (A re-push through the API repairs it:
// commitBlob replaces a damaged blob.)
func TestReview2ImportRepairsADamagedBlob(t *testing.T) {
	src := newStore(t, false)
	body := imageManifest(t, src, "app", "1")
	putManifest(t, src, "app", "v1", body)
	dir := t.TempDir() + "/usb"
	if _, err := src.Export(ctx, "app", "", dirDriver(t, dir)); err != nil {
		t.Fatal(err)
	}

	dst := newStore(t, false)
	layer := blobsOf(t, body)[1]
	data, err := os.ReadFile(src.blobPath("app", layer))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dst.PutBlob(ctx, "app", layer, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(dst.blobPath("app", layer), 0); err != nil { // what a power cut left
		t.Fatal(err)
	}
	if _, err := dst.Import(ctx, dirDriver(t, dir), "app"); err != nil {
		t.Fatalf("import of a good layout over a damaged blob: %v", err)
	}
	f, _, err := dst.OpenBlob(ctx, "app", layer)
	if err != nil {
		t.Fatalf("import succeeded but the layer cannot be pulled: %v", err)
	}
	f.Close()
}

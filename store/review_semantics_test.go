package store

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Review: the referrers of a repository are computed once per version of
// index.json and kept in its view, including what could not be read. A
// layout copied in with index.json first (cp -r walks in directory order)
// answers the referrers query before the referrer's blob has arrived; the
// empty answer then stays until index.json changes, although GET of the
// referrer by digest already succeeds. view.go says only positive verdicts
// are remembered; referrers.go remembers a negative one.
func TestReviewReferrersOfALayoutStillBeingCopiedIn(t *testing.T) {
	s := newStore(t, false)
	subjectBody := imageManifest(t, s, "tmp", "subject")
	subject := digest.FromBytes(subjectBody)
	empty := pushBlob(t, s, "tmp", ispec.MediaTypeEmptyJSON, []byte("{}"))
	sigBody := mustJSON(t, ispec.Manifest{Versioned: specsV2, MediaType: ispec.MediaTypeImageManifest,
		ArtifactType: "application/vnd.example.sig", Config: empty, Layers: []ispec.Descriptor{},
		Subject: &ispec.Descriptor{MediaType: ispec.MediaTypeImageManifest, Digest: subject, Size: int64(len(subjectBody))}})
	sig := digest.FromBytes(sigBody)

	// The copy so far: index.json and every blob but the signature's.
	dir := filepath.Join(s.Root(), "usb")
	os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755)
	os.WriteFile(filepath.Join(dir, "oci-layout"), layoutFile, 0o644)
	var m ispec.Manifest
	mustUnmarshal(t, subjectBody, &m)
	for _, d := range []digest.Digest{m.Config.Digest, m.Layers[0].Digest, empty.Digest} {
		data, _ := os.ReadFile(s.blobPath("tmp", d))
		os.WriteFile(filepath.Join(dir, "blobs", "sha256", d.Encoded()), data, 0o644)
	}
	os.WriteFile(filepath.Join(dir, "blobs", "sha256", subject.Encoded()), subjectBody, 0o644)
	os.WriteFile(filepath.Join(dir, "index.json"), mustJSON(t, ispec.Index{Versioned: specsV2, Manifests: []ispec.Descriptor{
		{MediaType: ispec.MediaTypeImageManifest, Digest: subject, Size: int64(len(subjectBody)),
			Annotations: map[string]string{ispec.AnnotationRefName: "v1"}},
		{MediaType: ispec.MediaTypeImageManifest, Digest: sig, Size: int64(len(sigBody))},
	}}), 0o644)

	if refs, err := s.Referrers(ctx, "usb", subject, ""); err != nil || len(refs) != 0 {
		t.Fatalf("referrers before the signature arrived = %v, %v", refs, err)
	}
	// The copy finishes.
	os.WriteFile(filepath.Join(dir, "blobs", "sha256", sig.Encoded()), sigBody, 0o644)
	if _, err := s.GetManifest(ctx, "usb", sig.String()); err != nil {
		t.Fatalf("the signature by digest: %v", err)
	}
	refs, err := s.Referrers(ctx, "usb", subject, "")
	if err != nil || len(refs) != 1 || refs[0].Digest != sig {
		t.Fatalf("referrers after the copy finished = %v, %v; want the signature %s (the signature is served by digest, but the referrers API still says none)", refs, err, sig)
	}
}

// Review: a push of content already at its key is acknowledged without
// looking at what is there. With commit: false (zot's default) a power
// cut may leave a blob or a manifest at its final name but empty; the
// client's re-push is then acknowledged (201) and changes nothing, and the
// content can still not be pulled until a scrub quarantines it. The
// existing file is not even compared by size.
func TestReviewRepushRepairsADamagedBlob(t *testing.T) {
	t.Run("blob", func(t *testing.T) {
		s := newStore(t, false)
		data := randomBytes(t, 10_000)
		d := pushBlob(t, s, "app", ispec.MediaTypeImageLayer, data).Digest
		if err := os.Truncate(s.blobPath("app", d), 0); err != nil { // what a power cut left
			t.Fatal(err)
		}
		if _, err := s.PutBlob(ctx, "app", d, bytes.NewReader(data)); err != nil {
			t.Fatalf("re-push: %v", err)
		}
		f, info, err := s.OpenBlob(ctx, "app", d)
		if err != nil {
			t.Fatalf("the re-push was acknowledged but the blob cannot be pulled: %v", err)
		}
		got, _ := io.ReadAll(f)
		f.Close()
		if info.Size != int64(len(data)) || !bytes.Equal(got, data) {
			t.Fatalf("after the re-push the blob has %d bytes, want %d", len(got), len(data))
		}
	})
	t.Run("manifest", func(t *testing.T) {
		s := newStore(t, false)
		body := imageManifest(t, s, "app", "1")
		d := putManifest(t, s, "app", "v1", body)
		if err := os.Truncate(s.blobPath("app", d), 0); err != nil {
			t.Fatal(err)
		}
		if _, err := s.PutManifest(ctx, "app", "v1", "", body, nil); err != nil {
			t.Fatalf("re-push: %v", err)
		}
		if _, err := s.GetManifest(ctx, "app", "v1"); err != nil {
			t.Fatalf("the re-push was acknowledged but the manifest cannot be pulled: %v", err)
		}
	})
}

// Review: GetManifest resolves the children of a hosted layout's index
// at any depth, but GC's markLive stops loading manifests past
// maxIndexDepth (8). A layout written by another tool lists only its top
// index in index.json, so what the deepest indexes reference is not
// marked live, and GC deletes the manifests and blobs of a tagged image
// that pier was serving. (Pushed through pier, every child is also an
// index entry and is loaded anyway, which hides this.)
func TestReviewGCKeepsWhatADeepIndexReferences(t *testing.T) {
	s := newStore(t, false)
	leaf := imageManifest(t, s, "tmp", "deep")
	chain := [][]byte{leaf, indexOf(t, leaf)}
	for range 10 {
		chain = append(chain, indexOfIndex(t, chain[len(chain)-1]))
	}
	top := chain[len(chain)-1]
	dir := filepath.Join(s.Root(), "hosted")
	os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755)
	os.WriteFile(filepath.Join(dir, "oci-layout"), layoutFile, 0o644)
	for _, b := range chain {
		os.WriteFile(filepath.Join(dir, "blobs", "sha256", digest.FromBytes(b).Encoded()), b, 0o644)
	}
	for _, d := range blobsOf(t, leaf) {
		data, _ := os.ReadFile(s.blobPath("tmp", d))
		os.WriteFile(filepath.Join(dir, "blobs", "sha256", d.Encoded()), data, 0o644)
	}
	os.WriteFile(filepath.Join(dir, "index.json"), mustJSON(t, ispec.Index{Versioned: specsV2, Manifests: []ispec.Descriptor{{
		MediaType: ispec.MediaTypeImageIndex, Digest: digest.FromBytes(top), Size: int64(len(top)),
		Annotations: map[string]string{ispec.AnnotationRefName: "v1"},
	}}}), 0o644)
	if _, err := s.GetManifest(ctx, "hosted", digest.FromBytes(leaf).String()); err != nil {
		t.Fatalf("the leaf image before GC: %v", err)
	}
	if _, err := s.CollectRepo(ctx, "hosted", 0); err != nil {
		t.Fatal(err)
	}
	for _, d := range append(blobsOf(t, leaf), digest.FromBytes(leaf)) {
		if !exists(s, "hosted", d) {
			t.Errorf("GC removed %s, which tag v1 reaches through its nested indexes", d)
		}
	}
	if _, err := s.GetManifest(ctx, "hosted", digest.FromBytes(leaf).String()); err != nil {
		t.Errorf("the leaf image after GC: %v", err)
	}
}

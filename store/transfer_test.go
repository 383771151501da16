package store

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/driver/local"
)

// Export then import round-trips digests, tags and referrers, through a
// plain OCI layout on another "disk".
func TestExportImportRoundTrip(t *testing.T) {
	src := newStore(t, false)
	a := imageManifest(t, src, "app", "amd64")
	b := imageManifest(t, src, "app", "arm64")
	putManifest(t, src, "app", digest.FromBytes(a).String(), a)
	putManifest(t, src, "app", digest.FromBytes(b).String(), b)
	multi := putManifest(t, src, "app", "v1", indexOf(t, a, b))
	single := putManifest(t, src, "app", "single", imageManifest(t, src, "app", "solo"))
	empty := pushBlob(t, src, "app", ispec.MediaTypeEmptyJSON, []byte("{}"))
	sig := putManifest(t, src, "app", "sig-untagged", mustJSON(t, ispec.Manifest{Versioned: specsV2, MediaType: ispec.MediaTypeImageManifest,
		ArtifactType: "application/vnd.example.sig", Config: empty, Layers: []ispec.Descriptor{},
		Subject: &ispec.Descriptor{MediaType: ispec.MediaTypeImageIndex, Digest: multi, Size: 1}}))
	src.DeleteManifest(ctx, "app", "sig-untagged") // the signature is untagged, reachable only as a referrer

	dir := filepath.Join(t.TempDir(), "usb", "app-v1")
	rep, err := src.Export(ctx, "app", "v1", dirDriver(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Tags, []string{"v1"}) || rep.Manifests != 4 {
		t.Fatalf("export report = %+v", rep)
	}
	if _, err := os.Stat(filepath.Join(dir, "blobs", "sha256", single.Encoded())); err == nil {
		t.Fatal("export of one tag carried another image")
	}

	dst := newDedupeStore(t, t.TempDir())
	if _, err := dst.Import(ctx, dirDriver(t, dir), "mirror/app"); err != nil {
		t.Fatal(err)
	}
	m, err := dst.GetManifest(ctx, "mirror/app", "v1")
	if err != nil || m.Digest != multi {
		t.Fatalf("v1 after import = %s, %v; want %s", m.Digest, err, multi)
	}
	for _, child := range [][]byte{a, b} {
		if _, err := dst.GetManifest(ctx, "mirror/app", digest.FromBytes(child).String()); err != nil {
			t.Fatalf("child lost: %v", err)
		}
	}
	refs, _ := dst.Referrers(ctx, "mirror/app", multi, "")
	if len(refs) != 1 || refs[0].Digest != sig {
		t.Fatalf("referrers after import = %+v", refs)
	}
	// The layout is also a hosted layout pier can serve as it is.
	hosted := newStore(t, false)
	os.Rename(dir, filepath.Join(hosted.Root(), "app"))
	if m, err := hosted.GetManifest(ctx, "app", "v1"); err != nil || m.Digest != multi {
		t.Fatalf("exported layout not servable: %v", err)
	}
}

func TestExportRefusesCorruptBlobs(t *testing.T) {
	s := newStore(t, false)
	body := imageManifest(t, s, "app", "1")
	putManifest(t, s, "app", "v1", body)
	flipByte(s.blobPath("app", blobsOf(t, body)[1]))
	// Found on the way out, whether by the first check of the changed
	// file or by the export's own hash.
	_, err := s.Export(ctx, "app", "", dirDriver(t, filepath.Join(t.TempDir(), "out")))
	if !errors.Is(err, ErrDigestMismatch) && !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("export of a corrupt blob: %v", err)
	}
}

func TestImportRefusesDamagedLayouts(t *testing.T) {
	s := newStore(t, false)
	body := imageManifest(t, s, "app", "1")
	putManifest(t, s, "app", "v1", body)
	dir := filepath.Join(t.TempDir(), "out")
	if _, err := s.Export(ctx, "app", "", dirDriver(t, dir)); err != nil {
		t.Fatal(err)
	}
	flipByte(filepath.Join(dir, "blobs", "sha256", blobsOf(t, body)[1].Encoded()))
	dst := newStore(t, false)
	if _, err := dst.Import(ctx, dirDriver(t, dir), "app"); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("import of a damaged layout: %v", err)
	}
	if _, err := dst.GetManifest(ctx, "app", "v1"); err == nil {
		t.Fatal("a damaged import left a tag behind")
	}
}

// dirDriver opens a plain directory (a USB stick) as pier export and
// import do.
func dirDriver(t *testing.T, dir string) driver.Driver {
	t.Helper()
	d, err := local.Open(dir, local.Options{Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store/oci"
)

// An index lists manifests (image spec, image-index.md): a child that is a
// layer, a config, or a manifest of another type than its descriptor says
// is refused, for OCI indexes and Docker manifest lists alike, and the
// refusal changes nothing on disk.
func TestIndexChildrenMustBeManifestsOfTheRepository(t *testing.T) {
	s := newStore(t, false)
	img := imageManifest(t, s, "app", "amd64")
	dImg := putManifest(t, s, "app", digest.FromBytes(img).String(), img)
	inner := indexOf(t, img)
	putManifest(t, s, "app", digest.FromBytes(inner).String(), inner)
	layer := pushBlob(t, s, "app", ispec.MediaTypeImageLayerGzip, []byte("a plain layer"))
	var m ispec.Manifest
	mustUnmarshal(t, img, &m)
	otherRepo := imageManifest(t, s, "other", "x")
	putManifest(t, s, "other", "v1", otherRepo)
	// The same bytes as a manifest of "other", present in "app" only as a
	// blob (mounted, say).
	pushBlob(t, s, "app", ispec.MediaTypeImageManifest, otherRepo)

	child := func(mt string, d digest.Digest, size int64) ispec.Descriptor {
		return ispec.Descriptor{MediaType: mt, Digest: d, Size: size}
	}
	list := func(mt string, children ...ispec.Descriptor) []byte {
		return mustJSON(t, ispec.Index{Versioned: specsV2, MediaType: mt, Manifests: children})
	}
	imgDesc := child(ispec.MediaTypeImageManifest, dImg, int64(len(img)))
	for _, tc := range []struct {
		name string
		body []byte
		want error
	}{
		{"layer blob said to be a manifest", list(ispec.MediaTypeImageIndex, imgDesc, child(ispec.MediaTypeImageManifest, layer.Digest, layer.Size)), ErrManifestBlobUnknown},
		{"config blob said to be a manifest", list(ispec.MediaTypeImageIndex, child(ispec.MediaTypeImageManifest, m.Config.Digest, m.Config.Size)), ErrManifestBlobUnknown},
		{"child with a layer media type", list(ispec.MediaTypeImageIndex, imgDesc, layer), ErrManifestInvalid},
		{"child with no manifest media type", list(ispec.MediaTypeImageIndex, child("application/octet-stream", dImg, int64(len(img)))), ErrManifestInvalid},
		{"image manifest said to be an index", list(ispec.MediaTypeImageIndex, child(ispec.MediaTypeImageIndex, dImg, int64(len(img)))), ErrManifestInvalid},
		{"manifest of another repository, here a blob", list(ispec.MediaTypeImageIndex, child(ispec.MediaTypeImageManifest, digest.FromBytes(otherRepo), int64(len(otherRepo)))), ErrManifestBlobUnknown},
		{"docker list of a layer blob", list(oci.MediaTypeDockerManifestList, child(oci.MediaTypeDockerManifest, layer.Digest, layer.Size)), ErrManifestBlobUnknown},
		{"docker list child with a layer media type", list(oci.MediaTypeDockerManifestList, layer), ErrManifestInvalid},
		{"docker list of an OCI manifest said to be docker", list(oci.MediaTypeDockerManifestList, child(oci.MediaTypeDockerManifest, dImg, int64(len(img)))), ErrManifestInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, s.Root())
			_, err := s.PutManifest(ctx, "app", "v2", "", tc.body, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			assertUnchanged(t, before, snapshot(t, s.Root()))
		})
	}
	// What is right still goes in: an index of a manifest and of an index,
	// and a Docker list of the OCI manifest as what it is.
	putManifest(t, s, "app", "ok", list(ispec.MediaTypeImageIndex, imgDesc, child(ispec.MediaTypeImageIndex, digest.FromBytes(inner), int64(len(inner)))))
	putManifest(t, s, "app", "docker", list(oci.MediaTypeDockerManifestList, imgDesc))
}

// In a layout written by another tool, index.json may list only the top
// index: the manifests below it are manifests of the repository too, and
// a new index may list them.
func TestIndexMayListTheNestedChildrenOfAHostedLayout(t *testing.T) {
	s := newStore(t, false)
	a := imageManifest(t, s, "tmp", "a")
	idx := indexOf(t, a)
	dir := filepath.Join(s.Root(), "hosted")
	os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755)
	os.WriteFile(filepath.Join(dir, "oci-layout"), layoutFile, 0o644)
	var m ispec.Manifest
	mustUnmarshal(t, a, &m)
	for _, b := range [][]byte{a, idx} {
		os.WriteFile(filepath.Join(dir, "blobs", "sha256", digest.FromBytes(b).Encoded()), b, 0o644)
	}
	for _, d := range []ispec.Descriptor{m.Config, m.Layers[0]} {
		data, _ := os.ReadFile(s.blobPath("tmp", d.Digest))
		os.WriteFile(filepath.Join(dir, "blobs", "sha256", d.Digest.Encoded()), data, 0o644)
	}
	top := ispec.Index{Versioned: specsV2, Manifests: []ispec.Descriptor{{
		MediaType: ispec.MediaTypeImageIndex, Digest: digest.FromBytes(idx), Size: int64(len(idx)),
		Annotations: map[string]string{ispec.AnnotationRefName: "v1"},
	}}}
	os.WriteFile(filepath.Join(dir, "index.json"), mustJSON(t, top), 0o644)
	putManifest(t, s, "hosted", "again", indexOf(t, a))
}

package testimage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// refName is the annotation an OCI layout's index.json names a tag with.
const refName = "org.opencontainers.image.ref.name"

// Content is an image or an index: a top manifest and all it references.
type Content interface {
	Top() Blob   // the manifest a tag points at
	All() []Blob // Top and every blob below it
}

func (im Image) Top() Blob   { return im.Manifest }
func (im Image) All() []Blob { return append([]Blob{im.Manifest}, im.Blobs()...) }
func (ix Index) Top() Blob   { return ix.Manifest }
func (ix Index) All() []Blob {
	all := []Blob{ix.Manifest}
	for _, im := range ix.Images {
		all = append(all, im.All()...)
	}
	return all
}

// WriteLayout writes an OCI image layout at dir holding each content under
// its tag.
func WriteLayout(dir string, tagged map[string]Content) error {
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		return err
	}
	var manifests []Descriptor
	for tag, c := range tagged {
		for _, b := range c.All() {
			hex := strings.TrimPrefix(b.Digest(), "sha256:")
			if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", hex), b.Data, 0o644); err != nil {
				return err
			}
		}
		d := c.Top().Descriptor()
		d.Annotations = map[string]string{refName: tag}
		manifests = append(manifests, d)
	}
	index := mustJSON(map[string]any{"schemaVersion": 2, "mediaType": MediaTypeIndex, "manifests": manifests})
	return os.WriteFile(filepath.Join(dir, "index.json"), index, 0o644)
}

// BlobSource is where a client put what it copied: an OCI layout, or
// skopeo's dir: format.
type BlobSource interface {
	// Blob is the content stored for digest.
	Blob(digest string) ([]byte, error)
}

// Layout is an OCI image layout on disk.
type Layout struct{ Dir string }

// Tag is the descriptor index.json names tag with.
func (l Layout) Tag(tag string) (Descriptor, error) {
	data, err := os.ReadFile(filepath.Join(l.Dir, "index.json"))
	if err != nil {
		return Descriptor{}, err
	}
	var index struct{ Manifests []Descriptor }
	if err := json.Unmarshal(data, &index); err != nil {
		return Descriptor{}, fmt.Errorf("%s/index.json: %w", l.Dir, err)
	}
	for _, d := range index.Manifests {
		if d.Annotations[refName] == tag {
			return d, nil
		}
	}
	return Descriptor{}, fmt.Errorf("%s/index.json: no manifest tagged %q", l.Dir, tag)
}

// Blob reads blobs/<alg>/<hex>.
func (l Layout) Blob(digest string) ([]byte, error) {
	alg, hex, ok := strings.Cut(digest, ":")
	if !ok {
		return nil, fmt.Errorf("bad digest %q", digest)
	}
	return os.ReadFile(filepath.Join(l.Dir, "blobs", alg, hex))
}

// Dir is skopeo's dir: format: manifest.json for the top manifest and one
// file per blob named by its hex digest.
type Dir struct {
	Path string
	Top  string // digest of manifest.json's content
}

// Blob reads the blob for digest, or manifest.json when it is the top.
func (d Dir) Blob(digest string) ([]byte, error) {
	if digest == d.Top {
		return os.ReadFile(filepath.Join(d.Path, "manifest.json"))
	}
	_, hex, _ := strings.Cut(digest, ":")
	return os.ReadFile(filepath.Join(d.Path, hex))
}

// Compare reports every blob of want that src lacks or holds different
// bytes for; nil when src has all of want byte for byte.
func Compare(src BlobSource, want Content) error {
	var errs []error
	for _, b := range want.All() {
		got, err := src.Blob(b.Digest())
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s %s: %w", b.MediaType, b.Digest(), err))
		case !bytes.Equal(got, b.Data):
			errs = append(errs, fmt.Errorf("%s %s: got %d bytes with digest %s, want %d bytes",
				b.MediaType, b.Digest(), len(got), Digest(got), len(b.Data)))
		}
	}
	return errors.Join(errs...)
}

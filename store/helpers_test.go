package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

var (
	ctx     = context.Background()
	specsV2 = specs.Versioned{SchemaVersion: 2}
)

func newStore(t *testing.T, commit bool) *Store {
	t.Helper()
	s, err := New(Options{Root: t.TempDir(), Commit: commit})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// pushBlob stores data in repo and returns its descriptor.
func pushBlob(t *testing.T, s *Store, repo, mediaType string, data []byte) ispec.Descriptor {
	t.Helper()
	d := digest.FromBytes(data)
	if _, err := s.PutBlob(ctx, repo, d, bytes.NewReader(data)); err != nil {
		t.Fatalf("PutBlob %s: %v", d, err)
	}
	return ispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

// imageManifest builds (and pushes the blobs of) an image whose content is
// made unique by seed.
func imageManifest(t *testing.T, s *Store, repo, seed string) []byte {
	t.Helper()
	cfg := pushBlob(t, s, repo, ispec.MediaTypeImageConfig, []byte(`{"seed":"`+seed+`"}`))
	layer := pushBlob(t, s, repo, ispec.MediaTypeImageLayerGzip, []byte("layer of "+seed))
	return mustJSON(t, ispec.Manifest{
		Versioned: specsV2,
		MediaType: ispec.MediaTypeImageManifest,
		Config:    cfg,
		Layers:    []ispec.Descriptor{layer},
	})
}

func indexOf(t *testing.T, children ...[]byte) []byte {
	t.Helper()
	idx := ispec.Index{Versioned: specsV2, MediaType: ispec.MediaTypeImageIndex}
	for _, c := range children {
		idx.Manifests = append(idx.Manifests, ispec.Descriptor{
			MediaType: ispec.MediaTypeImageManifest, Digest: digest.FromBytes(c), Size: int64(len(c)),
		})
	}
	return mustJSON(t, idx)
}

// indexOfIndex is an index whose one child is another index.
func indexOfIndex(t *testing.T, inner []byte) []byte {
	t.Helper()
	return mustJSON(t, ispec.Index{Versioned: specsV2, MediaType: ispec.MediaTypeImageIndex, Manifests: []ispec.Descriptor{{
		MediaType: ispec.MediaTypeImageIndex, Digest: digest.FromBytes(inner), Size: int64(len(inner)),
	}}})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func putManifest(t *testing.T, s *Store, repo, ref string, body []byte) digest.Digest {
	t.Helper()
	res, err := s.PutManifest(ctx, repo, ref, "", body, nil)
	if err != nil {
		t.Fatalf("PutManifest %s:%s: %v", repo, ref, err)
	}
	return res.Digest
}

// snapshot records every file below dir with its content, to prove that a
// rejected request changed nothing on disk.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if fi.IsDir() {
			out[rel+"/"] = ""
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		out[rel] = string(b)
		return nil
	})
	return out
}

func assertUnchanged(t *testing.T, before, after map[string]string) {
	t.Helper()
	for k, v := range after {
		if old, ok := before[k]; !ok {
			t.Errorf("new file on disk: %s", k)
		} else if old != v {
			t.Errorf("file changed on disk: %s", k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			t.Errorf("file removed from disk: %s", k)
		}
	}
}

func descWithRef(ref string) ispec.Descriptor {
	return ispec.Descriptor{Annotations: map[string]string{ispec.AnnotationRefName: ref}}
}

func readIndexFile(t *testing.T, s *Store, repo string) ispec.Index {
	t.Helper()
	b, err := os.ReadFile(s.indexPath(repo))
	if err != nil {
		t.Fatal(err)
	}
	var idx ispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatalf("index.json of %s does not parse: %v", repo, err)
	}
	return idx
}

func tagsOf(t *testing.T, s *Store, repo string) string {
	t.Helper()
	tags, err := s.Tags(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(tags)
}

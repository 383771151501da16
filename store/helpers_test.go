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
	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/cache/boltdb"
	"github.com/pier-oci/pier/store/driver/local"
)

var (
	ctx     = context.Background()
	specsV2 = specs.Versioned{SchemaVersion: 2}
)

func newStore(t *testing.T, commit bool) *Store {
	t.Helper()
	return openStore(t, t.TempDir(), commit, false)
}

// openStore opens a store on a local directory, as pier serve does, with
// a BoltDB dedupe index in it when dedupe is set.
func openStore(t *testing.T, root string, commit, dedupe bool) *Store {
	t.Helper()
	drv, err := local.Open(root, local.Options{Sync: commit, Lock: true, TempDir: StateDir + "/tmp", Reserve: ReserveSize})
	if err != nil {
		t.Fatal(err)
	}
	var c cache.Cache
	if dedupe {
		bc, err := boltdb.Open(filepath.Join(root, "cache.db"), boltdb.Options{Sync: commit, AsideDir: filepath.Join(root, StateDir)})
		if err != nil {
			t.Fatal(err)
		}
		c = bc
	}
	s, err := New(Options{Driver: drv, Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Paths of a local store, for tests that look at or damage the disk.
func (s *Store) Root() string                                 { return s.drv.(*local.Driver).Dir() }
func (s *Store) path(key string) string                       { return filepath.Join(s.Root(), filepath.FromSlash(key)) }
func (s *Store) blobPath(repo string, d digest.Digest) string { return s.path(blobKey(repo, d)) }
func (s *Store) indexPath(repo string) string                 { return s.path(indexKey(repo)) }
func (s *Store) repoDir(repo string) string                   { return s.path(repo) }
func (s *Store) uploadPath(repo, id string) string            { return s.path(uploadKey(repo, id)) }
func (s *Store) cachePath() string                            { return filepath.Join(s.Root(), "cache.db") }

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

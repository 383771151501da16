package store

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

type noPace struct{}

func (noPace) Wait(ctx context.Context, n int) error { return ctx.Err() }

func scrub(t *testing.T, s *Store, repo string) ScrubReport {
	t.Helper()
	rep, err := s.ScrubRepo(ctx, repo, noPace{}, HashedInodes{})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// pushImageAlg pushes an image whose blobs and manifest use alg.
func pushImageAlg(t *testing.T, s *Store, repo, tag string, alg digest.Algorithm) (manifest digest.Digest, cfg, layer ispec.Descriptor, body []byte) {
	t.Helper()
	put := func(mt string, data []byte) ispec.Descriptor {
		d := alg.FromBytes(data)
		if _, err := s.PutBlob(ctx, repo, d, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		return ispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(data))}
	}
	cfg = put(ispec.MediaTypeImageConfig, []byte(`{"scrub":"`+tag+`"}`))
	layer = put(ispec.MediaTypeImageLayer, randomBytes(t, 5000))
	body = mustJSON(t, ispec.Manifest{Versioned: specsV2, MediaType: ispec.MediaTypeImageManifest, Config: cfg, Layers: []ispec.Descriptor{layer}})
	manifest = alg.FromBytes(body)
	if _, err := s.PutManifest(ctx, repo, manifest.String(), "", body, []string{tag}); err != nil {
		t.Fatal(err)
	}
	return manifest, cfg, layer, body
}

func TestScrubFindsDamage(t *testing.T) {
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		for _, tc := range []struct {
			name   string
			target string // "layer", "config", "manifest"
			damage func(path string)
			want   string
		}{
			{"flipped byte in a layer", "layer", flipByte, ScrubCorrupt},
			{"truncated config", "config", truncate, ScrubCorrupt},
			{"missing layer", "layer", func(p string) { os.Remove(p) }, ScrubMissing},
			{"flipped byte in the manifest", "manifest", flipByte, ScrubCorrupt},
		} {
			t.Run(alg.String()+"/"+tc.name, func(t *testing.T) {
				s := newStore(t, false)
				m, cfg, layer, _ := pushImageAlg(t, s, "app", "v1", alg)
				pushImageAlg(t, s, "app", "healthy", alg)
				target := map[string]digest.Digest{"layer": layer.Digest, "config": cfg.Digest, "manifest": m}[tc.target]
				if rep := scrub(t, s, "app"); rep.Failed() {
					t.Fatalf("healthy repository reported: %+v", rep.Results)
				}
				tc.damage(s.blobPath("app", target))
				rep := scrub(t, s, "app")
				byRef := map[string]ScrubResult{}
				for _, r := range rep.Results {
					byRef[r.Reference] = r
				}
				if got := byRef["v1"]; got.Status != tc.want || got.Digest != target {
					t.Fatalf("v1 = %+v, want %s of %s", got, tc.want, target)
				}
				if byRef["healthy"].Status != ScrubOK {
					t.Fatalf("the healthy image is reported: %+v", byRef["healthy"])
				}
				if tc.want == ScrubCorrupt {
					if _, err := s.StatBlob(ctx, "app", target); !errors.Is(err, ErrBlobUnknown) {
						t.Fatal("a corrupt blob is still served")
					}
					q := filepath.Join(s.Root(), ".quarantine", "app", alg.String(), target.Encoded())
					if _, err := os.Stat(q); err != nil {
						t.Fatalf("not quarantined: %v", err)
					}
				}
			})
		}
	}
}

func flipByte(path string) {
	b, _ := os.ReadFile(path)
	b[len(b)/2] ^= 0x01
	os.WriteFile(path, b, 0o644)
}

func truncate(path string) {
	b, _ := os.ReadFile(path)
	os.WriteFile(path, b[:len(b)-1], 0o644)
}

// After a quarantine, pushing the same image again heals the store.
func TestScrubThenRepushHeals(t *testing.T) {
	s := newStore(t, false)
	_, _, layer, body := pushImageAlg(t, s, "app", "v1", digest.SHA256)
	good, _ := os.ReadFile(s.blobPath("app", layer.Digest))
	flipByte(s.blobPath("app", layer.Digest))
	scrub(t, s, "app")
	if _, err := s.PutManifest(ctx, "app", "v1", "", body, nil); !errors.Is(err, ErrManifestBlobUnknown) {
		t.Fatalf("manifest accepted while its layer is quarantined: %v", err)
	}
	if _, err := s.PutBlob(ctx, "app", layer.Digest, bytes.NewReader(good)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutManifest(ctx, "app", "v1", "", body, nil); err != nil {
		t.Fatal(err)
	}
	if rep := scrub(t, s, "app"); rep.Failed() {
		t.Fatalf("still failing after the re-push: %+v", rep.Results)
	}
	assertBlob(t, s, "app", layer.Digest, good)
}

// A corrupt blob shared by dedupe links is quarantined in every
// repository at once, and read once per pass.
func TestScrubSharedInode(t *testing.T) {
	s := newDedupeStore(t, t.TempDir())
	_, _, layer, body := pushImageAlg(t, s, "a", "v1", digest.SHA256)
	var m ispec.Manifest
	mustUnmarshal(t, body, &m)
	good, _ := os.ReadFile(s.blobPath("a", layer.Digest))
	cfgData, _ := os.ReadFile(s.blobPath("a", m.Config.Digest))
	pushBlob(t, s, "b", "x", good)
	pushBlob(t, s, "b", "x", cfgData)
	putManifest(t, s, "b", "v1", body)
	inodes := HashedInodes{}
	repA, _ := s.ScrubRepo(ctx, "a", noPace{}, inodes)
	repB, _ := s.ScrubRepo(ctx, "b", noPace{}, inodes)
	if repB.Bytes >= repA.Bytes {
		t.Fatalf("shared blobs read twice: a=%d b=%d bytes", repA.Bytes, repB.Bytes)
	}
	flipByte(s.blobPath("a", layer.Digest)) // one inode: b's copy is damaged too
	if rep, _ := s.ScrubRepo(ctx, "a", noPace{}, HashedInodes{}); !rep.Failed() {
		t.Fatal("corruption not found")
	}
	if _, err := s.StatBlob(ctx, "b", layer.Digest); !errors.Is(err, ErrBlobUnknown) {
		t.Fatal("the other repository still serves the corrupt shared blob")
	}
}

func TestScrubReportsUnreferenced(t *testing.T) {
	s := newStore(t, false)
	pushImageAlg(t, s, "app", "v1", digest.SHA256)
	orphan := pushBlob(t, s, "app", "x", []byte("orphan")).Digest
	rep := scrub(t, s, "app")
	found := false
	for _, r := range rep.Results {
		if r.Status == ScrubUnreferenced && r.Digest == orphan {
			found = true
		}
	}
	if !found || rep.Failed() {
		t.Fatalf("results = %+v", rep.Results)
	}
}

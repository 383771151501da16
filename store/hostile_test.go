package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/oci"
)

// Layouts are input too: a root may hold layouts written by any tool, or
// by someone hostile. Digests read from them must never become paths
// outside their blobs directory, nor crash the background jobs.

// writeHostedLayout writes a layout whose index.json is raw.
func writeHostedLayout(t *testing.T, root, repo, indexJSON string) {
	t.Helper()
	dir := filepath.Join(root, repo)
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "oci-layout"), layoutFile, 0o644)
	if err := os.WriteFile(filepath.Join(dir, "index.json"), []byte(indexJSON), 0o644); err != nil {
		t.Fatal(err)
	}
}

func entryJSON(digest, tag string) string {
	return `{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + digest +
		`","size":2,"annotations":{"org.opencontainers.image.ref.name":"` + tag + `"}}`
}

var unusableDigests = map[string]string{
	"traversal":         "sha256:../../../victim/index.json",
	"no colon":          "junk",
	"unknown algorithm": "blake3:" + strings.Repeat("a", 64),
}

func TestUnusableDigestsInAHostedIndex(t *testing.T) {
	for name, dg := range unusableDigests {
		t.Run(name, func(t *testing.T) {
			s := newStore(t, false)
			victim := putManifest(t, s, "victim", "v1", imageManifest(t, s, "victim", "x"))
			writeHostedLayout(t, s.Root(), "odd", `{"schemaVersion":2,"manifests":[`+entryJSON(dg, "bad")+`]}`)
			if alg, enc, ok := strings.Cut(dg, ":"); ok && !strings.Contains(enc, "/") {
				os.MkdirAll(filepath.Join(s.Root(), "odd", "blobs", alg), 0o755)
				os.WriteFile(filepath.Join(s.Root(), "odd", "blobs", alg, enc), []byte("{}"), 0o644)
			}
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("panic: %v", r)
				}
			}()
			if _, err := s.GetManifest(ctx, "odd", "bad"); !errors.Is(err, ErrManifestUnknown) {
				t.Fatalf("GET of the unusable entry: %v, want MANIFEST_UNKNOWN", err)
			}
			s.ScrubRepo(ctx, "odd", noPace{}, HashedInodes{})
			if _, err := s.CollectRepo(ctx, "odd", 0); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetManifest(ctx, "victim", "v1"); err != nil {
				t.Fatalf("another repository was damaged: %v", err)
			}
			if _, err := s.GetManifest(ctx, "victim", victim.String()); err != nil {
				t.Fatal(err)
			}
			// The entry pier cannot use survives a rewrite of the index.
			putManifest(t, s, "odd", "good", imageManifest(t, s, "odd", "y"))
			b, err := os.ReadFile(s.indexPath("odd"))
			if err != nil || !bytes.Contains(b, []byte(`"`+dg+`"`)) {
				t.Fatalf("index.json rewritten without the entry pier cannot use: %s %v", b, err)
			}
		})
	}
}

// A manifest that references an unusable digest is not served, scrub
// reports it, and GC keeps every blob of the repository (what the
// manifest keeps alive is unknown) rather than crash or guess.
func TestManifestWithUnusableReferences(t *testing.T) {
	for name, dg := range unusableDigests {
		t.Run(name, func(t *testing.T) {
			s := newStore(t, false)
			body := imageManifest(t, s, "odd", "x")
			var m map[string]any
			json.Unmarshal(body, &m)
			layers := m["layers"].([]any)
			layers = append(layers, map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": dg, "size": 2})
			m["layers"] = layers
			bad, _ := json.Marshal(m)
			d := oci.SHA256Of(bad)
			os.WriteFile(s.blobPath("odd", d), bad, 0o644) // as another tool would have
			err := s.updateIndex(ctx, "odd", func(x *repoIndex, _ []byte) (bool, error) {
				x.Manifests = append(x.Manifests, ispec.Descriptor{
					MediaType: ispec.MediaTypeImageManifest, Digest: d, Size: int64(len(bad)),
					Annotations: map[string]string{ispec.AnnotationRefName: "bad"},
				})
				return true, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("panic: %v", r)
				}
			}()
			if _, err := s.GetManifest(ctx, "odd", "bad"); !errors.Is(err, ErrManifestUnknown) {
				t.Fatalf("GET: %v, want MANIFEST_UNKNOWN", err)
			}
			rep, err := s.ScrubRepo(ctx, "odd", noPace{}, HashedInodes{})
			if err != nil || !rep.Failed() {
				t.Fatalf("scrub passed a manifest that cannot be pulled: %+v", rep)
			}
			before := blobCount(t, s, "odd")
			if _, err := s.CollectRepo(ctx, "odd", 0); err != nil {
				t.Fatal(err)
			}
			if after := blobCount(t, s, "odd"); after != before {
				t.Fatalf("gc removed %d blobs while a live manifest could not be read", before-after)
			}
		})
	}
}

func blobCount(t *testing.T, s *Store, repo string) int {
	t.Helper()
	blobs, err := s.listBlobs(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	return len(blobs)
}

// A hosted layout (a USB stick) may hold links and bytes that are not
// what their names say. pier follows no link out of the root, and hands
// out no blob it has not checked against its digest at least once.
func TestHostedBlobsAreCheckedBeforeTheyAreServed(t *testing.T) {
	s := newStore(t, false)
	secret := filepath.Join(t.TempDir(), "tls.key")
	os.WriteFile(secret, []byte("-----BEGIN PRIVATE KEY-----"), 0o600)
	secretDigest := digest.FromString("-----BEGIN PRIVATE KEY-----")
	good := []byte("a layer the stick carries")
	goodDigest := digest.FromBytes(good)
	liar := digest.FromString("what the name claims")
	writeHostedLayout(t, s.Root(), "usb", `{"schemaVersion":2,"manifests":[]}`)
	blobs := filepath.Join(s.Root(), "usb", "blobs", "sha256")
	os.Symlink(secret, filepath.Join(blobs, secretDigest.Encoded()))      // its own digest, outside the root
	os.WriteFile(filepath.Join(blobs, liar.Encoded()), good, 0o644)       // inside, but not the named digest
	os.WriteFile(filepath.Join(blobs, goodDigest.Encoded()), good, 0o644) // inside and right

	writeHostedLayout(t, s.Root(), "usb2", `{"schemaVersion":2,"manifests":[]}`)
	rel, _ := filepath.Rel(filepath.Join(s.Root(), "usb2", "blobs", "sha256"), secret)
	os.Symlink(rel, filepath.Join(s.Root(), "usb2", "blobs", "sha256", secretDigest.Encoded())) // relative, outside
	for _, repo := range []string{"usb", "usb2"} {
		if _, _, err := s.OpenBlob(ctx, repo, secretDigest); !errors.Is(err, ErrBlobUnknown) {
			t.Errorf("a link out of the root was served from %s: %v", repo, err)
		}
	}
	if _, err := s.StatBlob(ctx, "usb", secretDigest); !errors.Is(err, ErrBlobUnknown) {
		t.Errorf("a link out of the root is said to exist: %v", err)
	}
	if _, _, err := s.OpenBlob(ctx, "usb", liar); !errors.Is(err, ErrBlobUnknown) {
		t.Errorf("bytes were served under a digest they do not have: %v", err)
	}
	f, _, err := s.OpenBlob(ctx, "usb", goodDigest)
	if err != nil {
		t.Fatalf("a good hosted blob: %v", err)
	}
	got, _ := io.ReadAll(f) // the check read it; serving starts from the start
	f.Close()
	if !bytes.Equal(got, good) {
		t.Fatalf("served %q", got)
	}
	// Once checked, it is served without reading it again; once the file
	// changes, it is checked again.
	if !s.verified.has(mustStat(t, s, "usb/blobs/sha256/"+goodDigest.Encoded()).Content, goodDigest) {
		t.Fatal("a checked blob was not remembered")
	}
	os.WriteFile(filepath.Join(blobs, goodDigest.Encoded()), []byte("rotten after its check!!!"), 0o644)
	if _, _, err := s.OpenBlob(ctx, "usb", goodDigest); !errors.Is(err, ErrBlobUnknown) {
		t.Errorf("a blob changed after its check was served: %v", err)
	}
}

func mustStat(t *testing.T, s *Store, key string) driver.Info {
	t.Helper()
	info, err := s.drv.Stat(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

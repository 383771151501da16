package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store/driver/local"
	"github.com/pier-oci/pier/store/oci"
)

// Review: a hosted layout is hostile input. A FIFO where a blob or
// index.json should be must never block a request or a background job:
// open(2) of a FIFO for reading waits for a writer, forever.

// mkfifo makes a FIFO at path and, when the test ends, opens it for
// writing a few times so that any reader stuck in open(2) is released.
func mkfifo(t *testing.T, path string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for range 8 {
			fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_NONBLOCK, 0)
			if err != nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
			syscall.Close(fd)
		}
	})
}

// returnsWithin fails the test when fn has not returned after d.
func returnsWithin(t *testing.T, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Errorf("%s has not returned after %v: blocked on a FIFO in a hosted layout", what, d)
	}
}

// fifoLayout writes a hosted layout "usb" whose index.json tags a
// manifest; the manifest's blob, or its layer's, is a FIFO.
func fifoLayout(t *testing.T, s *Store, fifoManifest bool) (manifest, layer digest.Digest) {
	t.Helper()
	cfg := []byte(`{"fifo":true}`)
	layerBytes := []byte("a layer that is really a FIFO")
	cfgDesc := ispec.Descriptor{MediaType: ispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	layerDesc := ispec.Descriptor{MediaType: ispec.MediaTypeImageLayer, Digest: digest.FromBytes(layerBytes), Size: int64(len(layerBytes))}
	body := mustJSON(t, ispec.Manifest{Versioned: specsV2, MediaType: ispec.MediaTypeImageManifest, Config: cfgDesc, Layers: []ispec.Descriptor{layerDesc}})
	manifest = digest.FromBytes(body)
	writeHostedLayout(t, s.Root(), "usb", `{"schemaVersion":2,"manifests":[{"mediaType":"`+ispec.MediaTypeImageManifest+
		`","digest":"`+manifest.String()+`","size":`+fmt.Sprint(len(body))+`,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}`)
	blobs := filepath.Join(s.Root(), "usb", "blobs", "sha256")
	os.WriteFile(filepath.Join(blobs, cfgDesc.Digest.Encoded()), cfg, 0o644)
	if fifoManifest {
		mkfifo(t, filepath.Join(blobs, manifest.Encoded()))
		os.WriteFile(filepath.Join(blobs, layerDesc.Digest.Encoded()), layerBytes, 0o644)
	} else {
		os.WriteFile(filepath.Join(blobs, manifest.Encoded()), body, 0o644)
		mkfifo(t, filepath.Join(blobs, layerDesc.Digest.Encoded()))
	}
	return manifest, layerDesc.Digest
}

func TestReviewFIFOInAHostedLayoutBlocksNothing(t *testing.T) {
	const limit = 3 * time.Second
	t.Run("GET manifest whose blob is a FIFO", func(t *testing.T) {
		s := newStore(t, false)
		fifoLayout(t, s, true)
		returnsWithin(t, limit, "GetManifest", func() { s.GetManifest(ctx, "usb", "v1") })
	})
	t.Run("GET blob that is a FIFO", func(t *testing.T) {
		s := newStore(t, false)
		_, layer := fifoLayout(t, s, false)
		returnsWithin(t, limit, "OpenBlob", func() {
			if f, _, err := s.OpenBlob(ctx, "usb", layer); err == nil {
				f.Close()
			}
		})
	})
	t.Run("scrub of a layout whose layer is a FIFO", func(t *testing.T) {
		s := newStore(t, false)
		fifoLayout(t, s, false)
		returnsWithin(t, limit, "ScrubRepo", func() { s.ScrubRepo(ctx, "usb", noPace{}, HashedInodes{}) })
	})
	t.Run("import of a layout whose index.json is a FIFO", func(t *testing.T) {
		s := newStore(t, false)
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "oci-layout"), layoutFile, 0o644)
		mkfifo(t, filepath.Join(dir, "index.json"))
		layout, err := local.Open(dir, local.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer layout.Close()
		returnsWithin(t, limit, "Import", func() { s.Import(ctx, layout, "imported") })
	})
}

// Review: the local driver follows links to directories inside the root
// (List reports them as directories, Walk descends). A layout that holds a
// link to its own directory makes the catalog walk every path up to
// os.Root's limit of 8 links per lookup: with a few such links, millions
// of directories, each listed as a repository. The catalog (GET
// /v2/_catalog), every GC and scrub pass and the dedupe pass all start
// with this walk.
func TestReviewCatalogSurvivesDirectoryLinkLoops(t *testing.T) {
	s := newStore(t, false)
	writeHostedLayout(t, s.Root(), "a", `{"schemaVersion":2,"manifests":[]}`)
	for i := range 6 {
		if err := os.Symlink(".", filepath.Join(s.Root(), "a", fmt.Sprintf("l%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	repos, err := s.Repositories(cctx)
	if err != nil {
		t.Fatalf("catalog walk did not finish in %v (%v): a link loop in a layout stalls the catalog, gc, scrub and dedupe", time.Since(start).Round(time.Second), err)
	}
	if len(repos) != 1 || repos[0] != "a" {
		n := len(repos)
		if n > 5 {
			repos = repos[:5]
		}
		t.Fatalf("catalog lists %d repositories (first: %v), want only [a]: a loop is listed under many names", n, repos)
	}
}

// Review: the local driver follows links inside the root, also in the
// middle of a key. A hosted layout whose blobs/sha256 is a link to
// another repository's blobs/sha256 makes that repository's blobs look
// like its own: GC of the hosted layout (whose index lists nothing) finds
// them unreferenced and deletes them through the link, breaking every
// image of the victim. The same through .uploads: idle "uploads" are
// every file of the directory it links to (index.json of another
// repository, cache.db at the root, .pier/lock). One layout on a USB
// stick destroys content that clients pushed.
func TestReviewGCOfAHostedLayoutNeverDeletesAnotherRepository(t *testing.T) {
	for _, tc := range []struct{ link, target string }{
		{"blobs/sha256", "../../victim/blobs/sha256"},
		{".uploads", "../victim"},
	} {
		t.Run(tc.link, func(t *testing.T) {
			s := newStore(t, false)
			body := imageManifest(t, s, "victim", "v")
			putManifest(t, s, "victim", "v1", body)
			writeHostedLayout(t, s.Root(), "usb", `{"schemaVersion":2,"manifests":[]}`)
			link := filepath.Join(s.Root(), "usb", filepath.FromSlash(tc.link))
			os.Remove(link)
			if err := os.Symlink(tc.target, link); err != nil {
				t.Fatal(err)
			}
			if _, err := s.CollectRepo(ctx, "usb", 0); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetManifest(ctx, "victim", "v1"); err != nil {
				t.Fatalf("victim:v1 after GC of a hosted layout: %v", err)
			}
		})
	}
}

// Review: readManifestBlob means "missing or too large" to be
// MANIFEST_UNKNOWN, but fromDriver maps only ErrNotFound to it: a hosted
// layout whose manifest blob is larger than the limit (or index.json
// larger than maxIndexSize) answers every GET with 500 UNKNOWN.
func TestReviewOversizedHostedFilesAreNotServerErrors(t *testing.T) {
	s := newStore(t, false)
	big := bytes.Repeat([]byte(" "), oci.MaxManifestSize+1)
	d := digest.FromBytes(big)
	writeHostedLayout(t, s.Root(), "usb", `{"schemaVersion":2,"manifests":[`+entryJSON(d.String(), "v1")+`]}`)
	os.WriteFile(filepath.Join(s.Root(), "usb", "blobs", "sha256", d.Encoded()), big, 0o644)
	if _, err := s.GetManifest(ctx, "usb", "v1"); !errors.Is(err, ErrManifestUnknown) {
		t.Errorf("GET of a manifest over the size limit = %v, want MANIFEST_UNKNOWN (not a 500)", err)
	}
	os.MkdirAll(filepath.Join(s.Root(), "usb2"), 0o755)
	if err := os.Truncate(filepath.Join(s.Root(), "usb2", "index.json"), 0); err != nil {
		os.WriteFile(filepath.Join(s.Root(), "usb2", "index.json"), nil, 0o644)
	}
	os.Truncate(filepath.Join(s.Root(), "usb2", "index.json"), maxIndexSize+1) // sparse
	if _, err := s.GetManifest(ctx, "usb2", "v1"); !errors.Is(err, ErrManifestUnknown) {
		t.Errorf("GET from a layout whose index.json is over the limit = %v, want MANIFEST_UNKNOWN (not a 500)", err)
	}
}

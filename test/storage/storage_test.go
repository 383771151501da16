// Package storage tests pier's storage features end to end, through the
// real binary: dedupe, online and offline garbage collection, and scrub.
package storage

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/test/internal/ociclient"
	"github.com/pier-oci/pier/test/internal/pierproc"
)

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func blobPath(root, repo string, d digest.Digest) string {
	return filepath.Join(root, repo, "blobs", d.Algorithm().String(), d.Encoded())
}

// The same base layer pushed to two repositories is one file on disk, and
// survives the deletion of either image.
func TestDedupeThroughTheAPI(t *testing.T) {
	srv := pierproc.Start(t, pierproc.Options{Storage: map[string]any{"dedupe": true}})
	c := ociclient.New(srv.Addr)
	base := random(256 << 10)
	a := ociclient.ImageManifest([]byte(`{"a":1}`), base, random(1000))
	b := ociclient.ImageManifest([]byte(`{"b":1}`), base, random(1000))
	if err := c.PushImage("team/a", "v1", a); err != nil {
		t.Fatal(err)
	}
	if err := c.PushImage("team/b", "v1", b); err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(base)
	if inode(t, blobPath(srv.Root, "team/a", d)) != inode(t, blobPath(srv.Root, "team/b", d)) {
		t.Fatal("the shared layer is stored twice")
	}
	if err := c.Delete("team/a", "manifests", a.Digest.String()); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete("team/a", "blobs", d.String()); err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetBlob("team/b", d); err != nil || !bytes.Equal(got, base) {
		t.Fatalf("team/b lost the shared layer: %v", err)
	}
}

// gc CONFIG collects offline and says what it freed; it refuses to run on
// a root a pier is serving.
func TestOfflineGC(t *testing.T) {
	srv := pierproc.Start(t, pierproc.Options{Storage: map[string]any{"gcDelay": "0s"}})
	c := ociclient.New(srv.Addr)
	img := ociclient.ImageManifest([]byte(`{"gc":1}`), random(100<<10))
	if err := c.PushImage("app", "v1", img); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete("app", "manifests", img.Digest.String()); err != nil {
		t.Fatal(err)
	}
	if code, out := pierproc.Run(t, "gc", srv.Config); code == 0 || !strings.Contains(out, "another pier process") {
		t.Fatalf("gc while serving: exit %d\n%s", code, out)
	}
	if code := srv.Stop(t); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	code, out := pierproc.Run(t, "gc", srv.Config)
	// The manifest, its config and its layer: three blobs.
	if code != 0 || !strings.Contains(out, "removed 0 manifests, 0 referrers, 0 stale entries, 3 blobs") || !strings.Contains(out, "100.") {
		t.Fatalf("gc: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(filepath.Join(srv.Root, "app")); !os.IsNotExist(err) {
		t.Fatalf("the emptied repository is still there: %v", err)
	}
}

// A root with gc false (a subpath's default) is never collected, not even
// by pier gc: its gcDelay is 0 and would spare nothing.
func TestOfflineGCSkipsRootsWithGCOff(t *testing.T) {
	team := t.TempDir()
	srv := pierproc.Start(t, pierproc.Options{Storage: map[string]any{
		"gcDelay":  "0s",
		"subPaths": map[string]any{"/team": map[string]any{"rootDirectory": team, "gc": false}},
	}})
	c := ociclient.New(srv.Addr)
	img := ociclient.ImageManifest([]byte(`{"gc":"off"}`), random(10<<10))
	if err := c.PushImage("team/app", "v1", img); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete("team/app", "manifests", img.Digest.String()); err != nil {
		t.Fatal(err)
	}
	if code := srv.Stop(t); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	code, out := pierproc.Run(t, "gc", srv.Config)
	if code != 0 || !strings.Contains(out, "gc is off for root /team") {
		t.Fatalf("gc: exit %d\n%s", code, out)
	}
	blobs, err := os.ReadDir(filepath.Join(team, "team/app/blobs/sha256"))
	if err != nil || len(blobs) != 3 {
		t.Fatalf("pier gc collected a root with gc off: %d blobs left, %v", len(blobs), err)
	}
}

// A serving pier collects on its own schedule while it keeps serving.
func TestOnlineGC(t *testing.T) {
	srv := pierproc.Start(t, pierproc.Options{Storage: map[string]any{"gcDelay": "0s", "gcInterval": "1s"}})
	c := ociclient.New(srv.Addr)
	keep := ociclient.ImageManifest([]byte(`{"keep":1}`), random(1000))
	drop := ociclient.ImageManifest([]byte(`{"drop":1}`), random(1000))
	if err := c.PushImage("app", "keep", keep); err != nil {
		t.Fatal(err)
	}
	if err := c.PushImage("app", "drop", drop); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete("app", "manifests", drop.Digest.String()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		gone := true
		for d := range drop.Blobs {
			if _, err := c.HeadBlob("app", d); err == nil {
				gone = false
			}
		}
		if gone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("online GC did not collect the deleted image's blobs")
		}
		time.Sleep(200 * time.Millisecond)
	}
	for d, b := range keep.Blobs {
		if got, err := c.GetBlob("app", d); err != nil || !bytes.Equal(got, b) {
			t.Fatalf("a tagged image lost blob %s: %v", d, err)
		}
	}
}

// scrub CONFIG finds a flipped byte, exits 1, and quarantines the blob; the
// registry then answers BLOB_UNKNOWN and a re-push heals it.
func TestScrubCommandAndHeal(t *testing.T) {
	srv := pierproc.Start(t, pierproc.Options{})
	c := ociclient.New(srv.Addr)
	layer := random(64 << 10)
	img := ociclient.ImageManifest([]byte(`{"scrub":1}`), layer)
	if err := c.PushImage("app", "v1", img); err != nil {
		t.Fatal(err)
	}
	srv.Stop(t)
	d := digest.FromBytes(layer)
	if code, out := pierproc.Run(t, "scrub", srv.Config); code != 0 || !strings.Contains(out, "0 corrupt") {
		t.Fatalf("clean scrub: exit %d\n%s", code, out)
	}
	path := blobPath(srv.Root, "app", d)
	damaged := bytes.Clone(layer)
	damaged[1000] ^= 0x20
	os.WriteFile(path, damaged, 0o644)
	code, out := pierproc.Run(t, "scrub", srv.Config)
	if code != 1 || !strings.Contains(out, "corrupt") || !strings.Contains(out, d.String()) {
		t.Fatalf("scrub of a flipped byte: exit %d\n%s", code, out)
	}
	srv.Restart(t)
	if _, err := c.GetBlob("app", d); err == nil || !strings.Contains(err.Error(), "BLOB_UNKNOWN") {
		t.Fatalf("a quarantined blob is served: %v", err)
	}
	if err := c.PushImage("app", "v1", img); err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetBlob("app", d); err != nil || !bytes.Equal(got, layer) {
		t.Fatalf("re-push did not heal: %v", err)
	}
}

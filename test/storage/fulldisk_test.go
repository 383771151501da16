package storage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/test/internal/ociclient"
	"github.com/pier-oci/pier/test/internal/pierproc"
)

// smallFS mounts a 64 MiB tmpfs, unmounted when t ends.
func smallFS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small filesystem needs root (CI runs as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a 64 MiB tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// free is the space left on the filesystem of dir.
func free(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// fillUp writes a file of zeros at path until the filesystem is full.
func fillUp(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zeros := make([]byte, 64<<10)
	for size := len(zeros); size > 0; {
		if _, err := f.Write(zeros[:size]); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			size /= 2
		}
	}
	if n := free(t, filepath.Dir(path)); n != 0 {
		t.Fatalf("%d bytes still free after filling the disk", n)
	}
}

// expectFull checks that err is the answer to a write the disk had no room
// for: 507, in the spec's JSON, saying so.
func expectFull(t *testing.T, what string, err error) {
	t.Helper()
	var se *ociclient.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusInsufficientStorage {
		t.Fatalf("%s on a full disk: %v, want 507", what, err)
	}
	var body struct {
		Errors []struct{ Code, Message string }
	}
	if json.Unmarshal([]byte(se.Body), &body) != nil || len(body.Errors) != 1 || body.Errors[0].Code != "UNKNOWN" ||
		!strings.Contains(body.Errors[0].Message, "full") {
		t.Fatalf("%s on a full disk: %s, want the spec's error saying the storage is full", what, se.Body)
	}
}

// pull checks that every image still pulls whole.
func pull(t *testing.T, c *ociclient.Client, images map[string]ociclient.Image) {
	t.Helper()
	for ref, img := range images {
		repo, tag, _ := strings.Cut(ref, ":")
		if _, d, err := c.GetManifest(repo, tag); err != nil || d != img.Digest {
			t.Fatalf("pull %s on a full disk: %v", ref, err)
		}
		for d := range img.Blobs {
			if _, err := c.GetBlob(repo, d); err != nil {
				t.Fatalf("pull %s on a full disk: %v", ref, err)
			}
		}
	}
}

// A full disk, on a real 64 MiB filesystem: a chunk the disk has no room
// for is taken back whole, so the next push goes in; the answer names the
// full disk (507) in the spec's format; at 0 bytes free tags and manifests
// can still be deleted; reads are served throughout; and once space is
// freed, pushes work again.
func TestFullDisk(t *testing.T) {
	fsDir := smallFS(t)
	root := filepath.Join(fsDir, "data")
	// gcDelay 0 for the offline collection below; the online one runs an
	// hour after start, never during the test.
	srv := pierproc.Start(t, pierproc.Options{Root: root, Storage: map[string]any{"commit": true, "gcDelay": "0s"}})
	c := ociclient.New(srv.Addr)
	images := map[string]ociclient.Image{
		"app:v1":   ociclient.ImageManifest([]byte(`{"v":1}`), random(64<<10)),
		"app:v2":   ociclient.ImageManifest([]byte(`{"v":2}`), random(64<<10)),
		"other:v1": ociclient.ImageManifest([]byte(`{"o":1}`), random(64<<10)),
	}
	for ref, img := range images {
		repo, tag, _ := strings.Cut(ref, ":")
		if err := c.PushImage(repo, tag, img); err != nil {
			t.Fatal(err)
		}
	}

	// (a) A chunk larger than the space left fails, and is taken back.
	before := free(t, fsDir)
	resp, err := c.Do("POST", "/v2/big/blobs/uploads/", nil, nil, http.StatusAccepted)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	first := random(1 << 20)
	hdr := http.Header{"Content-Type": {"application/octet-stream"}, "Content-Range": {fmt.Sprintf("0-%d", len(first)-1)}}
	if resp, err = c.Do("PATCH", loc, bytes.NewReader(first), hdr, http.StatusAccepted); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	huge := int64(80 << 20)
	req, _ := http.NewRequest("PATCH", c.Base+loc, io.LimitReader(zeroReader{}, huge))
	req.ContentLength = huge
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", len(first), int64(len(first))+huge-1))
	presp, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(presp.Body)
	presp.Body.Close()
	expectFull(t, "a chunk larger than the disk", &ociclient.StatusError{Method: "PATCH", URL: loc, Status: presp.StatusCode, Body: string(body)})
	if got := presp.Header.Get("Range"); got != fmt.Sprintf("0-%d", len(first)-1) {
		t.Fatalf("the failed chunk's answer says the upload holds %q, want the first chunk", got)
	}
	if got := free(t, fsDir); got < before-int64(len(first))-(256<<10) {
		t.Fatalf("%d bytes free after the failed chunk, %d before: its bytes were kept", got, before)
	}
	if _, err := c.PushBlob("small", random(256<<10)); err != nil {
		t.Fatalf("a small push after a chunk that did not fit: %v", err)
	}
	// The upload resumes from where the answer said.
	rest := random(1000)
	whole := append(append([]byte{}, first...), rest...)
	hdr = http.Header{"Content-Type": {"application/octet-stream"}, "Content-Range": {fmt.Sprintf("%d-%d", len(first), len(whole)-1)}}
	if resp, err = c.Do("PUT", loc+"?digest="+digest.FromBytes(whole).String(), bytes.NewReader(rest), hdr, http.StatusCreated); err != nil {
		t.Fatalf("finishing the upload after the failed chunk: %v", err)
	}
	resp.Body.Close()
	pull(t, c, images)

	// (b) At 0 bytes free pushes fail, saying why, reads go on, and tags
	// and manifests can be deleted.
	filler := filepath.Join(fsDir, "filler")
	fillUp(t, filler)
	_, err = c.PushBlob("app", random(4096))
	expectFull(t, "a push", err)
	pull(t, c, images)
	if err := c.Delete("app", "manifests", "v2"); err != nil {
		t.Fatalf("deleting a tag at 0 bytes free: %v", err)
	}
	if err := c.Delete("app", "manifests", images["app:v1"].Digest.String()); err != nil {
		t.Fatalf("deleting a manifest at 0 bytes free: %v", err)
	}
	delete(images, "app:v1")
	delete(images, "app:v2")
	pull(t, c, images)
	if _, err := c.PushBlob("app", random(4096)); err == nil {
		t.Fatal("a push went in while the disk is still full")
	}
	// Garbage collection frees the deleted images' blobs, on the disk
	// still full: it too rewrites index.json first (the untagged v2).
	if code := srv.Stop(t); code != 0 {
		t.Fatalf("stop: %d\n%s", code, srv.Stderr())
	}
	freeBefore := free(t, fsDir)
	if code, out := pierproc.Run(t, "gc", srv.Config); code != 0 {
		t.Fatalf("pier gc on a full disk: exit %d\n%s", code, out)
	}
	if got := free(t, fsDir); got < freeBefore+2*(64<<10) {
		t.Fatalf("pier gc on a full disk freed %d bytes, want the deleted images' layers", got-freeBefore)
	}
	srv.Restart(t)
	pull(t, c, images)

	// Space comes back: pushes work again, and deletes stay possible on
	// the next full disk.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	again := ociclient.ImageManifest([]byte(`{"v":3}`), random(64<<10))
	if err := c.PushImage("app", "v3", again); err != nil {
		t.Fatalf("a push once space is back: %v", err)
	}
	images["app:v3"] = again
	fillUp(t, filler)
	if err := c.Delete("app", "manifests", "v3"); err != nil {
		t.Fatalf("deleting a tag on the disk full again: %v", err)
	}
	delete(images, "app:v3")
	pull(t, c, images)
	if !strings.Contains(srv.Stderr(), "full") {
		t.Errorf("nothing in the log about the full disk:\n%s", srv.Stderr())
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

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
	// Nothing partial is left of the pushes the full disk refused, and
	// what was acknowledged is whole.
	if left := partials(t, root); len(left) > 0 {
		t.Fatalf("partial files after the refused pushes: %v", left)
	}
	scrubClean(t, srv.Config)
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

// partials lists what failed pushes could leave behind: files in upload
// directories and in the store's temporary directory.
func partials(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		dir := filepath.Base(filepath.Dir(path))
		if dir == ".uploads" || strings.Contains(path, "/.pier/tmp/") {
			out = append(out, path)
		}
		return nil
	})
	return out
}

// scrubClean runs pier scrub on a stopped pier's config: every blob whole.
func scrubClean(t *testing.T, config string) {
	t.Helper()
	code, out := pierproc.Run(t, "scrub", config)
	if code != 0 || !strings.Contains(out, " 0 corrupt, 0 missing") {
		t.Fatalf("pier scrub: exit %d\n%s", code, out)
	}
}

// expectDenied checks that err is a push refused by a limit: 403 DENIED
// in the spec's JSON, its message naming the limit.
func expectDenied(t *testing.T, what string, err error, limit string) {
	t.Helper()
	var se *ociclient.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusForbidden {
		t.Fatalf("%s: %v, want 403 DENIED", what, err)
	}
	var body struct {
		Errors []struct{ Code, Message string }
	}
	if json.Unmarshal([]byte(se.Body), &body) != nil || len(body.Errors) != 1 || body.Errors[0].Code != "DENIED" ||
		!strings.Contains(body.Errors[0].Message, limit) {
		t.Fatalf("%s: %s, want DENIED naming %s", what, se.Body, limit)
	}
}

// Byte quotas on a real 64 MiB filesystem: a push past a repository's
// quota, monolithic or chunked, and one past the root's, is refused with
// DENIED naming the limit, and leaves nothing; pulls go on; scrub finds
// every acknowledged blob whole; after a delete and a collection the
// push goes in.
func TestQuotaOnSmallFS(t *testing.T) {
	root := filepath.Join(smallFS(t), "data")
	srv := pierproc.Start(t, pierproc.Options{Root: root, Storage: map[string]any{"commit": true, "gcDelay": "0s",
		"quota": map[string]any{"maxBytes": "6MiB", "perRepository": []any{
			map[string]any{"repositories": []string{"ci/**"}, "maxBytes": "2MiB"}}}}})
	c := ociclient.New(srv.Addr)
	v1 := ociclient.ImageManifest([]byte(`{"v":1}`), random(1536<<10))
	if err := c.PushImage("ci/app", "v1", v1); err != nil {
		t.Fatal(err)
	}
	big := random(1 << 20)
	_, err := c.PushBlob("ci/app", big)
	expectDenied(t, "a monolithic push past the repository's quota", err, "storage.quota.perRepository[0].maxBytes")
	_, err = c.PushBlobChunked("ci/app", big, 256<<10)
	expectDenied(t, "a chunked push past the repository's quota", err, "storage.quota.perRepository[0].maxBytes")
	if _, err := c.HeadBlob("ci/app", digest.FromBytes(big)); err == nil {
		t.Fatal("the refused blob is there")
	}
	if left := partials(t, root); len(left) > 0 {
		t.Fatalf("a refused push left %v", left)
	}
	pull(t, c, map[string]ociclient.Image{"ci/app:v1": v1})

	// The root's quota: 1.5 MiB in ci, then other repositories up to 6 MiB.
	for i, repo := range []string{"other/a", "other/b", "other/c"} {
		err := c.PushImage(repo, "v1", ociclient.ImageManifest([]byte(`{"o":`+string(rune('0'+i))+`}`), random(1536<<10)))
		if i < 2 && err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			expectDenied(t, "a push past the root's quota", err, "storage.quota.maxBytes")
		}
	}
	pull(t, c, map[string]ociclient.Image{"ci/app:v1": v1})
	if code := srv.Stop(t); code != 0 {
		t.Fatalf("stop: %d", code)
	}
	scrubClean(t, srv.Config)

	// Delete, collect: the refused push goes in.
	srv.Restart(t)
	if err := c.Delete("ci/app", "manifests", v1.Digest.String()); err != nil {
		t.Fatal(err)
	}
	srv.Stop(t)
	if code, out := pierproc.Run(t, "gc", srv.Config); code != 0 {
		t.Fatalf("pier gc: %d\n%s", code, out)
	}
	srv.Restart(t)
	if _, err := c.PushBlob("ci/app", big); err != nil {
		t.Fatalf("after a delete and a collection: %v", err)
	}
}

// The free-space guard on a real 64 MiB filesystem: a push that would
// leave less than minFreeSpace is refused (DENIED naming the limit) and
// its upload removed at once; while another process keeps the disk below
// the guard, no push starts, yet pulls, deletes and collections go on;
// with space back, pushes work.
func TestFreeSpaceGuardOnSmallFS(t *testing.T) {
	fsDir := smallFS(t)
	root := filepath.Join(fsDir, "data")
	srv := pierproc.Start(t, pierproc.Options{Root: root, Storage: map[string]any{"commit": true, "gcDelay": "0s",
		"quota": map[string]any{"minFreeSpace": "48MiB"}}})
	c := ociclient.New(srv.Addr)
	images := map[string]ociclient.Image{
		"app:v1": ociclient.ImageManifest([]byte(`{"v":1}`), random(4<<20)),
		"app:v2": ociclient.ImageManifest([]byte(`{"v":2}`), random(4<<20)),
	}
	for ref, img := range images {
		repo, tag, _ := strings.Cut(ref, ":")
		if err := c.PushImage(repo, tag, img); err != nil {
			t.Fatal(err)
		}
	}
	// A push that would go below the guard is refused once written, and
	// its bytes are freed at once.
	before := free(t, fsDir)
	_, err := c.PushBlob("app", random(int(before-(46<<20))))
	expectDenied(t, "a push that would pass the guard", err, "storage.quota.minFreeSpace")
	if got := free(t, fsDir); got < before-(64<<10) {
		t.Fatalf("%d bytes free after the refused push, %d before: its upload was kept", got, before)
	}
	if left := partials(t, root); len(left) > 0 {
		t.Fatalf("a refused push left %v", left)
	}
	// Another process takes the disk below the guard.
	filler := filepath.Join(fsDir, "filler")
	if err := os.WriteFile(filler, make([]byte, free(t, fsDir)-(40<<20)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = c.PushBlob("app", random(4096))
	expectDenied(t, "a push below the guard", err, "storage.quota.minFreeSpace")
	pull(t, c, images)
	if err := c.Delete("app", "manifests", images["app:v2"].Digest.String()); err != nil {
		t.Fatalf("a delete below the guard: %v", err)
	}
	delete(images, "app:v2")
	if code := srv.Stop(t); code != 0 {
		t.Fatalf("stop: %d", code)
	}
	freeBefore := free(t, fsDir)
	if code, out := pierproc.Run(t, "gc", srv.Config); code != 0 || free(t, fsDir) < freeBefore+(4<<20) {
		t.Fatalf("pier gc below the guard: exit %d, freed %d\n%s", code, free(t, fsDir)-freeBefore, out)
	}
	scrubClean(t, srv.Config)
	srv.Restart(t)
	pull(t, c, images)
	os.Remove(filler)
	if err := c.PushImage("app", "v3", ociclient.ImageManifest([]byte(`{"v":3}`), random(1<<20))); err != nil {
		t.Fatalf("a push with space back: %v", err)
	}
}

package store

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Review: a local object's Version is device, inode, ctime and size, and
// garbage collection trusts it: CollectRepo plans from a snapshot of
// index.json without the lock, then re-plans under the lock only if the
// Version changed. But ext4 (and ext2/3) give a new file the lowest free
// inode number, so index.json, replaced through a temporary file each
// time, alternates between two inode numbers; and without the multigrain
// timestamps of Linux 6.13 (Raspberry Pi OS ships 6.6 and 6.12) ctime has
// the resolution of a clock tick (4 ms at HZ=250). Two rewrites within one
// tick whose result has the size of the snapshot (push B as t1, then
// delete A by digest: the CI pattern) give index.json back the Version of
// the snapshot. Measured on ext2 here: 19,446 of 20,000 rewrites of
// index.json repeated an earlier Version. GC then applies the old plan and
// deletes the blobs of the manifest just pushed: an acknowledged push is
// lost.
//
// The test needs a filesystem without fine-grained ctime (this machine's
// ext4 has multigrain timestamps): PIER_TEST_COARSE_DIR names a directory
// on one; as root it mounts an ext2 image of its own.
func TestReviewGCReplansWhenIndexChangedUnderIt(t *testing.T) {
	dir := coarseDir(t)
	s := openStore(t, dir, false, false)
	lost := 0
	const attempts = 50
	for i := range attempts {
		repo := fmt.Sprintf("r%d", i)
		cfg := pushBlob(t, s, repo, ispec.MediaTypeImageConfig, []byte(`{}`))
		manifest := func(layer ispec.Descriptor) []byte {
			return mustJSON(t, ispec.Manifest{Versioned: specsV2, MediaType: ispec.MediaTypeImageManifest, Config: cfg, Layers: []ispec.Descriptor{layer}})
		}
		layerA := pushBlob(t, s, repo, ispec.MediaTypeImageLayer, []byte("layer A"))
		layerB := pushBlob(t, s, repo, ispec.MediaTypeImageLayer, []byte("layer B")) // pushed before GC lists
		a, b := manifest(layerA), manifest(layerB)
		dA, dB := digest.FromBytes(a), digest.FromBytes(b)

		// The repository's lock is held as a push would hold it; GC reads
		// index.json = [A t1], plans (layer B is garbage: nothing uses
		// it yet), and waits for the lock.
		unlock := s.locks.Lock(repo)
		if err := s.writeBlobBytes(ctx, repo, dA, a); err != nil {
			t.Fatal(err)
		}
		desc := func(d digest.Digest, n int) ispec.Descriptor {
			return ispec.Descriptor{MediaType: ispec.MediaTypeImageManifest, Digest: d, Size: int64(n)}
		}
		if err := s.updateIndex(ctx, repo, func(x *repoIndex, _ []byte) (bool, error) { return x.setTags(desc(dA, len(a)), []string{"t1"}), nil }); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { _, err := s.CollectRepo(ctx, repo, 0); done <- err }()
		for s.locks.Users(repo) < 2 {
			time.Sleep(time.Millisecond)
		}
		// What PutManifest(B as t1) and DeleteManifest(A) do, under the lock.
		if err := s.writeBlobBytes(ctx, repo, dB, b); err != nil {
			t.Fatal(err)
		}
		if err := s.updateIndex(ctx, repo, func(x *repoIndex, _ []byte) (bool, error) { return x.setTags(desc(dB, len(b)), []string{"t1"}), nil }); err != nil {
			t.Fatal(err)
		}
		if err := s.updateIndex(ctx, repo, func(x *repoIndex, _ []byte) (bool, error) {
			x.Manifests = slices.DeleteFunc(x.Manifests, func(m ispec.Descriptor) bool { return m.Digest == dA })
			return true, nil
		}); err != nil {
			t.Fatal(err)
		}
		unlock() // both acknowledged
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if !exists(s, repo, layerB.Digest) {
			lost++
			if lost == 1 {
				_, err := s.GetManifest(ctx, repo, "t1")
				t.Errorf("%s: GC deleted layer B of the acknowledged t1 = %s (GET t1: %v)", repo, dB, err)
			}
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d acknowledged pushes lost a blob to a GC that planned on an index.json replaced under it", lost, attempts)
	}
}

// coarseDir is a directory on a filesystem whose ctime has the resolution
// of a clock tick.
func coarseDir(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("PIER_TEST_COARSE_DIR"); dir != "" {
		d, err := os.MkdirTemp(dir, "review-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		return d
	}
	mkfs, err := exec.LookPath("mkfs.ext2")
	if os.Geteuid() != 0 || err != nil {
		t.Skip("needs a filesystem without fine-grained ctime: set PIER_TEST_COARSE_DIR (an ext2 loop mount, say)")
	}
	img := filepath.Join(t.TempDir(), "ext2.img")
	mnt := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext2: %v %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount an ext2 image (%v %s): set PIER_TEST_COARSE_DIR", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	return filepath.Join(mnt, "root")
}

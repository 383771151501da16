package store

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/cache/boltdb"
)

func newDedupeStore(t *testing.T, root string) *Store {
	t.Helper()
	return openStore(t, root, true, true)
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestDedupeLinksAcrossRepos(t *testing.T) {
	s := newDedupeStore(t, t.TempDir())
	data := randomBytes(t, 100_000)
	d := pushBlob(t, s, "a", "x", data).Digest
	pushBlob(t, s, "b", "x", data)
	pushBlob(t, s, "c/d", "x", data)
	ia := inode(t, s.blobPath("a", d))
	if inode(t, s.blobPath("b", d)) != ia || inode(t, s.blobPath("c/d", d)) != ia {
		t.Fatal("the same content pushed to three repositories is not one inode")
	}
	// Deleting in one repository leaves the others intact.
	if err := s.DeleteBlob(ctx, "a", d); err != nil {
		t.Fatal(err)
	}
	assertBlob(t, s, "b", d, data)
	assertBlob(t, s, "c/d", d, data)
	// The deleted path is gone from the cache; a new push links to a survivor.
	pushBlob(t, s, "e", "x", data)
	if inode(t, s.blobPath("e", d)) != ia {
		t.Fatal("push after a delete did not link to the remaining copy")
	}
	// Anonymous mount finds the blob through the cache.
	if repo, err := s.FindBlob(ctx, d); err != nil || repo == "a" {
		t.Fatalf("FindBlob = %q, %v", repo, err)
	}
}

func TestDedupeOffKeepsCopies(t *testing.T) {
	s := newStore(t, false)
	data := []byte("separate copies")
	d := pushBlob(t, s, "a", "x", data).Digest
	pushBlob(t, s, "b", "x", data)
	if inode(t, s.blobPath("a", d)) == inode(t, s.blobPath("b", d)) {
		t.Fatal("dedupe off but the copies share an inode")
	}
	if _, err := os.Stat(filepath.Join(s.Root(), "cache.db")); err == nil {
		t.Fatal("dedupe off created cache.db")
	}
}

// The cache is an index: a path it names that vanished, or changed size,
// is skipped and dropped; the push still succeeds.
func TestStaleCacheEntriesAreDropped(t *testing.T) {
	s := newDedupeStore(t, t.TempDir())
	data := []byte("content whose first copy disappears")
	d := pushBlob(t, s, "a", "x", data).Digest
	pushBlob(t, s, "b", "x", data)
	os.Remove(s.blobPath("a", d))                                // removed behind pier's back
	os.WriteFile(s.blobPath("b", d), []byte("truncated"), 0o644) // wrong size
	pushBlob(t, s, "c", "x", data)
	assertBlob(t, s, "c", d, data)
	copies := s.dedupe.Copies(ctx, d)
	if len(copies) != 1 || copies[0] != blobKey("c", d) {
		t.Fatalf("cache still names stale paths: %v", copies)
	}
}

// A lost or corrupt cache.db never fails a request, and the background
// pass rebuilds it from the disk and links what was pushed meanwhile.
func TestCacheLossAndCorruption(t *testing.T) {
	for _, damage := range []string{"lost", "corrupt"} {
		t.Run(damage, func(t *testing.T) {
			root := t.TempDir()
			data := randomBytes(t, 50_000)
			s1 := newDedupeStore(t, root)
			d := pushBlob(t, s1, "a", "x", data).Digest
			s1.Close()
			cachePath := filepath.Join(root, "cache.db")
			if damage == "lost" {
				os.Remove(cachePath)
			} else {
				os.WriteFile(cachePath, bytes.Repeat([]byte("garbage!"), 1024), 0o600)
			}
			s2 := newDedupeStore(t, root)
			pushBlob(t, s2, "b", "x", data) // cache is empty: stored as a copy
			assertBlob(t, s2, "b", d, data)
			st, err := s2.Reconcile(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Linked != 1 || st.BytesFreed != int64(len(data)) {
				t.Fatalf("reconcile = %+v, want one link", st)
			}
			if inode(t, s2.blobPath("a", d)) != inode(t, s2.blobPath("b", d)) {
				t.Fatal("copies not linked after the rebuild")
			}
			pushBlob(t, s2, "c", "x", data)
			if inode(t, s2.blobPath("c", d)) != inode(t, s2.blobPath("a", d)) {
				t.Fatal("the rebuilt cache does not dedupe new pushes")
			}
			if damage == "corrupt" {
				// Kept under .pier/, where no repository name reaches it;
				// only the latest, however often the cache is damaged.
				aside := filepath.Join(root, ".pier", boltdb.AsideName)
				if _, err := os.Stat(aside); err != nil {
					t.Fatalf("corrupt cache not kept aside: %v", err)
				}
				s2.Close()
				for range 3 {
					os.WriteFile(cachePath, bytes.Repeat([]byte("garbage!"), 1024), 0o600)
					newDedupeStore(t, root).Close()
				}
				if kept, _ := filepath.Glob(filepath.Join(root, ".pier", "cache.db*")); len(kept) != 1 {
					t.Fatalf("copies of corrupt caches kept: %v", kept)
				}
				if at, _ := filepath.Glob(filepath.Join(root, "cache.db?*")); len(at) != 0 {
					t.Fatalf("files beside cache.db at the root: %v", at)
				}
			}
		})
	}
}

// Layouts copied in while pier was off are linked by one pass; a second
// pass touches nothing (no rewrites, no mtime changes on every boot).
func TestReconcileLinksOnceAndThenOnlyLooks(t *testing.T) {
	root := t.TempDir()
	plain := openStore(t, root, false, false)
	shared := randomBytes(t, 30_000)
	for _, r := range []string{"r1", "r2", "r3"} {
		pushBlob(t, plain, r, "x", shared)
		pushBlob(t, plain, r, "x", randomBytes(t, 1000))
	}
	plain.Close()
	s := newDedupeStore(t, root)
	st, err := s.Reconcile(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Blobs != 6 || st.Linked != 2 || st.Recorded != 6 {
		t.Fatalf("first pass = %+v", st)
	}
	d := digest.FromBytes(shared)
	before := map[string]os.FileInfo{}
	for _, r := range []string{"r1", "r2", "r3"} {
		fi, _ := os.Stat(s.blobPath(r, d))
		before[r] = fi
	}
	st, _ = s.Reconcile(ctx)
	if st.Linked != 0 || st.Recorded != 0 || st.AlreadyLinked != 3 {
		t.Fatalf("second pass = %+v, want nothing to do", st)
	}
	for r, fi := range before {
		after, _ := os.Stat(s.blobPath(r, d))
		if !os.SameFile(fi, after) || !after.ModTime().Equal(fi.ModTime()) {
			t.Fatalf("%s: second pass changed the file", r)
		}
	}
}

// A duplicate that rotted is never the one kept: the pass links the good
// copy over it instead of spreading the damage.
func TestReconcileKeepsTheGoodCopy(t *testing.T) {
	root := t.TempDir()
	plain := openStore(t, root, false, false)
	data := randomBytes(t, 10_000)
	d := pushBlob(t, plain, "a", "x", data).Digest
	pushBlob(t, plain, "b", "x", data)
	plain.Close()
	s := newDedupeStore(t, root)
	s.Reconcile(ctx) // records a as original, links b to it
	// Now give b a separate, rotten copy and a a good one.
	os.Remove(s.blobPath("b", d))
	rotten := bytes.Clone(data)
	rotten[0] ^= 0xff
	os.WriteFile(s.blobPath("b", d), rotten, 0o644)
	os.Remove(s.blobPath("a", d))
	os.WriteFile(s.blobPath("a", d), data, 0o644)
	// Make the rotten one the cache's original.
	s.dedupe.Forget(d, blobKey("a", d))
	s.Reconcile(ctx)
	assertBlob(t, s, "a", d, data)
	assertBlob(t, s, "b", d, data)
}

// Where hard links are impossible (another filesystem), dedupe and mount
// fall back to copies and every push still succeeds.
func TestLinkFallbackAcrossFilesystems(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root (CI runs as root)")
	}
	root := t.TempDir()
	other := filepath.Join(root, "other")
	os.MkdirAll(other, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "tmpfs", other).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", other).Run() })
	s := newDedupeStore(t, root)
	data := []byte("content on two filesystems")
	d := pushBlob(t, s, "a", "x", data).Digest
	pushBlob(t, s, "other/b", "x", data) // dedupe would link across filesystems
	assertBlob(t, s, "other/b", d, data)
	if err := s.MountBlob(ctx, "other/c", "a", d); err != nil {
		t.Fatalf("mount across filesystems: %v", err)
	}
	assertBlob(t, s, "other/c", d, data)
	if _, err := s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	assertBlob(t, s, "other/b", d, data)
}

// A copy that rotted on the disk (same size, other bytes) must never
// replace a good push: the new repository keeps the verified upload.
func TestDedupeNeverLinksToARottenCopy(t *testing.T) {
	s := newDedupeStore(t, t.TempDir())
	data := randomBytes(t, 200_000)
	d := pushBlob(t, s, "a", "x", data).Digest
	rotten := bytes.Clone(data)
	rotten[123_456] ^= 0xff
	if err := os.WriteFile(s.blobPath("a", d), rotten, 0o644); err != nil {
		t.Fatal(err)
	}
	pushBlob(t, s, "b", "x", data)
	assertBlob(t, s, "b", d, data)
	if inode(t, s.blobPath("b", d)) == inode(t, s.blobPath("a", d)) {
		t.Fatal("the good push was linked to the rotten copy")
	}
}

// A push does not wait for the cache, but what it recorded is in cache.db
// once the store closes, and is found by lookups before that.
func TestBackgroundRecordsReachTheCache(t *testing.T) {
	s := newDedupeStore(t, t.TempDir())
	var digests []digest.Digest
	for i := range 50 {
		digests = append(digests, pushBlob(t, s, "a", "x", randomBytes(t, 1000+i)).Digest)
	}
	bc := closeAndOpenCache(t, s)
	for _, d := range digests {
		paths, err := bc.Paths(ctx, d)
		if err != nil || len(paths) != 1 || paths[0] != "a/blobs/sha256/"+d.Encoded() {
			t.Fatalf("cache.db after close: %s -> %v, %v", d, paths, err)
		}
	}
}

// A blob deleted right after its push is not put back into cache.db by
// the background record of the push.
func TestDeleteRightAfterPushLeavesNoCacheEntry(t *testing.T) {
	s := newDedupeStore(t, t.TempDir())
	var digests []digest.Digest
	for i := range 20 {
		d := pushBlob(t, s, "a", "x", randomBytes(t, 1000+i)).Digest
		if err := s.DeleteBlob(ctx, "a", d); err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d)
	}
	bc := closeAndOpenCache(t, s)
	for _, d := range digests {
		if paths, _ := bc.Paths(ctx, d); len(paths) != 0 {
			t.Fatalf("deleted blob %s still in cache.db: %v", d, paths)
		}
	}
}

// closeAndOpenCache closes s and opens the cache.db it leaves, to see what
// reached the disk.
func closeAndOpenCache(t *testing.T, s *Store) *boltdb.Cache {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	bc, err := boltdb.Open(s.cachePath(), boltdb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bc.Close() })
	return bc
}

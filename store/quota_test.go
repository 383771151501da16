package store

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/driver/local"
)

func uploadsLeft(t *testing.T, s *Store, repo string) int {
	t.Helper()
	entries, err := os.ReadDir(s.path(uploadsDir(repo)))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return len(entries)
}

func refused(t *testing.T, err error, names string) {
	t.Helper()
	if !errors.Is(err, ErrQuota) || !strings.Contains(err.Error(), names) {
		t.Fatalf("err = %v; want ErrQuota naming %s", err, names)
	}
}

// A repository quota refuses the push that would pass it, keeps nothing of
// it, leaves other repositories alone, and lets pushes in again once a
// delete and a collection free space.
func TestRepositoryQuota(t *testing.T) {
	s := newStore(t, false)
	s.SetQuota(Quota{Name: "storage", PerRepository: []RepoQuota{{Repositories: []string{"ci/**"}, MaxBytes: 100 << 10, Key: "storage.quota.perRepository[0].maxBytes"}}})
	s.countAll(ctx)
	first := bytes.Repeat([]byte("a"), 60<<10)
	if _, err := s.PutBlob(ctx, "ci/app", digest.FromBytes(first), bytes.NewReader(first)); err != nil {
		t.Fatal(err)
	}
	second := bytes.Repeat([]byte("b"), 60<<10)
	_, err := s.PutBlob(ctx, "ci/app", digest.FromBytes(second), bytes.NewReader(second))
	refused(t, err, "storage.quota.perRepository[0].maxBytes")
	if exists(s, "ci/app", digest.FromBytes(second)) || uploadsLeft(t, s, "ci/app") != 0 {
		t.Fatal("a refused push left its blob or its upload")
	}
	// Chunked: the chunk that passes the limit is refused, its upload removed.
	id, err := s.NewUpload(ctx, "ci/app")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteUpload(ctx, "ci/app", id, 0, bytes.NewReader(second)); !errors.Is(err, ErrQuota) {
		t.Fatalf("chunk past the quota: %v", err)
	}
	if _, err := s.UploadSize(ctx, "ci/app", id); !errors.Is(err, ErrUploadUnknown) || uploadsLeft(t, s, "ci/app") != 0 {
		t.Fatalf("the refused upload is still there: %v", err)
	}
	// Another repository is not bound by ci/**.
	if _, err := s.PutBlob(ctx, "other", digest.FromBytes(second), bytes.NewReader(second)); err != nil {
		t.Fatal(err)
	}
	// Pushing a blob the repository holds adds nothing: allowed.
	if _, err := s.PutBlob(ctx, "ci/app", digest.FromBytes(first), bytes.NewReader(first)); err != nil {
		t.Fatalf("re-pushing a blob held already: %v", err)
	}
	// Delete, collect: room again.
	if err := s.DeleteBlob(ctx, "ci/app", digest.FromBytes(first)); err != nil {
		t.Fatal(err)
	}
	if got := s.repoBytes("ci/app"); got != 0 {
		t.Fatalf("ci/app counts %d bytes after its blob was deleted", got)
	}
	if _, err := s.PutBlob(ctx, "ci/app", digest.FromBytes(second), bytes.NewReader(second)); err != nil {
		t.Fatalf("after a delete: %v", err)
	}
}

// The root's quota counts a blob shared by hard links once; maxRepos
// refuses a new repository past the limit and nothing else.
func TestRootQuotaAndMaxRepos(t *testing.T) {
	s := openStore(t, t.TempDir(), false, true)
	shared := bytes.Repeat([]byte("s"), 50<<10)
	for _, repo := range []string{"a", "b"} {
		if _, err := s.PutBlob(ctx, repo, digest.FromBytes(shared), bytes.NewReader(shared)); err != nil {
			t.Fatal(err)
		}
	}
	s.countAll(ctx)
	if total, repos, ok := s.Usage(); !ok || repos != 2 || total < 50<<10 || total > 51<<10 {
		t.Fatalf("usage %d bytes, %d repos, ready %v; want the shared blob once", total, repos, ok)
	}
	s.SetQuota(Quota{Name: "storage", MaxBytes: 80 << 10, MaxRepos: 3})
	// A third link costs the root nothing: admitted by the repository
	// rules, linked by dedupe. (The root's check is conservative: it
	// counts the blob's size before it knows it will be a link.)
	small := []byte("small")
	if _, err := s.PutBlob(ctx, "c", digest.FromBytes(small), bytes.NewReader(small)); err != nil {
		t.Fatal(err)
	}
	_, err := s.PutBlob(ctx, "d", digest.FromBytes(small), bytes.NewReader(small))
	refused(t, err, "storage.maxRepos")
	if s.repoExists(ctx, "d") {
		t.Fatal("a refused push created its repository")
	}
	big := bytes.Repeat([]byte("x"), 40<<10)
	_, err = s.PutBlob(ctx, "a", digest.FromBytes(big), bytes.NewReader(big))
	refused(t, err, "storage.quota.maxBytes")
	// Manifests count too, and deletes and collections free.
	if err := s.DeleteBlob(ctx, "a", digest.FromBytes(shared)); err != nil {
		t.Fatal(err)
	}
	if total, _, _ := s.Usage(); total < 50<<10 {
		t.Fatalf("deleting one link of a shared blob freed the root's count (%d)", total)
	}
	s.DeleteBlob(ctx, "b", digest.FromBytes(shared))
	if _, err := s.CollectRepo(ctx, "b", 0); err != nil {
		t.Fatal(err)
	}
	if total, _, _ := s.Usage(); total > 1<<10 {
		t.Fatalf("after the last link went the root counts %d bytes", total)
	}
	if _, err := s.PutBlob(ctx, "a", digest.FromBytes(big), bytes.NewReader(big)); err != nil {
		t.Fatalf("once space was freed: %v", err)
	}
}

// lowDisk is a local driver whose filesystem says it has free bytes.
type lowDisk struct {
	*local.Driver
	free int64
}

func (l *lowDisk) Space() (int64, int64, error) { return l.free, 1 << 40, nil }

// Below the free-space guard pushes are refused; pulls, deletes and
// collections go on; an early collection is asked for, once at a time.
func TestFreeSpaceGuard(t *testing.T) {
	drv, err := local.Open(t.TempDir(), local.Options{Lock: true, TempDir: StateDir + "/tmp", Reserve: ReserveSize})
	if err != nil {
		t.Fatal(err)
	}
	low := &lowDisk{Driver: drv, free: 1 << 30}
	s, err := New(Options{Driver: low})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	kicked := make(chan struct{}, 10)
	s.SetQuota(Quota{Name: "storage.subPaths./a", MinFreeSpace: 100 << 20, LowSpace: func() { kicked <- struct{}{}; time.Sleep(50 * time.Millisecond) }})
	img := putManifest(t, s, "app", "v1", imageManifest(t, s, "app", "v1"))

	low.free = 10 << 20
	_, err = s.NewUpload(ctx, "app")
	refused(t, err, "storage.subPaths./a.quota.minFreeSpace")
	_, err = s.PutManifest(ctx, "app", "v2", "", imageManifest2(t, s), nil)
	refused(t, err, "minFreeSpace")
	select {
	case <-kicked:
	case <-time.After(time.Second):
		t.Fatal("no early collection asked for")
	}
	if _, err := s.GetManifest(ctx, "app", "v1"); err != nil {
		t.Fatalf("a pull below the guard: %v", err)
	}
	if err := s.DeleteManifest(ctx, "app", img.String()); err != nil {
		t.Fatalf("a delete below the guard: %v", err)
	}
	if rep, err := s.CollectRepo(ctx, "app", 0); err != nil || rep.Blobs == 0 {
		t.Fatalf("a collection below the guard: %+v %v", rep, err)
	}
	low.free = 1 << 30
	if _, err := s.NewUpload(ctx, "app"); err != nil {
		t.Fatalf("with space back: %v", err)
	}
}

// imageManifest2 is a manifest whose blobs were pushed before the guard
// closed (so only the manifest push is refused).
func imageManifest2(t *testing.T, s *Store) []byte {
	t.Helper()
	old := s.limits()
	s.SetQuota(Quota{})
	defer s.SetQuota(*old)
	return imageManifest(t, s, "app", "v2")
}

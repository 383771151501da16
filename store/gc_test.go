package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// gcDelay is short so the scenarios run in real time: the ages GC trusts
// (ctime, the untagged stamp) are real clock readings, not mocks.
const gcDelay = 300 * time.Millisecond

func collect(t *testing.T, s *Store, repo string, delay time.Duration) CollectReport {
	t.Helper()
	rep, err := s.CollectRepo(ctx, repo, delay)
	if err != nil {
		t.Fatalf("CollectRepo %s: %v", repo, err)
	}
	return rep
}

func blobsOf(t *testing.T, body []byte) []digest.Digest {
	t.Helper()
	var m manifestDoc
	mustUnmarshal(t, body, &m)
	var out []digest.Digest
	for d := range m.descriptors() {
		if m.Subject == nil || d != *m.Subject {
			out = append(out, d.Digest)
		}
	}
	return out
}

func exists(s *Store, repo string, d digest.Digest) bool {
	_, err := s.StatBlob(ctx, repo, d)
	return err == nil
}

func manifestExists(s *Store, repo string, d digest.Digest) bool {
	_, err := s.GetManifest(ctx, repo, d.String())
	return err == nil
}

func TestCollectScenarios(t *testing.T) {
	type scenario struct {
		name string
		// setup runs before the clock starts; check runs after one
		// collection within gcDelay (young) and one past it (old).
		setup func(t *testing.T, s *Store) any
		young func(t *testing.T, s *Store, v any, rep CollectReport)
		old   func(t *testing.T, s *Store, v any, rep CollectReport)
	}
	for _, sc := range []scenario{
		{
			name: "untagged manifest pushed by digest",
			setup: func(t *testing.T, s *Store) any {
				body := imageManifest(t, s, "app", "u")
				return []any{putManifest(t, s, "app", digest.FromBytes(body).String(), body), blobsOf(t, body)}
			},
			young: func(t *testing.T, s *Store, v any, rep CollectReport) {
				d := v.([]any)[0].(digest.Digest)
				if !manifestExists(s, "app", d) || rep.Removed() {
					t.Fatalf("young untagged manifest collected: %+v", rep)
				}
			},
			old: func(t *testing.T, s *Store, v any, rep CollectReport) {
				d := v.([]any)[0].(digest.Digest)
				if manifestExists(s, "app", d) || len(rep.Manifests) != 1 || rep.Blobs != 3 {
					t.Fatalf("old untagged manifest kept: %+v", rep)
				}
				for _, b := range v.([]any)[1].([]digest.Digest) {
					if exists(s, "app", b) {
						t.Fatalf("its blob %s kept", b)
					}
				}
			},
		},
		{
			// zot#4444: the digest a tag moved off must stay pullable for
			// gcDelay counted from the move, however old its push.
			name: "overwritten tag ages from the overwrite",
			setup: func(t *testing.T, s *Store) any {
				old := putManifest(t, s, "app", "latest", imageManifest(t, s, "app", "v1"))
				time.Sleep(gcDelay + 50*time.Millisecond) // the push itself is now old
				putManifest(t, s, "app", "latest", imageManifest(t, s, "app", "v2"))
				return old
			},
			young: func(t *testing.T, s *Store, v any, rep CollectReport) {
				if !manifestExists(s, "app", v.(digest.Digest)) {
					t.Fatalf("old digest gone right after the tag moved: %+v", rep)
				}
			},
			old: func(t *testing.T, s *Store, v any, rep CollectReport) {
				if manifestExists(s, "app", v.(digest.Digest)) || len(rep.Manifests) != 1 {
					t.Fatalf("old digest kept past gcDelay: %+v", rep)
				}
				if m, err := s.GetManifest(ctx, "app", "latest"); err != nil || m.Digest == v.(digest.Digest) {
					t.Fatalf("latest broken: %v", err)
				}
			},
		},
		{
			name: "children of a tagged index stay; of a deleted one go",
			setup: func(t *testing.T, s *Store) any {
				a := imageManifest(t, s, "app", "amd64")
				b := imageManifest(t, s, "app", "arm64")
				putManifest(t, s, "app", digest.FromBytes(a).String(), a)
				putManifest(t, s, "app", digest.FromBytes(b).String(), b)
				inner := indexOf(t, a, b)
				putManifest(t, s, "app", digest.FromBytes(inner).String(), inner)
				putManifest(t, s, "app", "multi", indexOfIndex(t, inner)) // nested: index → index → images
				return []digest.Digest{digest.FromBytes(a), digest.FromBytes(b)}
			},
			young: func(t *testing.T, s *Store, v any, rep CollectReport) {},
			old: func(t *testing.T, s *Store, v any, rep CollectReport) {
				for _, d := range v.([]digest.Digest) {
					if !manifestExists(s, "app", d) {
						t.Fatalf("child %s of a tagged index collected", d)
					}
				}
				if rep.Removed() {
					t.Fatalf("collected from a repository with only live content: %+v", rep)
				}
			},
		},
		{
			name: "orphan blobs and idle uploads",
			setup: func(t *testing.T, s *Store) any {
				d := pushBlob(t, s, "app", "x", []byte("never referenced")).Digest
				id, _ := s.NewUpload(ctx, "app")
				s.WriteUpload(ctx, "app", id, 0, bytes.NewReader([]byte("abandoned")))
				putManifest(t, s, "app", "keep", imageManifest(t, s, "app", "k"))
				return []any{d, id}
			},
			young: func(t *testing.T, s *Store, v any, rep CollectReport) {
				if rep.Removed() {
					t.Fatalf("young orphan or upload collected: %+v", rep)
				}
			},
			old: func(t *testing.T, s *Store, v any, rep CollectReport) {
				d, id := v.([]any)[0].(digest.Digest), v.([]any)[1].(string)
				if exists(s, "app", d) || rep.Blobs != 1 || rep.Uploads != 1 {
					t.Fatalf("orphan or upload kept: %+v", rep)
				}
				if _, err := s.UploadSize(ctx, "app", id); !errors.Is(err, ErrUploadUnknown) {
					t.Fatalf("idle upload still known: %v", err)
				}
				if got := tagsOf(t, s, "app"); got != "[keep]" {
					t.Fatalf("tags = %s", got)
				}
			},
		},
	} {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, false)
			v := sc.setup(t, s)
			sc.young(t, s, v, collect(t, s, "app", gcDelay))
			time.Sleep(gcDelay + 50*time.Millisecond)
			sc.old(t, s, v, collect(t, s, "app", gcDelay))
		})
	}
}

func TestCollectReferrers(t *testing.T) {
	s := newStore(t, false)
	subject := putManifest(t, s, "app", "v1", imageManifest(t, s, "app", "1"))
	empty := pushBlob(t, s, "app", ispec.MediaTypeEmptyJSON, []byte("{}"))
	referrer := func(subj digest.Digest, at string) digest.Digest {
		body := mustJSON(t, ispec.Manifest{Versioned: specsV2, MediaType: ispec.MediaTypeImageManifest, ArtifactType: at,
			Config: empty, Layers: []ispec.Descriptor{},
			Subject: &ispec.Descriptor{MediaType: ispec.MediaTypeImageManifest, Digest: subj, Size: 1}})
		return putManifest(t, s, "app", digest.FromBytes(body).String(), body)
	}
	sbom := referrer(subject, "application/vnd.example.sbom")
	sig := referrer(sbom, "application/vnd.example.sig") // a referrer of a referrer
	orphan := referrer(digest.FromString("never pushed"), "application/vnd.example.sig")
	time.Sleep(gcDelay + 50*time.Millisecond)
	rep := collect(t, s, "app", gcDelay)
	if !manifestExists(s, "app", sbom) || !manifestExists(s, "app", sig) {
		t.Fatalf("referrers of a live subject collected: %+v", rep)
	}
	if manifestExists(s, "app", orphan) || !slices.Equal(rep.Referrers, []digest.Digest{orphan}) {
		t.Fatalf("orphan referrer: %+v", rep)
	}
	// The subject goes: its referrers follow once old (they already are).
	if err := s.DeleteManifest(ctx, "app", subject.String()); err != nil {
		t.Fatal(err)
	}
	rep = collect(t, s, "app", gcDelay)
	if manifestExists(s, "app", sbom) || manifestExists(s, "app", sig) || len(rep.Referrers) != 2 {
		t.Fatalf("referrers of a deleted subject kept: %+v", rep)
	}
}

func TestCollectDeletedIndexAndEmptyRepo(t *testing.T) {
	s := newStore(t, false)
	a := imageManifest(t, s, "app", "amd64")
	putManifest(t, s, "app", digest.FromBytes(a).String(), a)
	idx := putManifest(t, s, "app", "multi", indexOf(t, a))
	if err := s.DeleteManifest(ctx, "app", idx.String()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(gcDelay + 50*time.Millisecond)
	rep := collect(t, s, "app", gcDelay)
	if manifestExists(s, "app", digest.FromBytes(a)) || !rep.RepoRemoved {
		t.Fatalf("children of a deleted index, or the empty repository, kept: %+v", rep)
	}
	if repos, _ := s.Repositories(ctx); len(repos) != 0 {
		t.Fatalf("catalog after removal: %v", repos)
	}
	if _, err := os.Stat(s.repoDir("app")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("repository directory left: %v", err)
	}
	// A push recreates it.
	putManifest(t, s, "app", "again", imageManifest(t, s, "app", "again"))
}

// A layout being copied in lists manifests whose blobs have not arrived:
// its entries are not pruned within gcDelay, and not served half.
func TestCollectHalfCopiedLayout(t *testing.T) {
	s := newStore(t, false)
	src := newStore(t, false)
	body := imageManifest(t, src, "app", "copied")
	d := putManifest(t, src, "app", "v1", body)
	// Copy index.json and the layout file first, blobs last (not yet).
	os.MkdirAll(filepath.Join(s.Root(), "app", "blobs", "sha256"), 0o755)
	for _, f := range []string{"oci-layout", "index.json"} {
		b, _ := os.ReadFile(filepath.Join(src.Root(), "app", f))
		os.WriteFile(filepath.Join(s.Root(), "app", f), b, 0o644)
	}
	if _, err := s.GetManifest(ctx, "app", "v1"); err == nil {
		t.Fatal("a manifest whose blob has not arrived was served")
	}
	if rep := collect(t, s, "app", gcDelay); rep.Removed() {
		t.Fatalf("young half-copied layout pruned: %+v", rep)
	}
	// The blobs arrive; the layout is whole and served.
	for _, b := range append(blobsOf(t, body), d) {
		data, _ := os.ReadFile(src.blobPath("app", b))
		os.WriteFile(s.blobPath("app", b), data, 0o644)
	}
	time.Sleep(gcDelay + 50*time.Millisecond)
	if rep := collect(t, s, "app", gcDelay); rep.Removed() {
		t.Fatalf("complete layout collected: %+v", rep)
	}
	if _, err := s.GetManifest(ctx, "app", "v1"); err != nil {
		t.Fatal(err)
	}
	// An entry whose blob never arrives is pruned once the index is old.
	os.Remove(s.blobPath("app", d))
	time.Sleep(gcDelay + 50*time.Millisecond)
	rep := collect(t, s, "app", gcDelay)
	if len(rep.StaleEntries) != 1 || rep.StaleEntries[0] != d {
		t.Fatalf("stale entry: %+v", rep)
	}
}

// Nothing to collect: index.json is not rewritten (same inode, same bytes).
func TestCollectWritesNothingWhenNothingChanges(t *testing.T) {
	s := newStore(t, true)
	putManifest(t, s, "app", "v1", imageManifest(t, s, "app", "1"))
	time.Sleep(gcDelay + 50*time.Millisecond)
	before, _ := os.Stat(s.indexPath("app"))
	syncs := s.Syncs()
	collect(t, s, "app", gcDelay)
	after, _ := os.Stat(s.indexPath("app"))
	if !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) || s.Syncs() != syncs {
		t.Fatal("a pass with nothing to collect wrote to the disk")
	}
}

// GC in one repository never breaks a repository that shares the content.
func TestCollectRespectsLinksToOtherRepos(t *testing.T) {
	s := newDedupeStore(t, t.TempDir())
	body := imageManifest(t, s, "a", "shared")
	d := putManifest(t, s, "a", "v1", body)
	imageManifest(t, s, "b", "shared")
	putManifest(t, s, "b", "v1", body)
	if err := s.DeleteManifest(ctx, "a", d.String()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(gcDelay + 50*time.Millisecond)
	collect(t, s, "a", gcDelay)
	for _, b := range blobsOf(t, body) {
		if exists(s, "a", b) || !exists(s, "b", b) {
			t.Fatalf("blob %s: a=%v b=%v", b, exists(s, "a", b), exists(s, "b", b))
		}
	}
	if _, err := s.GetManifest(ctx, "b", "v1"); err != nil {
		t.Fatal(err)
	}
}

// Pushes racing GC with gcDelay 0: a push may fail (with a spec error),
// but no tagged manifest ever lacks a blob.
func TestCollectRacingPushes(t *testing.T) {
	s := newStore(t, false)
	stop := make(chan struct{})
	var gcWG sync.WaitGroup
	gcWG.Add(1)
	passes := 0
	go func() {
		defer gcWG.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, r := range []string{"r0", "r1", "r2", "r3"} {
				s.CollectRepo(ctx, r, 0)
			}
			passes++
		}
	}()
	var wg sync.WaitGroup
	var mu sync.Mutex
	pushed, failed := 0, 0
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			repo := fmt.Sprintf("r%d", w)
			for i := range 40 {
				cfg := []byte(fmt.Sprintf(`{"w":%d,"i":%d}`, w, i))
				layer := bytes.Repeat([]byte{byte(i)}, 1000+i)
				c, err1 := s.PutBlob(ctx, repo, digest.FromBytes(cfg), bytes.NewReader(cfg))
				l, err2 := s.PutBlob(ctx, repo, digest.FromBytes(layer), bytes.NewReader(layer))
				if err1 != nil || err2 != nil {
					mu.Lock()
					failed++
					mu.Unlock()
					continue
				}
				body := mustJSON(t, ispec.Manifest{Versioned: specsV2, MediaType: ispec.MediaTypeImageManifest,
					Config: ispec.Descriptor{MediaType: ispec.MediaTypeImageConfig, Digest: c.Digest, Size: c.Size},
					Layers: []ispec.Descriptor{{MediaType: ispec.MediaTypeImageLayer, Digest: l.Digest, Size: l.Size}}})
				_, err := s.PutManifest(ctx, repo, fmt.Sprintf("t%d", i%5), "", body, nil)
				mu.Lock()
				if err == nil {
					pushed++
				} else if errors.Is(err, ErrManifestBlobUnknown) || errors.Is(err, ErrNameUnknown) {
					failed++
				} else {
					t.Errorf("push failed with a non-spec error: %v", err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stop)
	gcWG.Wait()
	t.Logf("%d pushes succeeded, %d refused cleanly, %d GC passes", pushed, failed, passes)
	if pushed == 0 {
		t.Fatal("no push succeeded")
	}
	for _, r := range []string{"r0", "r1", "r2", "r3"} {
		x, err := s.readIndex(ctx, r)
		if errors.Is(err, ErrNameUnknown) {
			continue
		}
		for _, e := range x.Manifests {
			if _, tagged := tagOf(e); !tagged {
				continue
			}
			m, err := s.GetManifest(ctx, r, e.Digest.String())
			if err != nil {
				t.Fatalf("%s: tagged manifest %s unreadable: %v", r, e.Digest, err)
			}
			for _, b := range blobsOf(t, m.Body) {
				if !exists(s, r, b) {
					t.Fatalf("%s: tagged manifest %s lacks blob %s", r, e.Digest, b)
				}
			}
		}
	}
}

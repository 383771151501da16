package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/driver"
)

// Backend is how the suite gets storage of one kind.
type Backend struct {
	// New returns a driver on fresh, empty storage.
	New func(t *testing.T) driver.Driver
	// Reopen returns a new driver on the storage of d, as after a
	// restart; d has been closed.
	Reopen func(t *testing.T, d driver.Driver) driver.Driver
	// Share returns a second driver on the storage of d while d stays
	// open (a replica on the same bucket); nil where the backend is one
	// process's only (a local directory is locked).
	Share func(t *testing.T, d driver.Driver) driver.Driver
	// Cache, when set, returns a dedupe index for a store on the backend.
	Cache func(t *testing.T) cache.Cache
}

// Run is the behaviour of the store, the same on every backend: pushes,
// pulls, tags, deletes, referrers, mounts, the catalog, garbage
// collection, scrub, a restart in the middle of an upload, and (where the
// backend is shared) replicas writing the same repository.
func Run(t *testing.T, b Backend) {
	t.Run("BlobsRoundTrip", func(t *testing.T) { testBlobs(t, b) })
	t.Run("ChunkedUpload", func(t *testing.T) { testChunked(t, b) })
	t.Run("DigestMismatchLeavesNothing", func(t *testing.T) { testMismatch(t, b) })
	t.Run("ManifestsAndTags", func(t *testing.T) { testManifests(t, b) })
	t.Run("IndexAndChildren", func(t *testing.T) { testIndex(t, b) })
	t.Run("Referrers", func(t *testing.T) { testReferrers(t, b) })
	t.Run("MountAndCatalog", func(t *testing.T) { testMountCatalog(t, b) })
	t.Run("Deletes", func(t *testing.T) { testDeletes(t, b) })
	t.Run("GarbageCollection", func(t *testing.T) { testGC(t, b) })
	t.Run("Retention", func(t *testing.T) { testRetention(t, b) })
	t.Run("Scrub", func(t *testing.T) { testScrub(t, b) })
	t.Run("UploadSurvivesRestart", func(t *testing.T) { testRestart(t, b) })
	t.Run("ViewFollowsChanges", func(t *testing.T) { testViewFollows(t, b) })
	t.Run("UploadResumesItsHash", func(t *testing.T) { testResume(t, b) })
	if b.Share != nil {
		t.Run("Replicas", func(t *testing.T) { testReplicas(t, b) })
		t.Run("PullTimesAcrossReplicas", func(t *testing.T) { testPullTimesAcrossReplicas(t, b) })
	}
	if b.Cache != nil {
		t.Run("Dedupe", func(t *testing.T) { testDedupe(t, b) })
		t.Run("DedupeStoresOnce", func(t *testing.T) { testDedupeOnce(t, b) })
		t.Run("DedupeIndexLost", func(t *testing.T) { testDedupeIndexLost(t, b) })
		t.Run("DedupeLostContent", func(t *testing.T) { testDedupeLostContent(t, b) })
		t.Run("StoreWideLookup", func(t *testing.T) { testLookup(t, b) })
	}
	if b.Share != nil {
		t.Run("DedupeReplicas", func(t *testing.T) { testDedupeReplicas(t, b) })
		t.Run("GCRacesPushOnReplica", func(t *testing.T) { testGCRacesPushOnReplica(t, b) })
		t.Run("SoleReplica", func(t *testing.T) { testSoleReplica(t, b) })
	}
}

var ctx = context.Background()

var specsV2 = specs.Versioned{SchemaVersion: 2}

func open(t *testing.T, b Backend) *store.Store {
	t.Helper()
	return New(t, b.New(t), false)
}

// RandomBytes is n random bytes.
func RandomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func push(t *testing.T, st *store.Store, repo, mediaType string, data []byte) ispec.Descriptor {
	t.Helper()
	d := digest.FromBytes(data)
	if _, err := st.PutBlob(ctx, repo, d, bytes.NewReader(data)); err != nil {
		t.Fatalf("PutBlob %s into %s: %v", d, repo, err)
	}
	return ispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

// image pushes a config and a layer made unique by seed and returns the
// manifest that names them.
func image(t *testing.T, st *store.Store, repo, seed string) []byte {
	t.Helper()
	cfg := push(t, st, repo, ispec.MediaTypeImageConfig, []byte(`{"seed":"`+seed+`"}`))
	layer := push(t, st, repo, ispec.MediaTypeImageLayerGzip, []byte("layer of "+seed))
	return mustJSON(t, ispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ispec.MediaTypeImageManifest,
		Config: cfg, Layers: []ispec.Descriptor{layer}})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func putManifest(t *testing.T, st *store.Store, repo, ref string, body []byte) digest.Digest {
	t.Helper()
	res, err := st.PutManifest(ctx, repo, ref, "", body, nil)
	if err != nil {
		t.Fatalf("PutManifest %s:%s: %v", repo, ref, err)
	}
	return res.Digest
}

func readBlob(t *testing.T, st *store.Store, repo string, d digest.Digest) []byte {
	t.Helper()
	f, _, err := st.OpenBlob(ctx, repo, d)
	if err != nil {
		t.Fatalf("OpenBlob %s in %s: %v", d, repo, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testBlobs(t *testing.T, b Backend) {
	st := open(t, b)
	for _, n := range []int{0, 1, 4096, 3<<20 + 17} { // empty, tiny, a page, past a buffer
		data := RandomBytes(t, n)
		d := push(t, st, "app", "x", data).Digest
		info, err := st.StatBlob(ctx, "app", d)
		if err != nil || info.Size != int64(n) {
			t.Fatalf("StatBlob of %d bytes: %+v, %v", n, info, err)
		}
		if got := readBlob(t, st, "app", d); !bytes.Equal(got, data) {
			t.Fatalf("%d bytes pushed, %d different bytes pulled", n, len(got))
		}
	}
	if _, err := st.StatBlob(ctx, "app", digest.FromString("absent")); !errors.Is(err, store.ErrBlobUnknown) {
		t.Fatalf("StatBlob of an absent blob: %v", err)
	}
	if _, err := st.StatBlob(ctx, "nope", digest.FromString("absent")); !errors.Is(err, store.ErrBlobUnknown) {
		t.Fatalf("StatBlob in an absent repository: %v", err)
	}
}

func testChunked(t *testing.T, b Backend) {
	st := open(t, b)
	data := RandomBytes(t, 2<<20+123)
	id, err := st.NewUpload(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	var off int64
	for _, n := range []int{1, 7, 1 << 20, len(data)} {
		end := min(int(off)+n, len(data))
		size, err := st.WriteUpload(ctx, "app", id, off, bytes.NewReader(data[off:end]))
		if err != nil || size != int64(end) {
			t.Fatalf("chunk to %d: size %d, %v", end, size, err)
		}
		off = int64(end)
		if off == int64(len(data)) {
			break
		}
	}
	var oe *store.OffsetError
	if _, err := st.WriteUpload(ctx, "app", id, 5, strings.NewReader("x")); !errors.As(err, &oe) || oe.Size != off {
		t.Fatalf("a chunk at the wrong offset: %v, want an OffsetError at %d", err, off)
	}
	if size, err := st.UploadSize(ctx, "app", id); err != nil || size != off {
		t.Fatalf("UploadSize = %d, %v", size, err)
	}
	d := digest.FromBytes(data)
	if _, err := st.CommitUpload(ctx, "app", id, nil, d); err != nil {
		t.Fatal(err)
	}
	if got := readBlob(t, st, "app", d); !bytes.Equal(got, data) {
		t.Fatal("chunked upload pulled back different")
	}
	if _, err := st.UploadSize(ctx, "app", id); !errors.Is(err, store.ErrUploadUnknown) {
		t.Fatalf("upload still there after its commit: %v", err)
	}
	// A cancelled upload is gone.
	id, _ = st.NewUpload(ctx, "app")
	st.WriteUpload(ctx, "app", id, 0, strings.NewReader("abandoned"))
	if err := st.CancelUpload(ctx, "app", id); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UploadSize(ctx, "app", id); !errors.Is(err, store.ErrUploadUnknown) {
		t.Fatalf("cancelled upload: %v", err)
	}
	for _, bad := range []string{"../x", "nope", strings.Repeat("a", 36)} {
		if _, err := st.UploadSize(ctx, "app", bad); !errors.Is(err, store.ErrUploadUnknown) {
			t.Fatalf("upload id %q: %v", bad, err)
		}
	}
}

func testMismatch(t *testing.T, b Backend) {
	st := open(t, b)
	push(t, st, "app", "x", []byte("keeps the repository"))
	before, _ := st.Repositories(ctx)
	wrong := digest.FromString("something else")
	if _, err := st.PutBlob(ctx, "app", wrong, strings.NewReader("content")); !errors.Is(err, store.ErrDigestMismatch) {
		t.Fatalf("mismatch: %v", err)
	}
	if _, err := st.StatBlob(ctx, "app", wrong); !errors.Is(err, store.ErrBlobUnknown) {
		t.Fatalf("a blob exists under a digest its bytes do not have: %v", err)
	}
	if _, err := st.PutBlob(ctx, "fresh", wrong, strings.NewReader("content")); !errors.Is(err, store.ErrDigestMismatch) {
		t.Fatal(err)
	}
	if after, _ := st.Repositories(ctx); !slices.Equal(before, after) {
		t.Fatalf("a failed push changed the repositories: %v -> %v", before, after)
	}
}

func testManifests(t *testing.T, b Backend) {
	st := open(t, b)
	m1 := image(t, st, "app", "one")
	m2 := image(t, st, "app", "two")
	d1 := putManifest(t, st, "app", "v1", m1)
	got, err := st.GetManifest(ctx, "app", "v1")
	if err != nil || got.Digest != d1 || !bytes.Equal(got.Body, m1) || got.MediaType != ispec.MediaTypeImageManifest {
		t.Fatalf("GetManifest v1 = %+v, %v", got, err)
	}
	// The tag moves; the old manifest stays addressable by digest.
	d2 := putManifest(t, st, "app", "v1", m2)
	if got, _ := st.GetManifest(ctx, "app", "v1"); got.Digest != d2 {
		t.Fatalf("v1 after the move = %s, want %s", got.Digest, d2)
	}
	if _, err := st.GetManifest(ctx, "app", d1.String()); err != nil {
		t.Fatalf("the old manifest is gone after its tag moved: %v", err)
	}
	putManifest(t, st, "app", "latest", m2)
	if tags, _ := st.Tags(ctx, "app"); !slices.Equal(tags, []string{"latest", "v1"}) {
		t.Fatalf("tags = %v", tags)
	}
	// A manifest whose blobs are not here is refused, and changes nothing.
	orphan := mustJSON(t, ispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ispec.MediaTypeImageManifest,
		Config: ispec.Descriptor{MediaType: ispec.MediaTypeImageConfig, Digest: digest.FromString("nope"), Size: 4}})
	if _, err := st.PutManifest(ctx, "app", "v2", "", orphan, nil); !errors.Is(err, store.ErrManifestBlobUnknown) {
		t.Fatalf("manifest with a missing blob: %v", err)
	}
	if _, err := st.GetManifest(ctx, "app", "v2"); !errors.Is(err, store.ErrManifestUnknown) {
		t.Fatalf("a refused manifest got its tag: %v", err)
	}
	for _, ref := range []string{"../etc", "a/b", "-bad"} {
		if _, err := st.GetManifest(ctx, "app", ref); err == nil {
			t.Fatalf("reference %q accepted", ref)
		}
	}
}

func testIndex(t *testing.T, b Backend) {
	st := open(t, b)
	amd := image(t, st, "multi", "amd64")
	arm := image(t, st, "multi", "arm64")
	idx := mustJSON(t, ispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ispec.MediaTypeImageIndex,
		Manifests: []ispec.Descriptor{
			{MediaType: ispec.MediaTypeImageManifest, Digest: digest.FromBytes(amd), Size: int64(len(amd))},
			{MediaType: ispec.MediaTypeImageManifest, Digest: digest.FromBytes(arm), Size: int64(len(arm))},
		}})
	if _, err := st.PutManifest(ctx, "multi", "v1", "", idx, nil); !errors.Is(err, store.ErrManifestBlobUnknown) {
		t.Fatalf("an index before its children: %v", err)
	}
	putManifest(t, st, "multi", digest.FromBytes(amd).String(), amd)
	putManifest(t, st, "multi", digest.FromBytes(arm).String(), arm)
	di := putManifest(t, st, "multi", "v1", idx)
	if got, err := st.GetManifest(ctx, "multi", "v1"); err != nil || got.Digest != di || got.MediaType != ispec.MediaTypeImageIndex {
		t.Fatalf("index = %+v, %v", got, err)
	}
	if err := st.DeleteManifest(ctx, "multi", digest.FromBytes(amd).String()); !errors.Is(err, store.ErrManifestReferenced) {
		t.Fatalf("deleting a child of a live index: %v", err)
	}
}

func testReferrers(t *testing.T, b Backend) {
	st := open(t, b)
	subject := putManifest(t, st, "app", "v1", image(t, st, "app", "s"))
	empty := push(t, st, "app", ispec.MediaTypeEmptyJSON, []byte("{}"))
	ref := func(artifactType, note string) digest.Digest {
		layer := push(t, st, "app", "application/octet-stream", []byte(note))
		return putManifest(t, st, "app", digest.FromBytes(mustJSON(t, referrer(empty, layer, artifactType, subject))).String(),
			mustJSON(t, referrer(empty, layer, artifactType, subject)))
	}
	sig := ref("application/vnd.example.sig", "signature")
	sbom := ref("application/vnd.example.sbom", "sbom")
	all, err := st.Referrers(ctx, "app", subject, "")
	if err != nil || len(all) != 2 {
		t.Fatalf("referrers = %+v, %v", all, err)
	}
	only, _ := st.Referrers(ctx, "app", subject, "application/vnd.example.sbom")
	if len(only) != 1 || only[0].Digest != sbom {
		t.Fatalf("filtered referrers = %+v", only)
	}
	// A new referrer shows at once (the view of the repository moves).
	sig2 := ref("application/vnd.example.sig", "second signature")
	all, _ = st.Referrers(ctx, "app", subject, "application/vnd.example.sig")
	if len(all) != 2 || !slices.ContainsFunc(all, func(d ispec.Descriptor) bool { return d.Digest == sig2 }) ||
		!slices.ContainsFunc(all, func(d ispec.Descriptor) bool { return d.Digest == sig }) {
		t.Fatalf("referrers after a new push = %+v", all)
	}
	if none, err := st.Referrers(ctx, "nowhere", subject, ""); err != nil || len(none) != 0 {
		t.Fatalf("referrers of an absent repository = %+v, %v", none, err)
	}
}

func referrer(config, layer ispec.Descriptor, artifactType string, subject digest.Digest) ispec.Manifest {
	return ispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ispec.MediaTypeImageManifest,
		ArtifactType: artifactType, Config: config, Layers: []ispec.Descriptor{layer},
		Subject: &ispec.Descriptor{MediaType: ispec.MediaTypeImageManifest, Digest: subject, Size: 1}}
}

func testMountCatalog(t *testing.T, b Backend) {
	st := open(t, b)
	data := RandomBytes(t, 100_000)
	d := push(t, st, "base", "x", data).Digest
	if err := st.MountBlob(ctx, "team/app", "base", d); err != nil {
		t.Fatal(err)
	}
	if got := readBlob(t, st, "team/app", d); !bytes.Equal(got, data) {
		t.Fatal("mounted blob differs")
	}
	if err := st.MountBlob(ctx, "other", "base", digest.FromString("absent")); !errors.Is(err, store.ErrBlobUnknown) {
		t.Fatalf("mount of an absent blob: %v", err)
	}
	if repo, err := st.FindBlob(ctx, d); err != nil || (repo != "base" && repo != "team/app") {
		t.Fatalf("FindBlob = %q, %v", repo, err)
	}
	putManifest(t, st, "team", "v1", image(t, st, "team", "nested parent")) // a repository with one inside it
	repos, err := st.Repositories(ctx)
	if err != nil || !slices.Equal(repos, []string{"base", "team", "team/app"}) {
		t.Fatalf("catalog = %v, %v", repos, err)
	}
}

func testDeletes(t *testing.T, b Backend) {
	st := open(t, b)
	m := image(t, st, "app", "d")
	d := putManifest(t, st, "app", "v1", m)
	putManifest(t, st, "app", "v2", m)
	var doc ispec.Manifest
	json.Unmarshal(m, &doc)
	if err := st.DeleteBlob(ctx, "app", doc.Layers[0].Digest); !errors.Is(err, store.ErrBlobReferenced) {
		t.Fatalf("deleting a referenced blob: %v", err)
	}
	if err := st.DeleteManifest(ctx, "app", "v1"); err != nil {
		t.Fatal(err)
	}
	if tags, _ := st.Tags(ctx, "app"); !slices.Equal(tags, []string{"v2"}) {
		t.Fatalf("tags after deleting v1 = %v", tags)
	}
	if err := st.DeleteManifest(ctx, "app", d.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetManifest(ctx, "app", "v2"); !errors.Is(err, store.ErrManifestUnknown) {
		t.Fatalf("a deleted manifest's tag still serves it: %v", err)
	}
	if err := st.DeleteBlob(ctx, "app", doc.Layers[0].Digest); err != nil {
		t.Fatalf("deleting a blob nothing references: %v", err)
	}
	if _, err := st.StatBlob(ctx, "app", doc.Layers[0].Digest); !errors.Is(err, store.ErrBlobUnknown) {
		t.Fatalf("a deleted blob: %v", err)
	}
	if err := st.DeleteManifest(ctx, "app", "v9"); !errors.Is(err, store.ErrManifestUnknown) {
		t.Fatalf("deleting an absent tag: %v", err)
	}
}

func testGC(t *testing.T, b Backend) {
	st := open(t, b)
	keep := putManifest(t, st, "app", "v1", image(t, st, "app", "kept"))
	gone := image(t, st, "app", "collected")
	goneD := putManifest(t, st, "app", "v2", gone)
	st.DeleteManifest(ctx, "app", "v2") // untagged now
	orphan := push(t, st, "app", "x", []byte("nothing refers to me")).Digest
	push(t, st, "empty", "x", []byte("a repository with one orphan"))

	rep, err := st.CollectRepo(ctx, "app", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(rep.Manifests, goneD) || rep.Blobs < 3 {
		t.Fatalf("gc report = %+v; want the untagged manifest and its blobs", rep)
	}
	if _, err := st.GetManifest(ctx, "app", "v1"); err != nil {
		t.Fatalf("gc broke a tagged image: %v", err)
	}
	if _, err := st.GetManifest(ctx, "app", keep.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.StatBlob(ctx, "app", orphan); !errors.Is(err, store.ErrBlobUnknown) {
		t.Fatalf("an orphan survived gc: %v", err)
	}
	// A delay spares what is younger.
	young := push(t, st, "app", "x", []byte("just pushed")).Digest
	st.CollectRepo(ctx, "app", 1<<40)
	if _, err := st.StatBlob(ctx, "app", young); err != nil {
		t.Fatalf("gc removed a blob younger than its delay: %v", err)
	}
	if rep, err := st.CollectRepo(ctx, "empty", 0); err != nil || !rep.RepoRemoved {
		t.Fatalf("empty repository: %+v, %v", rep, err)
	}
	if repos, _ := st.Repositories(ctx); slices.Contains(repos, "empty") {
		t.Fatalf("catalog still lists a removed repository: %v", repos)
	}
}

type noPace struct{}

func (noPace) Wait(context.Context, int) error { return nil }

func testScrub(t *testing.T, b Backend) {
	st := open(t, b)
	putManifest(t, st, "app", "v1", image(t, st, "app", "scrubbed"))
	push(t, st, "app", "x", []byte("unreferenced"))
	rep, err := st.ScrubRepo(ctx, "app", noPace{}, store.HashedInodes{})
	if err != nil || rep.Failed() {
		t.Fatalf("scrub of a clean repository: %+v, %v", rep, err)
	}
	statuses := map[string]int{}
	for _, r := range rep.Results {
		statuses[r.Status]++
	}
	if statuses[store.ScrubOK] != 1 || statuses[store.ScrubUnreferenced] != 1 || rep.Blobs != 3 {
		t.Fatalf("scrub results = %+v (%d blobs hashed)", statuses, rep.Blobs)
	}
}

func testRestart(t *testing.T, b Backend) {
	drv := b.New(t)
	st := New(t, drv, false)
	id, err := st.NewUpload(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	first := RandomBytes(t, 1<<20+5)
	if _, err := st.WriteUpload(ctx, "app", id, 0, bytes.NewReader(first)); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st2 := New(t, b.Reopen(t, drv), false)
	size, err := st2.UploadSize(ctx, "app", id)
	if err != nil || size != int64(len(first)) {
		t.Fatalf("upload size after a restart = %d, %v", size, err)
	}
	second := RandomBytes(t, 333)
	if _, err := st2.WriteUpload(ctx, "app", id, size, bytes.NewReader(second)); err != nil {
		t.Fatal(err)
	}
	// The hash is rebuilt from the upload, not trusted from nothing: a
	// wrong digest is still refused, the right one taken.
	all := append(first, second...)
	if _, err := st2.CommitUpload(ctx, "app", id, nil, digest.FromBytes(first)); !errors.Is(err, store.ErrDigestMismatch) {
		t.Fatalf("commit with the digest of the first half: %v", err)
	}
	id, _ = st2.NewUpload(ctx, "app")
	st2.WriteUpload(ctx, "app", id, 0, bytes.NewReader(all))
	if _, err := st2.CommitUpload(ctx, "app", id, nil, digest.FromBytes(all)); err != nil {
		t.Fatalf("commit after a restart: %v", err)
	}
	if got := readBlob(t, st2, "app", digest.FromBytes(all)); !bytes.Equal(got, all) {
		t.Fatal("resumed upload pulled back different")
	}
}

// testViewFollows: a change of index.json by anyone (another process, a
// tool) is seen by the next read, whatever the store remembered.
func testViewFollows(t *testing.T, b Backend) {
	st := open(t, b)
	m1 := image(t, st, "app", "first")
	m2 := image(t, st, "app", "second")
	putManifest(t, st, "app", digest.FromBytes(m2).String(), m2)
	d1 := putManifest(t, st, "app", "v1", m1)
	if got, _ := st.GetManifest(ctx, "app", "v1"); got.Digest != d1 {
		t.Fatal("setup")
	}
	// Another writer moves v1 behind this store's back.
	idx := ispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ispec.MediaTypeImageIndex,
		Manifests: []ispec.Descriptor{{MediaType: ispec.MediaTypeImageManifest, Digest: digest.FromBytes(m2), Size: int64(len(m2)),
			Annotations: map[string]string{ispec.AnnotationRefName: "v1"}}}}
	if _, err := st.Driver().WriteFile(ctx, "app/index.json", mustJSON(t, idx)); err != nil {
		t.Fatal(err)
	}
	if got, err := st.GetManifest(ctx, "app", "v1"); err != nil || got.Digest != digest.FromBytes(m2) {
		t.Fatalf("v1 after another writer moved it = %s, %v", got.Digest, err)
	}
	if tags, _ := st.Tags(ctx, "app"); !slices.Equal(tags, []string{"v1"}) {
		t.Fatalf("tags = %v", tags)
	}
}

// testReplicas: two stores on one backend push into the same repository
// and move the same tags at once; no tag is lost, index.json stays valid.
func testReplicas(t *testing.T, b Backend) {
	drv := b.New(t)
	a := New(t, drv, false)
	c := New(t, b.Share(t, drv), false)
	const perReplica = 8
	var wg sync.WaitGroup
	errs := make(chan error, 2*perReplica)
	for r, st := range []*store.Store{a, c} {
		wg.Go(func() {
			for i := range perReplica {
				tag := fmt.Sprintf("r%d-%d", r, i)
				body := image(t, st, "shared", tag)
				if _, err := st.PutManifest(ctx, "shared", tag, "", body, []string{"latest"}); err != nil {
					errs <- fmt.Errorf("%s: %w", tag, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	tags, err := a.Tags(ctx, "shared")
	if err != nil || len(tags) != 2*perReplica+1 {
		t.Fatalf("tags after concurrent pushes from two replicas = %v (%d), %v; want %d", tags, len(tags), err, 2*perReplica+1)
	}
}

func testDedupe(t *testing.T, b Backend) {
	drv := b.New(t)
	st, err := store.New(store.Options{Driver: drv, Cache: b.Cache(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Reconcile(ctx); err != nil { // the index is complete: a new store holds nothing
		t.Fatal(err)
	}
	data := RandomBytes(t, 200_000)
	d := push(t, st, "a", "x", data).Digest
	push(t, st, "b", "x", data)
	if err := st.DeleteBlob(ctx, "a", d); err != nil {
		t.Fatal(err)
	}
	if got := readBlob(t, st, "b", d); !bytes.Equal(got, data) {
		t.Fatal("deleting the first copy broke the second")
	}
	push(t, st, "c", "x", data)
	if got := readBlob(t, st, "c", d); !bytes.Equal(got, data) {
		t.Fatal("a push after the delete differs")
	}
}

package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/cache"
	"github.com/pier-oci/pier/store/cache/cachetest"
	"github.com/pier-oci/pier/store/driver"
)

// The dedupe suite: content shared by repositories is stored once (hard
// links locally, zot's placeholders on a bucket), and no delete,
// collection, lost index or second replica ever loses a byte another
// repository still names.

func dedupeStore(t *testing.T, drv driver.Driver, c cache.Cache) *store.Store {
	t.Helper()
	st, err := store.New(store.Options{Driver: drv, Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// placeholders reports whether drv dedupes with placeholders (it cannot
// link).
func placeholders(drv driver.Driver) bool {
	_, ok := drv.(driver.Linker)
	return !ok
}

// stored is how many bytes the keys of d in repos take: an object shared
// by several keys (a hard link) counts once, a placeholder not at all.
func stored(t *testing.T, drv driver.Driver, d digest.Digest, repos ...string) int64 {
	t.Helper()
	seen := map[string]bool{}
	var n int64
	for _, r := range repos {
		info, err := drv.Stat(ctx, r+"/blobs/"+d.Algorithm().String()+"/"+d.Encoded())
		if err != nil {
			continue
		}
		id := info.ID
		if id == "" {
			id = info.Key
		}
		if !seen[id] {
			seen[id] = true
			n += info.Size
		}
	}
	return n
}

func wantBlob(t *testing.T, st *store.Store, repo string, d digest.Digest, want []byte) {
	t.Helper()
	if info, err := st.StatBlob(ctx, repo, d); err != nil || info.Size != int64(len(want)) {
		t.Fatalf("StatBlob %s in %s = %+v, %v; want %d bytes", d, repo, info, err, len(want))
	}
	if got := readBlob(t, st, repo, d); !bytes.Equal(got, want) {
		t.Fatalf("%s in %s: %d bytes read, not the %d pushed", d, repo, len(got), len(want))
	}
}

// testDedupeOnce: the same content pushed to three repositories is stored
// once; removing the copy that holds it, by a delete or a collection,
// leaves it with the others.
func testDedupeOnce(t *testing.T, b Backend) {
	drv := b.New(t)
	st := dedupeStore(t, drv, b.Cache(t))
	if _, err := st.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	data := RandomBytes(t, 300_000)
	repos := []string{"a", "b", "c"}
	var d digest.Digest
	for _, r := range repos {
		d = push(t, st, r, "x", data).Digest
	}
	if n := stored(t, drv, d, repos...); n != int64(len(data)) {
		t.Fatalf("three pushes of %d bytes take %d", len(data), n)
	}
	for _, r := range repos {
		wantBlob(t, st, r, d, data)
	}
	if err := st.DeleteBlob(ctx, "a", d); err != nil {
		t.Fatal(err)
	}
	wantBlob(t, st, "b", d, data)
	wantBlob(t, st, "c", d, data)
	// b's copy is unreferenced: collected, c keeps the content.
	if _, err := st.CollectRepo(ctx, "b", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := st.StatBlob(ctx, "b", d); !errors.Is(err, store.ErrBlobUnknown) {
		t.Fatalf("b's blob after its collection: %v", err)
	}
	wantBlob(t, st, "c", d, data)
	if n := stored(t, drv, d, repos...); n != int64(len(data)) {
		t.Fatalf("after a delete and a collection the content takes %d bytes, want %d", n, len(data))
	}
	// And a mount shares it again.
	if err := st.MountBlob(ctx, "d", "c", d); err != nil {
		t.Fatal(err)
	}
	wantBlob(t, st, "d", d, data)
	if n := stored(t, drv, d, "c", "d"); n != int64(len(data)) {
		t.Fatalf("a mount made a second copy: %d bytes, want %d", n, len(data))
	}
}

// testDedupeIndexLost: a store opened again with an empty index (lost,
// flushed, or zot's) reads every blob; nothing that holds content is
// removed until the index is rebuilt, and then nothing is lost.
func testDedupeIndexLost(t *testing.T, b Backend) {
	drv := b.New(t)
	st := dedupeStore(t, drv, b.Cache(t))
	st.Reconcile(ctx)
	data := RandomBytes(t, 200_000)
	d := push(t, st, "a", "x", data).Digest
	push(t, st, "b", "x", data)
	st.Close()

	drv = b.Reopen(t, drv)
	st = dedupeStore(t, drv, b.Cache(t)) // empty
	wantBlob(t, st, "b", d, data)
	err := st.DeleteBlob(ctx, "a", d)
	if placeholders(drv) {
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("a delete before the index is rebuilt: %v, want ErrUnavailable (it may hold what b's placeholder names)", err)
		}
		if _, err := st.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		err = st.DeleteBlob(ctx, "a", d)
	}
	if err != nil {
		t.Fatal(err)
	}
	wantBlob(t, st, "b", d, data)
}

// testDedupeLostContent: a placeholder whose content is gone (lost to a
// bug elsewhere, or by hand) is an unknown blob, never 0 bytes; the image
// naming it is not served; pushing the blob again heals it.
func testDedupeLostContent(t *testing.T, b Backend) {
	drv := b.New(t)
	if !placeholders(drv) {
		t.Skip("the driver links: no placeholders")
	}
	st := dedupeStore(t, drv, b.Cache(t))
	st.Reconcile(ctx)
	data := RandomBytes(t, 100_000)
	layer := push(t, st, "a", ispec.MediaTypeImageLayer, data)
	push(t, st, "b", ispec.MediaTypeImageLayer, data)
	cfg := push(t, st, "b", ispec.MediaTypeImageConfig, []byte(`{"lost":true}`))
	m := mustJSON(t, ispec.Manifest{Versioned: specsV2, MediaType: ispec.MediaTypeImageManifest, Config: cfg, Layers: []ispec.Descriptor{layer}})
	putManifest(t, st, "b", "v1", m)
	if info, _ := drv.Stat(ctx, "b/blobs/sha256/"+layer.Digest.Encoded()); info.Size != 0 {
		t.Fatalf("b's copy holds %d bytes; want a placeholder", info.Size)
	}
	if err := drv.Delete(ctx, "a/blobs/sha256/"+layer.Digest.Encoded()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.StatBlob(ctx, "b", layer.Digest); !errors.Is(err, store.ErrBlobUnknown) {
		t.Fatalf("StatBlob of a placeholder without content: %v, want ErrBlobUnknown", err)
	}
	if _, _, err := st.OpenBlob(ctx, "b", layer.Digest); !errors.Is(err, store.ErrBlobUnknown) {
		t.Fatalf("OpenBlob of a placeholder without content: %v, want ErrBlobUnknown", err)
	}
	if _, err := st.GetManifest(ctx, "b", "v1"); !errors.Is(err, store.ErrManifestUnknown) {
		t.Fatalf("an image whose layer is lost is served: %v", err)
	}
	push(t, st, "b", ispec.MediaTypeImageLayer, data)
	wantBlob(t, st, "b", layer.Digest, data)
	if _, err := st.GetManifest(ctx, "b", "v1"); err != nil {
		t.Fatalf("after the layer was pushed again: %v", err)
	}
}

// testDedupeReplicas: two replicas on one storage and one index push the
// same layer into many repositories while both collect every repository
// with no delay and half the tags are deleted: every tag whose push was
// acknowledged and that was not deleted pulls whole at the end.
func testDedupeReplicas(t *testing.T, b Backend) {
	drv := b.New(t)
	index := cachetest.NewMemory() // one index for both, as Redis would be
	stores := []*store.Store{dedupeStore(t, drv, index), dedupeStore(t, b.Share(t, drv), index)}
	if _, err := stores[0].Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	layerData := RandomBytes(t, 150_000)
	layerD := digest.FromBytes(layerData)
	const repos = 10
	name := func(i int) string { return fmt.Sprintf("r%d", i) }

	stop := make(chan struct{})
	var collectors sync.WaitGroup
	for _, st := range stores {
		collectors.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				st.CollectRepo(ctx, name(i%repos), 0)
			}
		})
	}
	var pushers sync.WaitGroup
	kept := make([]bool, repos)
	for i := range repos {
		pushers.Go(func() {
			st := stores[i%2]
			repo := name(i)
			cfg := []byte(fmt.Sprintf(`{"repo":%q}`, repo))
			m := mustJSON(t, ispec.Manifest{Versioned: specsV2, MediaType: ispec.MediaTypeImageManifest,
				Config: ispec.Descriptor{MediaType: ispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))},
				Layers: []ispec.Descriptor{{MediaType: ispec.MediaTypeImageLayer, Digest: layerD, Size: int64(len(layerData))}}})
			// A client: on MANIFEST_BLOB_UNKNOWN (collected in between,
			// gcDelay is 0) it sends the blobs again.
			for attempt := 0; attempt < 50; attempt++ {
				if _, err := st.PutBlob(ctx, repo, layerD, bytes.NewReader(layerData)); err != nil {
					continue
				}
				if _, err := st.PutBlob(ctx, repo, digest.FromBytes(cfg), bytes.NewReader(cfg)); err != nil {
					continue
				}
				if _, err := st.PutManifest(ctx, repo, "v1", "", m, nil); err == nil {
					kept[i] = true
					break
				}
			}
			if i%3 == 0 && kept[i] {
				if err := stores[(i+1)%2].DeleteManifest(ctx, repo, "v1"); err == nil {
					kept[i] = false
				}
			}
		})
	}
	pushers.Wait()
	close(stop)
	collectors.Wait()
	for i := range repos {
		stores[i%2].CollectRepo(ctx, name(i), 0)
	}
	for i := range repos {
		if !kept[i] {
			continue
		}
		for _, st := range stores {
			got, err := st.GetManifest(ctx, name(i), "v1")
			if err != nil {
				t.Fatalf("%s:v1 was acknowledged and not deleted, and is gone: %v", name(i), err)
			}
			_ = got
			wantBlob(t, st, name(i), layerD, layerData)
		}
	}
	// Settled: a push on either replica of what is stored already is not
	// stored again.
	push(t, stores[0], "late0", ispec.MediaTypeImageLayer, layerData)
	push(t, stores[1], "late1", ispec.MediaTypeImageLayer, layerData)
	if n := stored(t, drv, layerD, "late0", "late1"); placeholders(drv) && n != 0 {
		t.Errorf("a push on each replica of a layer already stored adds %d bytes, want none (placeholders)", n)
	}
	wantBlob(t, stores[0], "late1", layerD, layerData)
	wantBlob(t, stores[1], "late0", layerD, layerData)
}

// testLookup: with the store-wide lookup on, a blob a repository lacks is
// found in the others the client may read, without anything written, and
// enters the repository with the manifest that names it; one that vanished
// meanwhile fails that push with MANIFEST_BLOB_UNKNOWN. Off, nothing is
// found elsewhere.
func testLookup(t *testing.T, b Backend) {
	drv := b.New(t)
	st, err := store.New(store.Options{Driver: drv, Cache: b.Cache(t), Lookup: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	st.Reconcile(ctx)
	data := RandomBytes(t, 120_000)
	layer := push(t, st, "base", ispec.MediaTypeImageLayer, data)
	wantBlob(t, st, "app", layer.Digest, data)
	if repos, _ := st.Repositories(ctx); len(repos) != 1 {
		t.Fatalf("a HEAD created something: repositories %v", repos)
	}
	noBase := store.WithReadable(ctx, func(repo string) bool { return repo != "base" })
	if _, err := st.StatBlob(noBase, "app", layer.Digest); !errors.Is(err, store.ErrBlobUnknown) {
		t.Fatalf("found in a repository the client may not read: %v", err)
	}

	image := func(repo string, layer ispec.Descriptor) []byte {
		cfg := push(t, st, repo, ispec.MediaTypeImageConfig, []byte(`{"repo":"`+repo+`"}`))
		return mustJSON(t, ispec.Manifest{Versioned: specsV2, MediaType: ispec.MediaTypeImageManifest, Config: cfg, Layers: []ispec.Descriptor{layer}})
	}
	if _, err := st.PutManifest(noBase, "app", "v1", "", image("app", layer), nil); !errors.Is(err, store.ErrManifestBlobUnknown) {
		t.Fatalf("a manifest naming a layer only an unreadable repository holds: %v", err)
	}
	putManifest(t, st, "app", "v1", image("app", layer))
	if _, err := drv.Stat(ctx, "app/blobs/sha256/"+layer.Digest.Encoded()); err != nil {
		t.Fatalf("the layer did not enter the repository with its manifest: %v", err)
	}
	if err := st.DeleteBlob(ctx, "base", layer.Digest); err != nil {
		t.Fatal(err)
	}
	wantBlob(t, st, "app", layer.Digest, data)

	gone := push(t, st, "base", ispec.MediaTypeImageLayer, RandomBytes(t, 1000))
	if _, err := st.StatBlob(ctx, "other", gone.Digest); err != nil {
		t.Fatal(err)
	}
	m := image("other", gone)
	if err := st.DeleteBlob(ctx, "base", gone.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutManifest(ctx, "other", "v1", "", m, nil); !errors.Is(err, store.ErrManifestBlobUnknown) {
		t.Fatalf("a manifest naming a layer that vanished since the HEAD: %v", err)
	}

	off := dedupeStore(t, b.New(t), b.Cache(t))
	push(t, off, "base", ispec.MediaTypeImageLayer, data)
	if _, err := off.StatBlob(ctx, "app", layer.Digest); !errors.Is(err, store.ErrBlobUnknown) {
		t.Fatalf("without the lookup, a blob of another repository: %v", err)
	}
}

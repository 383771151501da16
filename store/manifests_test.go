package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store/oci"
)

func TestManifestByTagAndDigest(t *testing.T) {
	s := newStore(t, false)
	body := imageManifest(t, s, "app", "1")
	d := putManifest(t, s, "app", "v1", body)
	for _, ref := range []string{"v1", d.String()} {
		m, err := s.GetManifest(ctx, "app", ref)
		if err != nil {
			t.Fatalf("get %s: %v", ref, err)
		}
		if !bytes.Equal(m.Body, body) || m.Digest != d || m.MediaType != ispec.MediaTypeImageManifest {
			t.Fatalf("get %s: wrong manifest %s %s", ref, m.Digest, m.MediaType)
		}
	}
	idx := readIndexFile(t, s, "app")
	if len(idx.Manifests) != 1 || idx.Manifests[0].Annotations[ispec.AnnotationRefName] != "v1" {
		t.Fatalf("index.json = %+v", idx.Manifests)
	}
	if _, err := os.Stat(filepath.Join(s.Root(), "app", "oci-layout")); err != nil {
		t.Fatal("no oci-layout file")
	}
}

// Overwriting a tag moves it; the old manifest stays pullable by digest
// until it is deleted (or, later, collected after gcDelay).
func TestTagMoveKeepsOldManifestAddressable(t *testing.T) {
	s := newStore(t, false)
	old := putManifest(t, s, "app", "latest", imageManifest(t, s, "app", "1"))
	cur := putManifest(t, s, "app", "latest", imageManifest(t, s, "app", "2"))
	m, _ := s.GetManifest(ctx, "app", "latest")
	if m.Digest != cur {
		t.Fatalf("latest = %s, want %s", m.Digest, cur)
	}
	if _, err := s.GetManifest(ctx, "app", old.String()); err != nil {
		t.Fatalf("old manifest lost by a tag move: %v", err)
	}
	if got := tagsOf(t, s, "app"); got != "[latest]" {
		t.Fatalf("tags = %s", got)
	}
}

func TestDeleteTagKeepsManifest(t *testing.T) {
	s := newStore(t, false)
	d := putManifest(t, s, "app", "v1", imageManifest(t, s, "app", "1"))
	if err := s.DeleteManifest(ctx, "app", "v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetManifest(ctx, "app", "v1"); !errors.Is(err, ErrManifestUnknown) {
		t.Fatalf("deleted tag still resolves: %v", err)
	}
	if _, err := s.GetManifest(ctx, "app", d.String()); err != nil {
		t.Fatalf("manifest gone with its tag: %v", err)
	}
	if err := s.DeleteManifest(ctx, "app", "v1"); !errors.Is(err, ErrManifestUnknown) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestDeleteDigestRemovesTags(t *testing.T) {
	s := newStore(t, false)
	body := imageManifest(t, s, "app", "1")
	d := putManifest(t, s, "app", "a", body)
	putManifest(t, s, "app", "b", body)
	if err := s.DeleteManifest(ctx, "app", d.String()); err != nil {
		t.Fatal(err)
	}
	if got := tagsOf(t, s, "app"); got != "[]" {
		t.Fatalf("tags after delete = %s", got)
	}
	if _, err := s.GetManifest(ctx, "app", d.String()); !errors.Is(err, ErrManifestUnknown) {
		t.Fatalf("deleted manifest still served: %v", err)
	}
}

// A manifest that references what the repository lacks is refused, and
// nothing is written.
func TestRejectedManifestsChangeNothing(t *testing.T) {
	s := newStore(t, true)
	good := imageManifest(t, s, "app", "1")
	putManifest(t, s, "app", "v1", good)
	layer := pushBlob(t, s, "app", ispec.MediaTypeImageLayer, []byte("a layer"))
	cfg := pushBlob(t, s, "app", ispec.MediaTypeImageConfig, []byte("{}"))
	missing := ispec.Descriptor{MediaType: ispec.MediaTypeImageLayer, Digest: digest.FromString("absent"), Size: 6}
	manifest := func(layers ...ispec.Descriptor) []byte {
		return mustJSON(t, ispec.Manifest{Versioned: specsV2, MediaType: ispec.MediaTypeImageManifest, Config: cfg, Layers: layers})
	}
	wrongSize := layer
	wrongSize.Size++
	huge := append(manifest(layer)[:0:0], manifest(layer)...)
	huge = append(huge[:len(huge)-1], []byte(`,"annotations":{"x":"`+strings.Repeat("x", oci.MaxManifestSize)+`"}}`)...)

	for _, tc := range []struct {
		name       string
		ref, ctype string
		body       []byte
		want       error
	}{
		{"missing layer", "v2", "", manifest(layer, missing), ErrManifestBlobUnknown},
		{"missing child", "v2", "", indexOf(t, []byte("not pushed")), ErrManifestBlobUnknown},
		{"wrong size", "v2", "", manifest(wrongSize), ErrManifestInvalid},
		{"not json", "v2", "", []byte("{"), ErrManifestInvalid},
		{"schema 1", "v2", "", []byte(`{"schemaVersion":1,"name":"x"}`), ErrManifestInvalid},
		{"type mismatch", "v2", ispec.MediaTypeImageIndex, manifest(layer), ErrManifestInvalid},
		{"unknown type", "v2", "application/json", []byte(`{"schemaVersion":2}`), ErrManifestInvalid},
		{"bad descriptor digest", "v2", "", bytes.Replace(manifest(layer), []byte(layer.Digest.Encoded()), []byte("zz"), 1), ErrManifestInvalid},
		{"bad tag", "bad/tag", "", manifest(layer), ErrTagInvalid},
		{"digest mismatch", digest.FromString("x").String(), "", manifest(layer), ErrDigestMismatch},
		{"too large", "v2", "", huge, ErrManifestTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, s.Root())
			_, err := s.PutManifest(ctx, "app", tc.ref, tc.ctype, tc.body, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			assertUnchanged(t, before, snapshot(t, s.Root()))
		})
	}
}

// Layers that are by definition not pushed (foreign, non-distributable)
// and a subject that does not exist yet do not block a push.
func TestManifestExemptions(t *testing.T) {
	s := newStore(t, false)
	cfg := pushBlob(t, s, "app", ispec.MediaTypeImageConfig, []byte("{}"))
	foreign := ispec.Descriptor{MediaType: oci.MediaTypeDockerForeignLayer, Digest: digest.FromString("win"), Size: 3}
	nondist := ispec.Descriptor{MediaType: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", Digest: digest.FromString("nd"), Size: 2}
	subject := &ispec.Descriptor{MediaType: ispec.MediaTypeImageManifest, Digest: digest.FromString("later"), Size: 5}
	body := mustJSON(t, ispec.Manifest{Versioned: specsV2, MediaType: ispec.MediaTypeImageManifest, Config: cfg,
		Layers: []ispec.Descriptor{foreign, nondist}, Subject: subject})
	res, err := s.PutManifest(ctx, "app", "v1", "", body, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Subject != subject.Digest {
		t.Fatalf("subject = %q", res.Subject)
	}
}

func TestIndexChildren(t *testing.T) {
	s := newStore(t, false)
	a := imageManifest(t, s, "app", "amd64")
	b := imageManifest(t, s, "app", "arm64")
	da := putManifest(t, s, "app", digest.FromBytes(a).String(), a)
	putManifest(t, s, "app", digest.FromBytes(b).String(), b)
	idx := indexOf(t, a, b)
	di := putManifest(t, s, "app", "multi", idx)

	if err := s.DeleteManifest(ctx, "app", da.String()); !errors.Is(err, ErrManifestReferenced) {
		t.Fatalf("deleting a child of a live index: %v", err)
	}
	if err := s.DeleteManifest(ctx, "app", di.String()); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteManifest(ctx, "app", da.String()); err != nil {
		t.Fatalf("child after its index is gone: %v", err)
	}
}

func TestBlobDeleteRespectsManifests(t *testing.T) {
	s := newStore(t, false)
	body := imageManifest(t, s, "app", "1")
	d := putManifest(t, s, "app", "v1", body)
	var m ispec.Manifest
	mustUnmarshal(t, body, &m)
	layer := m.Layers[0].Digest
	if err := s.DeleteBlob(ctx, "app", layer); !errors.Is(err, ErrBlobReferenced) {
		t.Fatalf("deleting a layer of a tagged image: %v", err)
	}
	if err := s.DeleteManifest(ctx, "app", d.String()); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteBlob(ctx, "app", layer); err != nil {
		t.Fatalf("deleting an unreferenced layer: %v", err)
	}
	if _, err := s.StatBlob(ctx, "app", layer); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("blob still there: %v", err)
	}
}

// Mounting hard-links; deleting the blob in one repository leaves the
// other's copy intact.
func TestMountSharesAndDeleteIsolates(t *testing.T) {
	s := newStore(t, false)
	desc := pushBlob(t, s, "a", "x", []byte("shared base layer"))
	if err := s.MountBlob(ctx, "b", "a", desc.Digest); err != nil {
		t.Fatal(err)
	}
	fa, _ := os.Stat(s.blobPath("a", desc.Digest))
	fb, _ := os.Stat(s.blobPath("b", desc.Digest))
	if !os.SameFile(fa, fb) {
		t.Fatal("mount did not hard-link")
	}
	if err := s.DeleteBlob(ctx, "a", desc.Digest); err != nil {
		t.Fatal(err)
	}
	assertBlob(t, s, "b", desc.Digest, []byte("shared base layer"))
	if err := s.MountBlob(ctx, "c", "a", desc.Digest); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("mount from a repo without the blob: %v", err)
	}
	if s.repoExists(ctx, "c") {
		t.Fatal("a failed mount created the repository")
	}
}

// A mount never spreads bytes that do not match their digest: it fails
// as from a repository without the blob, so the client uploads a good
// copy instead (the spec's fallback), and the target is left untouched.
func TestMountRefusesADamagedSource(t *testing.T) {
	s := newStore(t, false)
	data := []byte("a base layer that another tool will damage")
	desc := pushBlob(t, s, "a", "x", data)
	damaged := bytes.ToUpper(data)
	if err := os.WriteFile(s.blobPath("a", desc.Digest), damaged, 0o644); err != nil {
		t.Fatal(err)
	}
	pushBlob(t, s, "b", "x", []byte("b exists"))
	before := snapshot(t, s.repoDir("b"))
	if err := s.MountBlob(ctx, "b", "a", desc.Digest); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("mount of a damaged blob: %v, want ErrBlobUnknown", err)
	}
	assertUnchanged(t, before, snapshot(t, s.repoDir("b")))

	// Good bytes written behind pier's back are checked once, then mount.
	if err := os.WriteFile(s.blobPath("a", desc.Digest), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.MountBlob(ctx, "b", "a", desc.Digest); err != nil {
		t.Fatalf("mount of a good copied-in blob: %v", err)
	}
	assertBlob(t, s, "b", desc.Digest, data)
}

func TestReadsHaveNoSideEffects(t *testing.T) {
	s := newStore(t, false)
	before := snapshot(t, s.Root())
	d := digest.FromString("x")
	s.StatBlob(ctx, "ghost", d)
	s.OpenBlob(ctx, "ghost", d)
	s.GetManifest(ctx, "ghost", "latest")
	s.Tags(ctx, "ghost")
	s.Referrers(ctx, "ghost", d, "")
	s.UploadSize(ctx, "ghost", newUploadID())
	s.FindBlob(ctx, d)
	s.Repositories(ctx)
	assertUnchanged(t, before, snapshot(t, s.Root()))
}

func TestReferrers(t *testing.T) {
	s := newStore(t, false)
	subject := putManifest(t, s, "app", "v1", imageManifest(t, s, "app", "1"))
	empty := pushBlob(t, s, "app", ispec.MediaTypeEmptyJSON, []byte("{}"))
	var want []digest.Digest
	for i, at := range []string{"application/vnd.example.sbom", "application/vnd.example.sig", "application/vnd.example.sbom"} {
		body := mustJSON(t, ispec.Manifest{Versioned: specsV2, MediaType: ispec.MediaTypeImageManifest,
			ArtifactType: at, Config: empty, Layers: []ispec.Descriptor{},
			Subject:     &ispec.Descriptor{MediaType: ispec.MediaTypeImageManifest, Digest: subject, Size: 1},
			Annotations: map[string]string{"n": fmt.Sprint(i)}})
		d := digest.FromBytes(body)
		putManifest(t, s, "app", d.String(), body)
		if at == "application/vnd.example.sbom" {
			want = append(want, d)
		}
	}
	all, err := s.Referrers(ctx, "app", subject, "")
	if err != nil || len(all) != 3 {
		t.Fatalf("referrers = %d, %v", len(all), err)
	}
	sboms, _ := s.Referrers(ctx, "app", subject, "application/vnd.example.sbom")
	if len(sboms) != 2 || sboms[0].Digest != want[0] || sboms[1].Digest != want[1] || sboms[0].Annotations["n"] != "0" {
		t.Fatalf("filtered referrers = %+v", sboms)
	}
	none, err := s.Referrers(ctx, "app", digest.FromString("nobody"), "")
	if err != nil || none == nil || len(none) != 0 {
		t.Fatalf("referrers of an unknown subject = %v, %v", none, err)
	}
}

// Many clients pushing the same blob and tag at once: every push succeeds
// or fails cleanly, and the repository ends valid with one entry per tag.
func TestConcurrentPushesOfSameTagAndBlob(t *testing.T) {
	s := newStore(t, true)
	shared := []byte("the same layer for everyone")
	cfg := []byte(`{"config":true}`)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := s.PutBlob(ctx, "app", digest.FromBytes(shared), bytes.NewReader(shared))
			if err != nil {
				errs <- err
				return
			}
			c, err := s.PutBlob(ctx, "app", digest.FromBytes(cfg), bytes.NewReader(cfg))
			if err != nil {
				errs <- err
				return
			}
			body := mustJSON(t, ispec.Manifest{Versioned: specsV2, MediaType: ispec.MediaTypeImageManifest,
				Config:      ispec.Descriptor{MediaType: ispec.MediaTypeImageConfig, Digest: c.Digest, Size: c.Size},
				Layers:      []ispec.Descriptor{{MediaType: ispec.MediaTypeImageLayer, Digest: l.Digest, Size: l.Size}},
				Annotations: map[string]string{"pusher": fmt.Sprint(i % 2)}})
			if _, err := s.PutManifest(ctx, "app", "latest", "", body, nil); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	idx := readIndexFile(t, s, "app")
	tagged := 0
	for _, m := range idx.Manifests {
		if m.Annotations[ispec.AnnotationRefName] == "latest" {
			tagged++
		}
	}
	if tagged != 1 || len(idx.Manifests) != 2 {
		t.Fatalf("index has %d entries, %d tagged latest; want 2 and 1", len(idx.Manifests), tagged)
	}
	assertBlob(t, s, "app", digest.FromBytes(shared), shared)
	entries, _ := os.ReadDir(s.path(uploadsDir("app")))
	if len(entries) != 0 {
		t.Fatalf("%d files left in .uploads", len(entries))
	}
}

func TestCatalog(t *testing.T) {
	s := newStore(t, false)
	for _, r := range []string{"b", "a/x", "a", "c/d/e"} {
		pushBlob(t, s, r, "x", []byte(r))
	}
	os.MkdirAll(filepath.Join(s.Root(), "not-a-repo", "dir"), 0o755)
	os.MkdirAll(filepath.Join(s.Root(), "Invalid_Name"), 0o755)
	os.WriteFile(filepath.Join(s.Root(), "Invalid_Name", "index.json"), []byte("{}"), 0o644)
	repos, err := s.Repositories(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(repos); got != "[a a/x b c/d/e]" {
		t.Fatalf("catalog = %s", got)
	}
}

// A layout written by another tool: tags as full references, an index
// whose children are only in blobs/.
func TestHostedLayout(t *testing.T) {
	s := newStore(t, false)
	a := imageManifest(t, s, "tmp", "a")
	idx := indexOf(t, a)
	dir := filepath.Join(s.Root(), "hosted")
	os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755)
	os.WriteFile(filepath.Join(dir, "oci-layout"), layoutFile, 0o644)
	var m ispec.Manifest
	mustUnmarshal(t, a, &m)
	for _, b := range [][]byte{a, idx} {
		os.WriteFile(filepath.Join(dir, "blobs", "sha256", digest.FromBytes(b).Encoded()), b, 0o644)
	}
	for _, d := range []ispec.Descriptor{m.Config, m.Layers[0]} {
		data, _ := os.ReadFile(s.blobPath("tmp", d.Digest))
		os.WriteFile(filepath.Join(dir, "blobs", "sha256", d.Digest.Encoded()), data, 0o644)
	}
	top := ispec.Index{Versioned: specsV2, Manifests: []ispec.Descriptor{{
		MediaType: ispec.MediaTypeImageIndex, Digest: digest.FromBytes(idx), Size: int64(len(idx)),
		Annotations: map[string]string{ispec.AnnotationRefName: "example.com/app:v1"},
	}}}
	os.WriteFile(filepath.Join(dir, "index.json"), mustJSON(t, top), 0o644)

	if got := tagsOf(t, s, "hosted"); got != "[v1]" {
		t.Fatalf("tags = %s", got)
	}
	if _, err := s.GetManifest(ctx, "hosted", "v1"); err != nil {
		t.Fatal(err)
	}
	child, err := s.GetManifest(ctx, "hosted", digest.FromBytes(a).String())
	if err != nil || !bytes.Equal(child.Body, a) {
		t.Fatalf("child by digest: %v", err)
	}
}

func TestCorruptManifestIsNotServed(t *testing.T) {
	s := newStore(t, false)
	d := putManifest(t, s, "app", "v1", imageManifest(t, s, "app", "1"))
	path := s.blobPath("app", d)
	b, _ := os.ReadFile(path)
	b[10] ^= 1
	os.WriteFile(path, b, 0o644)
	if _, err := s.GetManifest(ctx, "app", "v1"); !errors.Is(err, ErrManifestUnknown) {
		t.Fatalf("corrupt manifest served: %v", err)
	}
}

func mustUnmarshal(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// docker and podman push Docker schema 2 manifests and manifest lists;
// they are stored and served with their own media types.
func TestDockerSchema2(t *testing.T) {
	s := newStore(t, false)
	cfg := pushBlob(t, s, "app", "application/vnd.docker.container.image.v1+json", []byte(`{"os":"linux"}`))
	layer := pushBlob(t, s, "app", "application/vnd.docker.image.rootfs.diff.tar.gzip", []byte("docker layer"))
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"size":%d,"digest":%q},"layers":[{"mediaType":%q,"size":%d,"digest":%q}]}`,
		oci.MediaTypeDockerManifest, cfg.MediaType, cfg.Size, cfg.Digest, layer.MediaType, layer.Size, layer.Digest)
	md := putManifest(t, s, "app", digest.FromString(m).String(), []byte(m))
	list := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[{"mediaType":%q,"size":%d,"digest":%q,"platform":{"architecture":"arm","os":"linux","variant":"v7"}}]}`,
		oci.MediaTypeDockerManifestList, oci.MediaTypeDockerManifest, len(m), md)
	if _, err := s.PutManifest(ctx, "app", "latest", oci.MediaTypeDockerManifestList, []byte(list), nil); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetManifest(ctx, "app", "latest")
	if err != nil || got.MediaType != oci.MediaTypeDockerManifestList || string(got.Body) != list {
		t.Fatalf("list: %v %s", err, got.MediaType)
	}
	got, err = s.GetManifest(ctx, "app", md.String())
	if err != nil || got.MediaType != oci.MediaTypeDockerManifest {
		t.Fatalf("manifest: %v %s", err, got.MediaType)
	}
	// A signed schema 1 manifest is refused clearly.
	_, err = s.PutManifest(ctx, "app", "old", "application/vnd.docker.distribution.manifest.v1+prettyjws", []byte(`{"schemaVersion":1}`), nil)
	if !errors.Is(err, ErrManifestInvalid) {
		t.Fatalf("schema 1: %v", err)
	}
}

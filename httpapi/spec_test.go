package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The spec: a tags list "MAY return fewer than <int> results, but only when
// the total number of tags attached to the repository is less than <int>".
// No page is cut shorter than asked.
func TestTagsListHonoursN(t *testing.T) {
	f := newFixture(t)
	d, body := f.pushImage("app", "v1")
	const total = 10005
	x := ispec.Index{MediaType: ispec.MediaTypeImageIndex}
	x.SchemaVersion = 2
	for i := range total {
		x.Manifests = append(x.Manifests, ispec.Descriptor{MediaType: ispec.MediaTypeImageManifest, Digest: d, Size: int64(len(body)),
			Annotations: map[string]string{ispec.AnnotationRefName: fmt.Sprintf("t%05d", i)}})
	}
	b, _ := json.Marshal(x)
	if err := os.WriteFile(filepath.Join(f.root, "app", "index.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fmt.Sprintf("/v2/app/tags/list?n=%d", total), "/v2/app/tags/list"} {
		resp := f.do("GET", path, nil)
		var tl struct{ Tags []string }
		json.NewDecoder(resp.Body).Decode(&tl)
		if len(tl.Tags) != total || resp.Header.Get("Link") != "" {
			t.Errorf("GET %s on a repository with %d tags: %d tags, Link %q", path, total, len(tl.Tags), resp.Header.Get("Link"))
		}
	}
}

// A push that fails leaves no repository behind: the name stays unknown
// (404 NAME_UNKNOWN) and out of the catalog.
func TestFailedPushCreatesNoRepository(t *testing.T) {
	f := newFixture(t)
	wrong := digest.FromString("other")
	expectError(t, f.do("POST", "/v2/ghost1/blobs/uploads/?digest="+wrong.String(), []byte("data")), http.StatusBadRequest, "DIGEST_INVALID")
	m := []byte(`{"schemaVersion":2,"mediaType":"` + ispec.MediaTypeImageManifest + `","config":{"mediaType":"` + ispec.MediaTypeImageConfig +
		`","digest":"` + digest.FromString("c").String() + `","size":1},"layers":[]}`)
	expectError(t, f.do("PUT", "/v2/ghost2/manifests/v1", m, "Content-Type", ispec.MediaTypeImageManifest), http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN")
	resp := f.do("GET", "/v2/_catalog", nil)
	b, _ := io.ReadAll(resp.Body)
	for _, r := range []string{"ghost1", "ghost2"} {
		if strings.Contains(string(b), r) {
			t.Errorf("a failed push left repository %s in the catalog: %s", r, b)
		}
		expectError(t, f.do("GET", "/v2/"+r+"/tags/list", nil), http.StatusNotFound, "NAME_UNKNOWN")
		if _, err := os.Stat(filepath.Join(f.root, r)); !os.IsNotExist(err) {
			t.Errorf("a failed push left %s on disk: %v", r, err)
		}
	}
}

// A manifest is served whole, whatever Range the client sends: its digest
// and media type describe the document, not a fragment.
func TestManifestIgnoresRange(t *testing.T) {
	f := newFixture(t)
	_, body := f.pushImage("app", "v1")
	for _, rng := range []string{"bytes=0-9", "bytes=0-9,20-29"} {
		for _, method := range []string{"GET", "HEAD"} {
			resp := f.do(method, "/v2/app/manifests/v1", nil, "Range", rng)
			got, _ := io.ReadAll(resp.Body)
			if method == "HEAD" {
				got = body
			}
			if resp.StatusCode != 200 || !bytes.Equal(got, body) || resp.Header.Get("Content-Type") != ispec.MediaTypeImageManifest ||
				resp.Header.Get("Content-Length") != fmt.Sprint(len(body)) {
				t.Errorf("%s manifest with Range %s: %d, Content-Type %q, Content-Length %s (want 200, %s, %d)",
					method, rng, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Length"), ispec.MediaTypeImageManifest, len(body))
			}
		}
	}
}

// A chunk whose Content-Range pier cannot read is refused with the upload's
// state, as for an out-of-order one, so the client can resume.
func TestBadContentRangeTellsWhereTheUploadIs(t *testing.T) {
	f := newFixture(t)
	resp := f.do("POST", "/v2/app/blobs/uploads/", nil)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" {
		t.Fatalf("start upload: %d", resp.StatusCode)
	}
	if resp := f.do("PATCH", loc, []byte("abc"), "Content-Range", "0-2", "Content-Type", "application/octet-stream"); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("first chunk: %d", resp.StatusCode)
	}
	for _, method := range []string{"PATCH", "PUT"} {
		path := loc
		if method == "PUT" {
			path += "?digest=" + digest.FromString("abcdef").String()
		}
		resp = f.do(method, path, []byte("def"), "Content-Range", "bytes 3-5/6", "Content-Type", "application/octet-stream")
		if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || resp.Header.Get("Location") != loc ||
			resp.Header.Get("Range") != "0-2" || resp.Header.Get("Docker-Upload-UUID") == "" {
			t.Errorf("%s with an unreadable Content-Range: %d, Location %q, Range %q", method, resp.StatusCode,
				resp.Header.Get("Location"), resp.Header.Get("Range"))
		}
	}
}

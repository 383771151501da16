package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/oci"
)

type fixture struct {
	t    *testing.T
	root string
	srv  *httptest.Server
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	root := t.TempDir()
	st, err := store.New(store.Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(st, nil))
	t.Cleanup(srv.Close)
	return &fixture{t: t, root: root, srv: srv}
}

// do sends a raw request; path is sent as given (no cleaning), so
// traversal attempts reach the server unchanged.
func (f *fixture) do(method, path string, body []byte, hdr ...string) *http.Response {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+"/", bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	req.URL.Opaque = path
	if body == nil {
		req.Body = nil
		req.ContentLength = 0
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// expectError checks status and that the body is the spec's error JSON
// with the given code.
func expectError(t *testing.T, resp *http.Response, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d", resp.Request.Method, resp.Request.URL, resp.StatusCode, status)
	}
	if resp.Request.Method == http.MethodHead {
		return
	}
	var body struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("error body is not JSON: %v", err)
	}
	if len(body.Errors) != 1 || body.Errors[0].Code != code || body.Errors[0].Message == "" {
		t.Fatalf("errors = %+v, want one %s", body.Errors, code)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error Content-Type %q", ct)
	}
}

func (f *fixture) pushBlob(repo string, data []byte) digest.Digest {
	f.t.Helper()
	d := digest.FromBytes(data)
	resp := f.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), data)
	if resp.StatusCode != http.StatusCreated {
		f.t.Fatalf("push blob: %d", resp.StatusCode)
	}
	return d
}

func (f *fixture) pushImage(repo, tag string) (digest.Digest, []byte) {
	f.t.Helper()
	cfg := []byte(`{"architecture":"arm64"}`)
	layer := []byte("layer of " + repo + tag)
	m := ispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ispec.MediaTypeImageManifest,
		Config: ispec.Descriptor{MediaType: ispec.MediaTypeImageConfig, Digest: f.pushBlob(repo, cfg), Size: int64(len(cfg))},
		Layers: []ispec.Descriptor{{MediaType: ispec.MediaTypeImageLayer, Digest: f.pushBlob(repo, layer), Size: int64(len(layer))}}}
	body, _ := json.Marshal(m)
	resp := f.do("PUT", "/v2/"+repo+"/manifests/"+tag, body, "Content-Type", ispec.MediaTypeImageManifest)
	if resp.StatusCode != http.StatusCreated {
		f.t.Fatalf("push manifest: %d", resp.StatusCode)
	}
	return digest.FromBytes(body), body
}

func listFiles(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.Walk(root, func(p string, _ os.FileInfo, _ error) error {
		out = append(out, p)
		return nil
	})
	sort.Strings(out)
	return out
}

func TestBadNamesAndTraversalChangeNothing(t *testing.T) {
	f := newFixture(t)
	f.pushImage("app", "v1")
	before := listFiles(t, f.root)
	d := digest.FromString("x").String()
	for _, tc := range []struct{ method, path string }{
		{"GET", "/v2/../../etc/blobs/" + d},
		{"GET", "/v2/app/../../../etc/passwd/blobs/" + d},
		{"POST", "/v2/../outside/blobs/uploads/"},
		{"POST", "/v2/%2e%2e/outside/blobs/uploads/"},
		{"POST", "/v2/UPPER/blobs/uploads/"},
		{"PUT", "/v2/app/index.json/manifests/v1"},
		{"POST", "/v2/app/blobs/blobs/uploads/"},
		{"GET", "/v2//app/tags/list"},
		{"HEAD", "/v2/a%00b/manifests/latest"},
		{"DELETE", "/v2/.uploads/blobs/" + d},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			resp := f.do(tc.method, tc.path, nil)
			if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusNotFound {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if resp.StatusCode == http.StatusBadRequest && tc.method != "HEAD" {
				expectError(t, resp, http.StatusBadRequest, "NAME_INVALID")
			}
		})
	}
	if after := listFiles(t, f.root); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("files changed:\nbefore %v\nafter  %v", before, after)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(f.root), "outside")); err == nil {
		t.Fatal("a directory was created outside the root")
	}
}

func TestBadDigestsAndReferences(t *testing.T) {
	f := newFixture(t)
	f.pushImage("app", "v1")
	before := listFiles(t, f.root)
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v2/app/blobs/sha256:../../index.json", 404, "NOT_FOUND"},
		{"GET", "/v2/app/blobs/sha256:..%2F..%2Findex.json", 404, "NOT_FOUND"},
		{"GET", "/v2/app/blobs/sha256:..", 400, "DIGEST_INVALID"},
		{"GET", "/v2/app/blobs/sha256:abc", 400, "DIGEST_INVALID"},
		{"DELETE", "/v2/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", 400, "DIGEST_INVALID"},
		{"GET", "/v2/app/manifests/sha256:baddigest", 400, "DIGEST_INVALID"},
		{"GET", "/v2/app/manifests/-notatag", 400, "MANIFEST_INVALID"},
		{"GET", "/v2/app/referrers/latest", 400, "DIGEST_INVALID"},
		{"POST", "/v2/app/blobs/uploads/?digest=sha256:nothex", 400, "DIGEST_INVALID"},
		{"POST", "/v2/app/blobs/uploads/?mount=bogus&from=other", 400, "DIGEST_INVALID"},
		{"PATCH", "/v2/app/blobs/uploads/../../index.json", 404, "NOT_FOUND"},
		{"PATCH", "/v2/app/blobs/uploads/not-an-upload", 404, "BLOB_UPLOAD_UNKNOWN"},
		{"GET", "/v2/app/blobs/uploads/00000000-0000-4000-8000-000000000000", 404, "BLOB_UPLOAD_UNKNOWN"},
		{"GET", "/v2/app/tags/list?n=-1", 400, "UNSUPPORTED"},
		{"GET", "/v2/app/tags/list?n=x", 400, "UNSUPPORTED"},
		{"GET", "/v2/ghost/tags/list", 404, "NAME_UNKNOWN"},
		{"GET", "/v2/app/manifests/nosuchtag", 404, "MANIFEST_UNKNOWN"},
		{"GET", "/v2/app/blobs/" + digest.FromString("absent").String(), 404, "BLOB_UNKNOWN"},
		{"POST", "/v2/app/manifests/v1", nil405, "UNSUPPORTED"},
		{"GET", "/v3/", 404, "NOT_FOUND"},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			expectError(t, f.do(tc.method, tc.path, nil), tc.status, tc.code)
		})
	}
	if after := listFiles(t, f.root); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("files changed:\nbefore %v\nafter  %v", before, after)
	}
}

const nil405 = http.StatusMethodNotAllowed

func TestHeadHasNoSideEffects(t *testing.T) {
	f := newFixture(t)
	d := digest.FromString("x").String()
	before := listFiles(t, f.root) // the root, and pier's own state
	for _, p := range []string{"/v2/ghost/blobs/" + d, "/v2/ghost/manifests/latest", "/v2/ghost/manifests/" + d} {
		if resp := f.do("HEAD", p, nil); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("HEAD %s: %d", p, resp.StatusCode)
		}
	}
	if files := listFiles(t, f.root); strings.Join(files, "\n") != strings.Join(before, "\n") {
		t.Fatalf("HEAD created files: %v", files)
	}
}

func TestBlobRangesAndHeaders(t *testing.T) {
	f := newFixture(t)
	data := []byte("0123456789abcdef")
	d := f.pushBlob("app", data)
	resp := f.do("GET", "/v2/app/blobs/"+d.String(), nil, "Range", "bytes=4-7")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusPartialContent || string(body) != "4567" {
		t.Fatalf("range: %d %q", resp.StatusCode, body)
	}
	if got := resp.Header.Get("Content-Range"); got != "bytes 4-7/16" {
		t.Fatalf("Content-Range %q", got)
	}
	resp = f.do("GET", "/v2/app/blobs/"+d.String(), nil, "Range", "bytes=100-200")
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("unsatisfiable range: %d", resp.StatusCode)
	}
	resp = f.do("HEAD", "/v2/app/blobs/"+d.String(), nil)
	if resp.StatusCode != 200 || resp.ContentLength != 16 || resp.Header.Get("Docker-Content-Digest") != d.String() ||
		resp.Header.Get("ETag") != `"`+d.String()+`"` {
		t.Fatalf("HEAD headers: %d %d %v", resp.StatusCode, resp.ContentLength, resp.Header)
	}
	resp = f.do("GET", "/v2/app/blobs/"+d.String(), nil, "If-None-Match", `"`+d.String()+`"`)
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d", resp.StatusCode)
	}
}

func TestChunkedUploadProtocol(t *testing.T) {
	f := newFixture(t)
	resp := f.do("POST", "/v2/app/blobs/uploads/", nil)
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != "0-0" || resp.Header.Get("Docker-Upload-UUID") == "" {
		t.Fatalf("POST: %d %v", resp.StatusCode, resp.Header)
	}
	loc := resp.Header.Get("Location")
	resp = f.do("PATCH", loc, []byte("hello "), "Content-Range", "0-5", "Content-Type", "application/octet-stream")
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != "0-5" {
		t.Fatalf("PATCH 1: %d %q", resp.StatusCode, resp.Header.Get("Range"))
	}
	// Out of order: 416 with where the upload really is.
	resp = f.do("PATCH", loc, []byte("world"), "Content-Range", "10-14")
	expectError(t, resp, http.StatusRequestedRangeNotSatisfiable, "BLOB_UPLOAD_INVALID")
	if resp.Header.Get("Range") != "0-5" || resp.Header.Get("Location") == "" {
		t.Fatalf("416 headers: %v", resp.Header)
	}
	// Content-Length disagreeing with Content-Range.
	expectError(t, f.do("PATCH", loc, []byte("wor"), "Content-Range", "6-10"), http.StatusBadRequest, "SIZE_INVALID")
	resp = f.do("GET", loc, nil)
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Range") != "0-5" {
		t.Fatalf("status: %d %q", resp.StatusCode, resp.Header.Get("Range"))
	}
	// Streamed chunk (no Content-Range), then the last chunk with the PUT.
	resp = f.do("PATCH", loc, []byte("wor"))
	if resp.Header.Get("Range") != "0-8" {
		t.Fatalf("stream PATCH: %q", resp.Header.Get("Range"))
	}
	d := digest.FromString("hello world")
	resp = f.do("PUT", loc+"?digest="+d.String(), []byte("ld"))
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Location") != "/v2/app/blobs/"+d.String() ||
		resp.Header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("PUT: %d %v", resp.StatusCode, resp.Header)
	}
	expectError(t, f.do("GET", loc, nil), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
}

func TestWrongDigestDeletesUpload(t *testing.T) {
	f := newFixture(t)
	loc := f.do("POST", "/v2/app/blobs/uploads/", nil).Header.Get("Location")
	f.do("PATCH", loc, []byte("content"))
	wrong := digest.FromString("other")
	expectError(t, f.do("PUT", loc+"?digest="+wrong.String(), nil), http.StatusBadRequest, "DIGEST_INVALID")
	expectError(t, f.do("GET", loc, nil), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
	expectError(t, f.do("HEAD", "/v2/app/blobs/"+wrong.String(), nil), http.StatusNotFound, "BLOB_UNKNOWN")
	expectError(t, f.do("PUT", loc, nil), http.StatusBadRequest, "DIGEST_INVALID") // no ?digest=
}

func TestUploadCancel(t *testing.T) {
	f := newFixture(t)
	loc := f.do("POST", "/v2/app/blobs/uploads/", nil).Header.Get("Location")
	if resp := f.do("DELETE", loc, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("cancel: %d", resp.StatusCode)
	}
	expectError(t, f.do("PATCH", loc, []byte("x")), http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
}

func TestMount(t *testing.T) {
	f := newFixture(t)
	d := f.pushBlob("src", []byte("base layer"))
	resp := f.do("POST", "/v2/dst/blobs/uploads/?mount="+d.String()+"&from=src", nil)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Location") != "/v2/dst/blobs/"+d.String() {
		t.Fatalf("mount: %d %v", resp.StatusCode, resp.Header)
	}
	// Anonymous mount of a known blob.
	if resp := f.do("POST", "/v2/dst2/blobs/uploads/?mount="+d.String(), nil); resp.StatusCode != http.StatusCreated {
		t.Fatalf("anonymous mount: %d", resp.StatusCode)
	}
	// Unknown blob: an ordinary upload session instead.
	unknown := digest.FromString("nowhere")
	resp = f.do("POST", "/v2/dst/blobs/uploads/?mount="+unknown.String()+"&from=src", nil)
	if resp.StatusCode != http.StatusAccepted || !strings.HasPrefix(resp.Header.Get("Location"), "/v2/dst/blobs/uploads/") {
		t.Fatalf("mount fallback: %d %v", resp.StatusCode, resp.Header)
	}
	// A from that cannot be a repository here (not a name, or a name pier
	// reserves for the layout's own files) cannot be mounted from either:
	// an ordinary upload session too, as the spec asks.
	for _, from := range []string{"../src", "org/blobs", "Org/App"} {
		resp = f.do("POST", "/v2/dst/blobs/uploads/?mount="+d.String()+"&from="+from, nil)
		if resp.StatusCode != http.StatusAccepted || !strings.HasPrefix(resp.Header.Get("Location"), "/v2/dst/blobs/uploads/") {
			t.Errorf("mount from %q: %d %v, want 202 and an upload session", from, resp.StatusCode, resp.Header)
		}
	}
}

func TestManifestPutErrors(t *testing.T) {
	f := newFixture(t)
	_, body := f.pushImage("app", "v1")
	big := bytes.Repeat([]byte(" "), oci.MaxManifestSize+1)
	resp := f.do("PUT", "/v2/app/manifests/big", big, "Content-Type", ispec.MediaTypeImageManifest)
	expectError(t, resp, http.StatusRequestEntityTooLarge, "MANIFEST_INVALID")
	missing := bytes.Replace(body, []byte(digest.FromString("layer of appv1").Encoded()), []byte(digest.FromString("gone").Encoded()), 1)
	expectError(t, f.do("PUT", "/v2/app/manifests/v2", missing, "Content-Type", ispec.MediaTypeImageManifest), http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN")
	expectError(t, f.do("PUT", "/v2/app/manifests/v2", []byte("{bad"), "Content-Type", ispec.MediaTypeImageManifest), http.StatusBadRequest, "MANIFEST_INVALID")
	expectError(t, f.do("PUT", "/v2/app/manifests/"+digest.FromString("x").String(), body, "Content-Type", ispec.MediaTypeImageManifest), http.StatusBadRequest, "DIGEST_INVALID")
	expectError(t, f.do("PUT", "/v2/app/manifests/v2", body, "Content-Type", ispec.MediaTypeImageIndex), http.StatusBadRequest, "MANIFEST_INVALID")
}

func TestManifestHeadersAndNegotiation(t *testing.T) {
	f := newFixture(t)
	d, body := f.pushImage("app", "v1")
	resp := f.do("GET", "/v2/app/manifests/v1", nil, "Accept", ispec.MediaTypeImageManifest+", "+ispec.MediaTypeImageIndex)
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !bytes.Equal(got, body) || resp.Header.Get("Content-Type") != ispec.MediaTypeImageManifest ||
		resp.Header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("GET: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := f.do("GET", "/v2/app/manifests/v1", nil, "Accept", "*/*"); resp.StatusCode != 200 {
		t.Fatalf("Accept */*: %d", resp.StatusCode)
	}
	if resp := f.do("GET", "/v2/app/manifests/v1", nil); resp.StatusCode != 200 {
		t.Fatalf("no Accept: %d", resp.StatusCode)
	}
	resp = f.do("GET", "/v2/app/manifests/v1", nil, "Accept", "application/vnd.docker.distribution.manifest.v2+json")
	expectError(t, resp, http.StatusNotFound, "MANIFEST_UNKNOWN")
	resp = f.do("HEAD", "/v2/app/manifests/"+d.String(), nil)
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(body)) {
		t.Fatalf("HEAD: %d %d", resp.StatusCode, resp.ContentLength)
	}
}

func TestTagParamsAndSubjectHeader(t *testing.T) {
	f := newFixture(t)
	_, body := f.pushImage("app", "v1")
	subj := digest.FromBytes(body)
	var m ispec.Manifest
	json.Unmarshal(body, &m)
	m.Subject = &ispec.Descriptor{MediaType: ispec.MediaTypeImageManifest, Digest: subj, Size: int64(len(body))}
	m.ArtifactType = "application/vnd.example.sig"
	sig, _ := json.Marshal(m)
	d := digest.FromBytes(sig)
	resp := f.do("PUT", "/v2/app/manifests/"+d.String()+"?tag=a&tag=b", sig, "Content-Type", ispec.MediaTypeImageManifest)
	if resp.StatusCode != 201 || resp.Header.Get("OCI-Subject") != subj.String() || fmt.Sprint(resp.Header.Values("OCI-Tag")) != "[a b]" {
		t.Fatalf("PUT with subject and tags: %d %v", resp.StatusCode, resp.Header)
	}
	resp = f.do("GET", "/v2/app/referrers/"+subj.String()+"?artifactType=application/vnd.example.sig", nil)
	var idx ispec.Index
	json.NewDecoder(resp.Body).Decode(&idx)
	if resp.Header.Get("OCI-Filters-Applied") != "artifactType" || len(idx.Manifests) != 1 || idx.Manifests[0].Digest != d ||
		resp.Header.Get("Content-Type") != ispec.MediaTypeImageIndex {
		t.Fatalf("referrers: %v %+v", resp.Header, idx)
	}
	resp = f.do("GET", "/v2/app/referrers/"+subj.String()+"?artifactType=application/other", nil)
	idx = ispec.Index{}
	json.NewDecoder(resp.Body).Decode(&idx)
	if resp.StatusCode != 200 || len(idx.Manifests) != 0 || idx.Manifests == nil {
		t.Fatalf("filtered to nothing: %d %+v", resp.StatusCode, idx)
	}
}

func TestPagination(t *testing.T) {
	f := newFixture(t)
	for _, tag := range []string{"c", "a", "e", "b", "d"} {
		f.pushImage("app", tag)
	}
	var pages []string
	path := "/v2/app/tags/list?n=2"
	for path != "" {
		resp := f.do("GET", path, nil)
		var tl struct{ Tags []string }
		json.NewDecoder(resp.Body).Decode(&tl)
		pages = append(pages, strings.Join(tl.Tags, ","))
		path = ""
		if link := resp.Header.Get("Link"); link != "" {
			path = strings.TrimSuffix(strings.TrimPrefix(link, "<"), `>; rel="next"`)
		}
	}
	if got := strings.Join(pages, "|"); got != "a,b|c,d|e" {
		t.Fatalf("pages = %s", got)
	}
	resp := f.do("GET", "/v2/app/tags/list?last=b", nil)
	var tl struct{ Tags []string }
	json.NewDecoder(resp.Body).Decode(&tl)
	if fmt.Sprint(tl.Tags) != "[c d e]" || resp.Header.Get("Link") != "" {
		t.Fatalf("last=b: %v %q", tl.Tags, resp.Header.Get("Link"))
	}
	for _, r := range []string{"zz", "mm/x", "aa"} {
		f.pushBlob(r, []byte(r))
	}
	resp = f.do("GET", "/v2/_catalog?n=2", nil)
	var cat struct{ Repositories []string }
	json.NewDecoder(resp.Body).Decode(&cat)
	if fmt.Sprint(cat.Repositories) != "[aa app]" || !strings.Contains(resp.Header.Get("Link"), "last=app") {
		t.Fatalf("catalog page: %v %q", cat.Repositories, resp.Header.Get("Link"))
	}
}

func TestBaseAndVersionHeader(t *testing.T) {
	f := newFixture(t)
	resp := f.do("GET", "/v2/", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Fatalf("/v2/: %d %v", resp.StatusCode, resp.Header)
	}
	resp = f.do("GET", "/v2/nope/tags/list", nil)
	if resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Fatal("error responses lack the API version header")
	}
}

func TestDeletes(t *testing.T) {
	f := newFixture(t)
	d, body := f.pushImage("app", "v1")
	var m ispec.Manifest
	json.Unmarshal(body, &m)
	expectError(t, f.do("DELETE", "/v2/app/blobs/"+m.Layers[0].Digest.String(), nil), http.StatusMethodNotAllowed, "UNSUPPORTED")
	if resp := f.do("DELETE", "/v2/app/manifests/v1", nil); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("delete tag: %d", resp.StatusCode)
	}
	expectError(t, f.do("GET", "/v2/app/manifests/v1", nil), http.StatusNotFound, "MANIFEST_UNKNOWN")
	if resp := f.do("DELETE", "/v2/app/manifests/"+d.String(), nil); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("delete manifest: %d", resp.StatusCode)
	}
	if resp := f.do("DELETE", "/v2/app/blobs/"+m.Layers[0].Digest.String(), nil); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("delete blob: %d", resp.StatusCode)
	}
	expectError(t, f.do("GET", "/v2/app/blobs/"+m.Layers[0].Digest.String(), nil), http.StatusNotFound, "BLOB_UNKNOWN")
}

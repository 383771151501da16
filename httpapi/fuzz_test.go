package httpapi

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/oci"
	"github.com/pier-oci/pier/store/storetest"
)

// Paths below /v2/ from the network: whatever route accepts names a valid
// repository, and a reference that is one path component. The seed
// corpus (testdata/fuzz) holds traversal attempts.
func FuzzRoute(f *testing.F) {
	for _, s := range []string{"", "_catalog", "a/b/blobs/uploads/", "a/blobs/uploads/123", "a/manifests/v1",
		"a/tags/list", "a/referrers/sha256:" + strings.Repeat("a", 64), "a/blobs/sha256:" + strings.Repeat("a", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		req, err := route(path)
		if err != nil {
			return
		}
		if req.kind != routeBase && req.kind != routeCatalog {
			if oci.ValidateName(req.repo) != nil {
				t.Fatalf("%q routed to invalid repository %q", path, req.repo)
			}
		}
		if strings.Contains(req.ref, "/") {
			t.Fatalf("%q routed with reference %q", path, req.ref)
		}
	})
}

// Content-Range of a chunk: what chunkOf accepts is an ordered range, and
// the body it hands on is never longer than the range says.
func FuzzContentRange(f *testing.F) {
	for _, s := range []string{"0-9", "bytes=0-9", "bytes 10-19", "5-4", "-1-3", "0-18446744073709551615", "9223372036854775807-9223372036854775807", ""} {
		f.Add(s, int64(10), 10)
	}
	f.Fuzz(func(t *testing.T, cr string, contentLength int64, bodyLen int) {
		if bodyLen < 0 || bodyLen > 1<<16 {
			return
		}
		r := httptest.NewRequest(http.MethodPatch, "/v2/a/blobs/uploads/x", bytes.NewReader(make([]byte, bodyLen)))
		r.ContentLength = contentLength
		if cr != "" {
			r.Header.Set("Content-Range", cr)
		}
		c, err := chunkOf(r)
		if err != nil || cr == "" {
			return
		}
		if c.start < 0 || c.end < c.start {
			t.Fatalf("%q accepted as %d-%d", cr, c.start, c.end)
		}
		n, _ := io.Copy(io.Discard, c.body)
		if n > c.end-c.start+1 {
			t.Fatalf("%q: the body gave %d bytes", cr, n)
		}
	})
}

// Range on a blob GET: never a server error, and a single-range 206 is
// exactly those bytes of the blob.
func FuzzBlobRange(f *testing.F) {
	st := storetest.Local(f, f.TempDir(), false, false)
	data := []byte(strings.Repeat("0123456789abcdef", 64))
	d := digest.FromBytes(data)
	if _, err := st.PutBlob(f.Context(), "a", d, bytes.NewReader(data)); err != nil {
		f.Fatal(err)
	}
	h := New(st, nil)
	for _, s := range []string{"bytes=0-9", "bytes=-5", "bytes=1000-", "bytes=0-0,5-9", "bytes=2000-3000", "bytes=9-0", "items=0-1", "bytes=0-18446744073709551616"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rng string) {
		r := httptest.NewRequest(http.MethodGet, "/v2/a/blobs/"+d.String(), nil)
		r.Header.Set("Range", rng)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch w.Code {
		case http.StatusOK, http.StatusRequestedRangeNotSatisfiable:
		case http.StatusPartialContent:
			var first, last, size int
			if _, err := fmt.Sscanf(w.Header().Get("Content-Range"), "bytes %d-%d/%d", &first, &last, &size); err == nil {
				if size != len(data) || !bytes.Equal(w.Body.Bytes(), data[first:last+1]) {
					t.Fatalf("Range %q: Content-Range %q with a different body", rng, w.Header().Get("Content-Range"))
				}
			}
		default:
			t.Fatalf("Range %q: status %d", rng, w.Code)
		}
	})
}

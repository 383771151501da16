package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// BenchmarkManifestGet is the manifest read path in process, without the
// network (go test -bench ManifestGet -cpuprofile ... to see where it
// goes); make bench measures the real server.
func BenchmarkManifestGet(b *testing.B) {
	f := newFixture(b)
	f.pushImage("app", "latest")
	// A view of index.json is kept only once the file is a few seconds
	// old (store's racyWindow): measure the steady state, not the seconds
	// after a push.
	time.Sleep(3 * time.Second)
	api := f.api
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/v2/app/manifests/latest", nil)
		r.Header.Set("Accept", ispec.MediaTypeImageManifest)
		api.ServeHTTP(rec, r)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
}

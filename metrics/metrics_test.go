package metrics

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/jobs"
)

type fakeRoot struct{ st store.Stats }

func (f fakeRoot) Stats() store.Stats { return f.st }

// The exposition parses with Prometheus's own text parser, and says what
// was recorded.
func TestExposition(t *testing.T) {
	m := New([]Root{{Name: "default", Store: fakeRoot{store.Stats{Bytes: 100, Logical: 250, Repos: 3, Counted: true, Free: 1000, Size: 4000, Refusals: 2}}},
		{Name: "/a", Store: fakeRoot{store.Stats{Free: -1, Size: -1}}}}, func() int { return 4 })
	m.Request("manifest", "GET", 200, 20*time.Millisecond, 0, 1234)
	m.Request("manifest", "GET", 200, 30*time.Millisecond, 0, 1000)
	m.Request("upload", "PUT", 201, time.Second, 5000, 0)
	m.GCPass("default", jobs.GCTotals{Tags: 2, Blobs: 5, Bytes: 4096, Took: 2 * time.Second})
	m.ScrubPass("/a", jobs.ScrubResult{OK: 7, Corrupt: 1, Bytes: 99, Started: time.Now().Add(-time.Minute), Finished: time.Now()})

	rec := httptest.NewRecorder()
	m.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("content type %q", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("the exposition does not parse: %v", err)
	}
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		f, ok := families[name]
		if !ok {
			t.Fatalf("no %s", name)
		}
	next:
		for _, mt := range f.Metric {
			for _, l := range mt.Label {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue next
				}
			}
			switch {
			case mt.Counter != nil:
				return mt.Counter.GetValue()
			case mt.Gauge != nil:
				return mt.Gauge.GetValue()
			case mt.Histogram != nil:
				return float64(mt.Histogram.GetSampleCount())
			}
		}
		t.Fatalf("no %s%v", name, labels)
		return 0
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"pier_http_requests_total", map[string]string{"route": "manifest", "method": "GET", "code": "200"}, 2},
		{"pier_http_request_duration_seconds", map[string]string{"route": "upload", "method": "PUT"}, 1},
		{"pier_http_sent_bytes_total", map[string]string{"route": "manifest"}, 2234},
		{"pier_http_received_bytes_total", map[string]string{"route": "upload"}, 5000},
		{"pier_uploads_in_progress", nil, 4},
		{"pier_storage_bytes", map[string]string{"root": "default"}, 100},
		{"pier_dedupe_saved_bytes", map[string]string{"root": "default"}, 150},
		{"pier_storage_free_bytes", map[string]string{"root": "default"}, 1000},
		{"pier_quota_refusals_total", map[string]string{"root": "default"}, 2},
		{"pier_gc_duration_seconds", map[string]string{"root": "default"}, 1},
		{"pier_gc_removed_total", map[string]string{"root": "default", "kind": "tags"}, 2},
		{"pier_gc_freed_bytes_total", map[string]string{"root": "default"}, 4096},
		{"pier_scrub_blobs_total", map[string]string{"root": "/a", "result": "corrupt"}, 1},
		{"pier_gc_freed_bytes_total", map[string]string{"root": "/a"}, 0},
	} {
		if got := value(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, mt := range families["pier_storage_free_bytes"].Metric {
		if mt.Label[0].GetValue() == "/a" {
			t.Error("free space reported for a root whose driver cannot tell")
		}
	}
	if !model.IsValidMetricName("pier_http_requests_total") {
		t.Fatal("names")
	}
}

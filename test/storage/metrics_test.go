package storage

import (
	"errors"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pier-oci/pier/test/internal/ociclient"
	"github.com/pier-oci/pier/test/internal/pierproc"
)

// basicAuth sends a user's credentials with every request.
type basicAuth struct{ user, password string }

func (b basicAuth) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.SetBasicAuth(b.user, b.password)
	return http.DefaultTransport.RoundTrip(r)
}

func as(addr, user string) *ociclient.Client {
	c := ociclient.New(addr)
	if user != "" {
		c.HTTP.Transport = basicAuth{user, user + "-secret"}
	}
	return c
}

// scrape fetches the metrics as user and parses them with Prometheus's
// own text parser.
func scrape(t *testing.T, addr, user string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := as(addr, user).Do("GET", "/metrics", nil, nil, http.StatusOK)
	if err != nil {
		t.Fatalf("GET /metrics as %q: %v", user, err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse as Prometheus text: %v", err)
	}
	return families
}

// value sums the samples of name whose labels include labels (a
// histogram's count).
func value(families map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	f := families[name]
	if f == nil {
		return -1
	}
	sum := 0.0
next:
	for _, m := range f.Metric {
		for _, l := range m.Label {
			if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

// curl /metrics: only admins and accessControl.metrics users may read it;
// it parses with Prometheus's text parser; the counters move as the test
// pushes, pulls, is refused by a quota, and collects.
func TestMetricsEndToEnd(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "htpasswd")
	for _, u := range []string{"ci", "prom", "admin"} {
		cmd := exec.Command(pierproc.Binary(t), "htpasswd", pw, u)
		cmd.Stdin = strings.NewReader(u + "-secret\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("pier htpasswd: %v\n%s", err, out)
		}
	}
	srv := pierproc.Start(t, pierproc.Options{
		Storage: map[string]any{"gcDelay": "2s", "gcInterval": "1s",
			"quota": map[string]any{"perRepository": []any{map[string]any{"repositories": []string{"ci/limited"}, "maxBytes": "10KiB"}}}},
		HTTP: map[string]any{
			"auth": map[string]any{"htpasswd": map[string]any{"path": pw}},
			"accessControl": map[string]any{
				"repositories": map[string]any{"**": map[string]any{
					"policies":        []any{map[string]any{"users": []string{"ci"}, "actions": []string{"read", "create", "update", "delete"}}},
					"anonymousPolicy": []string{"read"},
				}},
				"adminPolicy": map[string]any{"users": []string{"admin"}, "actions": []string{"read"}},
				"metrics":     map[string]any{"users": []string{"prom"}},
			},
		},
		Extra: map[string]any{"extensions": map[string]any{"metrics": map[string]any{"enable": true, "prometheus": map[string]any{"path": "/metrics"}}}},
	})

	// Who may read them.
	for user, want := range map[string]int{"": http.StatusUnauthorized, "ci": http.StatusForbidden} {
		_, err := as(srv.Addr, user).Do("GET", "/metrics", nil, nil, http.StatusOK)
		var se *ociclient.StatusError
		if !errors.As(err, &se) || se.Status != want {
			t.Fatalf("GET /metrics as %q: %v, want %d", user, err, want)
		}
	}
	scrape(t, srv.Addr, "admin")
	before := scrape(t, srv.Addr, "prom")

	ci := as(srv.Addr, "ci")
	layer := random(64 << 10)
	img := ociclient.ImageManifest([]byte(`{"m":1}`), layer)
	if err := ci.PushImage("ci/app", "v1", img); err != nil {
		t.Fatal(err)
	}
	anon := as(srv.Addr, "")
	if _, _, err := anon.GetManifest("ci/app", "v1"); err != nil {
		t.Fatal(err)
	}
	for d := range img.Blobs {
		if _, err := anon.GetBlob("ci/app", d); err != nil {
			t.Fatal(err)
		}
	}
	_, err := ci.PushBlob("ci/limited", random(20<<10))
	var se *ociclient.StatusError
	if !errors.As(err, &se) || se.Status != http.StatusForbidden || !strings.Contains(se.Body, "DENIED") || !strings.Contains(se.Body, "perRepository[0].maxBytes") {
		t.Fatalf("a push past a repository quota: %v; want 403 DENIED naming the limit", err)
	}

	after := scrape(t, srv.Addr, "prom")
	for _, c := range []struct {
		name    string
		labels  map[string]string
		atLeast float64
	}{
		{"pier_http_requests_total", map[string]string{"route": "manifest", "method": "PUT", "code": "201"}, 1},
		{"pier_http_requests_total", map[string]string{"route": "manifest", "method": "GET", "code": "200"}, 1},
		{"pier_http_requests_total", map[string]string{"route": "metrics", "code": "401"}, 1},
		{"pier_http_request_duration_seconds", map[string]string{"route": "blob", "method": "GET"}, 2},
		{"pier_http_sent_bytes_total", map[string]string{"route": "blob"}, float64(len(layer))},
		{"pier_http_received_bytes_total", map[string]string{"route": "upload"}, float64(len(layer))},
		{"pier_quota_refusals_total", map[string]string{"root": "default"}, 1},
		{"pier_storage_bytes", map[string]string{"root": "default"}, float64(len(layer))},
	} {
		still := c.name == "pier_storage_bytes" || c.labels["route"] == "metrics" // counted before the first scrape
		if got := value(after, c.name, c.labels); got < c.atLeast || got <= value(before, c.name, c.labels) && !still {
			t.Errorf("%s%v = %v after (%v before), want at least %v and moved", c.name, c.labels, got, value(before, c.name, c.labels), c.atLeast)
		}
	}
	if value(after, "pier_uploads_in_progress", nil) < 0 || value(after, "pier_storage_free_bytes", map[string]string{"root": "default"}) <= 0 {
		t.Error("no uploads-in-progress or free-space gauge")
	}

	// Collection: the deleted image's blobs go, and the counters say so.
	if err := ci.Delete("ci/app", "manifests", img.Digest.String()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		m := scrape(t, srv.Addr, "prom")
		if value(m, "pier_gc_removed_total", map[string]string{"kind": "blobs"}) >= 2 && value(m, "pier_gc_duration_seconds", nil) >= 1 &&
			value(m, "pier_gc_freed_bytes_total", nil) >= float64(len(layer)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no collection counted in 20 s: removed blobs %v, passes %v", value(m, "pier_gc_removed_total", map[string]string{"kind": "blobs"}), value(m, "pier_gc_duration_seconds", nil))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

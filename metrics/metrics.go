// Package metrics is pier's Prometheus exposition (zot's
// extensions.metrics): requests by route, method and status with their
// latency, bytes in and out, uploads in progress, each root's bytes, free
// space, dedupe savings and quota refusals, and what garbage collection
// and scrub passes did. It is served in the text format, on the
// registry's own port, to clients access control lets read it.
//
// Only client_golang's registry is used, with a text encoder of pier's own
// (text.go): promhttp (compression, content negotiation) and expfmt's
// encoders would make the binary grow by 2.2 MiB rather than 2 MiB.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/jobs"
)

// Root is one storage root as metrics see it.
type Root struct {
	Name  string // "default", or the subpath ("/a")
	Store interface{ Stats() store.Stats }
}

// Metrics holds pier's metrics. Its methods are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	received *prometheus.CounterVec
	sent     *prometheus.CounterVec

	gcTime    *prometheus.HistogramVec
	gcRemoved *prometheus.CounterVec
	gcFreed   *prometheus.CounterVec

	scrubTime  *prometheus.HistogramVec
	scrubFound *prometheus.CounterVec
	scrubBytes *prometheus.CounterVec
}

// New registers pier's metrics: those of the roots are read from them at
// each scrape, uploads (the upload sessions open) too.
func New(roots []Root, uploads func() int) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pier_http_requests_total",
		Help: "Requests served, by route (manifest, blob, upload, tags, referrers, catalog, base, metrics, other), method and status."},
		[]string{"route", "method", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pier_http_request_duration_seconds",
		Help:    "Time to serve a request, to the end of its response body, by route and method.",
		Buckets: []float64{.001, .005, .025, .1, .5, 2.5, 10, 60, 300}}, []string{"route", "method"})
	m.received = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pier_http_received_bytes_total",
		Help: "Request body bytes received, by route."}, []string{"route"})
	m.sent = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pier_http_sent_bytes_total",
		Help: "Response body bytes sent, by route."}, []string{"route"})
	m.gcTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pier_gc_duration_seconds",
		Help:    "Garbage collection passes (their count is the number of passes) and their duration, by root.",
		Buckets: []float64{.1, 1, 10, 60, 600, 3600}}, []string{"root"})
	m.gcRemoved = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pier_gc_removed_total",
		Help: "What garbage collection and retention removed, by root and kind (tags, manifests, referrers, stale_entries, blobs, uploads, repositories)."},
		[]string{"root", "kind"})
	m.gcFreed = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pier_gc_freed_bytes_total",
		Help: "Bytes of blobs and uploads garbage collection removed, by root."}, []string{"root"})
	m.scrubTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pier_scrub_duration_seconds",
		Help:    "Scrub passes (their count is the number of passes) and their duration, by root.",
		Buckets: []float64{1, 10, 60, 600, 3600, 6 * 3600, 24 * 3600}}, []string{"root"})
	m.scrubFound = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pier_scrub_blobs_total",
		Help: "Blob references scrub checked, by root and result (ok, corrupt, missing, unreferenced)."}, []string{"root", "result"})
	m.scrubBytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pier_scrub_read_bytes_total",
		Help: "Bytes scrub read and hashed, by root."}, []string{"root"})
	m.reg.MustRegister(m.requests, m.latency, m.received, m.sent, m.gcTime, m.gcRemoved, m.gcFreed, m.scrubTime, m.scrubFound, m.scrubBytes)
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pier_uploads_in_progress",
		Help: "Upload sessions open."}, func() float64 { return float64(uploads()) }))
	m.reg.MustRegister(&rootCollector{roots: roots})
	for _, r := range roots {
		// Every root's series exist from the start, at 0.
		m.gcFreed.WithLabelValues(r.Name)
		m.scrubBytes.WithLabelValues(r.Name)
	}
	return m
}

// Request implements httpapi.Observer.
func (m *Metrics) Request(route, method string, status int, took time.Duration, received, sent int64) {
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(route, method).Observe(took.Seconds())
	if received > 0 {
		m.received.WithLabelValues(route).Add(float64(received))
	}
	if sent > 0 {
		m.sent.WithLabelValues(route).Add(float64(sent))
	}
}

// GCPass records a finished garbage collection pass of root.
func (m *Metrics) GCPass(root string, t jobs.GCTotals) {
	m.gcTime.WithLabelValues(root).Observe(t.Took.Seconds())
	for kind, n := range map[string]int{"tags": t.Tags, "manifests": t.Manifests, "referrers": t.Referrers, "stale_entries": t.StaleEntries,
		"blobs": t.Blobs, "uploads": t.Uploads, "repositories": t.ReposRemoved} {
		m.gcRemoved.WithLabelValues(root, kind).Add(float64(n))
	}
	m.gcFreed.WithLabelValues(root).Add(float64(t.Bytes))
}

// ScrubPass records a finished scrub pass of root.
func (m *Metrics) ScrubPass(root string, r jobs.ScrubResult) {
	m.scrubTime.WithLabelValues(root).Observe(r.Finished.Sub(r.Started).Seconds())
	for result, n := range map[string]int{"ok": r.OK, "corrupt": r.Corrupt, "missing": r.Missing, "unreferenced": r.Unreferenced} {
		m.scrubFound.WithLabelValues(root, result).Add(float64(n))
	}
	m.scrubBytes.WithLabelValues(root).Add(float64(r.Bytes))
}

// ServeHTTP serves the metrics in Prometheus's text format.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	families, err := m.reg.Gather()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", textContentType)
	writeText(w, families) // an error is the client gone
}

// rootCollector reads each root's room at scrape time.
type rootCollector struct{ roots []Root }

var (
	descBytes    = prometheus.NewDesc("pier_storage_bytes", "Bytes the root's blobs take, each stored object once (hard links counted once).", []string{"root"}, nil)
	descLogical  = prometheus.NewDesc("pier_storage_logical_bytes", "Bytes of the root's blobs counting each repository's in full, as copies would take.", []string{"root"}, nil)
	descSaved    = prometheus.NewDesc("pier_dedupe_saved_bytes", "Bytes dedupe's hard links save on the root: logical bytes less stored bytes.", []string{"root"}, nil)
	descRepos    = prometheus.NewDesc("pier_storage_repositories", "Repositories in the root.", []string{"root"}, nil)
	descCounted  = prometheus.NewDesc("pier_storage_counted", "1 once the count of the root's bytes at start has finished (until then the byte figures are partial).", []string{"root"}, nil)
	descFree     = prometheus.NewDesc("pier_storage_free_bytes", "Bytes free on the root's filesystem.", []string{"root"}, nil)
	descSize     = prometheus.NewDesc("pier_storage_size_bytes", "Size of the root's filesystem.", []string{"root"}, nil)
	descRefusals = prometheus.NewDesc("pier_quota_refusals_total", "Pushes refused by a limit of storage.quota or maxRepos.", []string{"root"}, nil)
)

func (c *rootCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBytes, descLogical, descSaved, descRepos, descCounted, descFree, descSize, descRefusals} {
		ch <- d
	}
}

func (c *rootCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.roots {
		st := r.Store.Stats()
		counted := 0.0
		if st.Counted {
			counted = 1
		}
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(st.Bytes), r.Name)
		ch <- prometheus.MustNewConstMetric(descLogical, prometheus.GaugeValue, float64(st.Logical), r.Name)
		ch <- prometheus.MustNewConstMetric(descSaved, prometheus.GaugeValue, float64(max(st.Logical-st.Bytes, 0)), r.Name)
		ch <- prometheus.MustNewConstMetric(descRepos, prometheus.GaugeValue, float64(st.Repos), r.Name)
		ch <- prometheus.MustNewConstMetric(descCounted, prometheus.GaugeValue, counted, r.Name)
		if st.Free >= 0 {
			ch <- prometheus.MustNewConstMetric(descFree, prometheus.GaugeValue, float64(st.Free), r.Name)
			ch <- prometheus.MustNewConstMetric(descSize, prometheus.GaugeValue, float64(st.Size), r.Name)
		}
		ch <- prometheus.MustNewConstMetric(descRefusals, prometheus.CounterValue, float64(st.Refusals), r.Name)
	}
}

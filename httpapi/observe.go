package httpapi

import (
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/julienschmidt/httprouter"
)

// Observer hears about every request served, for metrics. It is called
// once per request, after the response, from the request's goroutine.
type Observer interface {
	// Request reports one request: the kind of route it addressed (see
	// RouteName), its method and status, how long it took, and the body
	// bytes received and sent.
	Request(route, method string, status int, took time.Duration, received, sent int64)
}

// WithObserver reports every request to o.
func WithObserver(o Observer) Option { return func(a *API) { a.observer = o } }

// WithMetrics serves h at path (GET only), to clients the authorizer lets
// read metrics (Metrics): zot's extensions.metrics.
func WithMetrics(path string, h http.Handler) Option {
	return func(a *API) { a.metricsPath, a.metrics = path, h }
}

// Metrics is the action of reading the registry's metrics.
const Metrics Action = "metrics"

// routeNames are the route kinds as metrics label them.
var routeNames = [...]string{
	routeBase: "base", routeCatalog: "catalog", routeUploadNew: "upload", routeUpload: "upload",
	routeBlob: "blob", routeManifest: "manifest", routeTags: "tags", routeReferrers: "referrers",
}

// routeOther labels requests no route took (not found, bad names) and
// routeMetrics the metrics themselves.
const (
	routeOther   routeKind = -1
	routeMetrics routeKind = -2
)

func routeName(k routeKind) string {
	switch {
	case k == routeMetrics:
		return "metrics"
	case k >= 0 && int(k) < len(routeNames):
		return routeNames[k]
	}
	return "other"
}

// methodName is the method as metrics label it: one pier serves, else
// "other", so that clients inventing methods cannot grow the metrics.
func methodName(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return m
	}
	return "other"
}

// UploadsInProgress is the number of upload sessions open.
func (a *API) UploadsInProgress() int {
	a.uploads.mu.Lock()
	defer a.uploads.mu.Unlock()
	return len(a.uploads.open)
}

// routed tells the request's recorder which route took it.
func routed(w http.ResponseWriter, k routeKind) {
	if rec, ok := w.(*recorder); ok {
		rec.kind = k
	}
}

// countedBody counts the bytes read from a request body.
type countedBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// countBody wraps r's body to count it, when requests are observed.
func (a *API) countBody(r *http.Request) (*http.Request, *countedBody) {
	if a.observer == nil || r.Body == nil || r.Body == http.NoBody {
		return r, nil
	}
	cb := &countedBody{ReadCloser: r.Body}
	counted := new(http.Request)
	*counted = *r
	counted.Body = cb
	return counted, cb
}

// serveMetrics answers GET on the metrics path, to clients allowed to
// read them.
func (a *API) serveMetrics(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	routed(w, routeMetrics)
	if a.auth != nil {
		p, err := a.auth.Authenticate(r)
		if err != nil {
			a.authorize(w, r, request{kind: routeBase})
			return
		}
		if !p.Can("", Metrics) {
			a.deny(w, r, p, "", Metrics)
			return
		}
	}
	a.metrics.ServeHTTP(w, r)
}

// Package httpapi serves the OCI Distribution Spec v1.1 over a Registry:
// routing, status codes, headers, the spec's JSON errors, and streaming
// bodies. It never touches files itself; every name, digest, reference and
// range from the network is checked here or by the store before use.
package httpapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/julienschmidt/httprouter"
	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/oci"
)

// Registry is what the API needs from storage. *store.Store implements it;
// a controller that routes names to several stores (subPaths) will too.
type Registry interface {
	StatBlob(ctx context.Context, repo string, d digest.Digest) (store.BlobInfo, error)
	OpenBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadSeekCloser, store.BlobInfo, error)
	BlobURL(ctx context.Context, repo string, d digest.Digest) (string, store.BlobInfo, error)
	DeleteBlob(ctx context.Context, repo string, d digest.Digest) error
	MountBlob(ctx context.Context, repo, from string, d digest.Digest) error
	FindBlob(ctx context.Context, d digest.Digest) (repo string, err error)

	NewUpload(ctx context.Context, repo string) (string, error)
	UploadSize(ctx context.Context, repo, id string) (int64, error)
	WriteUpload(ctx context.Context, repo, id string, start int64, r io.Reader) (int64, error)
	CommitUpload(ctx context.Context, repo, id string, r io.Reader, d digest.Digest) (store.BlobInfo, error)
	CancelUpload(ctx context.Context, repo, id string) error
	PutBlob(ctx context.Context, repo string, d digest.Digest, r io.Reader) (store.BlobInfo, error)

	GetManifest(ctx context.Context, repo, ref string) (store.Manifest, error)
	PutManifest(ctx context.Context, repo, ref, contentType string, body []byte, tags []string) (store.PutResult, error)
	DeleteManifest(ctx context.Context, repo, ref string) error
	Tags(ctx context.Context, repo string) ([]string, error)
	Referrers(ctx context.Context, repo string, d digest.Digest, artifactType string) ([]ispec.Descriptor, error)
	Repositories(ctx context.Context) ([]string, error)
}

// API is the HTTP handler of the Distribution Spec.
type API struct {
	reg      Registry
	log      *slog.Logger
	router   *httprouter.Router
	inFlight atomic.Int64

	// Options (options.go): who may do what, limits, the audit log.
	auth     Authorizer
	auditLog *slog.Logger
	limits   Limits
	rate     *rateLimiter
	uploads  *sessions
	writing  chan struct{} // a slot per upload being written (Limits.MaxUploads); nil: no cap

	observer    Observer // observe.go; nil: requests are not observed
	metricsPath string
	metrics     http.Handler
}

// InFlight is the number of requests being served right now; background
// jobs (scrub) slow down while it is not zero.
func (a *API) InFlight() int64 { return a.inFlight.Load() }

// New returns the handler serving reg. A nil logger discards request logs.
func New(reg Registry, log *slog.Logger, opts ...Option) *API {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &API{reg: reg, log: log, limits: DefaultLimits()}
	for _, o := range opts {
		o(a)
	}
	a.uploads = newSessions(a.limits)
	if a.limits.MaxUploads > 0 {
		a.writing = make(chan struct{}, a.limits.MaxUploads)
	}
	r := httprouter.New()
	// Repository names contain '/', so everything below /v2/ is one
	// catch-all parsed by route(); httprouter's path "fixes" would turn a
	// bad name into a redirect instead of the spec's error.
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.HandleMethodNotAllowed = false
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		r.Handle(m, "/v2", a.handle)
		r.Handle(m, "/v2/*path", a.handle)
	}
	if a.metrics != nil {
		r.GET(a.metricsPath, a.serveMetrics)
	}
	r.NotFound = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, &apiError{http.StatusNotFound, "NOT_FOUND", "not a Distribution API path", nil})
	})
	a.router = r
	return a
}

// SelfCheckAgent is the User-Agent of pier's own watchdog probe (GET
// /v2/ through its listener). Its requests are logged at debug level and
// are not client traffic: a ping every 15 s would otherwise write thousands
// of log lines a day to an SD card and slow scrub down.
const SelfCheckAgent = "pier-self-check"

// ServeHTTP logs one line per request and stamps the API version header.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	selfCheck := r.URL.Path == "/v2/" && r.Header.Get("User-Agent") == SelfCheckAgent
	if !selfCheck {
		a.inFlight.Add(1)
		defer a.inFlight.Add(-1)
	}
	start := time.Now()
	r = a.watchBody(w, r)
	r, received := a.countBody(r)
	rec := &recorder{ResponseWriter: w, status: http.StatusOK, watch: a.watchWrites(w), kind: routeOther}
	rec.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if ref := a.rate.admit(r); ref != nil {
		writeRefusal(rec, ref)
	} else {
		a.router.ServeHTTP(rec, r)
	}
	rec.watch.handlerDone()
	level := slog.LevelInfo
	switch {
	case rec.status >= 500:
		level = slog.LevelError
	case selfCheck:
		level = slog.LevelDebug
	}
	a.log.LogAttrs(r.Context(), level, "request",
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", rec.status),
		slog.Int64("bytes", rec.bytes),
		slog.Duration("took", time.Since(start)),
		slog.String("remote", r.RemoteAddr),
	)
	if a.observer != nil && !selfCheck {
		var in int64
		if received != nil {
			in = received.n.Load()
		}
		a.observer.Request(routeName(rec.kind), methodName(r.Method), rec.status, time.Since(start), in, rec.bytes)
	}
}

// Route kinds: what a path below /v2/ addresses.
type routeKind int

const (
	routeBase routeKind = iota
	routeCatalog
	routeUploadNew
	routeUpload
	routeBlob
	routeManifest
	routeTags
	routeReferrers
)

// request is a parsed API request: what it addresses, with the repository
// name already validated.
type request struct {
	kind routeKind
	repo string
	ref  string    // digest, tag or upload id, by kind
	who  Principal // the client, once authorized
}

// route parses the path below /v2/. Repository names contain '/', so the
// path is read from its end: the last "/blobs/", "/manifests/"... is the
// route's, and everything before it the name (the grammar keeps "blobs"
// out of names, and a name with "manifests" in it still parses, as the
// greedy patterns of the spec's own regular expressions do). It is plain
// string work: this runs on every request.
func route(path string) (request, *apiError) {
	notFound := &apiError{http.StatusNotFound, "NOT_FOUND", "not a Distribution API path", nil}
	switch path {
	case "":
		return request{kind: routeBase}, nil
	case "_catalog":
		return request{kind: routeCatalog}, nil
	}
	var req request
	if repo, ok := strings.CutSuffix(path, "/tags/list"); ok {
		req = request{kind: routeTags, repo: repo}
	} else if repo, ok := strings.CutSuffix(strings.TrimSuffix(path, "/"), "/blobs/uploads"); ok {
		req = request{kind: routeUploadNew, repo: repo}
	} else {
		i := strings.LastIndexByte(path, '/')
		if i < 0 {
			return request{}, notFound
		}
		rest, ref := path[:i], path[i+1:]
		j := strings.LastIndexByte(rest, '/')
		if j < 0 || ref == "" {
			return request{}, notFound
		}
		repo, kind := rest[:j], rest[j+1:]
		switch kind {
		case "uploads":
			var ok bool
			if req.repo, ok = strings.CutSuffix(repo, "/blobs"); !ok {
				return request{}, notFound
			}
			req.kind, req.ref = routeUpload, ref
		case "blobs":
			req = request{kind: routeBlob, repo: repo, ref: ref}
		case "manifests":
			req = request{kind: routeManifest, repo: repo, ref: ref}
		case "referrers":
			req = request{kind: routeReferrers, repo: repo, ref: ref}
		default:
			return request{}, notFound
		}
	}
	if req.repo == "" {
		return request{}, notFound
	}
	if err := oci.ValidateName(req.repo); err != nil {
		return req, errNameInvalid(err.Error())
	}
	return req, nil
}

func (a *API) handle(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	path := ps.ByName("path")
	if len(path) > 0 {
		path = path[1:]
	}
	req, aerr := route(path)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	routed(w, req.kind)
	var ok bool
	if req.who, ok = a.authorize(w, r, req); !ok {
		return
	}
	// The store looks only where the client may read, when it looks
	// beyond the repository (the store-wide lookup, a mount without from).
	who := req.who
	r = r.WithContext(store.WithReadable(r.Context(), func(repo string) bool { return who.Can(repo, Read) }))
	var err error
	switch m := r.Method; req.kind {
	case routeBase:
		err = onlyMethods(m, http.MethodGet, http.MethodHead)
		if err == nil {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", "2")
			w.WriteHeader(http.StatusOK)
			if m == http.MethodGet {
				io.WriteString(w, "{}")
			}
		}
	case routeCatalog:
		if err = onlyMethods(m, http.MethodGet); err == nil {
			err = a.catalog(w, r, req)
		}
	case routeTags:
		if err = onlyMethods(m, http.MethodGet); err == nil {
			err = a.tagsList(w, r, req)
		}
	case routeReferrers:
		if err = onlyMethods(m, http.MethodGet); err == nil {
			err = a.referrers(w, r, req)
		}
	case routeBlob:
		switch m {
		case http.MethodGet, http.MethodHead:
			err = a.getBlob(w, r, req)
		case http.MethodDelete:
			err = a.deleteBlob(w, r, req)
		default:
			err = methodNotAllowed(m)
		}
	case routeUploadNew:
		if err = onlyMethods(m, http.MethodPost); err == nil {
			err = a.startUpload(w, r, req)
		}
	case routeUpload:
		switch m {
		case http.MethodGet:
			err = a.uploadStatus(w, r, req)
		case http.MethodPatch:
			err = a.patchUpload(w, r, req)
		case http.MethodPut:
			err = a.putUpload(w, r, req)
		case http.MethodDelete:
			err = a.cancelUpload(w, r, req)
		default:
			err = methodNotAllowed(m)
		}
	case routeManifest:
		switch m {
		case http.MethodGet, http.MethodHead:
			err = a.getManifest(w, r, req)
		case http.MethodPut:
			err = a.putManifest(w, r, req)
		case http.MethodDelete:
			err = a.deleteManifest(w, r, req)
		default:
			err = methodNotAllowed(m)
		}
	}
	if err != nil {
		ae := toAPIError(err)
		if ae.Status >= 500 {
			a.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		}
		writeError(w, ae)
	}
}

func onlyMethods(method string, allowed ...string) error {
	for _, m := range allowed {
		if method == m {
			return nil
		}
	}
	return methodNotAllowed(method)
}

func methodNotAllowed(method string) error {
	return errUnsupported("method " + method + " is not allowed on this path")
}

// recorder remembers the status and size of a response for the log line,
// and moves the write deadline back as the body goes out (watch).
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	watch  *writeWatch // nil: writes are not watched
	kind   routeKind   // the route that took the request, for metrics
}

func (r *recorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.watch == nil {
		n, err := r.ResponseWriter.Write(b)
		r.bytes += int64(n)
		return n, err
	}
	written := 0
	for len(b) > 0 { // in pieces, so that a slow client shows progress
		r.watch.moving()
		n, err := r.ResponseWriter.Write(b[:min(len(b), watchedChunk)])
		written += n
		r.bytes += int64(n)
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}

// ReadFrom keeps sendfile working through the recorder: http.ServeContent
// copies an *os.File into the ResponseWriter, and net/http only uses
// sendfile when the writer it sees implements io.ReaderFrom. A watched
// file goes out in one sendfile as before, its progress followed by its
// offset; a streamer in chunks it splices (stream); anything else in
// pieces.
func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	inner := src
	if lr, ok := src.(*io.LimitedReader); ok { // as io.CopyN and ServeContent pass it
		inner = lr.R
		if s, ok := inner.(streamer); ok {
			if rf, ok := r.ResponseWriter.(io.ReaderFrom); ok {
				return r.stream(rf, s, lr)
			}
		}
	}
	if r.watch == nil {
		n, err := io.Copy(r.ResponseWriter, src)
		r.bytes += n
		return n, err
	}
	if f, ok := inner.(*os.File); ok {
		stop := r.watch.follow(f)
		n, err := io.Copy(r.ResponseWriter, src)
		stop()
		r.bytes += n
		return n, err
	}
	var total int64
	buf := make([]byte, watchedChunk)
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			w, werr := r.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// streamer is a reader that sends itself into the connection: the s3
// driver's (driver.StreamReader), which splices the bucket's socket into
// the client's.
type streamer interface {
	StreamTo(w io.ReaderFrom, n int64) (int64, error)
}

// Chunks of a streamed response: each one is a single splice whose
// progress cannot be followed until it ends, so it is kept to what the
// client took in about streamChunkTime the last time, from watchedChunk
// (the pieces a copy is watched in) up to maxStreamChunk, growing at most
// twofold a chunk. A chunk that outlives the write deadline is judged by
// what it sent, as a file's sendfile is (follow).
const (
	maxStreamChunk  = 16 << 20
	streamChunkTime = time.Second
)

// stream sends lr's bytes with s.StreamTo, in chunks the write watch
// moves the deadline between, as it does between the pieces of a copy.
func (r *recorder) stream(rf io.ReaderFrom, s streamer, lr *io.LimitedReader) (int64, error) {
	var total int64
	chunk := int64(watchedChunk)
	for lr.N > 0 {
		if r.watch != nil {
			r.watch.moving()
		}
		start := time.Now()
		n, err := s.StreamTo(rf, min(chunk, lr.N))
		total += n
		lr.N -= n
		r.bytes += n
		if err == io.EOF {
			break
		}
		if err == nil && n == 0 {
			err = io.ErrNoProgress // never loop on a reader that gives nothing
		}
		if err != nil {
			if r.watch != nil && n >= minBodyProgress && errors.Is(err, os.ErrDeadlineExceeded) {
				// A slow client, not a stalled one: the chunk outlived
				// the deadline, but the client took enough of it. The
				// rest goes on in small chunks (the storage's side is
				// asked for it again from here).
				r.watch.renew()
				chunk = watchedChunk
				continue
			}
			return total, err
		}
		chunk = nextStreamChunk(chunk, n, time.Since(start))
	}
	return total, nil
}

// nextStreamChunk is the chunk after one of chunk bytes that sent n in
// took: what the client takes in streamChunkTime at that pace.
func nextStreamChunk(chunk, n int64, took time.Duration) int64 {
	next := 2 * chunk
	if took > 0 {
		next = min(next, int64(float64(n)*streamChunkTime.Seconds()/took.Seconds()))
	}
	return min(max(next, watchedChunk), maxStreamChunk)
}

// Unwrap lets http.ResponseController reach the real writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

package configs

import (
	"net/http"
	"strings"
	"time"

	"github.com/pier-oci/pier/store/oci"
)

// Defaults of the limits against slow, stalled and greedy clients, sized
// for a Raspberry Pi serving a site's network.
const (
	// defaultReadHeaderTimeout cuts a connection whose request line and
	// headers (a few hundred bytes) have not arrived in this time: a
	// slowloris client holds a socket no longer than this.
	defaultReadHeaderTimeout = 10 * time.Second
	// defaultIdleTimeout closes kept-alive connections idle this long
	// (zot's value).
	defaultIdleTimeout = 2 * time.Minute
	// defaultMaxUploadSessions bounds the upload sessions open at once;
	// each holds a file under the root until committed or cancelled.
	defaultMaxUploadSessions = 512
	// defaultUploadIdleTimeout is how long an upload session may go without
	// a request before pier cancels it and frees its space.
	defaultUploadIdleTimeout = 15 * time.Minute
)

// fileRatelimit is zot's http.ratelimit.
type fileRatelimit struct {
	Rate    *int             `json:"rate"`
	Methods []fileMethodRate `json:"methods"`
}

type fileMethodRate struct {
	Method string `json:"method"`
	Rate   int    `json:"rate"`
}

// RatelimitConfig is http.ratelimit: requests per second each client
// address may make, as zot (which limits per address too) reads it. Nil
// in HTTPConfig when absent.
type RatelimitConfig struct {
	// Rate is the limit for every request, 0 for none.
	Rate int
	// Methods are limits for one HTTP method each (upper case), on top of
	// Rate.
	Methods map[string]int
}

// LimitsConfig bounds what one client can take from pier: pier's own
// keys, in the http section.
type LimitsConfig struct {
	// ReadHeaderTimeout bounds the time a client may take to send its
	// request's headers (and a TLS handshake). Default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a kept-alive connection idle this long. Default
	// 2m.
	IdleTimeout time.Duration
	// MaxManifestSize is the largest manifest a push may send, in bytes;
	// a larger one is refused before it is read. Default and most 4 MiB.
	MaxManifestSize int64
	// MaxUploadSessions bounds the blob upload sessions open at once; one
	// client address may hold an eighth of them. Default 512.
	MaxUploadSessions int
	// UploadIdleTimeout is how long an upload session may go without a
	// request before pier cancels it. Default 15m.
	UploadIdleTimeout time.Duration
}

var rateMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}

func (v *validation) limits(h *fileHTTP) {
	if r := h.Ratelimit; r != nil {
		if r.Rate != nil && *r.Rate <= 0 {
			v.fail("http.ratelimit.rate", "must be a number of requests per second, 1 or more")
		}
		for _, m := range r.Methods {
			if !containsFold(rateMethods, m.Method) {
				v.fail("http.ratelimit.methods", "%q is not a method pier serves (GET, HEAD, POST, PUT, PATCH, DELETE)", m.Method)
			}
			if m.Rate <= 0 {
				v.fail("http.ratelimit.methods", "%s: rate must be a number of requests per second, 1 or more", m.Method)
			}
		}
	}
	for key, d := range map[string]*duration{"http.readHeaderTimeout": h.ReadHeaderTimeout, "http.idleTimeout": h.IdleTimeout, "http.uploadIdleTimeout": h.UploadIdleTimeout} {
		if d != nil && *d == 0 {
			v.fail(key, "must be more than 0: without it a stalled client holds its connection or upload forever")
		}
	}
	if n := h.MaxManifestSize; n != nil && (*n < 1024 || *n > oci.MaxManifestSize) {
		v.fail("http.maxManifestSize", "must be from 1024 to %d bytes (4 MiB, the most pier stores)", oci.MaxManifestSize)
	}
	if n := h.MaxUploadSessions; n != nil && *n < 8 {
		v.fail("http.maxUploadSessions", "must be 8 or more (a push opens several uploads at once)")
	}
}

func resolveLimits(h *fileHTTP) LimitsConfig {
	return LimitsConfig{
		ReadHeaderTimeout: time.Duration(value(h.ReadHeaderTimeout, duration(defaultReadHeaderTimeout))),
		IdleTimeout:       time.Duration(value(h.IdleTimeout, duration(defaultIdleTimeout))),
		MaxManifestSize:   value(h.MaxManifestSize, int64(oci.MaxManifestSize)),
		MaxUploadSessions: value(h.MaxUploadSessions, defaultMaxUploadSessions),
		UploadIdleTimeout: time.Duration(value(h.UploadIdleTimeout, duration(defaultUploadIdleTimeout))),
	}
}

func resolveRatelimit(r *fileRatelimit) *RatelimitConfig {
	if r == nil || (r.Rate == nil && len(r.Methods) == 0) {
		return nil
	}
	cfg := &RatelimitConfig{Rate: value(r.Rate, 0)}
	for _, m := range r.Methods {
		if cfg.Methods == nil {
			cfg.Methods = map[string]int{}
		}
		cfg.Methods[strings.ToUpper(m.Method)] = m.Rate
	}
	return cfg
}

func containsFold(list []string, s string) bool {
	for _, l := range list {
		if strings.EqualFold(l, s) {
			return true
		}
	}
	return false
}

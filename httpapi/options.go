package httpapi

import (
	"log/slog"
	"time"

	"github.com/pier-oci/pier/store/oci"
)

// Option configures an API.
type Option func(*API)

// WithAuthorizer makes every request identify its client and be checked
// against what the client may do. Without it every client may do anything.
func WithAuthorizer(az Authorizer) Option { return func(a *API) { a.auth = az } }

// WithAudit writes one line to log for each push, tag move and delete,
// and each write refused, with who did it and from where.
func WithAudit(log *slog.Logger) Option { return func(a *API) { a.auditLog = log } }

// WithLimits bounds what a client may take (manifest size, upload
// sessions).
func WithLimits(l Limits) Option { return func(a *API) { a.limits = l } }

// WithRatelimit limits the requests each client address may make per
// second: rate for every request (0: none), methods for one method each.
func WithRatelimit(rate int, methods map[string]int) Option {
	return func(a *API) { a.rate = newRateLimiter(rate, methods, time.Now) }
}

// Limits bound what one client can take from pier.
type Limits struct {
	// MaxManifestSize is the largest manifest accepted, in bytes; a
	// larger one is refused before its body is read.
	MaxManifestSize int64
	// MaxUploadSessions bounds the upload sessions open at once; one
	// client address may hold an eighth of them.
	MaxUploadSessions int
	// UploadIdleTimeout is how long a session may go without a request
	// before it is cancelled to make room.
	UploadIdleTimeout time.Duration
	// BodyIdleTimeout cuts a request body that delivers less than
	// minBodyProgress bytes in this long, and a response whose client
	// takes less than watchedChunk in this long: a client that stopped
	// sending or reading (or trickles a byte at a time) no longer holds its
	// connection, its upload's file and its buffers forever. It is not a
	// deadline on the whole body: a slow push or pull that keeps moving is
	// never cut. 0: never.
	BodyIdleTimeout time.Duration
	// MaxUploads is how many requests may write blob data at once (chunks,
	// monolithic pushes, the last chunk of an upload). Past it a request is
	// answered 429 TOOMANYREQUESTS with Retry-After at once, rather than
	// queued without bound. 0: no cap.
	MaxUploads int
}

// DefaultLimits are the limits of an API given none.
func DefaultLimits() Limits {
	return Limits{MaxManifestSize: oci.MaxManifestSize, MaxUploadSessions: 512, UploadIdleTimeout: 15 * time.Minute}
}

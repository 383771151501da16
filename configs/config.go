// Package configs reads pier's configuration file.
//
// The format is zot's JSON configuration, so a zot user can point pier at the
// file they already have. As under zot (which reads its config through viper),
// keys match case-insensitively, and every key a zot configuration may hold is
// accepted. Keys whose feature pier does not have yet come back as warnings
// from Parse, or, where ignoring them would be unsafe, from Config.Refusals.
//
// Parsing does no I/O beyond reading the file in Load, and making
// rootDirectory paths absolute against the process's working directory.
package configs

import (
	"encoding/json"
	"log/slog"
	"time"

	"github.com/pier-oci/pier/store/retention"
)

// Config is a parsed, defaulted and validated pier configuration.
type Config struct {
	// DistSpecVersion is the OCI distribution-spec version the file was
	// written for, e.g. "1.1.1". It is informational: pier serves the version
	// it implements whatever the file says, as zot does.
	DistSpecVersion string

	Storage    StorageConfig
	HTTP       HTTPConfig
	Log        LogConfig
	Extensions ExtensionsConfig

	// refusals are the keys set in the file that pier must not ignore; they
	// are worked out once by Parse so the Config stays a plain value.
	refusals []Warning
}

// StoreConfig holds the settings of one storage root. The storage section
// has them for the default store, and every subPaths entry has its own.
type StoreConfig struct {
	// RootDirectory is where images are stored. Parse makes it absolute,
	// relative to the working directory of the process.
	RootDirectory string

	// Commit makes every write reach the disk (fsync) before it is
	// acknowledged. Default false.
	Commit bool

	// Dedupe stores content shared by several repositories once: a blob
	// already under the root is hard-linked rather than copied, found
	// through the BoltDB index <RootDirectory>/cache.db. Default true for
	// the storage section, false for a subpath (as in zot).
	Dedupe bool

	// GC turns on online garbage collection, on zot's schedule (GCInterval,
	// GCOnce): it removes untagged manifests, blobs no live manifest refers
	// to, and idle uploads, while the registry serves. Default true for the
	// storage section, false for a subpath (as in zot).
	GC bool

	// GCDelay is the grace period before GC may remove anything: an
	// untagged manifest is collected GCDelay after it became untagged, an
	// unreferenced blob GCDelay after it entered the repository, an upload
	// GCDelay after its last write, so pushes in flight are never
	// collected. Default 1h when GC is on, 0 when it is off and the key is
	// absent.
	GCDelay time.Duration

	// GCInterval is the time between collections; the first runs
	// GCInterval after start. 0 with GC on means a single pass, GCDelay
	// after start (see GCOnce). Default 1h when GC is on, 0 when it is off
	// and the key is absent.
	GCInterval time.Duration

	// GCOnce reports that GC is on and gcInterval was set to 0 explicitly,
	// which in zot means "collect once, GCDelay after start, then never
	// again".
	GCOnce bool

	// StorageDriver holds zot's remote storage settings (e.g. s3) as they are
	// in the file, nil when absent.
	StorageDriver map[string]any

	// S3 is StorageDriver read, checked and defaulted: the bucket the
	// store's images are in, nil for a store on the local disk. The store
	// keeps its local state (cache.db) in RootDirectory all the same.
	S3 *S3Config

	// CacheDriver holds zot's dedupe cache database settings (dynamodb,
	// redis) as they are in the file, nil when absent; Cache is what pier
	// makes of them.
	CacheDriver map[string]any

	// RemoteCache selects the remote index CacheDriver names instead of the
	// BoltDB file. As in zot, it defaults to true when Dedupe is on and a
	// StorageDriver is set.
	RemoteCache bool

	// Cache is the root's dedupe index: the BoltDB file
	// <RootDirectory>/cache.db (Driver ""), or the Redis or DynamoDB index
	// of RemoteCache and CacheDriver. Meaningful only with Dedupe.
	Cache CacheConfig

	// Retention is zot's retention policies (storage.retention), applied
	// by garbage collection; nil when absent.
	Retention *retention.Config

	// GCTimeWindow, when set, confines collection (and so retention) to a
	// daily window of local time (gcTimeWindow, "01:00-05:00").
	GCTimeWindow *TimeWindow

	// Quota is pier's limits on what pushes may add (storage.quota), with
	// zot's maxRepos.
	Quota QuotaConfig

	// ReadOnly serves the store without writing anything to it: pushes and
	// deletes are refused. It is set by pier's key readOnly (in the storage
	// section or a subPaths entry), and in every store by zot's older
	// http.readOnly. Default false.
	ReadOnly bool

	// StoreWideLookup (pier's key storeWideLookup, default false) lets a
	// HEAD of a blob a repository lacks, and a mount without from, find it
	// in another repository of the root that the client may read (through
	// the dedupe index, so it needs Dedupe); the blob enters the
	// repository when a manifest naming it is pushed. Clients pushing many
	// images with shared layers then upload each layer once. It bends the
	// spec (a deleted blob is still found elsewhere), hence off.
	StoreWideLookup bool

	// RedirectBlobURL (zot's key redirectBlobURL, default false) answers
	// a whole-blob GET on a remote root with a 307 to a presigned URL of
	// the bucket, valid for a while, so the bytes go from the bucket to
	// the client without passing through pier. A HEAD, a ranged GET and a
	// root on local disk are served by pier as always.
	RedirectBlobURL bool
}

// SubPathConfig is the configuration of a store mounted at a subpath; it has
// the same settings as the default store.
type SubPathConfig = StoreConfig

// StorageConfig is the storage section: the settings of the default store,
// and the stores mounted at subpaths.
type StorageConfig struct {
	StoreConfig

	// SubPaths maps a repository path prefix such as "/a" or "/x/y" to the
	// store that holds the repositories below it. Nil when absent.
	SubPaths map[string]SubPathConfig
}

// HTTPConfig is the http section: where and how the registry listens.
type HTTPConfig struct {
	// Address is the IP address or host name to listen on. Default
	// "127.0.0.1", as in zot.
	Address string

	// Port is the TCP port to listen on, as a decimal string ("0" picks a
	// free port). The file may give it as a JSON string, as zot writes it, or
	// as a number. Default "8080", as in zot.
	Port string

	// Realm is the realm named in WWW-Authenticate challenges.
	Realm string

	// TLS makes the registry serve HTTPS. Nil when the file sets no
	// certificate.
	TLS *TLSConfig

	// Compat lists the non-OCI media types zot was told to accept. The only
	// value is "docker2s2"; pier always accepts Docker schema 2, so this
	// changes nothing and is kept only so the file round-trips.
	Compat []string

	// BodyIdleTimeout cuts a request body that stops arriving (less than
	// 4 KiB in this long), or a response its client stops reading (less
	// than 64 KiB in this long), releasing its connection, its file and
	// its buffers. A slow push or pull that keeps moving is never cut. 0:
	// never. pier's key, not zot's. Default 1m.
	BodyIdleTimeout time.Duration

	// MaxConcurrentUploads is how many requests may write blob data at
	// once; past it a request gets 429 TOOMANYREQUESTS with Retry-After.
	// 0: no cap. pier's key, not zot's. Default 16.
	MaxConcurrentUploads int

	// Auth is how clients authenticate (auth.go); nil when the file
	// configures no login.
	Auth *AuthConfig

	// CertIdentity is set when clients present certificates (mutual TLS):
	// a verified client certificate's CommonName is then the client's user
	// name in AccessControl, unless it logged in otherwise.
	CertIdentity bool

	// AccessControl is who may do what to which repository (access.go);
	// nil when absent.
	AccessControl *AccessControlConfig

	// Ratelimit is zot's per-client request rate limit; nil when absent.
	Ratelimit *RatelimitConfig

	// Limits bound slow and greedy clients (limits.go).
	Limits LimitsConfig
}

// TLSConfig names the files that make up the server's TLS setup.
type TLSConfig struct {
	// Cert is the path of the server certificate chain (PEM).
	Cert string
	// Key is the path of the certificate's private key (PEM).
	Key string
	// CACert, when set, is the path of a CA bundle (PEM): the server then
	// requires client certificates signed by it (mutual TLS), as zot does
	// when no other authentication is configured.
	CACert string
}

// LogConfig is the log section.
type LogConfig struct {
	// Level is one of "debug", "info", "warn", "error". zot's zerolog names
	// map onto these: "trace" is "debug", "fatal" and "panic" are "error".
	// Default "info".
	Level string

	// Output is the path of the log file; empty means standard output, as in
	// zot.
	Output string

	// Audit is the path of zot's audit log, empty when absent.
	Audit string
}

// SlogLevel returns Level as a log/slog level.
func (l LogConfig) SlogLevel() slog.Level {
	switch l.Level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// ExtensionsConfig is the extensions section.
type ExtensionsConfig struct {
	// Scrub is the background integrity check; nil when absent.
	Scrub *ScrubConfig

	// Metrics serves Prometheus metrics; nil when absent.
	Metrics *MetricsConfig

	// Other holds, by name, the zot extensions pier does not implement
	// (search, sync, metrics, ui, ...) as they are in the file. Only their
	// presence matters; nil when there are none.
	Other map[string]json.RawMessage
}

// ScrubConfig configures the scrub extension, which re-hashes stored blobs in
// the background, one repository at a time, to catch bit rot.
type ScrubConfig struct {
	// Enable turns scrubbing on. Default true once the scrub section is
	// present, as in zot.
	Enable bool

	// Interval is the time between scrub runs; it is never 0. Default 24h.
	Interval time.Duration

	// MaxBytesPerSecond caps how fast scrub reads, so it does not starve the
	// registry or wear an SD card. 0 means unthrottled. This key is pier's,
	// not zot's. Default 8 MiB/s.
	MaxBytesPerSecond int64
}

// Refusals returns the keys set in the file that pier cannot honour yet and
// that would be unsafe to ignore, such as http.auth: serving without it would
// let anyone push. A caller about to serve must refuse to when this is not
// empty. The keys here are not among Parse's warnings.
func (c *Config) Refusals() []Warning {
	return append([]Warning(nil), c.refusals...)
}

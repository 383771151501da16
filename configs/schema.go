package configs

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// The file* types are zot's configuration schema as pier reads it, one field
// per key. The decoder (keys.go) walks into pointer-to-struct fields and maps
// of them, matching keys against the json tag names case-insensitively, and
// rejects keys these types lack. Every other field is decoded whole, so a
// json.RawMessage or map[string]any field accepts anything below its key:
// that is how pier takes the subtree of a zot feature it does not implement
// without copying zot's schema for it.
//
// Pointers tell "absent" (nil) from "set to the zero value", which the
// defaults need (gcInterval: 0 is not the same as no gcInterval).
//
// Sources: zot's pkg/api/config/config.go, pkg/extensions/config/config.go
// and pkg/cli/server/zot-config-schema.json, across releases, so that files
// written for older and newer zot versions load.

// fileConfig is the whole file.
type fileConfig struct {
	DistSpecVersion *string         `json:"distSpecVersion"`
	Storage         *fileStorage    `json:"storage"`
	HTTP            *fileHTTP       `json:"http"`
	Log             *fileLog        `json:"log"`
	Extensions      *fileExtensions `json:"extensions"`
	Scheduler       json.RawMessage `json:"scheduler"`
	Cluster         json.RawMessage `json:"cluster"`

	// zot's Config struct carries its build information at the top level,
	// so zot accepts these keys in a file; pier does too.
	GoVersion  json.RawMessage `json:"goVersion"`
	Commit     json.RawMessage `json:"commit"`
	ReleaseTag json.RawMessage `json:"releaseTag"`
	BinaryType json.RawMessage `json:"binaryType"`

	// Version is what zot called distSpecVersion before v1.0.
	Version json.RawMessage `json:"version"`
}

// fileStore is what the storage section and each subPaths entry share.
type fileStore struct {
	RootDirectory *string   `json:"rootDirectory"`
	Commit        *bool     `json:"commit"`
	Dedupe        *bool     `json:"dedupe"`
	GC            *bool     `json:"gc"`
	GCDelay       *duration `json:"gcDelay"`
	GCInterval    *duration `json:"gcInterval"`
	RemoteCache   *bool     `json:"remoteCache"`
	ReadOnly      *bool     `json:"readOnly"` // pier's key, not zot's
	// StoreWideLookup is pier's key: see StoreConfig.StoreWideLookup.
	StoreWideLookup *bool `json:"storeWideLookup"`

	StorageDriver       map[string]any  `json:"storageDriver"`
	CacheDriver         map[string]any  `json:"cacheDriver"`
	Retention           *fileRetention  `json:"retention"`    // retention.go
	MaxRepos            *int            `json:"maxRepos"`     // quota.go
	Quota               *fileQuota      `json:"quota"`        // pier's key, quota.go
	GCTimeWindow        *string         `json:"gcTimeWindow"` // retention.go
	RedirectBlobURL     *bool           `json:"redirectBlobURL"`
	GCMaxSchedulerDelay json.RawMessage `json:"gcMaxSchedulerDelay"`
	HydrateBlobOnRead   json.RawMessage `json:"hydrateBlobOnRead"`
}

// fileStorage is the storage section.
type fileStorage struct {
	fileStore

	SubPaths    map[string]*fileStore `json:"subPaths"`
	FastRestart json.RawMessage       `json:"fastRestart"`
}

// fileHTTP is the http section.
type fileHTTP struct {
	Address *string  `json:"address"`
	Port    *port    `json:"port"`
	Realm   *string  `json:"realm"`
	TLS     *fileTLS `json:"tls"`
	Compat  []string `json:"compat"`

	// pier's keys, not zot's.
	BodyIdleTimeout      *duration `json:"bodyIdleTimeout"`
	MaxConcurrentUploads *int      `json:"maxConcurrentUploads"`

	Auth          *fileAuth       `json:"auth"`          // auth.go
	AccessControl accessControl   `json:"accessControl"` // access.go: both of zot's forms
	Ratelimit     *fileRatelimit  `json:"ratelimit"`     // limits.go
	ExternalURL   json.RawMessage `json:"externalURL"`
	AllowOrigin   json.RawMessage `json:"allowOrigin"`
	ReadTimeout   json.RawMessage `json:"readTimeout"`
	WriteTimeout  json.RawMessage `json:"writeTimeout"`

	// pier's own limits (limits.go).
	ReadHeaderTimeout *duration `json:"readHeaderTimeout"`
	IdleTimeout       *duration `json:"idleTimeout"`
	MaxManifestSize   *int64    `json:"maxManifestSize"`
	MaxUploadSessions *int      `json:"maxUploadSessions"`
	UploadIdleTimeout *duration `json:"uploadIdleTimeout"`

	// zot before v2 had these two here.
	ReadOnly        *bool           `json:"readOnly"`
	AllowReadAccess json.RawMessage `json:"allowReadAccess"`
}

// fileTLS is http.tls.
type fileTLS struct {
	Cert   *string `json:"cert"`
	Key    *string `json:"key"`
	CACert *string `json:"cacert"`
}

// fileLog is the log section.
type fileLog struct {
	Level  *string `json:"level"`
	Output *string `json:"output"`
	Audit  *string `json:"audit"`
}

// fileExtensions is the extensions section. Scrub and metrics are typed;
// the rest are zot extensions pier does not implement.
type fileExtensions struct {
	Scrub *fileScrub `json:"scrub"`

	Search   json.RawMessage `json:"search"`
	Sync     json.RawMessage `json:"sync"`
	Metrics  *fileMetrics    `json:"metrics"` // metrics.go
	Lint     json.RawMessage `json:"lint"`
	UI       json.RawMessage `json:"ui"`
	Mgmt     json.RawMessage `json:"mgmt"`
	APIKey   json.RawMessage `json:"apikey"`
	Trust    json.RawMessage `json:"trust"`
	Events   json.RawMessage `json:"events"`
	Quota    json.RawMessage `json:"quota"`
	Metadata json.RawMessage `json:"metadata"` // zot v2 release candidates
}

// fileScrub is extensions.scrub.
type fileScrub struct {
	Enable            *bool     `json:"enable"`
	Interval          *duration `json:"interval"`
	MaxBytesPerSecond *int64    `json:"maxBytesPerSecond"` // pier's key, not zot's
}

// duration is a time.Duration in the file. It is a Go duration string such as
// "1h" or "90s", or an integer count of nanoseconds, which is what zot's
// decoder (mapstructure) accepted too. Durations in the schema are never
// negative, so a negative one is an error here rather than in every caller.
type duration time.Duration

const durationHint = `(use Go durations like "1h", "90s")`

// UnmarshalJSON implements json.Unmarshaler.
func (d *duration) UnmarshalJSON(b []byte) error {
	var v time.Duration

	switch b[0] {
	case '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}

		parsed, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%q is not a duration %s", s, durationHint)
		}

		v = parsed
	default:
		n, err := strconv.ParseInt(string(b), 10, 64)
		if err != nil {
			return fmt.Errorf("%s is not a duration %s", b, durationHint)
		}

		v = time.Duration(n)
	}

	if v < 0 {
		return fmt.Errorf("%s is negative; durations must be 0 or more", b)
	}

	*d = duration(v)

	return nil
}

// port is http.port as it is in the file: zot writes it as a string, and its
// decoder took a number too. Whether it is a valid port is validate's job.
type port string

// UnmarshalJSON implements json.Unmarshaler.
func (p *port) UnmarshalJSON(b []byte) error {
	switch b[0] {
	case '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}

		*p = port(s)
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		*p = port(b)
	default:
		return fmt.Errorf("expected a port number like \"5000\", got %s", b)
	}

	return nil
}

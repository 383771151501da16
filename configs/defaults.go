package configs

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"time"
)

// Defaults for keys absent from the file. Where zot has a default, pier uses
// zot's (pkg/api/config/config.go New, pkg/cli/server/root.go
// applyDefaultValues), so a zot file means the same thing to both.
const (
	defaultDistSpecVersion = "1.1.1" // the distribution-spec version pier implements
	defaultAddress         = "127.0.0.1"
	defaultPort            = "8080"
	defaultLogLevel        = "info" // zot's is debug; too chatty for an SD card
	defaultGCDelay         = time.Hour
	defaultGCInterval      = time.Hour
	defaultScrubInterval   = 24 * time.Hour
	// defaultScrubRate keeps a scrub from saturating an SD card, which reads
	// at 20-90 MB/s, while the registry serves.
	defaultScrubRate = 8 << 20
	// defaultBodyIdleTimeout is long enough for any link that still moves,
	// short enough that a stalled client lets go of its upload soon.
	defaultBodyIdleTimeout = time.Minute
	// defaultMaxUploads is sized for a Raspberry Pi: an upload being
	// written holds up to 1.5 MiB of buffers, so 16 hold 24 MiB of the
	// packaged unit's 64 MiB, and an SD card writes no faster for more.
	// docker pushes 5 layers at once, podman and skopeo about as many.
	defaultMaxUploads = 16
)

// resolve builds the Config a validated file describes, applying defaults.
func resolve(f *fileConfig) (*Config, error) {
	cfg := &Config{
		DistSpecVersion: value(f.DistSpecVersion, defaultDistSpecVersion),
		HTTP:            resolveHTTP(f.HTTP),
		Log:             resolveLog(f.Log),
		Extensions:      resolveExtensions(f.Extensions),
	}

	if f.Extensions != nil {
		m, err := resolveMetrics(f.Extensions.Metrics)
		if err != nil {
			return nil, err
		}
		cfg.Extensions.Metrics = m
	}

	storage, err := resolveStorage(f.Storage)
	if err != nil {
		return nil, err
	}

	cfg.Storage = storage

	// zot before v2 had the read-only switch under http, for the whole
	// registry: every root.
	if f.HTTP != nil && deref(f.HTTP.ReadOnly) {
		cfg.Storage.ReadOnly = true
		for name, sub := range cfg.Storage.SubPaths {
			sub.ReadOnly = true
			cfg.Storage.SubPaths[name] = sub
		}
	}

	return cfg, nil
}

func resolveStorage(s *fileStorage) (StorageConfig, error) {
	// zot starts the storage section from dedupe and gc on, but decodes
	// each subpath into a zero value, so a subpath has them off unless it
	// says otherwise.
	global, err := resolveStore("storage", &s.fileStore, true, true)
	if err != nil {
		return StorageConfig{}, err
	}

	storage := StorageConfig{StoreConfig: global}

	if s.SubPaths != nil {
		storage.SubPaths = make(map[string]SubPathConfig, len(s.SubPaths))

		for name, sub := range s.SubPaths {
			resolved, err := resolveStore("storage.subPaths."+name, sub, false, false)
			if err != nil {
				return StorageConfig{}, err
			}

			storage.SubPaths[name] = resolved
		}
	}

	return storage, nil
}

// resolveStore applies defaults to one store. key is its key path, for errors.
func resolveStore(key string, s *fileStore, gcDefault, dedupeDefault bool) (StoreConfig, error) {
	root, err := filepath.Abs(*s.RootDirectory)
	if err != nil {
		return StoreConfig{}, fmt.Errorf("%s.rootDirectory: make %q absolute: %w", key, *s.RootDirectory, err)
	}

	store := StoreConfig{
		RootDirectory: root,
		Commit:        value(s.Commit, false),
		Dedupe:        value(s.Dedupe, dedupeDefault),
		GC:            value(s.GC, gcDefault),
		StorageDriver: s.StorageDriver,
		S3:            (&validation{}).storageDriver(key, s.StorageDriver), // validated
		CacheDriver:   s.CacheDriver,
		ReadOnly:      value(s.ReadOnly, false),

		StoreWideLookup: value(s.StoreWideLookup, false),
		RedirectBlobURL: value(s.RedirectBlobURL, false),
	}

	// The GC timings default only when GC is on; with GC off zot leaves an
	// absent delay or interval at 0.
	var delayDefault, intervalDefault time.Duration
	if store.GC {
		delayDefault, intervalDefault = defaultGCDelay, defaultGCInterval
	}

	if store.Retention, err = resolveRetention(key, s.Retention); err != nil {
		return StoreConfig{}, err
	}
	if store.Quota, err = resolveQuota(key, s.Quota, s.MaxRepos); err != nil {
		return StoreConfig{}, err
	}
	if s.GCTimeWindow != nil {
		if store.GCTimeWindow, err = parseTimeWindow(key+".gcTimeWindow", *s.GCTimeWindow); err != nil {
			return StoreConfig{}, err
		}
	}

	store.GCDelay = time.Duration(value(s.GCDelay, duration(delayDefault)))
	store.GCInterval = time.Duration(value(s.GCInterval, duration(intervalDefault)))
	store.GCOnce = store.GC && s.GCInterval != nil && *s.GCInterval == 0

	// Remote storage usually goes with a remote dedupe cache, so zot turns
	// remoteCache on for it unless told otherwise.
	store.RemoteCache = value(s.RemoteCache, store.Dedupe && s.StorageDriver != nil)

	return store, nil
}

func resolveHTTP(h *fileHTTP) HTTPConfig {
	if h == nil {
		h = &fileHTTP{}
	}

	cfg := HTTPConfig{
		Address:       value(h.Address, defaultAddress),
		Port:          defaultPort,
		Realm:         value(h.Realm, ""),
		Compat:        h.Compat,
		Auth:          resolveAuth(h.Auth),
		AccessControl: h.AccessControl.cfg,
		Ratelimit:     resolveRatelimit(h.Ratelimit),
		Limits:        resolveLimits(h),

		BodyIdleTimeout:      time.Duration(value(h.BodyIdleTimeout, duration(defaultBodyIdleTimeout))),
		MaxConcurrentUploads: value(h.MaxConcurrentUploads, defaultMaxUploads),
	}

	if h.Port != nil {
		n, _ := strconv.Atoi(string(*h.Port)) // validated
		cfg.Port = strconv.Itoa(n)            // "05000" and 5000 both become "5000"
	}

	// zot serves HTTPS only when a certificate is set; "tls": {} is plain HTTP.
	if t := h.TLS; t != nil && (deref(t.Cert) != "" || deref(t.Key) != "") {
		cfg.TLS = &TLSConfig{Cert: deref(t.Cert), Key: deref(t.Key), CACert: deref(t.CACert)}
		cfg.CertIdentity = cfg.TLS.CACert != ""
	}

	return cfg
}

func resolveLog(l *fileLog) LogConfig {
	if l == nil {
		l = &fileLog{}
	}

	level, _ := logLevel(value(l.Level, defaultLogLevel)) // validated

	return LogConfig{Level: level, Output: deref(l.Output), Audit: deref(l.Audit)}
}

func resolveExtensions(e *fileExtensions) ExtensionsConfig {
	if e == nil {
		return ExtensionsConfig{}
	}

	var cfg ExtensionsConfig

	if s := e.Scrub; s != nil {
		cfg.Scrub = &ScrubConfig{
			Enable:            value(s.Enable, true),
			Interval:          scrubInterval(s.Interval),
			MaxBytesPerSecond: value(s.MaxBytesPerSecond, defaultScrubRate),
		}
	}

	others := map[string]json.RawMessage{
		"search": e.Search, "sync": e.Sync, "lint": e.Lint,
		"ui": e.UI, "mgmt": e.Mgmt, "apikey": e.APIKey, "trust": e.Trust,
		"events": e.Events, "quota": e.Quota, "metadata": e.Metadata,
	}

	for name, raw := range others {
		if raw == nil {
			continue
		}

		if cfg.Other == nil {
			cfg.Other = map[string]json.RawMessage{}
		}

		cfg.Other[name] = raw
	}

	return cfg
}

// value returns *p, or def when the key was absent.
func value[T any](p *T, def T) T {
	if p == nil {
		return def
	}

	return *p
}

// scrubInterval is the configured scrub interval; absent or 0 means the
// default, as in zot.
func scrubInterval(d *duration) time.Duration {
	if d == nil || *d == 0 {
		return defaultScrubInterval
	}
	return time.Duration(*d)
}

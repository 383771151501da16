// Package roots opens the storage roots of a configuration (the default
// root and its subPaths): a driver, a dedupe index and a store each,
// routed behind one controller. pier serve and the offline commands (gc,
// scrub, export, import) open them the same way.
package roots

import (
	"fmt"
	"log/slog"
	"slices"

	"github.com/pier-oci/pier/configs"
	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/backend"
	"github.com/pier-oci/pier/store/budget"
	"github.com/pier-oci/pier/store/jobs"
)

// Root is one storage root of the config: the default one (Key "") or a
// subpath ("/a"), with its settings and, once opened, its store.
type Root struct {
	Key   string
	Cfg   configs.StoreConfig
	Store *store.Store
}

// List lists the config's storage roots, the default first, subpaths in
// key order.
func List(cfg *configs.Config) []Root {
	out := []Root{{Key: "", Cfg: cfg.Storage.StoreConfig}}
	keys := make([]string, 0, len(cfg.Storage.SubPaths))
	for k := range cfg.Storage.SubPaths {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		out = append(out, Root{Key: k, Cfg: cfg.Storage.SubPaths[k]})
	}
	return out
}

// Open opens every root of the config, each under its process lock
// (a read-only root gets none: nothing may be written there), and routes
// them behind one controller. readOnly opens them all read-only, for jobs
// that only read and may run beside a serving pier. close releases them.
// Whether a root is read-only is decided once, by its driver.
func Open(cfg *configs.Config, log *slog.Logger, readOnly bool) (rs []Root, ctl *store.Controller, close func(), err error) {
	var closers []func()
	close = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	rs = List(cfg)
	subs := map[string]*store.Store{}
	manifests := store.NewManifestBudget() // memory is the process's, whatever root it serves
	chunks := backend.NewChunkBudget()
	for i := range rs {
		r := &rs[i]
		r.Store, err = openStore(r, readOnly, log, manifests, chunks)
		if err != nil {
			close()
			return nil, nil, nil, fmt.Errorf("%s: %w", Name(r.Key), err)
		}
		st := r.Store
		closers = append(closers, func() { st.Close() })
		if r.Key != "" {
			subs[r.Key] = r.Store
		}
	}
	return rs, store.NewController(rs[0].Store, subs), close, nil
}

// openStore opens one root: its driver (local or s3), its dedupe index,
// its store (store/backend).
func openStore(r *Root, readOnly bool, log *slog.Logger, manifests, chunks *budget.Budget) (*store.Store, error) {
	rlog := log.With("root", Name(r.Key))
	st, err := backend.Open(r.Cfg, backend.Options{ReadOnly: readOnly, Logger: rlog, Manifests: manifests, Chunks: chunks, TrackPulls: r.Cfg.Retention.UsesPulls()})
	if err == nil && st.ReadOnly() && !readOnly && !r.Cfg.ReadOnly {
		// Meant for a write-protected stick, but also what a root
		// outside /var/lib/pier looks like under the packaged unit's
		// ProtectSystem=strict: say so, since every push will fail.
		log.Warn("storage root is on a read-only filesystem: serving it read-only, pushes and deletes are refused; "+
			"if it should be writable under systemd, add it to ReadWritePaths= (systemctl edit pier)",
			"root", Name(r.Key), "dir", r.Cfg.RootDirectory)
	}
	if err != nil {
		return nil, err
	}
	Limit(st, r.Key, r.Cfg, nil)
	return st, nil
}

// Limit applies a root's retention policies and quotas to its store;
// lowSpace, when set, is asked for an early collection when free space
// runs out (storage.quota.retentionOnLowSpace).
func Limit(st *store.Store, key string, cfg configs.StoreConfig, lowSpace func()) {
	st.SetRetention(cfg.Retention)
	q := store.Quota{Name: "storage", MaxBytes: cfg.Quota.MaxBytes, MinFreeSpace: cfg.Quota.MinFreeSpace, MaxRepos: cfg.Quota.MaxRepos}
	if key != "" {
		q.Name = "storage.subPaths." + key
	}
	for _, r := range cfg.Quota.PerRepository {
		q.PerRepository = append(q.PerRepository, store.RepoQuota{Repositories: r.Repositories, MaxBytes: r.MaxBytes, Key: r.Key})
	}
	if cfg.Quota.RetentionOnLowSpace {
		q.LowSpace = lowSpace
	}
	st.SetQuota(q)
}

// Name names a root in logs: "default" or the subpath key.
func Name(key string) string {
	if key == "" {
		return "default"
	}
	return key
}

// GCSchedule maps zot's gc keys onto the collector's schedule.
func GCSchedule(sc configs.StoreConfig) jobs.GCSchedule {
	s := jobs.GCSchedule{Enabled: sc.GC, Delay: sc.GCDelay, Interval: sc.GCInterval, Once: sc.GCOnce}
	if sc.GCTimeWindow != nil {
		s.Window = sc.GCTimeWindow
	}
	return s
}

// ScrubConfig is the scrub extension's settings, or ok=false when off.
func ScrubConfig(cfg *configs.Config) (c jobs.ScrubConfig, ok bool) {
	s := cfg.Extensions.Scrub
	if s == nil || !s.Enable {
		return jobs.ScrubConfig{}, false
	}
	return jobs.ScrubConfig{Interval: s.Interval, MaxBytesPerSecond: s.MaxBytesPerSecond}, true
}

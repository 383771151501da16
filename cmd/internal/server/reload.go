package server

import (
	"context"
	"path/filepath"
	"reflect"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/pier-oci/pier/cmd/internal/roots"
	"github.com/pier-oci/pier/configs"
)

// watchConfig returns a channel that fires when the config should be
// reloaded: on SIGHUP, and when the config file changes. The directory is
// watched, not the file: editors and configuration tools replace a file by
// renaming a new one over it, which a watch on the old inode would miss.
func (s *server) watchConfig(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	fire := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.hup:
				fire()
			}
		}
	}()
	if s.path == "" {
		return out // the embedded default never changes
	}
	w, err := fsnotify.NewWatcher()
	if err == nil {
		err = w.Add(filepath.Dir(s.path))
	}
	if err != nil {
		s.log.Warn("cannot watch the config file; reload with SIGHUP", "err", err)
		return out
	}
	name := filepath.Clean(s.path)
	go func() {
		defer w.Close()
		// Writers touch a file several times in a row; wait for quiet.
		settle := time.NewTimer(time.Hour)
		settle.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-w.Events:
				if filepath.Clean(ev.Name) == name && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) != 0 {
					settle.Reset(300 * time.Millisecond)
				}
			case err := <-w.Errors:
				s.log.Warn("config watch", "err", err)
			case <-settle.C:
				fire()
			}
		}
	}()
	return out
}

// reload reads the config again and applies what can change live: the
// log level, and the gc and scrub schedules and throttles. What needs a
// restart is named in the log. An invalid config is rejected with its
// reason and the running one stays.
func (s *server) reload() {
	s.notify.Reloading()
	defer func() { s.notify.Ready(s.status.line()) }()
	cfg, warnings, err := configs.LoadPath(s.path)
	if err == nil && len(cfg.Refusals()) > 0 {
		err = refusalError(cfg.Refusals())
	}
	if err != nil {
		s.log.Error("reload rejected; the running config stays", "err", err)
		return
	}
	for _, w := range warnings {
		s.log.Warn("config: "+w.Message, "key", w.Key)
	}
	for _, key := range restartOnly(s.cfg, cfg) {
		s.log.Warn("reload: this change takes effect on the next restart", "key", key)
	}
	s.level.Set(cfg.Log.SlogLevel())
	// Keys that need a restart keep their running values: the roots stay
	// as they were opened (applyJobs takes only their gc settings).
	cfg.HTTP = s.cfg.HTTP
	cfg.Log.Output = s.cfg.Log.Output
	cfg.Log.Audit = s.cfg.Log.Audit
	s.cfg = cfg
	s.applyJobs()
	s.log.Info("config reloaded", "level", cfg.Log.Level)
}

// restartOnly lists the keys that differ between two configs and that
// only a restart applies.
func restartOnly(old, cur *configs.Config) []string {
	var keys []string
	check := func(key string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			keys = append(keys, key)
		}
	}
	type opened struct {
		dir                      string
		commit, dedupe, readOnly bool
	}
	openedRoots := func(c *configs.Config) map[string]opened {
		out := map[string]opened{}
		for _, r := range roots.List(c) {
			out[r.Key] = opened{r.Cfg.RootDirectory, r.Cfg.Commit, r.Cfg.Dedupe, r.Cfg.ReadOnly}
		}
		return out
	}
	check("storage (rootDirectory, commit, dedupe, readOnly or subPaths)", openedRoots(old), openedRoots(cur))
	check("extensions.metrics", old.Extensions.Metrics, cur.Extensions.Metrics)
	pulls := func(c *configs.Config) map[string]bool { // pull times are kept from the store's opening
		out := map[string]bool{}
		for _, r := range roots.List(c) {
			out[r.Key] = r.Cfg.Retention.UsesPulls()
		}
		return out
	}
	check("storage.retention (whether a rule counts pulls)", pulls(old), pulls(cur))
	check("http.address", old.HTTP.Address, cur.HTTP.Address)
	check("http.port", old.HTTP.Port, cur.HTTP.Port)
	check("http.tls", old.HTTP.TLS, cur.HTTP.TLS)
	// The htpasswd file, the token key and the TLS files are re-read
	// when they change; the settings that name them need a restart.
	check("http.realm", old.HTTP.Realm, cur.HTTP.Realm)
	check("http.auth", old.HTTP.Auth, cur.HTTP.Auth)
	check("http.accessControl", old.HTTP.AccessControl, cur.HTTP.AccessControl)
	check("http.ratelimit", old.HTTP.Ratelimit, cur.HTTP.Ratelimit)
	check("http limits (readHeaderTimeout, idleTimeout, maxManifestSize, maxUploadSessions, uploadIdleTimeout)", old.HTTP.Limits, cur.HTTP.Limits)
	check("log.audit", old.Log.Audit, cur.Log.Audit)
	check("http.bodyIdleTimeout", old.HTTP.BodyIdleTimeout, cur.HTTP.BodyIdleTimeout)
	check("http.maxConcurrentUploads", old.HTTP.MaxConcurrentUploads, cur.HTTP.MaxConcurrentUploads)
	check("log.output", old.Log.Output, cur.Log.Output)
	return keys
}

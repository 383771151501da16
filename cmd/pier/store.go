package main

import (
	"fmt"
	"log/slog"

	"github.com/pier-oci/pier/configs"
	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/gc"
	"github.com/pier-oci/pier/store/scrub"
)

// openStore takes the root's process lock and opens the store the config
// describes. close releases both.
func openStore(cfg *configs.Config, log *slog.Logger) (st *store.Store, close func(), err error) {
	sc := cfg.Storage.StoreConfig
	unlock, err := store.LockRoot(sc.RootDirectory)
	if err != nil {
		return nil, nil, err
	}
	st, err = store.New(store.Options{Root: sc.RootDirectory, Commit: sc.Commit, Dedupe: sc.Dedupe, Logger: log})
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return st, func() { st.Close(); unlock() }, nil
}

// gcSchedule maps zot's gc keys onto the collector's schedule.
func gcSchedule(sc configs.StoreConfig) gc.Schedule {
	return gc.Schedule{Enabled: sc.GC, Delay: sc.GCDelay, Interval: sc.GCInterval, Once: sc.GCOnce}
}

// scrubConfig is the scrub extension's settings, or ok=false when off.
func scrubConfig(cfg *configs.Config) (c scrub.Config, ok bool) {
	s := cfg.Extensions.Scrub
	if s == nil || !s.Enable {
		return scrub.Config{}, false
	}
	return scrub.Config{Interval: s.Interval, MaxBytesPerSecond: s.MaxBytesPerSecond}, true
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

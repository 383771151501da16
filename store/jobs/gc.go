// Package gc runs garbage collection on zot's schedule: gc false is off;
// gc on with no gcInterval collects every hour; gcInterval 0 collects once,
// gcDelay after start; a positive gcInterval collects at that period. What
// is garbage, and the locking that keeps collection safe online, is the
// store's (store.CollectRepo); this package walks the repositories one at a
// time, so its memory is that of the largest repository, never the store.
package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/pier-oci/pier/store"
)

// Collector is the store as garbage collection sees it.
type Collector interface {
	Repositories(ctx context.Context) ([]string, error)
	CollectRepo(ctx context.Context, repo string, delay time.Duration) (store.CollectReport, error)
}

// GCSchedule says when collection runs and what it may touch, on zot's
// keys: gc false is off; gc on with no gcInterval collects every hour;
// gcInterval 0 collects once, gcDelay after start; a positive gcInterval
// collects at that period.
type GCSchedule struct {
	Enabled  bool
	Delay    time.Duration // nothing younger is collected (gcDelay)
	Interval time.Duration // period between passes (gcInterval)
	Once     bool          // gcInterval: 0, one pass Delay after start

	// Observe, when set, hears when a pass starts (running) and ends.
	Observe func(running bool, t GCTotals)
}

// GCTotals sums what a pass removed.
type GCTotals struct {
	Repos        int // repositories visited
	Manifests    int
	Referrers    int
	StaleEntries int
	Blobs        int
	Uploads      int
	ReposRemoved int
	Bytes        int64 // freed by blobs and uploads
	Took         time.Duration
}

// Plus is the sum of two passes (of several roots, say).
func (t GCTotals) Plus(o GCTotals) GCTotals {
	t.Repos += o.Repos
	t.Manifests += o.Manifests
	t.Referrers += o.Referrers
	t.StaleEntries += o.StaleEntries
	t.Blobs += o.Blobs
	t.Uploads += o.Uploads
	t.ReposRemoved += o.ReposRemoved
	t.Bytes += o.Bytes
	t.Took += o.Took
	return t
}

func (t *GCTotals) add(r store.CollectReport) {
	t.Manifests += len(r.Manifests)
	t.Referrers += len(r.Referrers)
	t.StaleEntries += len(r.StaleEntries)
	t.Blobs += r.Blobs
	t.Uploads += r.Uploads
	t.Bytes += r.BlobBytes + r.UploadBytes
	if r.RepoRemoved {
		t.ReposRemoved++
	}
}

// CollectAll collects every repository once, one after the other. each,
// when not nil, sees the report of every repository that lost something.
// A repository that fails is logged and skipped; the pass goes on.
func CollectAll(ctx context.Context, st Collector, delay time.Duration, log *slog.Logger, each func(store.CollectReport)) (GCTotals, error) {
	start := time.Now()
	var t GCTotals
	repos, err := st.Repositories(ctx)
	if err != nil {
		return t, err
	}
	for _, repo := range repos {
		if err := ctx.Err(); err != nil {
			return t, err
		}
		rep, err := collectRepo(ctx, st, repo, delay)
		t.Repos++
		if err != nil {
			log.Warn("gc: skipping repository", "repo", repo, "err", err)
			continue
		}
		if rep.Removed() {
			t.add(rep)
			log.Info("gc: collected", "repo", repo, "manifests", len(rep.Manifests), "referrers", len(rep.Referrers),
				"stale_entries", len(rep.StaleEntries), "blobs", rep.Blobs, "uploads", rep.Uploads,
				"bytes", rep.BlobBytes+rep.UploadBytes, "repo_removed", rep.RepoRemoved)
			if each != nil {
				each(rep)
			}
		}
	}
	t.Took = time.Since(start)
	return t, nil
}

// RunGC collects on the schedule until ctx ends. It sleeps on a timer
// between passes; nothing wakes it otherwise.
func RunGC(ctx context.Context, st Collector, s GCSchedule, log *slog.Logger) {
	if !s.Enabled {
		return
	}
	wait := s.Interval
	if s.Once {
		wait = s.Delay
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		if s.Observe != nil {
			s.Observe(true, GCTotals{})
		}
		t, err := CollectAll(ctx, st, s.Delay, log, nil)
		if s.Observe != nil {
			s.Observe(false, t)
		}
		if err != nil && ctx.Err() == nil {
			log.Error("gc pass failed", "err", err)
		}
		log.Info("gc pass done", "repos", t.Repos, "manifests", t.Manifests+t.Referrers, "blobs", t.Blobs,
			"uploads", t.Uploads, "repos_removed", t.ReposRemoved, "bytes_freed", t.Bytes, "took", t.Took)
		if s.Once {
			return
		}
		timer.Reset(s.Interval)
	}
}

// collectRepo is st.CollectRepo with a panic turned into an error: one
// repository that trips a bug must not stop the collection of all the
// others, at every start, on a box nobody can reach.
func collectRepo(ctx context.Context, st Collector, repo string, delay time.Duration) (rep store.CollectReport, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	return st.CollectRepo(ctx, repo, delay)
}

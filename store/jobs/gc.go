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

	// Window, when set, confines passes to a daily window of local time
	// (zot's gcTimeWindow): a pass due outside it waits for its start, and
	// one still running when it closes stops between repositories.
	Window Window
	// Kick, when it delivers, starts a pass at once, window or not: the
	// disk is running out of room (storage.quota.retentionOnLowSpace).
	Kick <-chan struct{}

	// Observe, when set, hears when a pass starts (running) and ends.
	Observe func(running bool, t GCTotals)
}

// Window is a daily window of time (configs.TimeWindow).
type Window interface {
	// Contains reports whether t falls in the window.
	Contains(t time.Time) bool
	// Next is the window's next start at or after t (t when inside).
	Next(t time.Time) time.Time
}

// GCTotals sums what a pass removed.
type GCTotals struct {
	Repos        int // repositories visited
	Tags         int // tags retention removed
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
	t.Tags += o.Tags
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
	t.Tags += len(r.Untagged)
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
	return collectAll(ctx, st.Repositories, func(repo string) (store.CollectReport, error) {
		return collectRepo(ctx, st.CollectRepo, repo, delay)
	}, log, each, nil)
}

// Previewer is the store as a dry run of collection sees it.
type Previewer interface {
	Repositories(ctx context.Context) ([]string, error)
	PreviewRepo(ctx context.Context, repo string, delay time.Duration) (store.CollectReport, error)
}

// PreviewAll is CollectAll removing nothing: each sees what a pass would
// remove from each repository, and every repository retention judges,
// with its verdicts.
func PreviewAll(ctx context.Context, st Previewer, delay time.Duration, log *slog.Logger, each func(store.CollectReport)) (GCTotals, error) {
	return collectAll(ctx, st.Repositories, func(repo string) (store.CollectReport, error) {
		return collectRepo(ctx, st.PreviewRepo, repo, delay)
	}, log, each, nil)
}

// collectAll runs collect on every repository, while open (when set)
// says the pass may go on.
func collectAll(ctx context.Context, list func(context.Context) ([]string, error), collect func(repo string) (store.CollectReport, error),
	log *slog.Logger, each func(store.CollectReport), open func() bool) (GCTotals, error) {
	start := time.Now()
	var t GCTotals
	repos, err := list(ctx)
	if err != nil {
		return t, err
	}
	for _, repo := range repos {
		if err := ctx.Err(); err != nil {
			return t, err
		}
		if open != nil && !open() {
			log.Info("gc: the time window closed; the pass stops here", "repos_left", len(repos)-t.Repos)
			break
		}
		rep, err := collect(repo)
		t.Repos++
		if err != nil {
			log.Warn("gc: skipping repository", "repo", repo, "err", err)
			continue
		}
		logRetention(log, rep)
		if rep.DryRun {
			t.add(rep)
			if each != nil && (rep.Removed() || len(rep.Verdicts) > 0) {
				each(rep)
			}
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
		kicked := false
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-s.Kick:
			kicked = true
			log.Warn("gc: free space is low; collecting now")
		}
		var open func() bool
		if w := s.Window; w != nil && !kicked {
			if now := time.Now(); !w.Contains(now) {
				timer.Reset(w.Next(now).Sub(now))
				continue // due, but outside the window: at its start
			}
			open = func() bool { return w.Contains(time.Now()) }
		}
		if s.Observe != nil {
			s.Observe(true, GCTotals{})
		}
		t, err := collectAll(ctx, st.Repositories, func(repo string) (store.CollectReport, error) {
			return collectRepo(ctx, st.CollectRepo, repo, s.Delay)
		}, log, nil, open)
		if s.Observe != nil {
			s.Observe(false, t)
		}
		if err != nil && ctx.Err() == nil {
			log.Error("gc pass failed", "err", err)
		}
		log.Info("gc pass done", "repos", t.Repos, "tags", t.Tags, "manifests", t.Manifests+t.Referrers, "blobs", t.Blobs,
			"uploads", t.Uploads, "repos_removed", t.ReposRemoved, "bytes_freed", t.Bytes, "took", t.Took)
		if s.Once && !kicked {
			return
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(s.Interval)
	}
}

// collectRepo is st.CollectRepo with a panic turned into an error: one
// repository that trips a bug must not stop the collection of all the
// others, at every start, on a box nobody can reach.
func collectRepo(ctx context.Context, collect func(context.Context, string, time.Duration) (store.CollectReport, error), repo string, delay time.Duration) (rep store.CollectReport, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	return collect(ctx, repo, delay)
}

// logRetention logs what retention removed from a repository, or would
// have (dryRun), one line per tag.
func logRetention(log *slog.Logger, rep store.CollectReport) {
	for _, v := range rep.Verdicts {
		if v.Keep || v.Tag == "" {
			continue
		}
		msg := "retention: tag removed"
		if rep.DryRun {
			msg = "retention (dry run): tag would be removed"
		}
		log.Info(msg, "repo", rep.Repo, "tag", v.Tag, "digest", v.Digest, "reason", v.Reason,
			"pushed", v.Pushed.Format(time.RFC3339), "pulled", pulledAt(v.Pulled))
	}
}

func pulledAt(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Format(time.RFC3339)
}

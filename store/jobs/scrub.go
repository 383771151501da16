// Package scrub re-hashes the store in the background to find bit rot
// before a device pulls it: on a schedule (extensions.scrub.interval),
// throttled to maxBytesPerSecond so an SD card keeps serving, slower still
// while clients are being served, one repository at a time. The hashing
// and the quarantine of corrupt blobs are the store's (store.ScrubRepo).
package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/pier-oci/pier/store"
)

// Scrubber is the store as scrub sees it.
type Scrubber interface {
	Repositories(ctx context.Context) ([]string, error)
	ScrubRepo(ctx context.Context, repo string, pace store.Pacer, inodes store.HashedInodes) (store.ScrubReport, error)
	ReadOnly() bool
	ReadState(ctx context.Context, name string) ([]byte, error)
	WriteState(ctx context.Context, name string, data []byte) error
}

// ScrubConfig is the scrub extension's configuration.
type ScrubConfig struct {
	Interval          time.Duration
	MaxBytesPerSecond int64       // 0: unthrottled
	Busy              func() bool // reports client traffic; nil: never busy
	// Observe, when set, hears of every finished pass (metrics).
	Observe func(ScrubResult)
}

// maxAffected bounds how many problems a result file keeps.
const maxAffected = 1000

// ScrubResult is one pass, kept in the store's state (scrub.json) and
// logged.
type ScrubResult struct {
	Started      time.Time           `json:"started"`
	Finished     time.Time           `json:"finished"`
	Repos        int                 `json:"repos"`
	Blobs        int                 `json:"blobs"`
	Bytes        int64               `json:"bytes"`
	OK           int                 `json:"ok"`
	Corrupt      int                 `json:"corrupt"`
	Missing      int                 `json:"missing"`
	Unreferenced int                 `json:"unreferenced"`
	Affected     []store.ScrubResult `json:"affected,omitempty"` // corrupt, missing and unreferenced, up to maxAffected
	Complete     bool                `json:"complete"`           // false when the pass was stopped
}

// Plus sums the counts of two passes (of several roots, say).
func (r ScrubResult) Plus(o ScrubResult) ScrubResult {
	r.Repos += o.Repos
	r.Blobs += o.Blobs
	r.Bytes += o.Bytes
	r.OK += o.OK
	r.Corrupt += o.Corrupt
	r.Missing += o.Missing
	r.Unreferenced += o.Unreferenced
	return r
}

// Failed reports whether the pass found corrupt or missing blobs.
func (r ScrubResult) Failed() bool { return r.Corrupt+r.Missing > 0 }

func (r *ScrubResult) add(rep store.ScrubReport) {
	r.Repos++
	r.Blobs += rep.Blobs
	r.Bytes += rep.Bytes
	for _, res := range rep.Results {
		switch res.Status {
		case store.ScrubOK:
			r.OK++
			continue
		case store.ScrubCorrupt:
			r.Corrupt++
		case store.ScrubMissing:
			r.Missing++
		case store.ScrubUnreferenced:
			r.Unreferenced++
		}
		if len(r.Affected) < maxAffected {
			r.Affected = append(r.Affected, res)
		}
	}
}

// ScrubAll scrubs every repository once. each, when not nil, sees every
// repository's report (for a table).
func ScrubAll(ctx context.Context, st Scrubber, cfg ScrubConfig, log *slog.Logger, each func(store.ScrubReport)) (ScrubResult, error) {
	res := ScrubResult{Started: time.Now()}
	pace := newPacer(cfg.MaxBytesPerSecond, cfg.Busy)
	inodes := store.HashedInodes{}
	repos, err := st.Repositories(ctx)
	if err != nil {
		return res, err
	}
	for _, repo := range repos {
		rep, err := scrubRepo(ctx, st, repo, pace, inodes)
		if ctx.Err() != nil {
			res.Finished = time.Now()
			return res, ctx.Err()
		}
		if err != nil {
			log.Warn("scrub: skipping repository", "repo", repo, "err", err)
			continue
		}
		res.add(rep)
		for _, r := range rep.Results {
			if r.Status == store.ScrubCorrupt || r.Status == store.ScrubMissing {
				log.Error("scrub: "+r.Status, "repo", r.Repo, "reference", r.Reference, "digest", r.Digest)
			}
		}
		if each != nil {
			each(rep)
		}
	}
	res.Finished = time.Now()
	res.Complete = true
	return res, nil
}

// scrubState is the state file of the last result.
const scrubState = "scrub.json"

// LoadScrubResult reads the last result kept in the store.
func LoadScrubResult(ctx context.Context, st Scrubber) (ScrubResult, bool) {
	var r ScrubResult
	b, err := st.ReadState(ctx, scrubState)
	if err != nil || json.Unmarshal(b, &r) != nil {
		return ScrubResult{}, false
	}
	return r, true
}

// SaveScrubResult keeps a result in the store.
func SaveScrubResult(ctx context.Context, st Scrubber, r ScrubResult) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return st.WriteState(ctx, scrubState, b)
}

// firstDelay is how long after start an installation that never scrubbed
// waits before its first pass, letting boot-time traffic settle.
const firstDelay = 5 * time.Minute

// RunScrub scrubs on the schedule until ctx ends. The next pass is due an
// interval after the last one kept in the store, so a box that reboots
// every night still scrubs once a day.
func RunScrub(ctx context.Context, st Scrubber, cfg ScrubConfig, log *slog.Logger) {
	if cfg.Interval <= 0 {
		return
	}
	wait := firstDelay
	if last, ok := LoadScrubResult(ctx, st); ok {
		wait = time.Until(last.Started.Add(cfg.Interval))
	}
	timer := time.NewTimer(max(wait, 0))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		res, err := ScrubAll(ctx, st, cfg, log, nil)
		if err != nil && ctx.Err() != nil {
			return // stopped mid-pass: the next start resumes the schedule
		}
		if err != nil {
			log.Error("scrub pass failed", "err", err)
		}
		if !st.ReadOnly() {
			if err := SaveScrubResult(ctx, st, res); err != nil {
				log.Warn("scrub: cannot keep the result", "err", err)
			}
		}
		if cfg.Observe != nil {
			cfg.Observe(res)
		}
		log.Info("scrub pass done", "repos", res.Repos, "blobs", res.Blobs, "bytes", res.Bytes, "ok", res.OK,
			"corrupt", res.Corrupt, "missing", res.Missing, "unreferenced", res.Unreferenced,
			"took", res.Finished.Sub(res.Started).Round(time.Millisecond))
		timer.Reset(cfg.Interval)
	}
}

// DescribeScrub is one line about the last pass, for status displays.
func DescribeScrub(r ScrubResult, ok bool) string {
	if !ok {
		return "never scrubbed"
	}
	ago := time.Since(r.Finished).Round(time.Minute)
	if r.Failed() {
		return fmt.Sprintf("last scrub %s ago: %d corrupt, %d missing", ago, r.Corrupt, r.Missing)
	}
	return fmt.Sprintf("last scrub %s ago: ok", ago)
}

// scrubRepo is st.ScrubRepo with a panic turned into an error: one
// repository that trips a bug must not stop the scrub of all the others.
func scrubRepo(ctx context.Context, st Scrubber, repo string, pace store.Pacer, inodes store.HashedInodes) (rep store.ScrubReport, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	return st.ScrubRepo(ctx, repo, pace, inodes)
}

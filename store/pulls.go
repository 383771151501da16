package store

import (
	"context"
	"encoding/json"
	"maps"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/oci"
)

// Pull times, for retention's pulledWithin and mostRecentlyPulledCount,
// without wearing the card: a pull only notes its time in memory. The
// notes of a repository are written to its state file
// (.pier/pulls/<repo>.json, digest → Unix seconds) at most once per
// PullSaveInterval, by a timer armed by the first pull after a write, so
// an idle store writes nothing and wakes for nothing. A power cut loses at
// most that interval of pull times, which retention, counting in hours
// and days, does not notice. The file is merged, not replaced: the last
// pull of each digest wins.

// PullSaveInterval is how long pull times may wait in memory.
const PullSaveInterval = time.Minute

// pullLog holds the pulls noted since the last write.
type pullLog struct {
	mu      sync.Mutex
	pending map[string]map[digest.Digest]int64 // repo → digest → Unix seconds
	timer   *time.Timer                        // armed while pending is not empty
	save    func()                             // writes pending (Store.savePulls)
	every   time.Duration

	fileMu sync.Mutex // orders the read-modify-writes of the state files
}

// notePull records a pull of manifest d of repo, when pull times are
// kept.
func (s *Store) notePull(repo string, d digest.Digest) {
	p := s.pulls
	if p == nil {
		return
	}
	now := time.Now().Unix()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pending == nil {
		p.pending = map[string]map[digest.Digest]int64{}
	}
	m := p.pending[repo]
	if m == nil {
		m = map[digest.Digest]int64{}
		p.pending[repo] = m
	}
	m[d] = now
	if p.timer == nil {
		p.timer = time.AfterFunc(p.every, p.save)
	}
}

// take hands over the pending notes and disarms the timer.
func (p *pullLog) take() map[string]map[digest.Digest]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.pending
	p.pending = nil
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	return out
}

// peek is a copy of repo's pending notes.
func (p *pullLog) peek(repo string) map[digest.Digest]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.pending[repo])
}

func pullsState(repo string) string { return "pulls/" + repo + ".json" }

// savePulls writes the pending pull times, one state file per repository
// pulled since the last write.
func (s *Store) savePulls() {
	ctx := context.Background()
	s.pulls.fileMu.Lock()
	defer s.pulls.fileMu.Unlock()
	for repo, notes := range s.pulls.take() {
		times := s.readPulls(ctx, repo)
		for d, t := range notes {
			times[d] = max(times[d], t)
		}
		data, err := json.Marshal(times)
		if err == nil {
			err = s.WriteState(ctx, pullsState(repo), data)
		}
		if err != nil {
			s.log.Warn("cannot keep pull times; retention counts them from the last ones kept", "repo", repo, "err", err)
		}
	}
}

// readPulls reads repo's kept pull times; none when there are none (or
// the file cannot be read: retention then sees no pulls, and keeps by the
// other rules).
func (s *Store) readPulls(ctx context.Context, repo string) map[digest.Digest]int64 {
	times := map[digest.Digest]int64{}
	data, err := s.ReadState(ctx, pullsState(repo))
	if err != nil || json.Unmarshal(data, &times) != nil {
		return map[digest.Digest]int64{}
	}
	for d := range times {
		if !oci.ValidDigest(d) {
			delete(times, d)
		}
	}
	return times
}

// pullTimes is when each manifest of repo was last pulled, as far as pier
// knows: the kept times with the pending notes on top. A root opened
// read-only (a dry run beside a serving pier) reads the kept times.
func (s *Store) pullTimes(ctx context.Context, repo string) map[digest.Digest]time.Time {
	out := map[digest.Digest]time.Time{}
	times := s.readPulls(ctx, repo) // kept by this process or, for a dry run, by the one serving
	if s.pulls != nil {
		for d, t := range s.pulls.peek(repo) {
			times[d] = max(times[d], t)
		}
	}
	for d, t := range times {
		out[d] = time.Unix(t, 0)
	}
	return out
}

// prunePulls drops the kept pull times of manifests repo no longer lists,
// so the file does not grow with every image that ever passed through.
func (s *Store) prunePulls(ctx context.Context, repo string, listed map[digest.Digest]bool) {
	if s.pulls == nil {
		return
	}
	s.pulls.fileMu.Lock()
	defer s.pulls.fileMu.Unlock()
	times := s.readPulls(ctx, repo)
	n := len(times)
	maps.DeleteFunc(times, func(d digest.Digest, _ int64) bool { return !listed[d] })
	if len(times) == n {
		return
	}
	if len(times) == 0 {
		s.drv.Delete(ctx, stateKey(pullsState(repo)))
		return
	}
	if data, err := json.Marshal(times); err == nil {
		s.WriteState(ctx, pullsState(repo), data)
	}
}

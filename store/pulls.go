package store

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/oci"
)

// Pull times, for retention's pulledWithin and mostRecentlyPulledCount,
// without wearing the card: a pull only notes its time in memory. The
// notes are written to one state file of the root (.pier/pulls.json:
// repository → digest → Unix seconds) at most once per PullSaveInterval,
// by a timer armed by the first pull after a write, so an idle store
// writes nothing and wakes for nothing, and however many repositories
// were pulled, an interval costs one small write (a file per repository
// would cost a page each). A power cut loses at most that interval of
// pull times, which retention, counting in hours and days, does not
// notice. The last pull of each digest wins; garbage collection drops the
// times of manifests no longer listed.
//
// The file also says since when pull times are kept. Retention counts a
// manifest as pulled no earlier than that: right after pulledWithin is
// turned on, or after the file was lost or damaged, no tag is removed for
// want of pulls pier did not watch.

// PullSaveInterval is how long pull times may wait in memory.
const PullSaveInterval = time.Minute

// pullsState is the state file of the kept pull times.
const pullsState = "pulls.json"

// pullTable is repository → digest → Unix seconds.
type pullTable map[string]map[digest.Digest]int64

// pullFile is the content of the state file.
type pullFile struct {
	Since int64     `json:"since"` // Unix seconds: pull times are kept since then
	Repos pullTable `json:"repos"`
}

// pullLog holds the pull times of a store that keeps them.
type pullLog struct {
	mu      sync.Mutex
	pending pullTable   // noted since the last write
	timer   *time.Timer // armed while something waits to be written
	save    func()      // Store.savePulls
	every   time.Duration

	fileMu sync.Mutex // orders loading, merging and writing the file
	kept   *pullFile  // the file's content, once loaded
	pruned bool       // kept lost entries since the last write
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
		p.pending = pullTable{}
	}
	m := p.pending[repo]
	if m == nil {
		m = map[digest.Digest]int64{}
		p.pending[repo] = m
	}
	m[d] = now
	p.arm()
}

// arm starts the timer that writes what waits; p.mu is held.
func (p *pullLog) arm() {
	if p.timer == nil {
		p.timer = time.AfterFunc(p.every, p.save)
	}
}

// take hands over the pending notes and disarms the timer.
func (p *pullLog) take() pullTable {
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

// loadKept reads the file once; p.fileMu is held.
func (s *Store) loadKept(ctx context.Context) *pullFile {
	if s.pulls.kept == nil {
		s.pulls.kept = s.readPulls(ctx)
	}
	return s.pulls.kept
}

// savePulls writes the pull times noted since the last write, merged
// into the file, in one write. Where replicas share the storage, each
// merges what the others wrote (the latest pull of each manifest wins)
// and writes by compare-and-swap, so none loses another's pulls: a
// retention rule that counts pulls on one replica must see those served
// by the others, or it would remove tags in use.
func (s *Store) savePulls() {
	ctx := context.Background()
	s.pulls.fileMu.Lock()
	defer s.pulls.fileMu.Unlock()
	file := s.loadKept(ctx)
	changed := s.pulls.pruned
	for repo, notes := range s.pulls.take() {
		if file.Repos[repo] == nil {
			file.Repos[repo] = map[digest.Digest]int64{}
		}
		for d, t := range notes {
			if t > file.Repos[repo][d] {
				file.Repos[repo][d], changed = t, true
			}
		}
	}
	if !changed {
		return
	}
	err := s.writePulls(ctx, file)
	if err != nil {
		s.log.Warn("cannot keep pull times; retention counts from the last ones kept", "err", err)
		return
	}
	s.pulls.pruned = false
}

// writePulls writes file; p.fileMu is held. On shared storage it merges
// the file's current content first and retries when another replica
// wrote in between.
func (s *Store) writePulls(ctx context.Context, file *pullFile) error {
	if !s.shared() {
		data, err := json.Marshal(file)
		if err != nil {
			return err
		}
		return s.WriteState(ctx, pullsState, data)
	}
	if err := s.writable(); err != nil {
		return err
	}
	var err error
	for range 8 {
		version := s.mergeKept(ctx, file)
		var data []byte
		if data, err = json.Marshal(file); err != nil {
			return err
		}
		if _, err = s.drv.ReplaceFile(ctx, stateKey(pullsState), data, version); !errors.Is(err, driver.ErrConflict) {
			return err
		}
	}
	return err
}

// mergeKept merges the pull times file on the storage into file (the
// latest pull of each manifest, the earliest since) and returns the
// version it read ("" when there is none); p.fileMu is held.
func (s *Store) mergeKept(ctx context.Context, file *pullFile) string {
	data, info, err := s.drv.ReadFile(ctx, stateKey(pullsState), 16<<20)
	if err != nil {
		return ""
	}
	var disk pullFile
	if json.Unmarshal(data, &disk) != nil || disk.Repos == nil {
		return info.Version // damaged: replaced by what this replica knows
	}
	if disk.Since > 0 && disk.Since < file.Since {
		file.Since = disk.Since
	}
	for repo, m := range disk.Repos {
		if oci.ValidateName(repo) != nil {
			continue
		}
		if file.Repos[repo] == nil {
			file.Repos[repo] = map[digest.Digest]int64{}
		}
		for d, t := range m {
			if oci.ValidDigest(d) && t > file.Repos[repo][d] {
				file.Repos[repo][d] = t
			}
		}
	}
	return info.Version
}

// readPulls reads the kept pull times. Without the file, or with one that
// does not parse, pull times are kept from now on.
func (s *Store) readPulls(ctx context.Context) *pullFile {
	fresh := &pullFile{Since: time.Now().Unix(), Repos: pullTable{}}
	data, err := s.ReadState(ctx, pullsState)
	if err != nil {
		if !driver.IsNotFound(err) {
			s.log.Warn("cannot read the pull times; counting pulls from now", "err", err)
		}
		return fresh
	}
	var f pullFile
	if json.Unmarshal(data, &f) != nil || f.Repos == nil || f.Since <= 0 {
		s.log.Warn("the pull times file is damaged; counting pulls from now (no tag is removed for want of pulls until then)")
		return fresh
	}
	t := f.Repos
	for repo, m := range t {
		if oci.ValidateName(repo) != nil || m == nil {
			delete(t, repo)
			continue
		}
		maps.DeleteFunc(m, func(d digest.Digest, _ int64) bool { return !oci.ValidDigest(d) })
	}
	return &f
}

// pullTimes is when each manifest of repo was last pulled, as far as pier
// knows: the kept times with the pending notes on top, and since when
// pulls are watched. A root opened read-only (a dry run beside a serving
// pier) reads the serving pier's file.
func (s *Store) pullTimes(ctx context.Context, repo string) (map[digest.Digest]time.Time, time.Time) {
	var times map[digest.Digest]int64
	var since int64
	if s.pulls == nil {
		f := s.readPulls(ctx)
		times, since = f.Repos[repo], f.Since
	} else {
		s.pulls.fileMu.Lock()
		f := s.loadKept(ctx)
		if s.shared() {
			s.mergeKept(ctx, f) // what the other replicas served
		}
		times, since = maps.Clone(f.Repos[repo]), f.Since
		s.pulls.fileMu.Unlock()
		if times == nil {
			times = map[digest.Digest]int64{}
		}
		for d, t := range s.pulls.peek(repo) {
			times[d] = max(times[d], t)
		}
	}
	out := make(map[digest.Digest]time.Time, len(times))
	for d, t := range times {
		out[d] = time.Unix(t, 0)
	}
	return out, time.Unix(since, 0)
}

// prunePulls drops the pull times of manifests repo no longer lists, so
// the file does not grow with every image that ever passed through; they
// go with the next write.
func (s *Store) prunePulls(ctx context.Context, repo string, listed map[digest.Digest]bool) {
	if s.pulls == nil {
		return
	}
	s.pulls.fileMu.Lock()
	defer s.pulls.fileMu.Unlock()
	kept := s.loadKept(ctx).Repos
	m, ok := kept[repo]
	if !ok {
		return
	}
	n := len(m)
	maps.DeleteFunc(m, func(d digest.Digest, _ int64) bool { return !listed[d] })
	if len(m) == n {
		return
	}
	if len(m) == 0 {
		delete(kept, repo)
	}
	s.pulls.pruned = true
	s.pulls.mu.Lock()
	s.pulls.arm()
	s.pulls.mu.Unlock()
}

package main

import (
	"context"
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/gc"
	"github.com/pier-oci/pier/store/scrub"
)

// status is the one human line systemd shows for pier ("systemctl status"):
// what is served, how full the disk is, what gc and scrub are doing.
type status struct {
	ctl       *store.Controller
	root      string // the default root: its disk and scrub result are shown
	repos     atomic.Int64
	gcRunning atomic.Int32 // roots collecting right now
}

// countRepos refreshes the repository count (a walk of the directories,
// not of the blobs).
func (s *status) countRepos(ctx context.Context) {
	if repos, err := s.ctl.Repositories(ctx); err == nil {
		s.repos.Store(int64(len(repos)))
	}
}

// observeGC is the collector's hook.
func (s *status) observeGC(running bool, t gc.Totals) {
	if running {
		s.gcRunning.Add(1)
		return
	}
	s.gcRunning.Add(-1)
	s.countRepos(context.Background())
}

func (s *status) line() string {
	disk := "disk usage unknown"
	var fs unix.Statfs_t
	if unix.Statfs(s.root, &fs) == nil && fs.Blocks > 0 {
		free := int64(fs.Bavail) * int64(fs.Bsize)
		used := 100 - 100*float64(fs.Bavail)/float64(fs.Blocks)
		disk = fmt.Sprintf("disk %.0f%% full, %s free", used, humanBytes(free))
	}
	gcState := "gc idle"
	if s.gcRunning.Load() > 0 {
		gcState = "gc running"
	}
	last, ok := scrub.LoadResult(s.root)
	return fmt.Sprintf("serving %d repositories; %s; %s; %s", s.repos.Load(), disk, gcState, scrub.Describe(last, ok))
}

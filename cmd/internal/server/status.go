package server

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/driver"
	"github.com/pier-oci/pier/store/jobs"
)

// status is the one human line systemd shows for pier ("systemctl status"):
// what is served, how full the disk is, what gc and scrub are doing.
type status struct {
	ctl       *store.Controller
	st        *store.Store // the default root: its disk and scrub result are shown
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
func (s *status) observeGC(running bool, t jobs.GCTotals) {
	if running {
		s.gcRunning.Add(1)
		return
	}
	s.gcRunning.Add(-1)
	s.countRepos(context.Background())
}

func (s *status) line() string {
	disk := "disk usage unknown"
	if sp, ok := s.st.Driver().(driver.Spacer); ok {
		if free, total, err := sp.Space(); err == nil && total > 0 {
			disk = fmt.Sprintf("disk %.0f%% full, %s free", 100-100*float64(free)/float64(total), store.HumanBytes(free))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.st.Check(ctx); err != nil {
		disk = "storage unreachable (" + s.st.String() + ")" // a bucket down: requests get 503
	}
	gcState := "gc idle"
	if s.gcRunning.Load() > 0 {
		gcState = "gc running"
	}
	last, ok := jobs.LoadScrubResult(context.Background(), s.st)
	return fmt.Sprintf("serving %d repositories; %s; %s; %s", s.repos.Load(), disk, gcState, jobs.DescribeScrub(last, ok))
}

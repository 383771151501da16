package server

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/pier-oci/pier/cmd/internal/roots"
	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/jobs"
)

// supervisor runs pier's background work for every storage root (dedupe
// reconcile and watch, gc, scrub) and restarts gc and scrub with new
// settings on a reload. Every job stops with its context; stop waits for
// all of them.
type supervisor struct {
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger
	wg     sync.WaitGroup

	mu      sync.Mutex
	roots   map[string]*rootJobs // by subpath key, "" for the default root
	started int                  // jobs started so far (a reload that changes nothing starts none)
}

// rootJobs are one root's restartable jobs.
type rootJobs struct {
	st          *store.Store
	stopGC      func()
	stopScrub   func()
	gcSchedule  jobs.GCSchedule
	scrubConfig jobs.ScrubConfig
	scrubOn     bool
}

func startJobs(rs []roots.Root, log *slog.Logger) *supervisor {
	ctx, cancel := context.WithCancel(context.Background())
	j := &supervisor{ctx: ctx, cancel: cancel, log: log, roots: map[string]*rootJobs{}}
	for _, r := range rs {
		st := r.Store
		j.roots[r.Key] = &rootJobs{st: st}
		j.wg.Go(func() { st.Run(ctx) })
	}
	return j
}

// run starts fn as a job of its own, returning what stops and awaits it.
func (j *supervisor) run(fn func(context.Context)) func() {
	ctx, cancel := context.WithCancel(j.ctx)
	done := make(chan struct{})
	j.started++ // under j.mu, held by every caller
	j.wg.Go(func() { defer close(done); fn(ctx) })
	return func() { cancel(); <-done }
}

// setGC (re)starts collection of one root on a schedule, unless unchanged.
func (j *supervisor) setGC(key string, s jobs.GCSchedule) {
	j.mu.Lock()
	defer j.mu.Unlock()
	r := j.roots[key]
	if r.stopGC != nil {
		if sameSchedule(s, r.gcSchedule) {
			return
		}
		r.stopGC()
	}
	r.gcSchedule = s
	log := j.log.With("root", roots.Name(key))
	r.stopGC = j.run(func(ctx context.Context) { jobs.RunGC(ctx, r.st, s, log) })
}

// setScrub (re)starts scrubbing of one root, or stops it when on is false.
func (j *supervisor) setScrub(key string, c jobs.ScrubConfig, on bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	r := j.roots[key]
	if r.stopScrub != nil {
		if on && r.scrubOn && c.Interval == r.scrubConfig.Interval && c.MaxBytesPerSecond == r.scrubConfig.MaxBytesPerSecond {
			return
		}
		r.stopScrub()
		r.stopScrub = nil
	}
	r.scrubConfig, r.scrubOn = c, on
	if on {
		log := j.log.With("root", roots.Name(key))
		r.stopScrub = j.run(func(ctx context.Context) { jobs.RunScrub(ctx, r.st, c, log) })
	}
}

func sameSchedule(a, b jobs.GCSchedule) bool {
	return a.Enabled == b.Enabled && a.Delay == b.Delay && a.Interval == b.Interval && a.Once == b.Once &&
		fmt.Sprint(a.Window) == fmt.Sprint(b.Window) && a.Kick == b.Kick
}

// stop ends every job and waits for them.
func (j *supervisor) stop() {
	j.cancel()
	j.wg.Wait()
}

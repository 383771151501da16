package main

import (
	"context"
	"log/slog"
	"sync"

	"github.com/pier-oci/pier/store"
	"github.com/pier-oci/pier/store/gc"
	"github.com/pier-oci/pier/store/scrub"
)

// jobs runs pier's background work (dedupe reconcile, gc, scrub) and
// restarts gc and scrub with new settings on a reload. Every job stops
// with its context; stop waits for all of them.
type jobs struct {
	ctx    context.Context
	cancel context.CancelFunc
	st     *store.Store
	log    *slog.Logger
	wg     sync.WaitGroup

	mu          sync.Mutex
	stopGC      func()
	stopScrub   func()
	gcSchedule  gc.Schedule
	scrubConfig scrub.Config
	scrubOn     bool
}

func startJobs(st *store.Store, log *slog.Logger) *jobs {
	ctx, cancel := context.WithCancel(context.Background())
	j := &jobs{ctx: ctx, cancel: cancel, st: st, log: log}
	j.wg.Go(func() { st.RunDedupe(ctx) })
	return j
}

// run starts fn as a job of its own, returning what stops and awaits it.
func (j *jobs) run(fn func(context.Context)) func() {
	ctx, cancel := context.WithCancel(j.ctx)
	done := make(chan struct{})
	j.wg.Go(func() { defer close(done); fn(ctx) })
	return func() { cancel(); <-done }
}

// setGC (re)starts collection on a schedule, unless it is unchanged.
func (j *jobs) setGC(s gc.Schedule) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.stopGC != nil {
		if sameSchedule(s, j.gcSchedule) {
			return
		}
		j.stopGC()
	}
	j.gcSchedule = s
	j.stopGC = j.run(func(ctx context.Context) { gc.Run(ctx, j.st, s, j.log) })
}

// setScrub (re)starts scrubbing, or stops it when on is false.
func (j *jobs) setScrub(c scrub.Config, on bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.stopScrub != nil {
		if on && j.scrubOn && c.Interval == j.scrubConfig.Interval && c.MaxBytesPerSecond == j.scrubConfig.MaxBytesPerSecond {
			return
		}
		j.stopScrub()
		j.stopScrub = nil
	}
	j.scrubConfig, j.scrubOn = c, on
	if on {
		j.stopScrub = j.run(func(ctx context.Context) { scrub.Run(ctx, j.st, c, j.log) })
	}
}

func sameSchedule(a, b gc.Schedule) bool {
	return a.Enabled == b.Enabled && a.Delay == b.Delay && a.Interval == b.Interval && a.Once == b.Once
}

// stop ends every job and waits for them.
func (j *jobs) stop() {
	j.cancel()
	j.wg.Wait()
}

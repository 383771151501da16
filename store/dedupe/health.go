package dedupe

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/pier-oci/pier/store/cache"
)

// Deadlines of the dedupe index's calls. A lookup sits in a push's path,
// so it gets little time; writes happen in the background.
const (
	lookupTimeout  = 250 * time.Millisecond
	controlTimeout = 5 * time.Second // Complete, MarkComplete
	closeTimeout   = 2 * time.Second // the last write when the store closes
	minBackoff     = time.Second
	maxBackoff     = time.Minute
)

// writeTimeout bounds one batch's write (a remote index takes thousands
// of changes in a few round trips, DynamoDB in many). A variable for the
// tests.
var writeTimeout = 20 * time.Second

// completeCheckInterval is how often Run asks whether the index is
// still complete: a Redis FLUSHALL, or a server restarted without its
// data, empties it with no error to see. A variable for the tests.
var completeCheckInterval = 15 * time.Second

// indexHealth tracks outages of the dedupe index. While it is down
// (cache.ErrUnavailable), nothing calls it until a back-off has passed
// (1 s, doubling to a minute), so a stalled server costs each push at
// most one lookup deadline per back-off, not one per blob. It also
// remembers that changes were lost (dropped from a full queue, given up
// on, or not written by a pass), so that a pass over the disk records
// them once the index is back.
type indexHealth struct {
	mu      sync.Mutex
	until   time.Time // no call before this
	backoff time.Duration
	outage  bool  // an outage is under way (and was logged)
	lostAny bool  // changes were lost since the last pass began
	dropped int64 // changes dropped from a full queue since the last pass began
}

// usable reports whether the index may be called now.
func (h *indexHealth) usable() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !time.Now().Before(h.until)
}

// wait is how long until the index may be called again.
func (h *indexHealth) wait() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return max(time.Until(h.until), 10*time.Millisecond)
}

// down notes a failed call and backs off; the first of an outage is
// logged.
func (h *indexHealth) down(log *slog.Logger, op string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.backoff = min(max(2*h.backoff, minBackoff), maxBackoff)
	h.until = time.Now().Add(h.backoff)
	if !h.outage {
		h.outage = true
		log.Warn("dedupe index unavailable; blobs are stored without dedupe until it is back, and linked then",
			"op", op, "err", err)
	}
}

// up notes a call that worked: an outage ends, and lost changes ask d
// for a pass.
func (h *indexHealth) up(d *Deduper) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.outage {
		h.outage = false
		d.log.Info("dedupe index is back")
	}
	h.backoff, h.until = 0, time.Time{}
	if h.lostAny {
		d.askPass()
	}
}

// lost notes changes the index did not get.
func (h *indexHealth) lost() {
	h.mu.Lock()
	h.lostAny = true
	h.mu.Unlock()
}

// drop notes a change dropped from a full queue.
func (h *indexHealth) drop() {
	h.mu.Lock()
	h.lostAny = true
	h.dropped++
	h.mu.Unlock()
}

// passBegins clears what a pass is about to record, and returns how many
// changes were dropped since the last one.
func (h *indexHealth) passBegins() (dropped int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	dropped, h.dropped, h.lostAny = h.dropped, 0, false
	return dropped
}

// write is the index writer's: one batch of changes to the cache. While
// the index is unavailable it retries after each back-off (new changes
// queue meanwhile, and are dropped once the queue is full); when the
// store closes it makes one short last attempt. A batch the index
// refuses otherwise is dropped and left to the next pass.
func (d *Deduper) write(stop <-chan struct{}, ops []cache.Op) {
	for {
		timeout := writeTimeout
		select {
		case <-stop:
			timeout = closeTimeout
		default:
		}
		if d.health.usable() && !d.damaged.Load() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			err := d.c.Apply(ctx, ops)
			cancel()
			if err == nil {
				d.health.up(d)
				return
			}
			d.failed("write", err)
			if !errors.Is(err, cache.ErrUnavailable) {
				d.health.lost()
				return
			}
		}
		select {
		case <-stop:
			if timeout == closeTimeout {
				d.health.lost()
				return
			}
		case <-time.After(d.health.wait()):
		}
	}
}

// complete reports whether the index says it is complete; when it cannot
// tell, it says yes, so that a flaky index does not cost a pass per
// check (an outage's lost changes ask for their own).
func (d *Deduper) complete(ctx context.Context) bool {
	if !d.health.usable() {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, controlTimeout)
	defer cancel()
	done, err := d.c.Complete(ctx)
	if err != nil {
		d.failed("complete", err)
		return true
	}
	d.health.up(d)
	return done
}

// markComplete records a full pass in the index.
func (d *Deduper) markComplete(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, controlTimeout)
	defer cancel()
	if err := d.c.MarkComplete(ctx); err != nil {
		d.failed("mark complete", err)
	}
}

// replaceIfDamaged gives a damaged index that pier owns (BoltDB) a new,
// empty file; a shared index is not pier's to replace, and the pass that
// follows records what it can.
func (d *Deduper) replaceIfDamaged() {
	if !d.damaged.Load() {
		return
	}
	if r, ok := d.c.(interface{ Reset(error) error }); ok {
		if err := r.Reset(errors.New("damage found while in use")); err != nil {
			d.log.Error("cannot replace the damaged dedupe cache", "err", err)
			return
		}
	}
	d.damaged.Store(false)
}

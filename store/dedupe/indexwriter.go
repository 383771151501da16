package dedupe

import (
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/pier-oci/pier/store/cache"
)

// indexWriter applies the deduper's changes to the cache from one
// goroutine, in order, a batch at a time. Nothing that changes the index
// waits for its writes: a push is acknowledged once its blob is durable,
// and GC holds a repository's lock for the disk only. With commit on, the
// changes made within indexBatchDelay share one transaction's fsyncs. The
// index is not the truth: changes a crash loses are found again by the
// start-up walk, and a path it names wrongly is checked on the disk.
type indexWriter struct {
	apply   func(stop <-chan struct{}, ops []cache.Op) // writes one batch; stop closes when the store does
	delay   time.Duration                              // how long a batch gathers changes
	dropped func()                                     // called for each change dropped from a full queue

	mu    sync.Mutex
	queue []queued // changes not written yet, in order
	// pending holds, for each path put and not removed since, the ticket
	// of its latest put; lookups see these paths until that put is
	// written (an earlier put of the same path landing does not count).
	pending map[digest.Digest]map[string]uint64
	tickets uint64
	closed  bool

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

// queued is a change and, for a put, its ticket.
type queued struct {
	op     cache.Op
	ticket uint64
}

const (
	// indexBatchDelay is how long changes gather before a write: it
	// bounds the cache's transactions (and, with commit on, its fsyncs)
	// to ten a second however fast blobs arrive.
	indexBatchDelay = 100 * time.Millisecond
	// maxQueuedChanges bounds the queue's memory (a GC pass over a large
	// store removes many paths). Past it, a change is dropped, never
	// waited for: a push or GC must not wait on a slow index. The next
	// pass over the disk records what was dropped.
	maxQueuedChanges = 4096
)

func newIndexWriter(apply func(stop <-chan struct{}, ops []cache.Op), delay time.Duration, dropped func()) *indexWriter {
	w := &indexWriter{
		apply:   apply,
		dropped: dropped,
		delay:   delay,
		pending: map[digest.Digest]map[string]uint64{},
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go w.run()
	return w
}

// put queues "rel holds dg"; lookups see it at once.
func (w *indexWriter) put(dg digest.Digest, rel string) {
	w.enqueue(cache.Op{Digest: dg, Path: rel})
}

// remove queues "rel no longer holds dg"; lookups stop seeing a put of it
// still queued.
func (w *indexWriter) remove(dg digest.Digest, rel string) {
	w.enqueue(cache.Op{Digest: dg, Path: rel, Remove: true})
}

func (w *indexWriter) enqueue(op cache.Op) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return // the store is closing; the start-up walk will catch up
	}
	if len(w.queue) >= maxQueuedChanges {
		w.mu.Unlock()
		if op.Remove {
			w.cancelPending(op.Digest, op.Path)
		}
		w.dropped()
		return
	}
	q := queued{op: op}
	if op.Remove {
		w.drop(op.Digest, op.Path)
	} else {
		w.tickets++
		q.ticket = w.tickets
		if w.pending[op.Digest] == nil {
			w.pending[op.Digest] = map[string]uint64{}
		}
		w.pending[op.Digest][op.Path] = q.ticket
	}
	w.queue = append(w.queue, q)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// cancelPending hides a queued put of rel from lookups: a dropped
// removal must not leave its path visible as pending.
func (w *indexWriter) cancelPending(dg digest.Digest, rel string) {
	w.mu.Lock()
	w.drop(dg, rel)
	w.mu.Unlock()
}

func (w *indexWriter) drop(dg digest.Digest, rel string) {
	delete(w.pending[dg], rel)
	if len(w.pending[dg]) == 0 {
		delete(w.pending, dg)
	}
}

// merge returns rels followed by the paths of dg still being written that
// rels lacks.
func (w *indexWriter) merge(dg digest.Digest, rels []string) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	for r := range w.pending[dg] {
		if !slices.Contains(rels, r) {
			rels = append(rels, r)
		}
	}
	return rels
}

func (w *indexWriter) run() {
	defer close(w.done)
	for {
		select {
		case <-w.wake:
		case <-w.stop:
			w.flush()
			return
		}
		if w.delay > 0 {
			select {
			case <-time.After(w.delay):
			case <-w.stop:
				w.flush()
				return
			}
		}
		w.flush()
	}
}

// flush writes everything queued, as one batch.
func (w *indexWriter) flush() {
	w.mu.Lock()
	batch := w.queue
	w.queue = nil
	w.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	ops := make([]cache.Op, len(batch))
	for i, q := range batch {
		ops[i] = q.op
	}
	w.apply(w.stop, ops)
	w.mu.Lock()
	for _, q := range batch {
		if !q.op.Remove && w.pending[q.op.Digest][q.op.Path] == q.ticket {
			w.drop(q.op.Digest, q.op.Path) // its latest put is written
		}
	}
	w.mu.Unlock()
}

// close writes what is queued and stops the writer. Changes made after it
// are dropped.
func (w *indexWriter) close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	w.mu.Unlock()
	close(w.stop)
	<-w.done
}

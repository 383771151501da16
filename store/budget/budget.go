// Package budget bounds the memory of work in flight: a weighted
// semaphore whose weights are bytes. pier holds a whole manifest in memory
// to hash and decode it, and a manifest may be 4 MiB; a budget lets any
// number of small ones through at once but only a few large ones, and a
// request that must wait waits in turn, until its context ends.
package budget

import (
	"container/list"
	"context"
	"sync"
)

// Budget is a number of bytes shared by the requests that hold them. It is
// safe for concurrent use.
type Budget struct {
	limit int64

	mu      sync.Mutex
	used    int64
	waiters list.List // of *waiter, first come first served
}

type waiter struct {
	n     int64
	ready chan struct{} // closed once the bytes are granted
}

// New returns a budget of limit bytes.
func New(limit int64) *Budget { return &Budget{limit: limit} }

// Limit is the budget's size in bytes.
func (b *Budget) Limit() int64 { return b.limit }

// heldKey marks a context whose request holds bytes of a budget.
type heldKey struct{ b *Budget }

// Acquire takes n bytes of the budget, waiting until they are free or ctx
// ends. Requests are served in order, so a large one is not starved by a
// stream of small ones; one larger than the whole budget waits until it
// can have the budget to itself. release gives the bytes back; it may be
// called more than once.
//
// The returned context carries the hold. An Acquire under it (the request
// that holds one manifest reads another) is granted at once, past the
// limit if need be: a request waiting for bytes it holds itself would wait
// forever. The excess is bounded by what one request reads at a time.
func (b *Budget) Acquire(ctx context.Context, n int64) (held context.Context, release func(), err error) {
	n = min(max(n, 0), b.limit)
	held = context.WithValue(ctx, heldKey{b}, true)
	b.mu.Lock()
	if ctx.Value(heldKey{b}) != nil || b.waiters.Len() == 0 && b.used+n <= b.limit {
		b.used += n
		b.mu.Unlock()
		return held, b.releaser(n), nil
	}
	w := &waiter{n: n, ready: make(chan struct{})}
	elem := b.waiters.PushBack(w)
	b.mu.Unlock()
	select {
	case <-w.ready:
		return held, b.releaser(n), nil
	case <-ctx.Done():
		b.mu.Lock()
		select {
		case <-w.ready:
			// Granted as the context ended: give the bytes back.
			b.used -= n
		default:
			b.waiters.Remove(elem)
		}
		b.grant()
		b.mu.Unlock()
		return nil, nil, ctx.Err()
	}
}

// TryAcquire takes n bytes of the budget if they are free now and nobody
// waits for them; it never waits. It is for what is worth having only
// when it costs no one a turn (a second buffer to overlap work).
func (b *Budget) TryAcquire(n int64) (release func(), ok bool) {
	n = min(max(n, 0), b.limit)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.waiters.Len() > 0 || b.used+n > b.limit {
		return nil, false
	}
	b.used += n
	return b.releaser(n), true
}

// InUse is how many bytes are held now.
func (b *Budget) InUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

func (b *Budget) releaser(n int64) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			b.used -= n
			b.grant()
			b.mu.Unlock()
		})
	}
}

// grant hands free bytes to the waiters at the front of the queue. The
// caller holds mu.
func (b *Budget) grant() {
	for e := b.waiters.Front(); e != nil; e = b.waiters.Front() {
		w := e.Value.(*waiter)
		if b.used+w.n > b.limit {
			return
		}
		b.used += w.n
		b.waiters.Remove(e)
		close(w.ready)
	}
}

package budget

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestNeverMoreThanTheLimitAtOnce(t *testing.T) {
	b := New(10)
	var held, peak atomic.Int64
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			n := int64(1 + i%7)
			_, release, err := b.Acquire(context.Background(), n)
			if err != nil {
				t.Error(err)
				return
			}
			now := held.Add(n)
			for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
			}
			time.Sleep(100 * time.Microsecond)
			held.Add(-n)
			release()
		})
	}
	wg.Wait()
	if p := peak.Load(); p > 10 || p < 7 {
		t.Fatalf("peak %d bytes held at once, want 7..10", p)
	}
	if b.InUse() != 0 {
		t.Fatalf("%d bytes still held", b.InUse())
	}
}

func TestALargeRequestIsServedInTurnAndAloneWhenOverTheLimit(t *testing.T) {
	b := New(10)
	_, r1, _ := b.Acquire(context.Background(), 4)
	got := make(chan string, 3)
	go func() {
		_, release, _ := b.Acquire(context.Background(), 100) // more than the budget: waits for it all
		got <- "large"
		release()
	}()
	waitQueued(t, b, 1)
	go func() {
		_, release, _ := b.Acquire(context.Background(), 1) // would fit, but comes after the large one
		got <- "small"
		release()
	}()
	waitQueued(t, b, 2)
	select {
	case g := <-got:
		t.Fatalf("%s request served while 4 bytes are held", g)
	case <-time.After(50 * time.Millisecond):
	}
	r1()
	if first, second := <-got, <-got; first != "large" || second != "small" {
		t.Fatalf("served %s then %s, want large then small", first, second)
	}
}

func TestAWaitEndsWithItsContextAndFreesItsTurn(t *testing.T) {
	b := New(10)
	_, r1, _ := b.Acquire(context.Background(), 8)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, _, err := b.Acquire(ctx, 5)
		errc <- err
	}()
	waitQueued(t, b, 1)
	done := make(chan struct{})
	go func() {
		_, release, _ := b.Acquire(context.Background(), 2) // fits once the waiter ahead gives up
		release()
		close(done)
	}()
	waitQueued(t, b, 2)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait returned %v", err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the request behind a cancelled one was never served")
	}
	r1()
	r1() // a second release is harmless
	if b.InUse() != 0 {
		t.Fatalf("%d bytes still held", b.InUse())
	}
}

func waitQueued(t *testing.T, b *Budget, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		b.mu.Lock()
		q := b.waiters.Len()
		b.mu.Unlock()
		if q == n {
			return
		}
	}
	t.Fatalf("%d requests never queued", n)
}

func TestARequestNeverWaitsForItself(t *testing.T) {
	b := New(10)
	held, r1, _ := b.Acquire(context.Background(), 8)
	_, r2, _ := b.Acquire(context.Background(), 2) // fills the budget
	ctx, cancel := context.WithTimeout(held, 5*time.Second)
	defer cancel()
	_, r3, err := b.Acquire(ctx, 4) // the first request reads a second manifest
	if err != nil {
		t.Fatalf("a nested acquire waited for its own request: %v", err)
	}
	if b.InUse() != 14 {
		t.Fatalf("%d bytes in use, want 14", b.InUse())
	}
	other, cancelOther := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancelOther()
	if _, _, err := b.Acquire(other, 1); err == nil {
		t.Fatal("another request was let in past the limit")
	}
	r3()
	r2()
	r1()
	if b.InUse() != 0 {
		t.Fatalf("%d bytes still held", b.InUse())
	}
}

func TestTryAcquireNeverWaitsNorJumpsTheQueue(t *testing.T) {
	b := New(10)
	r1, ok := b.TryAcquire(6)
	if !ok {
		t.Fatal("TryAcquire of free bytes failed")
	}
	if _, ok := b.TryAcquire(6); ok {
		t.Fatal("TryAcquire went past the limit")
	}
	waiting := make(chan error, 1)
	go func() {
		_, r, err := b.Acquire(context.Background(), 8)
		if err == nil {
			r()
		}
		waiting <- err
	}()
	waitQueued(t, b, 1)
	if _, ok := b.TryAcquire(2); ok {
		t.Fatal("TryAcquire took bytes a waiting request is queued for")
	}
	r1()
	if err := <-waiting; err != nil {
		t.Fatal(err)
	}
	if b.InUse() != 0 {
		t.Fatalf("%d bytes still held", b.InUse())
	}
}

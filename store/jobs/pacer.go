package jobs

import (
	"context"
	"time"
)

// busyDivisor is how much slower scrub reads while clients are served.
const busyDivisor = 8

// pacer spaces reads so that they average at most rate bytes per second
// (rate/busyDivisor while clients are being served). It sleeps between
// chunks rather than in bursts, so the disk sees a steady trickle.
type pacer struct {
	rate int64
	busy func() bool
	next time.Time // when the next chunk may start
}

func newPacer(rate int64, busy func() bool) *pacer {
	return &pacer{rate: rate, busy: busy}
}

// Wait accounts for n bytes just read and sleeps until reading more keeps
// the average under the rate.
func (p *pacer) Wait(ctx context.Context, n int) error {
	if p.rate <= 0 {
		return ctx.Err()
	}
	rate := p.rate
	if p.busy != nil && p.busy() {
		rate = max(rate/busyDivisor, 1)
	}
	chunk := time.Duration(float64(n) / float64(rate) * float64(time.Second))
	// The time spent reading this chunk counts toward its share, but a
	// lag longer than one chunk (a pause, a slow disk) is forgiven rather
	// than repaid in a burst.
	if earliest := time.Now().Add(-chunk); p.next.Before(earliest) {
		p.next = earliest
	}
	p.next = p.next.Add(chunk)
	d := time.Until(p.next)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is a bounded, jittered exponential wait. The zero value is not
// usable; set Min and Max (0 < Min <= Max).
type Backoff struct {
	Min, Max time.Duration

	cur time.Duration
}

// New returns a Backoff from min to max.
func New(min, max time.Duration) *Backoff { return &Backoff{Min: min, Max: max} }

// Next returns the next wait: the current interval (Min at first, then
// doubled up to Max) jittered into [interval/2, interval].
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.Min
	} else {
		b.cur = min(2*b.cur, b.Max)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

// Reset starts the next wait from Min again; call it after a success.
func (b *Backoff) Reset() { b.cur = 0 }

// Wait sleeps for Next() or until ctx is done, returning ctx.Err() then.
func (b *Backoff) Wait(ctx context.Context) error {
	if !Sleep(ctx, b.Next()) {
		return ctx.Err()
	}
	return nil
}

// Sleep waits d or until ctx is done; it reports whether d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

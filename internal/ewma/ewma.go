package ewma

import (
	"math"
	"time"
)

// Rate is an events-per-second average over roughly the last Window. The
// zero value is not usable; use New.
type Rate struct {
	window time.Duration
	last   time.Time
	rate   float64
}

// New returns a Rate averaging over window.
func New(window time.Duration) *Rate { return &Rate{window: window} }

// Add records n events at now and returns the updated rate.
func (r *Rate) Add(n int, now time.Time) float64 {
	if r.last.IsZero() {
		r.last = now
		return r.rate
	}
	dt := now.Sub(r.last)
	if dt <= 0 {
		dt = time.Microsecond
	}
	r.last = now
	alpha := 1 - math.Exp(-dt.Seconds()/r.window.Seconds())
	r.rate += alpha * (float64(n)/dt.Seconds() - r.rate)
	return r.rate
}

// PerSecond is the current average.
func (r *Rate) PerSecond() float64 { return r.rate }

// A stream of transactions is busy while they come at BusyRate a second
// or faster, averaged over BusyWindow. Both ends of replication use it: a
// busy primary gathers the transactions of a few milliseconds into one
// message, a busy replica applies them as one commit; when not busy, each
// goes as soon as it commits, so that lag at moderate rates does not grow.
const (
	BusyRate   = 2500 // transactions per second
	BusyWindow = 50 * time.Millisecond
)

// Busy tells whether a stream of transactions is busy. The zero value is
// not usable; use NewBusy.
type Busy struct {
	rate *Rate
	busy bool
}

// NewBusy returns a Busy for a stream that is not busy yet.
func NewBusy() *Busy { return &Busy{rate: New(BusyWindow)} }

// Add records n transactions handled at now and reports whether the
// stream is busy.
func (b *Busy) Add(n int, now time.Time) bool {
	b.busy = b.rate.Add(n, now) >= BusyRate
	return b.busy
}

// Is reports whether the stream was busy at the last Add.
func (b *Busy) Is() bool { return b.busy }

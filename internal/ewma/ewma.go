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

package consul

import (
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

// The defaults: a renewal within 7.5 s, a pass within 1.5 s, and writes
// until 1.5 s + lock-delay after the last pass.
func TestFence_Defaults(t *testing.T) {
	f := fence{ttl: 10 * time.Second, checkTTL: 2 * time.Second, lockDelay: time.Second}
	if got := f.renewBy(t0); !got.Equal(at(7500 * time.Millisecond)) {
		t.Fatalf("renewBy %s", got.Sub(t0))
	}
	if got := f.passBy(t0); !got.Equal(at(1500 * time.Millisecond)) {
		t.Fatalf("passBy %s", got.Sub(t0))
	}
	if got := f.passEvery(); got != 500*time.Millisecond {
		t.Fatalf("passEvery %s", got)
	}
	if got := f.validUntil(t0, t0); !got.Equal(at(2500 * time.Millisecond)) {
		t.Fatalf("validUntil %s, want the pass's 2.5 s", got.Sub(t0))
	}
	// An old renewal bounds it when it is the earlier.
	if got := f.validUntil(at(-7*time.Second), t0); !got.Equal(at(500 * time.Millisecond)) {
		t.Fatalf("validUntil with a renewal 7 s old: %s, want 0.5 s", got.Sub(t0))
	}
}

// Without a check only the renewal counts (LiteFS's session), whenever the
// last pass was.
func TestFence_NoCheck(t *testing.T) {
	f := fence{ttl: 10 * time.Second, lockDelay: time.Second}
	if got := f.validUntil(t0, time.Time{}); !got.Equal(at(7500 * time.Millisecond)) {
		t.Fatalf("validUntil %s, want 7.5 s", got.Sub(t0))
	}
}

// The safety property, over many settings: writes stop before another node
// could take the lock. After the last acknowledged pass sent at p, the
// check lapses no sooner than p+checkTTL and the lock is kept from all for
// lockDelay after; after the last renewal sent at r the session expires no
// sooner than r+TTL. A pass must be answered before the check could lapse.
// And the node tries to pass at least three times within that.
func TestFence_StopsWritesBeforeAnotherNodeCouldTakeTheLock(t *testing.T) {
	for _, ttl := range []time.Duration{10 * time.Second, 15 * time.Second, time.Minute} {
		for _, checkTTL := range []time.Duration{0, time.Second, 1500 * time.Millisecond, 2 * time.Second, 5 * time.Second, 9 * time.Second} {
			for _, lockDelay := range []time.Duration{0, time.Second, 15 * time.Second} {
				f := fence{ttl: ttl, checkTTL: checkTTL, lockDelay: lockDelay}
				for _, renewedAgo := range []time.Duration{0, time.Second, 5 * time.Second, 9 * time.Second} {
					for _, passedAgo := range []time.Duration{0, 300 * time.Millisecond, time.Second, 3 * time.Second} {
						r, p := at(-renewedAgo), at(-passedAgo)
						until := f.validUntil(r, p)
						if !until.Before(r.Add(ttl)) {
							t.Fatalf("%+v: writes until %s, but the session can expire at %s", f, until.Sub(t0), r.Add(ttl).Sub(t0))
						}
						if checkTTL == 0 {
							continue
						}
						if free := p.Add(checkTTL + lockDelay); !until.Before(free) {
							t.Fatalf("%+v: writes until %s, but another node can take the lock at %s", f, until.Sub(t0), free.Sub(t0))
						}
						if by := f.passBy(p); !by.Before(p.Add(checkTTL)) {
							t.Fatalf("%+v: a pass answered at %s counts, but the check may have lapsed at %s", f, by.Sub(t0), p.Add(checkTTL).Sub(t0))
						}
						if e := f.passEvery(); 3*e > f.passBy(p).Sub(p) || e <= 0 {
							t.Fatalf("%+v: passes every %s, fewer than three within %s", f, e, f.passBy(p).Sub(p))
						}
					}
				}
			}
		}
	}
}

package ewma

import (
	"testing"
	"time"
)

func TestRate_FollowsASustainedRate(t *testing.T) {
	r := New(50 * time.Millisecond)
	now := time.Unix(0, 0)
	for range 1000 {
		now = now.Add(250 * time.Microsecond) // 4,000 a second
		r.Add(1, now)
	}
	if got := r.PerSecond(); got < 3900 || got > 4100 {
		t.Fatalf("rate %.0f, want about 4000", got)
	}
}

func TestRate_BurstAfterAStallStaysNearTheAverage(t *testing.T) {
	r := New(50 * time.Millisecond)
	now := time.Unix(0, 0)
	for range 200 {
		now = now.Add(time.Millisecond) // 1,000 a second
		r.Add(1, now)
	}
	// A 4 ms stall, then the four late events at once.
	now = now.Add(4 * time.Millisecond)
	r.Add(1, now)
	now = now.Add(10 * time.Microsecond)
	got := r.Add(3, now)
	if got > 2500 {
		t.Fatalf("rate %.0f after one burst, want it to stay well under 2500", got)
	}
}

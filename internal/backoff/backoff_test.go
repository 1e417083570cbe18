package backoff

import (
	"context"
	"testing"
	"time"
)

func TestNext_DoublesToMaxWithJitterInUpperHalf(t *testing.T) {
	b := New(10*time.Millisecond, 80*time.Millisecond)
	want := []time.Duration{10, 20, 40, 80, 80}
	for i, w := range want {
		w *= time.Millisecond
		d := b.Next()
		if d < w/2 || d > w {
			t.Fatalf("wait %d = %v, want in [%v, %v]", i, d, w/2, w)
		}
	}
	b.Reset()
	if d := b.Next(); d > 10*time.Millisecond {
		t.Fatalf("after Reset, wait = %v, want at most Min", d)
	}
}

func TestWait_ReturnsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b := New(time.Hour, time.Hour)
	if err := b.Wait(ctx); err != context.Canceled {
		t.Fatalf("Wait on a cancelled context = %v, want context.Canceled", err)
	}
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep on a cancelled context reported the wait passed")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep of 1ms on a live context reported it did not pass")
	}
}

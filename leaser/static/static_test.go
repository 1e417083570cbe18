package static

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pagewire/pagewire/leaser"
)

func TestLeaser(t *testing.T) {
	ctx := context.Background()
	primary := leaser.Info{Hostname: "p1", AdvertiseURL: "http://p1:20202"}
	l, err := New(true, primary).Acquire(ctx)
	if err != nil || l.Epoch() != 1 || l.Lost() != nil {
		t.Fatalf("candidate: lease %v, %v; want epoch 1, never lost", l, err)
	}
	if err := l.Release(ctx); err == nil || !strings.Contains(err.Error(), "lease.candidate") {
		t.Fatalf("release of a static lease: %v, want an error naming lease.candidate", err)
	}
	var held *leaser.HeldError
	if _, err := New(false, primary).Acquire(ctx); !errors.As(err, &held) || held.Holder != primary || !errors.Is(err, leaser.ErrHeld) {
		t.Fatalf("replica: %v, want ErrHeld naming p1", err)
	}
	if got, err := New(false, primary).Primary(ctx); err != nil || got != primary {
		t.Fatalf("Primary: %v, %v", got, err)
	}
	if _, err := New(false, leaser.Info{}).Primary(ctx); !errors.Is(err, leaser.ErrNoPrimary) {
		t.Fatalf("no primary configured: %v, want ErrNoPrimary", err)
	}
}

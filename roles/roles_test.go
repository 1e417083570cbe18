package roles

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/safego"
	"github.com/pagewire/pagewire/leaser"
)

// fakeLeaser hands out its lease to the first Acquire while free, and
// reports holder otherwise.
type fakeLeaser struct {
	mu     sync.Mutex
	free   bool
	holder leaser.Holder
	lease  *fakeLease
	change chan struct{}
}

func (f *fakeLeaser) Type() string { return "fake" }

func (f *fakeLeaser) Acquire(context.Context) (leaser.Lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.free {
		return nil, &leaser.HeldError{Holder: f.holder.Info}
	}
	f.free = false
	f.lease = &fakeLease{epoch: 7, lost: make(chan struct{})}
	return f.lease, nil
}

func (f *fakeLeaser) Primary(ctx context.Context) (leaser.Info, error) {
	h, _, err := f.WaitPrimary(ctx, 0)
	return h.Info, err
}

func (f *fakeLeaser) WaitPrimary(ctx context.Context, index uint64) (leaser.Holder, uint64, error) {
	if index > 0 {
		select {
		case <-ctx.Done():
			return leaser.Holder{}, index, ctx.Err()
		case <-f.change:
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.holder.Hostname == "" {
		return leaser.Holder{}, index + 1, leaser.ErrNoPrimary
	}
	return f.holder, index + 1, nil
}

type fakeLease struct {
	epoch pagewire.Epoch
	lost  chan struct{}
}

func (l *fakeLease) Epoch() pagewire.Epoch            { return l.epoch }
func (l *fakeLease) Lost() <-chan struct{}            { return l.lost }
func (l *fakeLease) Release(context.Context) error    { return nil }
func (l *fakeLease) ValidUntil() time.Time            { return time.Time{} }
func (f *fakeFollower) Run(ctx context.Context) error { <-ctx.Done(); return nil }

type fakeFollower struct{}

// roleLog records the store's roles.
type roleLog struct {
	mu    sync.Mutex
	roles []pagewire.Role
	ch    chan pagewire.Role
}

func (r *roleLog) SetRole(role pagewire.Role, _ pagewire.ReadOnlyError, _ pagewire.Epoch) {
	r.mu.Lock()
	r.roles = append(r.roles, role)
	r.mu.Unlock()
	r.ch <- role
}

func (r *roleLog) SetPrimaryUntil(epoch pagewire.Epoch, _ func() time.Time) {
	r.SetRole(pagewire.RolePrimary, pagewire.ReadOnlyError{}, epoch)
}

func (r *roleLog) wait(t *testing.T, want pagewire.Role) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case got := <-r.ch:
			if got == want {
				return
			}
		case <-timeout:
			t.Fatalf("the store never became %v", want)
		}
	}
}

// runManager runs a Manager on l until the returned stop is called; the
// store's roles and the primaries followed are reported.
func runManager(t *testing.T, l *fakeLeaser, candidate bool) (store *roleLog, followed chan leaser.Holder, stop func() error) {
	t.Helper()
	store = &roleLog{ch: make(chan pagewire.Role, 16)}
	followed = make(chan leaser.Holder, 4)
	cfg := DefaultConfig()
	cfg.Leaser, cfg.Store, cfg.Candidate, cfg.Logger = l, store, candidate, slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Follow = func(h leaser.Holder) (Follower, error) { followed <- h; return &fakeFollower{}, nil }
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	return store, followed, func() error { cancel(); return <-done }
}

func TestManager_LeadsThenStepsDownWhenTheLeaseIsLost(t *testing.T) {
	l := &fakeLeaser{free: true, change: make(chan struct{})}
	store, followed, stop := runManager(t, l, true)
	store.wait(t, pagewire.RolePrimary)

	// Another node takes the lease after this one lost it.
	l.mu.Lock()
	l.holder = leaser.Holder{Info: leaser.Info{Hostname: "other", AdvertiseURL: "http://other:20202"}, Epoch: 9}
	lease := l.lease
	l.mu.Unlock()
	close(lease.lost)
	store.wait(t, pagewire.RoleReplica)
	select {
	case h := <-followed:
		if h.Hostname != "other" || h.Epoch != 9 {
			t.Fatalf("followed %+v, want other at epoch 9", h)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("never followed the new primary")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestManager_NonCandidateOnlyFollows(t *testing.T) {
	l := &fakeLeaser{free: true, holder: leaser.Holder{Info: leaser.Info{Hostname: "p", AdvertiseURL: "http://p:20202"}, Epoch: 3}, change: make(chan struct{})}
	store, followed, stop := runManager(t, l, false)
	select {
	case h := <-followed:
		if h.Hostname != "p" {
			t.Fatalf("followed %+v", h)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("never followed")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	for _, r := range store.roles {
		if r == pagewire.RolePrimary {
			t.Fatal("a non-candidate became primary")
		}
	}
	if !l.free {
		t.Fatal("a non-candidate took the lease")
	}
}

func TestConfig_Validate(t *testing.T) {
	good := DefaultConfig()
	good.Leaser, good.Store = &fakeLeaser{}, &roleLog{}
	good.Follow = func(leaser.Holder) (Follower, error) { return &fakeFollower{}, nil }
	if err := good.Validate(); err != nil {
		t.Fatalf("DefaultConfig with the parts wired in: %v", err)
	}
	for _, tc := range []struct {
		name, want string
		edit       func(*Config)
	}{
		{"no leaser", "Leaser", func(c *Config) { c.Leaser = nil }},
		{"no follow", "Follow", func(c *Config) { c.Follow = nil }},
		{"zero backoff", "MinBackoff", func(c *Config) { c.MinBackoff = 0 }},
		{"max below min", "MaxBackoff", func(c *Config) { c.MaxBackoff = c.MinBackoff / 2 }},
		{"zero settle", "SettleTimeout", func(c *Config) { c.SettleTimeout = 0 }},
		{"negative demote delay", "DemoteDelay", func(c *Config) { c.DemoteDelay = -time.Second }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.edit(&c)
			if _, err := New(c); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err=%v, want one naming %s", err, tc.want)
			}
		})
	}
}

// panickyFollower's Run panics.
type panickyFollower struct{}

func (panickyFollower) Run(context.Context) error { panic("follower exploded") }

// A follower that panics, or a promotion that panics, ends Run with the
// panic: the node stops instead of staying a replica that applies nothing.
func TestManager_PanicEndsRun(t *testing.T) {
	for _, tc := range []struct {
		name    string
		edit    func(*Config)
		wantWhy string
	}{
		{"follower", func(c *Config) {
			c.Follow = func(leaser.Holder) (Follower, error) { return panickyFollower{}, nil }
		}, "follower exploded"},
		{"promotion", func(c *Config) {
			c.Candidate = true
			c.Promote = func(context.Context, leaser.Holder) error { panic("promotion exploded") }
		}, "promotion exploded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &fakeLeaser{holder: leaser.Holder{Info: leaser.Info{Hostname: "p", AdvertiseURL: "http://p:20202"}, Epoch: 3}, change: make(chan struct{})}
			cfg := DefaultConfig()
			cfg.Leaser, cfg.Store, cfg.Logger = l, &roleLog{ch: make(chan pagewire.Role, 16)}, slog.New(slog.NewTextHandler(io.Discard, nil))
			cfg.Follow = func(leaser.Holder) (Follower, error) { return &fakeFollower{}, nil }
			tc.edit(&cfg)
			m, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err = m.Run(ctx) // returns on its own: ctx is only a safety net
			var pe *safego.PanicError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.wantWhy) {
				t.Fatalf("Run: %v, want the panic", err)
			}
			if ctx.Err() != nil {
				t.Fatal("Run returned only when ctx ended")
			}
		})
	}
}

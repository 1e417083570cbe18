//go:build integration

package consul

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/pagewire/pagewire/internal/consultest"
	"github.com/pagewire/pagewire/leaser"
)

func newTestConsul(t *testing.T, agent *consultest.Agent, host string) *Leaser {
	t.Helper()
	l, err := New(Config{URL: agent.URL, Key: "litefs/primary", TTL: 10 * time.Second, LockDelay: time.Second,
		Candidate: true, Node: leaser.Info{Hostname: host, AdvertiseURL: "http://" + host + ":20202"}})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestConsulAgent_ExactlyOneOfThreeHoldsTheLease(t *testing.T) {
	agent := consultest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	var won []string
	var held []*leaser.HeldError
	var wg sync.WaitGroup
	for _, host := range []string{"n1", "n2", "n3"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lease, err := newTestConsul(t, agent, host).Acquire(ctx)
			mu.Lock()
			defer mu.Unlock()
			var h *leaser.HeldError
			switch {
			case err == nil:
				won = append(won, host)
				t.Cleanup(func() { _ = lease.Release(context.Background()) })
			case errors.As(err, &h):
				held = append(held, h)
			default:
				t.Errorf("%s: %v", host, err)
			}
		}()
	}
	wg.Wait()
	if len(won) != 1 || len(held) != 2 {
		t.Fatalf("winners %v, refused %d; want exactly one winner", won, len(held))
	}
	for _, h := range held {
		if h.Holder.Hostname != won[0] || h.Holder.AdvertiseURL != "http://"+won[0]+":20202" {
			t.Fatalf("refused with holder %+v, want %s", h.Holder, won[0])
		}
	}
	l := newTestConsul(t, agent, "observer")
	if got, err := l.Primary(ctx); err != nil || got.Hostname != won[0] {
		t.Fatalf("Primary: %+v, %v; want %s", got, err, won[0])
	}
	// LiteFS's layout: JSON value at the key, a cluster ID beside it.
	if id, err := l.ClusterID(ctx); err != nil || !strings.HasPrefix(id, "LFSC") {
		t.Fatalf("cluster ID %q, %v", id, err)
	}
}

func TestConsulAgent_EveryAcquisitionHasALargerEpoch(t *testing.T) {
	agent := consultest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n1, n2 := newTestConsul(t, agent, "n1"), newTestConsul(t, agent, "n2")
	var last uint64
	for i, l := range []*Leaser{n1, n2, n1} {
		lease, err := l.Acquire(ctx)
		if err != nil {
			t.Fatalf("acquisition %d: %v", i+1, err)
		}
		if e := uint64(lease.Epoch()); e <= last {
			t.Fatalf("acquisition %d has epoch %d, not larger than %d", i+1, e, last)
		}
		last = uint64(lease.Epoch())
		if err := lease.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// A holder that dies without releasing (its session invalidated) keeps the
// lock from anyone for lock-delay.
func TestConsulAgent_LockDelayAfterAHolderDies(t *testing.T) {
	agent := consultest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n1, n2 := newTestConsul(t, agent, "n1"), newTestConsul(t, agent, "n2")
	lease, err := n1.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cl := lease.(*heldLease)
	close(cl.stop) // the holder stops renewing, as a killed node does
	<-cl.done
	if _, err := n1.c.Session().Destroy(cl.id, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := n2.Acquire(ctx); !errors.Is(err, leaser.ErrHeld) || !strings.Contains(err.Error(), "lock-delay") {
		t.Fatalf("right after the holder's session ended: %v, want refused for lock-delay", err)
	}
	for {
		l2, err := n2.Acquire(ctx)
		if err == nil {
			if l2.Epoch() <= lease.Epoch() {
				t.Fatalf("new epoch %d, old %d", l2.Epoch(), lease.Epoch())
			}
			_ = l2.Release(ctx)
			return
		}
		if !errors.Is(err, leaser.ErrHeld) {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatal("never acquired after lock-delay")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// The lease is renewed past its TTL while Consul answers, and lost (before
// the session could expire) when it does not.
func TestConsulAgent_RenewedThenLostWhenConsulGoes(t *testing.T) {
	agent := consultest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l := newTestConsul(t, agent, "n1")
	lease, err := l.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-lease.Lost():
		t.Fatal("lost the lease while Consul was up")
	case <-time.After(l.cfg.TTL + 2*time.Second):
	}
	if got, err := l.Primary(ctx); err != nil || got.Hostname != "n1" {
		t.Fatalf("after a TTL: primary %+v, %v; want n1 still", got, err)
	}
	agent.Kill()
	select {
	case <-lease.Lost():
	case <-ctx.Done():
		t.Fatal("the lease was never lost after Consul went away")
	}
	cl := lease.(*heldLease)
	cl.mu.Lock()
	defer cl.mu.Unlock()
	// Consul would free the lock no sooner than TTL after the last renewal.
	if gap := cl.lostAt.Sub(cl.renewed); gap >= l.cfg.TTL {
		t.Fatalf("lost %s after the last renewal: not before the session could expire (TTL %s)", gap, l.cfg.TTL)
	}
}

func TestConsulAgent_WaitPrimaryFollowsChanges(t *testing.T) {
	agent := consultest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n1, n2 := newTestConsul(t, agent, "n1"), newTestConsul(t, agent, "n2")
	lease, err := n1.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	info, index, err := n2.WaitPrimary(ctx, 0)
	if err != nil || info.Hostname != "n1" || info.Epoch != lease.Epoch() {
		t.Fatalf("primary %+v, %v; want n1 at epoch %d", info, err, lease.Epoch())
	}
	changed := make(chan error, 1)
	go func() {
		_, _, err := n2.WaitPrimary(ctx, index)
		changed <- err
	}()
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-changed; !errors.Is(err, leaser.ErrNoPrimary) {
		t.Fatalf("after the release: %v, want ErrNoPrimary", err)
	}
	// The raw key still exists (session behavior release), without a holder.
	pair, _, err := n2.c.KV().Get("litefs/primary", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil || pair == nil || pair.Session != "" {
		t.Fatalf("key after release: %+v, %v", pair, err)
	}
}

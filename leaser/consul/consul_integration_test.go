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
	return newTestConsulCheck(t, agent, host, DefaultCheckTTL)
}

func newTestConsulCheck(t *testing.T, agent *consultest.Agent, host string, checkTTL time.Duration) *Leaser {
	t.Helper()
	l, err := New(Config{URL: agent.URL, Key: "litefs/primary", TTL: 10 * time.Second, LockDelay: time.Second, CheckTTL: checkTTL,
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

// stopKeeping stops a held lease's renewals and passes without releasing
// anything, as when its node is killed.
func stopKeeping(t *testing.T, lease leaser.Lease) *heldLease {
	t.Helper()
	cl := lease.(*heldLease)
	close(cl.stop)
	<-cl.done
	return cl
}

// The session is tied to the holder's check alone: a dead holder's lock is
// freed once the check goes critical (2 s after the last pass), not after
// the session's TTL, and no other node gets it for lock-delay after that.
func TestConsulAgent_DeadHoldersCheckFreesTheLock(t *testing.T) {
	agent := consultest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n1, n2 := newTestConsul(t, agent, "n1"), newTestConsul(t, agent, "n2")
	lease, err := n1.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cl := lease.(*heldLease)
	info, _, err := n1.c.Session().Info(cl.id, nil)
	if err != nil || info == nil {
		t.Fatalf("session info: %+v, %v", info, err)
	}
	if len(info.NodeChecks) != 1 || info.NodeChecks[0] != n1.CheckID() || len(info.Checks) != 0 {
		t.Fatalf("session checks %v, node checks %v; want only %s (no serfHealth)", info.Checks, info.NodeChecks, n1.CheckID())
	}

	// Kept alive across several check TTLs by the passes.
	select {
	case <-lease.Lost():
		t.Fatal("lost the lease while passing its check")
	case <-time.After(3 * DefaultCheckTTL):
	}
	if until := lease.ValidUntil(); time.Until(until) <= 0 || time.Until(until) > DefaultCheckTTL*3/4+time.Second {
		t.Fatalf("valid for %s more, want within the check's bound", time.Until(until))
	}

	// The holder dies: the lock is freed once the check goes critical.
	cl.mu.Lock()
	lastPass := cl.passed
	cl.mu.Unlock()
	stopKeeping(t, lease)
	_, index, err := n2.WaitPrimary(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	for {
		_, index, err = n2.WaitPrimary(ctx, index)
		if errors.Is(err, leaser.ErrNoPrimary) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	freed := time.Since(lastPass)
	t.Logf("lock freed %s after the last pass (check TTL %s, session TTL %s)", freed.Round(time.Millisecond), DefaultCheckTTL, n1.cfg.TTL)
	if freed < DefaultCheckTTL {
		t.Fatalf("lock freed %s after the last pass, before the check could go critical", freed)
	}
	if freed >= n1.cfg.TTL {
		t.Fatalf("lock freed %s after the last pass: by the session's TTL, not the check", freed)
	}
	// Consul keeps it from others for lock-delay after the invalidation,
	// so the fence's deadline was before anyone could take it.
	if _, err := n2.Acquire(ctx); !errors.Is(err, leaser.ErrHeld) || !strings.Contains(err.Error(), "lock-delay") {
		t.Fatalf("right after the check failed: %v, want refused for lock-delay", err)
	}
	var l2 leaser.Lease
	for l2 == nil {
		l2, err = n2.Acquire(ctx)
		if err != nil && !errors.Is(err, leaser.ErrHeld) {
			t.Fatal(err)
		}
		if l2 == nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
	took := time.Since(lastPass)
	if validUntil := n1.fenceFor().validUntil(lastPass, lastPass); !validUntil.Before(lastPass.Add(took)) {
		t.Fatalf("the dead holder could write until %s after its last pass, and n2 took the lock at %s", validUntil.Sub(lastPass), took)
	}
	t.Logf("n2 took the lock %s after n1's last pass", took.Round(time.Millisecond))
	if err := l2.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// A released lease leaves no check behind.
	checks, err := n2.c.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := checks[n2.CheckID()]; ok {
		t.Fatalf("n2's check %s is still registered after Release", n2.CheckID())
	}
}

// A check that goes critical while its holder runs (its passes held up,
// as by a freeze or a stall) loses the lease, and passes that resume do
// not bring it back: the node took no writes past its deadline, which came
// before another node could take the lock.
func TestConsulAgent_LapsedCheckLosesTheLeaseForGood(t *testing.T) {
	agent := consultest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n1 := newTestConsul(t, agent, "n1")
	lease, err := n1.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cl := lease.(*heldLease)

	// Hold up the pass goroutine's state as a stall would: take the lock
	// the loop needs to record a pass, past the check's TTL.
	cl.mu.Lock()
	lastPass := cl.passed
	time.Sleep(DefaultCheckTTL + 500*time.Millisecond)
	cl.mu.Unlock()

	select {
	case <-lease.Lost():
	case <-ctx.Done():
		t.Fatal("the lease was not lost after its check lapsed")
	}
	cl.mu.Lock()
	lostAt := cl.lostAt
	cl.mu.Unlock()
	if !lease.ValidUntil().Equal(lostAt) || time.Now().Before(lease.ValidUntil()) {
		t.Fatalf("a lost lease is valid until %s", lease.ValidUntil())
	}
	// Its session is gone (Consul invalidated it, or the node gave it up).
	waitGone := time.Now().Add(10 * time.Second)
	for {
		info, _, err := n1.c.Session().Info(cl.id, nil)
		if err != nil {
			t.Fatal(err)
		}
		if info == nil {
			break
		}
		if time.Now().After(waitGone) {
			t.Fatal("the lapsed lease's session still exists")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("lost %s after the last pass", lostAt.Sub(lastPass).Round(time.Millisecond))
	<-cl.done
	checks, err := n1.c.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := checks[n1.CheckID()]; ok {
		t.Fatal("the lost lease's check is still registered")
	}
	// The node takes the lease again with a new session and check.
	var again leaser.Lease
	for again == nil {
		again, err = n1.Acquire(ctx)
		if err != nil && !errors.Is(err, leaser.ErrHeld) {
			t.Fatal(err)
		}
		if again == nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if again.Epoch() <= lease.Epoch() {
		t.Fatalf("epoch %d after %d", again.Epoch(), lease.Epoch())
	}
	_ = again.Release(ctx)
}

// With lease.consul.check-ttl 0 the session is LiteFS's: its TTL and
// Consul's default serfHealth, and no check is registered.
func TestConsulAgent_NoCheckIsLiteFSSession(t *testing.T) {
	agent := consultest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n1 := newTestConsulCheck(t, agent, "n1", 0)
	lease, err := n1.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release(ctx)
	info, _, err := n1.c.Session().Info(lease.(*heldLease).id, nil)
	if err != nil || info == nil {
		t.Fatalf("session info: %+v, %v", info, err)
	}
	if len(info.NodeChecks) != 1 || info.NodeChecks[0] != "serfHealth" {
		t.Fatalf("node checks %v, want serfHealth", info.NodeChecks)
	}
	checks, err := n1.c.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := checks[n1.CheckID()]; ok {
		t.Fatal("a check was registered with check-ttl 0")
	}
}

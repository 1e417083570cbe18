package roles

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/leaser"
)

// fakeConsul is a lease and a position board shared by several nodes, with
// Consul's indexes and blocking reads: every change bumps the index and
// wakes waiters.
type fakeConsul struct {
	mu        sync.Mutex
	index     uint64
	holder    leaser.Holder // Hostname "" while free
	freed     uint64
	lease     *fakeLease
	positions map[string]leaser.Published
	changed   chan struct{}
}

func newFakeConsul() *fakeConsul {
	return &fakeConsul{index: 1, positions: map[string]leaser.Published{}, changed: make(chan struct{})}
}

// bumpLocked records a change; c.mu must be held.
func (c *fakeConsul) bumpLocked() uint64 {
	c.index++
	close(c.changed)
	c.changed = make(chan struct{})
	return c.index
}

// wait blocks until the index passes index, ctx ends or d passes (0: no
// limit); it returns with c.mu held.
func (c *fakeConsul) wait(ctx context.Context, index uint64, d time.Duration) {
	var timeout <-chan time.Time
	if d > 0 {
		timeout = time.After(d)
	}
	c.mu.Lock()
	for index != 0 && c.index <= index {
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			c.mu.Lock()
			return
		case <-timeout:
			c.mu.Lock()
			return
		}
		c.mu.Lock()
	}
}

func (c *fakeConsul) setHolder(h leaser.Holder) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holder = h
	c.bumpLocked()
}

func (c *fakeConsul) holderName() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.holder.Hostname
}

func (c *fakeConsul) publish(p leaser.Position) {
	c.mu.Lock()
	defer c.mu.Unlock()
	idx := c.bumpLocked()
	c.positions[p.Hostname] = leaser.Published{Position: p, Index: idx}
}

// consulView is one node's view of a fakeConsul.
type consulView struct {
	c    *fakeConsul
	info leaser.Info
}

var (
	_ leaser.Leaser = (*consulView)(nil)
	_ leaser.Board  = (*consulView)(nil)
)

func (v *consulView) Type() string { return "fake-consul" }

func (v *consulView) Acquire(context.Context) (leaser.Lease, error) {
	c := v.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.holder.Hostname != "" {
		return nil, &leaser.HeldError{Holder: c.holder.Info}
	}
	epoch := pagewire.Epoch(c.bumpLocked())
	c.holder = leaser.Holder{Info: v.info, Epoch: epoch}
	l := &fakeLease{epoch: epoch, lost: make(chan struct{})}
	c.lease = l
	return &viewLease{fakeLease: l, c: c}, nil
}

func (v *consulView) Primary(ctx context.Context) (leaser.Info, error) {
	h, _, err := v.WaitPrimary(ctx, 0)
	return h.Info, err
}

func (v *consulView) WaitPrimary(ctx context.Context, index uint64) (leaser.Holder, uint64, error) {
	c := v.c
	c.wait(ctx, index, 0)
	defer c.mu.Unlock()
	if ctx.Err() != nil {
		return leaser.Holder{}, index, ctx.Err()
	}
	if c.holder.Hostname == "" {
		return leaser.Holder{Freed: c.freed}, c.index, leaser.ErrNoPrimary
	}
	return c.holder, c.index, nil
}

func (v *consulView) Publish(_ context.Context, p leaser.Position) error {
	v.c.publish(p)
	return nil
}

func (v *consulView) Positions(ctx context.Context, index uint64, d time.Duration) ([]leaser.Published, uint64, error) {
	c := v.c
	c.wait(ctx, index, d)
	defer c.mu.Unlock()
	var out []leaser.Published
	for _, p := range c.positions {
		out = append(out, p)
	}
	return out, c.index, ctx.Err()
}

// viewLease frees the fake lease on Release.
type viewLease struct {
	*fakeLease
	c *fakeConsul
}

func (l *viewLease) Release(context.Context) error {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	if l.c.holder.Epoch == l.epoch {
		l.c.holder = leaser.Holder{}
		l.c.freed = l.c.bumpLocked()
	}
	return nil
}

// positions is a node's TXIDs, settable by the test.
type positions struct {
	mu  sync.Mutex
	dbs map[string]pagewire.TXID
}

func (p *positions) set(db string, txid pagewire.TXID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dbs == nil {
		p.dbs = map[string]pagewire.TXID{}
	}
	p.dbs[db] = txid
}

func (p *positions) get() map[string]pagewire.TXID {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]pagewire.TXID{}
	for k, v := range p.dbs {
		out[k] = v
	}
	return out
}

type testNode struct {
	m     *Manager
	store *roleLog
	pos   *positions
	stop  func() error

	mu       sync.Mutex
	followed []string // the primaries followed, in order
}

func (n *testNode) following(host string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.followed) > 0 && n.followed[len(n.followed)-1] == host
}

func startNode(t *testing.T, c *fakeConsul, host string, cfg Config) *testNode {
	t.Helper()
	n := &testNode{store: &roleLog{ch: make(chan pagewire.Role, 64)}, pos: &positions{}}
	// The bounds a test leaves zero are DefaultConfig's.
	d := DefaultConfig()
	cfg.MinBackoff, cfg.MaxBackoff = cmp.Or(cfg.MinBackoff, d.MinBackoff), cmp.Or(cfg.MaxBackoff, d.MaxBackoff)
	cfg.ReleaseTimeout, cfg.SettleTimeout = cmp.Or(cfg.ReleaseTimeout, d.ReleaseTimeout), cmp.Or(cfg.SettleTimeout, d.SettleTimeout)
	cfg.DeferTimeout, cfg.CatchUpTimeout = cmp.Or(cfg.DeferTimeout, d.DeferTimeout), cmp.Or(cfg.CatchUpTimeout, d.CatchUpTimeout)
	cfg.Leaser = &consulView{c: c, info: leaser.Info{Hostname: host, AdvertiseURL: "http://" + host + ":20202"}}
	cfg.Store, cfg.Candidate, cfg.Hostname, cfg.Positions = n.store, true, host, n.pos.get
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Follow = func(h leaser.Holder) (Follower, error) {
		n.mu.Lock()
		defer n.mu.Unlock()
		n.followed = append(n.followed, h.Hostname)
		return &fakeFollower{}, nil
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.m = m
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	var runErr error
	n.stop = func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() { _ = n.stop() })
	return n
}

func (n *testNode) wasPrimary() bool {
	n.store.mu.Lock()
	defer n.store.mu.Unlock()
	for _, r := range n.store.roles {
		if r == pagewire.RolePrimary {
			return true
		}
	}
	return false
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A candidate behind a live candidate leaves it the free lease; it
// follows it once it takes it.
func TestManager_LaggingCandidateLeavesTheLeaseToOneAhead(t *testing.T) {
	c := newFakeConsul()
	c.publish(leaser.Position{Hostname: "ahead", Candidate: true, DBs: map[string]pagewire.TXID{"a.db": 9}})
	n := startNode(t, c, "behind", Config{DeferTimeout: time.Minute, SettleTimeout: 50 * time.Millisecond})
	n.pos.set("a.db", 5)
	// It publishes its own position, then leaves the lease alone.
	waitUntil(t, "the lagging candidate's position", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, ok := c.positions["behind"]
		return ok
	})
	time.Sleep(200 * time.Millisecond)
	if got := c.holderName(); got != "" {
		t.Fatalf("%s took the lease while a candidate ahead of it was alive", got)
	}
	c.setHolder(leaser.Holder{Info: leaser.Info{Hostname: "ahead", AdvertiseURL: "http://ahead:20202"}, Epoch: 50})
	waitUntil(t, "following the candidate ahead", func() bool { return n.following("ahead") })
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	if n.wasPrimary() {
		t.Fatal("the lagging candidate became primary")
	}
}

// The wait is bounded: if the candidate ahead never takes the lease, the
// one behind takes it after DeferTimeout.
func TestManager_DeferralIsBounded(t *testing.T) {
	c := newFakeConsul()
	c.publish(leaser.Position{Hostname: "ahead", Candidate: true, DBs: map[string]pagewire.TXID{"a.db": 9}})
	start := time.Now()
	n := startNode(t, c, "behind", Config{DeferTimeout: 300 * time.Millisecond, SettleTimeout: 50 * time.Millisecond})
	n.pos.set("a.db", 5)
	n.store.wait(t, pagewire.RolePrimary)
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Fatalf("took the lease after %s, before the 300ms deferral ended", waited)
	}
	if got := c.holderName(); got != "behind" {
		t.Fatalf("holder %q, want behind", got)
	}
}

// A candidate that is level with (or ahead of) the others takes the lease
// at once.
func TestManager_CandidateAheadTakesTheLease(t *testing.T) {
	c := newFakeConsul()
	c.publish(leaser.Position{Hostname: "other", Candidate: true, DBs: map[string]pagewire.TXID{"a.db": 9}})
	n := startNode(t, c, "me", Config{DeferTimeout: time.Minute, SettleTimeout: 50 * time.Millisecond})
	n.pos.set("a.db", 9)
	n.pos.set("b.db", 1)
	n.store.wait(t, pagewire.RolePrimary)
}

// Handoff: the primary stops writes, publishes its final position and
// releases; the other candidate catches up with it before taking the
// lease; the old primary stays out for DemoteDelay.
func TestManager_HandoffWaitsForCatchUpAndHoldsOff(t *testing.T) {
	c := newFakeConsul()
	a := startNode(t, c, "a", Config{DemoteDelay: time.Minute, SettleTimeout: 50 * time.Millisecond, CatchUpTimeout: 10 * time.Second})
	a.pos.set("x.db", 10)
	a.store.wait(t, pagewire.RolePrimary)
	b := startNode(t, c, "b", Config{SettleTimeout: 50 * time.Millisecond, CatchUpTimeout: 10 * time.Second})
	b.pos.set("x.db", 7)
	waitUntil(t, "b following a", func() bool { return b.following("a") })

	if _, err := b.m.Handoff(context.Background(), ""); !errors.Is(err, ErrNotPrimary) || !errors.Is(err, pagewire.ErrReadOnly) {
		t.Fatalf("Handoff on a follower: %v, want ErrNotPrimary, a read-only error", err)
	}
	type result struct {
		h   leaser.Holder
		err error
	}
	res := make(chan result, 1)
	go func() {
		h, err := a.m.Handoff(context.Background(), "")
		res <- result{h, err}
	}()
	a.store.wait(t, pagewire.RoleReplica)
	waitUntil(t, "a's final position", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		p := c.positions["a"]
		return p.Final && p.DBs["x.db"] == 10
	})
	time.Sleep(100 * time.Millisecond)
	if got := c.holderName(); got != "" {
		t.Fatalf("%s took the lease before b caught up", got)
	}
	b.pos.set("x.db", 10)
	r := <-res
	if r.err != nil || r.h.Hostname != "b" {
		t.Fatalf("Handoff: %+v %v, want b", r.h, r.err)
	}
	b.store.wait(t, pagewire.RolePrimary)
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	if got := c.holderName(); got != "b" {
		t.Fatalf("holder %q after the handoff, want b", got)
	}
}

// A handoff to a named target: the other candidates leave it the lease.
func TestManager_HandoffToTarget(t *testing.T) {
	c := newFakeConsul()
	a := startNode(t, c, "a", Config{DemoteDelay: time.Minute, SettleTimeout: 50 * time.Millisecond})
	a.store.wait(t, pagewire.RolePrimary)
	b := startNode(t, c, "b", Config{SettleTimeout: 50 * time.Millisecond, DeferTimeout: time.Minute})
	t2 := startNode(t, c, "t", Config{SettleTimeout: 50 * time.Millisecond, DeferTimeout: time.Minute})
	waitUntil(t, "both following", func() bool {
		return b.following("a") && t2.following("a")
	})
	h, err := a.m.Handoff(context.Background(), "t")
	if err != nil || h.Hostname != "t" {
		t.Fatalf("Handoff to t: %+v %v", h, err)
	}
	if b.wasPrimary() {
		t.Fatal("b took the lease handed to t")
	}
}

// lease.promote: a candidate that starts following asks the primary to
// hand it the lease, and gets it.
func TestManager_PromoteTakesOverOnce(t *testing.T) {
	c := newFakeConsul()
	a := startNode(t, c, "a", Config{DemoteDelay: time.Minute, SettleTimeout: 50 * time.Millisecond})
	a.store.wait(t, pagewire.RolePrimary)
	calls := make(chan string, 4)
	b := startNode(t, c, "b", Config{SettleTimeout: 50 * time.Millisecond,
		Promote: func(ctx context.Context, h leaser.Holder) error {
			calls <- h.Hostname
			_, err := a.m.Handoff(ctx, "b")
			return err
		}})
	b.store.wait(t, pagewire.RolePrimary)
	if got := <-calls; got != "a" {
		t.Fatalf("promote asked %q, want a", got)
	}
	waitUntil(t, "a following b", func() bool { return a.following("b") })
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case h := <-calls:
		t.Fatalf("promote ran again, asking %s", h)
	default:
	}
}

// The hold-off after a handoff keeps the lease from coming straight back,
// but not from a later handoff by the successor.
func TestManager_HoldOffEndsWhenTheSuccessorHandsOff(t *testing.T) {
	c := newFakeConsul()
	a := startNode(t, c, "a", Config{DemoteDelay: time.Hour, SettleTimeout: 50 * time.Millisecond})
	a.store.wait(t, pagewire.RolePrimary)
	b := startNode(t, c, "b", Config{DemoteDelay: time.Hour, SettleTimeout: 50 * time.Millisecond})
	waitUntil(t, "b following a", func() bool { return b.following("a") })
	if h, err := a.m.Handoff(context.Background(), ""); err != nil || h.Hostname != "b" {
		t.Fatalf("a's handoff: %+v %v", h, err)
	}
	b.store.wait(t, pagewire.RolePrimary)
	waitUntil(t, "a following b", func() bool { return a.following("b") })
	if h, err := b.m.Handoff(context.Background(), ""); err != nil || h.Hostname != "a" {
		t.Fatalf("b's handoff: %+v %v, want a despite its hold-off", h, err)
	}
}

// Package roles runs a node's role from its lease at run time: a candidate
// takes the lease when it is free and becomes the primary; every other
// node follows whoever holds it, and follows the next holder when it
// changes. A primary that loses its lease stops taking writes at once.
package roles

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/leaser"
)

// Store is the node's storage server as the manager needs it (server.Store).
type Store interface {
	SetRole(role pagewire.Role, ro pagewire.ReadOnlyError, epoch pagewire.Epoch)
	// SetPrimaryUntil makes the node primary while until says the lease
	// is held.
	SetPrimaryUntil(epoch pagewire.Epoch, until func() time.Time)
}

// Follower replicates from one primary until its context ends
// (replicator.Replica).
type Follower interface {
	Run(ctx context.Context) error
}

// Config configures a Manager.
type Config struct {
	Leaser    leaser.Leaser
	Store     Store
	Candidate bool
	// Hostname is this node's, as it publishes its position.
	Hostname string
	// Positions returns the TXID of each local database. With a leaser
	// that is also a leaser.Board, a candidate publishes it when the lease
	// is free and does not take the lease from a candidate ahead of it.
	Positions func() map[string]pagewire.TXID
	// Follow makes a follower of primary, which must refuse anything from
	// an epoch older than primary.Epoch.
	Follow func(primary leaser.Holder) (Follower, error)
	// OnChange, if set, is called after each role change (for logs,
	// metrics, the .primary file).
	OnChange func(role pagewire.Role, primary leaser.Holder)
	Logger   *slog.Logger
	// MinBackoff and MaxBackoff bound the wait after an error talking to
	// the lease's backend.
	MinBackoff, MaxBackoff time.Duration
	// ReleaseTimeout bounds giving the lease up when the node stops.
	ReleaseTimeout time.Duration
	// SettleTimeout bounds how long a candidate waits, once the lease is
	// free, for the other candidates it knows of to publish their
	// positions.
	SettleTimeout time.Duration
	// DeferTimeout bounds how long a candidate leaves the free lease to a
	// candidate ahead of it before it takes the lease anyway.
	DeferTimeout time.Duration
	// CatchUpTimeout bounds how long a candidate waits to catch up with
	// the final position of a primary that handed off.
	CatchUpTimeout time.Duration
	// Promote, if set on a candidate (lease.promote), is called once, when
	// the node first follows a primary: it waits until this node has
	// caught up with primary and asks it to hand the lease to this node.
	// It runs until ctx ends (the node follows another primary, or stops).
	Promote func(ctx context.Context, primary leaser.Holder) error
	// DemoteDelay is how long a primary that handed off stays out of the
	// running (lease.demote-delay); at least SettleTimeout+CatchUpTimeout.
	DemoteDelay time.Duration
}

// Manager runs the role.
type Manager struct {
	cfg   Config
	log   *slog.Logger
	board leaser.Board // nil if the leaser has none

	problem atomic.Pointer[string] // the last error talking to the lease's backend; nil once it answers
	primary atomic.Bool            // this node holds the lease
	handoff chan handoffRequest    // to the leading loop

	// Owned by Run's goroutine:
	follow       context.CancelFunc // nil while not following
	followDone   chan struct{}
	following    leaser.Holder
	last         leaser.Holder // the last holder seen (this node included)
	holdOffUntil time.Time     // a node that handed off stays out until then
	promoted     bool          // Promote was started
	deferUntil   time.Time     // a candidate that defers to one ahead of it takes the lease after then
}

type handoffRequest struct {
	target string
	done   chan error
}

// ErrNotPrimary is returned by Handoff on a node that does not hold the
// lease. It is a pagewire.ErrReadOnly, so it crosses the wire as
// FAILED_PRECONDITION like any write refused on a replica.
var ErrNotPrimary = fmt.Errorf("%w: this node does not hold the lease; ask the primary to hand off", pagewire.ErrReadOnly)

// New returns a Manager.
func New(cfg Config) (*Manager, error) {
	switch {
	case cfg.Leaser == nil || cfg.Store == nil || cfg.Follow == nil:
		return nil, errors.New("roles: Leaser, Store and Follow are required")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.ReleaseTimeout <= 0 {
		cfg.ReleaseTimeout = 5 * time.Second
	}
	if cfg.SettleTimeout <= 0 {
		cfg.SettleTimeout = time.Second
	}
	if cfg.DeferTimeout <= 0 {
		cfg.DeferTimeout = 5 * time.Second
	}
	if cfg.CatchUpTimeout <= 0 {
		cfg.CatchUpTimeout = 2 * time.Second
	}
	if cfg.Positions == nil {
		cfg.Positions = func() map[string]pagewire.TXID { return nil }
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	m := &Manager{cfg: cfg, log: log.With("component", "roles", "lease", cfg.Leaser.Type()), handoff: make(chan handoffRequest)}
	if b, ok := cfg.Leaser.(leaser.Board); ok && cfg.Hostname != "" {
		m.board = b
	}
	return m, nil
}

// Problem says what is wrong with the lease's backend ("" if it answers):
// the last error reading or taking the lease, which says what to check.
func (m *Manager) Problem() string {
	if p := m.problem.Load(); p != nil {
		return *p
	}
	return ""
}

func (m *Manager) setProblem(err error) {
	if err == nil {
		m.problem.Store(nil)
		return
	}
	msg := err.Error()
	m.problem.Store(&msg)
}

// Handoff makes the primary stop taking writes, publish its last position
// and release the lease to a caught-up candidate (target, if not ""), then
// stay out of the running for DemoteDelay. It returns the new holder once
// there is one, or an error when ctx ends first (the lease is released
// either way). ErrNotPrimary if this node is not the primary.
func (m *Manager) Handoff(ctx context.Context, target string) (leaser.Holder, error) {
	if !m.primary.Load() {
		return leaser.Holder{}, ErrNotPrimary
	}
	if target != "" && m.board != nil {
		all, _, err := m.board.Positions(ctx, 0, 0)
		if err != nil {
			return leaser.Holder{}, err
		}
		if !slices.ContainsFunc(all, func(p leaser.Published) bool { return p.Candidate && p.Hostname == target }) {
			return leaser.Holder{}, fmt.Errorf("%w: no candidate called %q has been seen (lease.hostname of a node with lease.candidate true)", pagewire.ErrInvalidArgument, target)
		}
	}
	req := handoffRequest{target: target, done: make(chan error, 1)}
	select {
	case m.handoff <- req:
	case <-ctx.Done():
		return leaser.Holder{}, ctx.Err()
	}
	select {
	case err := <-req.done:
		if err != nil {
			return leaser.Holder{}, err
		}
	case <-ctx.Done():
		return leaser.Holder{}, ctx.Err()
	}
	return m.waitSuccessor(ctx)
}

// waitSuccessor waits until a node other than this one holds the lease.
func (m *Manager) waitSuccessor(ctx context.Context) (leaser.Holder, error) {
	var index uint64
	for {
		h, next, err := m.cfg.Leaser.WaitPrimary(ctx, index)
		switch {
		case ctx.Err() != nil:
			return leaser.Holder{}, fmt.Errorf("no other candidate took the lease in time: %w", ctx.Err())
		case err == nil && h.Hostname != m.cfg.Hostname:
			return h, nil
		case err != nil && !errors.Is(err, leaser.ErrNoPrimary):
			return leaser.Holder{}, err
		}
		index = next
	}
}

// Run runs until ctx is done; a primary then releases its lease.
func (m *Manager) Run(ctx context.Context) error {
	defer m.stopFollowing()
	// Until the lease says otherwise, nobody here takes writes.
	m.cfg.Store.SetRole(pagewire.RoleReplica, pagewire.ReadOnlyError{}, 0)
	var index uint64
	wait := m.cfg.MinBackoff
	sleep := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	backoff := func() bool {
		d := wait/2 + rand.N(wait/2+1)
		wait = min(2*wait, m.cfg.MaxBackoff)
		return sleep(d)
	}
	for ctx.Err() == nil {
		wctx, cancel := ctx, context.CancelFunc(func() {})
		if m.cfg.Candidate && index != 0 {
			// Look again when a deferral or hold-off ends.
			if until := later(m.deferUntil, m.holdOffUntil); time.Now().Before(until) {
				wctx, cancel = context.WithDeadline(ctx, until)
			}
		}
		h, next, err := m.cfg.Leaser.WaitPrimary(wctx, index)
		timedOut := wctx.Err() != nil && ctx.Err() == nil
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case timedOut:
			// A deferral or hold-off ended: decide again.
			index = 0
		case errors.Is(err, leaser.ErrNoPrimary):
			m.setProblem(nil)
			index = next
			wait = m.cfg.MinBackoff
			if m.last.Hostname != "" {
				// Keep following the last primary: one that handed off
				// still serves its last transactions.
				m.log.Warn("no node holds the lease; writes are refused until one does", "last_primary", m.last.Hostname)
				var keep leaser.Holder
				if m.last.Hostname == m.cfg.Hostname {
					// This node handed off: it keeps serving its last
					// transactions at its epoch until a successor is known.
					keep.Epoch = m.last.Epoch
				}
				m.setRole(pagewire.RoleReplica, keep)
				if m.last.Hostname != m.cfg.Hostname {
					// Another node let the lease go: the hold-off after
					// this node's own handoff (so that the lease does
					// not come straight back) has served its purpose.
					m.holdOffUntil = time.Time{}
				}
				m.last = leaser.Holder{}
			}
			if !m.cfg.Candidate || time.Now().Before(m.holdOffUntil) {
				if index == 0 && !backoff() { // a backend without blocking reads
					return nil
				}
				continue
			}
			ok, err := m.mayLead(ctx, h.Freed)
			if err != nil {
				m.setProblem(err)
				m.log.Warn("could not compare positions with the other candidates; retrying", "error", err)
				index = 0
				if !backoff() {
					return nil
				}
				continue
			}
			if !ok {
				continue
			}
			switch lease, err := m.cfg.Leaser.Acquire(ctx); {
			case err == nil:
				m.deferUntil = time.Time{}
				if !m.lead(ctx, lease) {
					return nil
				}
				index = 0 // lost or handed off: look at the lease afresh
			case errors.Is(err, leaser.ErrHeld):
				// Taken by another, or free within lock-delay: look again
				// shortly.
				index = 0
				if !sleep(m.cfg.MinBackoff/2 + rand.N(m.cfg.MinBackoff/2+1)) {
					return nil
				}
			case ctx.Err() != nil:
				return nil
			default:
				m.setProblem(err)
				m.log.Warn("could not take the lease; retrying", "error", err)
				index = 0
				if !backoff() {
					return nil
				}
			}
		case err != nil:
			m.setProblem(err)
			m.log.Warn("could not read the lease; retrying", "error", err)
			if !backoff() {
				return nil
			}
		default:
			m.setProblem(nil)
			m.last = h
			m.deferUntil = time.Time{}
			if m.follow == nil || m.following != h {
				if !m.startFollowing(ctx, h) {
					if !backoff() {
						return nil
					}
					index = 0
					continue // read the lease again at once
				}
			} else {
				m.setRole(pagewire.RoleReplica, h)
			}
			index = next
			wait = m.cfg.MinBackoff
		}
	}
	return nil
}

// mayLead decides whether this candidate takes the free lease (freed at
// index). Without a position board it always may. With one, it
// publishes its position, waits (SettleTimeout at most) for the candidates
// it knows of to publish theirs, and then does not take the lease while a
// live candidate is ahead of it and it is ahead of none, for DeferTimeout
// at most. A primary that handed off left its final position: a candidate
// behind it first catches up from it (CatchUpTimeout at most).
func (m *Manager) mayLead(ctx context.Context, index uint64) (bool, error) {
	if m.board == nil {
		return true, nil
	}
	if !m.deferUntil.IsZero() && !time.Now().Before(m.deferUntil) {
		m.log.Warn("the candidate ahead of this one did not take the lease; taking it", "waited", m.cfg.DeferTimeout)
		return true, nil
	}
	mine := leaser.Position{Hostname: m.cfg.Hostname, Candidate: true, DBs: m.cfg.Positions()}
	if err := m.board.Publish(ctx, mine); err != nil {
		return false, err
	}
	prev := m.following // the primary that went away, if this node followed it
	settle := time.Now().Add(m.cfg.SettleTimeout)
	var (
		fresh []leaser.Position // live candidates' positions, published after the lease was freed
		final *leaser.Position  // the last primary's final one, if it handed off
		pidx  uint64
	)
	for {
		// At least 1ms: a Consul blocking read with no wait waits minutes.
		all, next, err := m.board.Positions(ctx, pidx, max(time.Until(settle), time.Millisecond))
		if err != nil {
			return false, err
		}
		fresh, final = fresh[:0], nil
		waiting := 0
		for _, p := range all {
			switch {
			case p.Hostname == m.cfg.Hostname:
			case p.Final && prev.Hostname != "" && p.Hostname == prev.Hostname && p.Epoch == prev.Epoch:
				f := p.Position
				final = &f
			case !p.Candidate || p.Hostname == prev.Hostname || p.Final:
				// Not a candidate, the primary that went away, or one
				// that handed off earlier and is held off (it publishes
				// afresh once it competes again).
			case p.Index > index:
				fresh = append(fresh, p.Position)
			default:
				waiting++ // a candidate that has not spoken since the lease was freed
			}
		}
		if waiting == 0 || !time.Now().Before(settle) {
			break
		}
		pidx = next
	}
	if final != nil && final.Target != "" && final.Target != m.cfg.Hostname {
		return m.deferTo(final.Target, "the last primary handed the lease to it")
	}
	for _, p := range fresh {
		if p.Ahead(mine) && !mine.Ahead(p) {
			return m.deferTo(p.Hostname, "it is ahead of this node")
		}
	}
	if final != nil && final.Ahead(mine) {
		// Catch up from the last primary, which still serves its last
		// transactions, before taking writes.
		deadline := time.Now().Add(m.cfg.CatchUpTimeout)
		for final.Ahead(leaser.Position{DBs: m.cfg.Positions()}) {
			if !time.Now().Before(deadline) {
				m.log.Warn("taking the lease before catching up with the last primary; its last transactions are kept aside on it when it rejoins",
					"last_primary", final.Hostname, "waited", m.cfg.CatchUpTimeout)
				break
			}
			select {
			case <-ctx.Done():
				return false, ctx.Err()
			case <-time.After(2 * time.Millisecond):
			}
		}
	}
	return true, nil
}

// deferTo leaves the free lease to host for DeferTimeout.
func (m *Manager) deferTo(host, why string) (bool, error) {
	if m.deferUntil.IsZero() {
		m.deferUntil = time.Now().Add(m.cfg.DeferTimeout)
		m.log.Info("leaving the lease to another candidate", "candidate", host, "why", why, "for_at_most", m.cfg.DeferTimeout)
	}
	return false, nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// lead runs the node as the primary until the lease is lost or handed off
// (true) or ctx is done (false, after releasing it).
func (m *Manager) lead(ctx context.Context, lease leaser.Lease) bool {
	m.stopFollowing()
	m.log.Info("this node is the primary", "epoch", lease.Epoch())
	me := leaser.Holder{Info: leaser.Info{Hostname: m.cfg.Hostname}, Epoch: lease.Epoch()}
	m.last, m.following = me, me
	// Handoff works from the moment the store takes writes.
	m.primary.Store(true)
	defer m.primary.Store(false)
	m.cfg.Store.SetPrimaryUntil(lease.Epoch(), lease.ValidUntil)
	if m.cfg.OnChange != nil {
		m.cfg.OnChange(pagewire.RolePrimary, me)
	}
	select {
	case <-lease.Lost():
		m.log.Error("lost the lease: this node no longer takes writes", "epoch", lease.Epoch())
		m.setRole(pagewire.RoleReplica, leaser.Holder{})
		m.last = leaser.Holder{} // what it has may have diverged: it serves nothing more
		return true
	case req := <-m.handoff:
		req.done <- m.stepDown(lease, req.target)
		// Stay out for DemoteDelay, and at least as long as a candidate
		// may take to settle and catch up, so that the lease does not
		// come straight back.
		m.holdOffUntil = time.Now().Add(max(m.cfg.DemoteDelay, m.cfg.SettleTimeout+m.cfg.CatchUpTimeout))
		return true
	case <-ctx.Done():
		if err := m.stepDown(lease, ""); err != nil {
			m.log.Warn("could not release the lease; another node takes it once it expires", "error", err)
		}
		return false
	}
}

// stepDown stops writes, publishes the final position (so candidates
// catch up before taking over) and releases the lease. The node keeps its
// epoch, and so keeps serving its last transactions, until a successor is
// known.
func (m *Manager) stepDown(lease leaser.Lease, target string) error {
	m.setRole(pagewire.RoleReplica, leaser.Holder{Epoch: lease.Epoch()})
	rctx, cancel := context.WithTimeout(context.Background(), m.cfg.ReleaseTimeout)
	defer cancel()
	if m.board != nil {
		final := leaser.Position{Hostname: m.cfg.Hostname, Candidate: m.cfg.Candidate, DBs: m.cfg.Positions(),
			Final: true, Epoch: lease.Epoch(), Target: target}
		if err := m.board.Publish(rctx, final); err != nil {
			m.log.Warn("could not publish this node's final position; releasing the lease anyway", "error", err)
		}
	}
	if err := lease.Release(rctx); err != nil {
		return err
	}
	m.log.Info("handed off the lease", "epoch", lease.Epoch(), "to", cmp.Or(target, "any caught-up candidate"))
	return nil
}

func (m *Manager) setRole(role pagewire.Role, primary leaser.Holder) {
	ro := pagewire.ReadOnlyError{Primary: primary.Hostname, AdvertiseURL: primary.AdvertiseURL}
	m.cfg.Store.SetRole(role, ro, primary.Epoch)
	if m.cfg.OnChange != nil {
		m.cfg.OnChange(role, primary)
	}
}

// startFollowing replaces the follower with one of h; false if it could
// not make one.
func (m *Manager) startFollowing(ctx context.Context, h leaser.Holder) bool {
	m.stopFollowing()
	m.setRole(pagewire.RoleReplica, h)
	f, err := m.cfg.Follow(h)
	if err != nil {
		m.log.Error("could not follow the primary", "primary", h.Hostname, "url", h.AdvertiseURL, "error", err)
		return false
	}
	m.log.Info("following the primary", "primary", h.Hostname, "url", h.AdvertiseURL, "epoch", h.Epoch)
	if m.board != nil && m.cfg.Candidate {
		// Make this candidate known: a handoff may name it, and a free
		// lease waits for it to publish again.
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := m.board.Publish(pctx, leaser.Position{Hostname: m.cfg.Hostname, Candidate: true, DBs: m.cfg.Positions()})
		cancel()
		if err != nil {
			m.log.Warn("could not publish this candidate's position", "error", err)
		}
	}
	fctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := f.Run(fctx); err != nil {
			m.log.Error("replication from the primary stopped", "primary", h.Hostname, "error", err)
		}
	})
	if m.cfg.Promote != nil && m.cfg.Candidate && !m.promoted {
		m.promoted = true
		wg.Go(func() {
			if err := m.cfg.Promote(fctx, h); err != nil && fctx.Err() == nil {
				m.log.Error("lease.promote: could not take over from the primary", "primary", h.Hostname, "error", err)
			}
		})
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	m.follow, m.followDone, m.following = cancel, done, h
	return true
}

func (m *Manager) stopFollowing() {
	if m.follow == nil {
		return
	}
	m.follow()
	<-m.followDone
	m.follow = nil
}

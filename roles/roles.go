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
	"github.com/pagewire/pagewire/internal/backoff"
	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/internal/safego"
	"github.com/pagewire/pagewire/leaser"
)

// Store is the node's storage engine as the manager needs it (engine.Store).
type Store interface {
	SetRole(role pagewire.Role, ro pagewire.ReadOnlyError, epoch pagewire.Epoch)
	// SetPrimaryUntil makes the node primary while until says the lease
	// is held.
	SetPrimaryUntil(epoch pagewire.Epoch, until func() time.Time)
}

// Follower replicates from one primary until its context ends
// (replicator.Replica). Run returns nil then; an error means it cannot go
// on (a panic), and ends the Manager's Run with it.
type Follower interface {
	Run(ctx context.Context) error
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
	last         leaser.Holder    // the last holder seen (this node included)
	holdOffUntil time.Time        // a node that handed off stays out until then
	promoted     bool             // Promote was started
	deferUntil   time.Time        // a candidate that defers to one ahead of it takes the lease after then
	retry        *backoff.Backoff // the wait after an error talking to the lease's backend
	fail         func(error)      // ends Run with an error; set by Run

	// failMu guards failure.
	failMu  sync.Mutex
	failure error // why Run ends early: the follower or the promotion failed
}

type handoffRequest struct {
	target string
	done   chan error
}

// ErrNotPrimary is returned by Handoff on a node that does not hold the
// lease. It is a pagewire.ErrReadOnly, so it crosses the wire as
// FAILED_PRECONDITION like any write refused on a replica.
var ErrNotPrimary = fmt.Errorf("%w: this node does not hold the lease; ask the primary to hand off", pagewire.ErrReadOnly)

// New returns a Manager for a valid cfg.
func New(cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	m := &Manager{
		cfg:     cfg,
		log:     log.With(logkey.Component, "roles", logKeyLease, cfg.Leaser.Type()),
		handoff: make(chan handoffRequest),
		retry:   backoff.New(cfg.MinBackoff, cfg.MaxBackoff),
	}
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

// errLookAgain is waitLease's answer when a deferral or hold-off ends: the
// candidate decides again on a fresh read of the lease.
var errLookAgain = errors.New("look at the lease again")

// Run runs until ctx is done; a primary then releases its lease. Each turn
// reads the lease and runs the state it is in: held by a node (this one
// follows it), free (a candidate contends for it; one that wins leads until
// it loses or hands off the lease), or unreadable (retry with backoff).
//
// It returns nil when ctx is done, and an error if the follower fails or a
// goroutine of its panics: a node that stopped replicating must stop rather
// than look like a healthy replica.
func (m *Manager) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m.fail = func(err error) {
		m.failMu.Lock()
		if m.failure == nil {
			m.failure = err
		}
		m.failMu.Unlock()
		cancel()
	}
	m.run(ctx)
	m.failMu.Lock()
	defer m.failMu.Unlock()
	return m.failure
}

// run is Run's loop.
func (m *Manager) run(ctx context.Context) {
	defer m.stopFollowing()
	// Until the lease says otherwise, nobody here takes writes.
	m.cfg.Store.SetRole(pagewire.RoleReplica, pagewire.ReadOnlyError{}, 0)
	var index uint64
	for ctx.Err() == nil {
		h, next, err := m.waitLease(ctx, index)
		ok := true
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errLookAgain):
			index = 0
		case errors.Is(err, leaser.ErrNoPrimary):
			index, ok = m.contend(ctx, h.Freed, next)
		case err != nil:
			ok = m.retryRead(ctx, err)
		default:
			index, ok = m.followPrimary(ctx, h, next)
		}
		if !ok {
			return
		}
	}
}

// waitLease waits until the lease changes after index (0: reads it at
// once). A candidate that defers to another or is held off gets
// errLookAgain when that ends, so that it decides again.
func (m *Manager) waitLease(ctx context.Context, index uint64) (leaser.Holder, uint64, error) {
	wctx, cancel := ctx, context.CancelFunc(func() {})
	if m.cfg.Candidate && index != 0 {
		if until := later(m.deferUntil, m.holdOffUntil); time.Now().Before(until) {
			wctx, cancel = context.WithDeadline(ctx, until)
		}
	}
	defer cancel()
	h, next, err := m.cfg.Leaser.WaitPrimary(wctx, index)
	if wctx.Err() != nil && ctx.Err() == nil {
		return leaser.Holder{}, 0, errLookAgain
	}
	return h, next, err
}

// followPrimary follows h, the lease's holder, unless it already does. It
// returns the index to wait on next, and false if ctx ended.
func (m *Manager) followPrimary(ctx context.Context, h leaser.Holder, next uint64) (uint64, bool) {
	m.setProblem(nil)
	m.last = h
	m.deferUntil = time.Time{}
	if m.follow != nil && m.following == h {
		m.setRole(pagewire.RoleReplica, h)
	} else if !m.startFollowing(ctx, h) {
		// Read the lease again at once after the backoff.
		return 0, m.retry.Wait(ctx) == nil
	}
	m.retry.Reset()
	return next, true
}

// retryRead waits out a backoff after the lease could not be read; false
// if ctx ended first.
func (m *Manager) retryRead(ctx context.Context, err error) bool {
	m.setProblem(err)
	m.log.Warn("could not read the lease; retrying", logkey.Error, err)
	return m.retry.Wait(ctx) == nil
}

// contend runs while no node holds the lease (freed at index freed): the
// node stops following the last primary, and a candidate that is not held
// off takes the lease if mayLead says it may. It returns the index to wait
// on next, and false if ctx ended.
func (m *Manager) contend(ctx context.Context, freed, next uint64) (uint64, bool) {
	m.setProblem(nil)
	m.retry.Reset()
	m.forgetPrimary()

	// Out of the running: wait for the lease to change.
	if !m.cfg.Candidate || time.Now().Before(m.holdOffUntil) {
		if next == 0 { // a backend without blocking reads
			return 0, m.retry.Wait(ctx) == nil
		}
		return next, true
	}

	// Leave the lease to a candidate ahead of this one, for a while.
	ok, err := m.mayLead(ctx, freed)
	if err != nil {
		m.setProblem(err)
		m.log.Warn("could not compare positions with the other candidates; retrying", logkey.Error, err)
		return 0, m.retry.Wait(ctx) == nil
	}
	if !ok {
		return next, true
	}

	// Lost, handed off or refused: look at the lease afresh.
	return 0, m.takeLease(ctx)
}

// forgetPrimary stops treating the last holder as the primary once the
// lease is free. The node keeps following it: one that handed off still
// serves its last transactions.
func (m *Manager) forgetPrimary() {
	if m.last.Hostname == "" {
		return
	}
	m.log.Warn("no node holds the lease; writes are refused until one does", logKeyLastPrimary, m.last.Hostname)
	var keep leaser.Holder
	if m.last.Hostname == m.cfg.Hostname {
		// This node handed off: it keeps serving its last transactions
		// at its epoch until a successor is known.
		keep.Epoch = m.last.Epoch
	}
	m.setRole(pagewire.RoleReplica, keep)
	if m.last.Hostname != m.cfg.Hostname {
		// Another node let the lease go: the hold-off after this node's
		// own handoff (so that the lease does not come straight back) has
		// served its purpose.
		m.holdOffUntil = time.Time{}
	}
	m.last = leaser.Holder{}
}

// takeLease acquires the free lease and leads while it holds it. It
// returns false if ctx ended.
func (m *Manager) takeLease(ctx context.Context) bool {
	lease, err := m.cfg.Leaser.Acquire(ctx)
	switch {
	case err == nil:
		m.deferUntil = time.Time{}
		return m.lead(ctx, lease)
	case errors.Is(err, leaser.ErrHeld):
		// Taken by another, or free within lock-delay: look again
		// shortly, without growing the backoff.
		return backoff.Sleep(ctx, m.cfg.MinBackoff/2+rand.N(m.cfg.MinBackoff/2+1))
	case ctx.Err() != nil:
		return false
	default:
		m.setProblem(err)
		m.log.Warn("could not take the lease; retrying", logkey.Error, err)
		return m.retry.Wait(ctx) == nil
	}
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

	// A deferral that ran out: the candidate ahead did not take the lease.
	if !m.deferUntil.IsZero() && !time.Now().Before(m.deferUntil) {
		m.log.Warn("the candidate ahead of this one did not take the lease; taking it", logKeyWaited, m.cfg.DeferTimeout)
		return true, nil
	}

	// Publish this node's position.
	mine := leaser.Position{Hostname: m.cfg.Hostname, Candidate: true, DBs: m.cfg.Positions()}
	if err := m.board.Publish(ctx, mine); err != nil {
		return false, err
	}

	// Read the others' until every candidate known has spoken since the
	// lease was freed, or SettleTimeout passes.
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

	// Defer to the candidate the last primary named, or to one ahead.
	if final != nil && final.Target != "" && final.Target != m.cfg.Hostname {
		return m.deferTo(final.Target, "the last primary handed the lease to it")
	}
	for _, p := range fresh {
		if p.Ahead(mine) && !mine.Ahead(p) {
			return m.deferTo(p.Hostname, "it is ahead of this node")
		}
	}

	// Catch up from the last primary, which still serves its last
	// transactions, before taking writes.
	if final != nil && final.Ahead(mine) {
		deadline := time.Now().Add(m.cfg.CatchUpTimeout)
		for final.Ahead(leaser.Position{DBs: m.cfg.Positions()}) {
			if !time.Now().Before(deadline) {
				m.log.Warn("taking the lease before catching up with the last primary; its last transactions are kept aside on it when it rejoins",
					"last_primary", final.Hostname, "waited", m.cfg.CatchUpTimeout)
				break
			}
			if !backoff.Sleep(ctx, 2*time.Millisecond) {
				return false, ctx.Err()
			}
		}
	}
	return true, nil
}

// deferTo leaves the free lease to host for DeferTimeout.
func (m *Manager) deferTo(host, why string) (bool, error) {
	if m.deferUntil.IsZero() {
		m.deferUntil = time.Now().Add(m.cfg.DeferTimeout)
		m.log.Info("leaving the lease to another candidate", logKeyCandidate, host, logkey.Reason, why, logKeyForAtMost, m.cfg.DeferTimeout)
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
	m.log.Info("this node is the primary", logkey.Epoch, lease.Epoch())
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
		m.log.Error("lost the lease: this node no longer takes writes", logkey.Epoch, lease.Epoch())
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
			m.log.Warn("could not release the lease; another node takes it once it expires", logkey.Error, err)
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
			m.log.Warn("could not publish this node's final position; releasing the lease anyway", logkey.Error, err)
		}
	}
	if err := lease.Release(rctx); err != nil {
		return err
	}
	m.log.Info("handed off the lease", logkey.Epoch, lease.Epoch(), logKeyTo, cmp.Or(target, "any caught-up candidate"))
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

	// Start following the new primary.
	f, err := m.cfg.Follow(h)
	if err != nil {
		m.log.Error("could not follow the primary", logkey.Primary, h.Hostname, logkey.URL, h.AdvertiseURL, logkey.Error, err)
		return false
	}
	m.log.Info("following the primary", logkey.Primary, h.Hostname, logkey.URL, h.AdvertiseURL, logkey.Epoch, h.Epoch)

	if m.board != nil && m.cfg.Candidate {
		// Make this candidate known: a handoff may name it, and a free
		// lease waits for it to publish again.
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := m.board.Publish(pctx, leaser.Position{Hostname: m.cfg.Hostname, Candidate: true, DBs: m.cfg.Positions()})
		cancel()
		if err != nil {
			m.log.Warn("could not publish this candidate's position", logkey.Error, err)
		}
	}

	// Replicate until stopped; a candidate also runs the promotion, once.
	fctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := safego.Call(m.log, "follow the primary", func() error { return f.Run(fctx) }); err != nil {
			m.log.Error("replication from the primary stopped; stopping the node", logkey.Primary, h.Hostname, logkey.Error, err)
			m.fail(err)
		}
	})
	if m.cfg.Promote != nil && m.cfg.Candidate && !m.promoted {
		m.promoted = true
		wg.Go(func() {
			err := safego.Call(m.log, "lease.promote", func() error { return m.cfg.Promote(fctx, h) })
			var pe *safego.PanicError
			switch {
			case errors.As(err, &pe):
				m.fail(err)
			case err != nil && fctx.Err() == nil:
				m.log.Error("lease.promote: could not take over from the primary", logkey.Primary, h.Hostname, logkey.Error, err)
			}
		})
	}

	// done closes once they have stopped.
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

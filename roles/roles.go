// Package roles runs a node's role from its lease at run time: a candidate
// takes the lease when it is free and becomes the primary; every other
// node follows whoever holds it, and follows the next holder when it
// changes. A primary that loses its lease stops taking writes at once.
package roles

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/leaser"
)

// Store is the node's storage server as the manager needs it (server.Store).
type Store interface {
	SetRole(role pagewire.Role, ro pagewire.ReadOnlyError, epoch pagewire.Epoch)
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
}

// Manager runs the role.
type Manager struct {
	cfg Config
	log *slog.Logger

	problem atomic.Pointer[string] // the last error talking to the lease's backend; nil once it answers

	follow     context.CancelFunc // nil while not following
	followDone chan struct{}
	following  leaser.Holder
}

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
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Manager{cfg: cfg, log: log.With("component", "roles", "lease", cfg.Leaser.Type())}, nil
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

// Run runs until ctx is done; a primary then releases its lease.
func (m *Manager) Run(ctx context.Context) error {
	defer m.stopFollowing()
	// Until the lease says otherwise, nobody here takes writes.
	m.cfg.Store.SetRole(pagewire.RoleReplica, pagewire.ReadOnlyError{}, 0)
	var index uint64
	wait := m.cfg.MinBackoff
	backoff := func() bool {
		d := wait/2 + rand.N(wait/2+1)
		wait = min(2*wait, m.cfg.MaxBackoff)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	for ctx.Err() == nil {
		if m.cfg.Candidate {
			lease, err := m.cfg.Leaser.Acquire(ctx)
			var held *leaser.HeldError
			if err == nil || errors.Is(err, leaser.ErrHeld) {
				m.setProblem(nil)
			}
			switch {
			case err == nil:
				wait = m.cfg.MinBackoff
				if !m.lead(ctx, lease) {
					return nil
				}
				index = 0 // lost: look at the lease afresh
				continue
			case errors.As(err, &held):
				// Someone holds it: follow them (below).
			case errors.Is(err, leaser.ErrHeld):
				// Free but inside lock-delay: try again shortly.
				if !backoff() {
					return nil
				}
				continue
			case ctx.Err() != nil:
				return nil
			default:
				m.setProblem(err)
				m.log.Warn("could not take the lease; retrying", "error", err)
				if !backoff() {
					return nil
				}
				continue
			}
		}
		h, next, err := m.cfg.Leaser.WaitPrimary(ctx, index)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, leaser.ErrNoPrimary):
			m.setProblem(nil)
			index = next
			wait = m.cfg.MinBackoff
			if m.follow != nil {
				m.stopFollowing()
				m.log.Warn("no node holds the lease; writes are refused until one does")
				m.setRole(pagewire.RoleReplica, leaser.Holder{})
			}
			if !m.cfg.Candidate && index == 0 && !backoff() {
				return nil
			}
		case err != nil:
			m.setProblem(err)
			m.log.Warn("could not read the lease; retrying", "error", err)
			if !backoff() {
				return nil
			}
		default:
			m.setProblem(nil)
			if m.follow == nil || m.following != h {
				if !m.startFollowing(ctx, h) {
					if !backoff() {
						return nil
					}
					continue // read the lease again at once
				}
			}
			index = next
			wait = m.cfg.MinBackoff
		}
	}
	return nil
}

// lead runs the node as the primary until the lease is lost (true) or ctx
// is done (false, after releasing it).
func (m *Manager) lead(ctx context.Context, lease leaser.Lease) bool {
	m.stopFollowing()
	m.log.Info("this node is the primary", "epoch", lease.Epoch())
	m.setRole(pagewire.RolePrimary, leaser.Holder{Epoch: lease.Epoch()})
	select {
	case <-lease.Lost():
		m.log.Error("lost the lease: this node no longer takes writes", "epoch", lease.Epoch())
		m.setRole(pagewire.RoleReplica, leaser.Holder{})
		return true
	case <-ctx.Done():
		// Stop taking writes first, then let another candidate in.
		m.setRole(pagewire.RoleReplica, leaser.Holder{})
		rctx, cancel := context.WithTimeout(context.Background(), m.cfg.ReleaseTimeout)
		defer cancel()
		if err := lease.Release(rctx); err != nil {
			m.log.Warn("could not release the lease; another node takes it once it expires", "error", err)
		}
		return false
	}
}

func (m *Manager) setRole(role pagewire.Role, primary leaser.Holder) {
	ro := pagewire.ReadOnlyError{Primary: primary.Hostname, AdvertiseURL: primary.AdvertiseURL}
	if role == pagewire.RolePrimary {
		ro = pagewire.ReadOnlyError{}
	}
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
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := f.Run(fctx); err != nil {
			m.log.Error("replication from the primary stopped", "primary", h.Hostname, "error", err)
		}
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

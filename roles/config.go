package roles

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/leaser"
)

// Config configures a Manager. Start from DefaultConfig, then set Leaser,
// Store and Follow.
type Config struct {
	// Leaser is the lease this node follows and, as a candidate, takes
	// (required).
	Leaser leaser.Leaser
	// Store is the node's storage server (required).
	Store Store
	// Candidate: this node may take the lease (false: it only follows).
	Candidate bool
	// Hostname is this node's, as it publishes its position ("": it
	// publishes none, and takes a free lease without comparing positions).
	Hostname string
	// Positions returns the TXID of each local database. With a leaser
	// that is also a leaser.Board, a candidate publishes it when the lease
	// is free and does not take the lease from a candidate ahead of it;
	// it is required then, and unused otherwise.
	Positions func() map[string]pagewire.TXID
	// Follow makes a follower of primary, which must refuse anything from
	// an epoch older than primary.Epoch (required).
	Follow func(primary leaser.Holder) (Follower, error)
	// OnChange, if set, is called after each role change (for logs,
	// metrics, the .primary file).
	OnChange func(role pagewire.Role, primary leaser.Holder)
	// Logger; nil: slog.Default().
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the wait after an error talking to
	// the lease's backend (0 < MinBackoff <= MaxBackoff).
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
	// running (lease.demote-delay); at least SettleTimeout+CatchUpTimeout,
	// which is all it is when DemoteDelay is 0.
	DemoteDelay time.Duration
}

// DefaultConfig returns a Config with every timeout and backoff bound set;
// Leaser, Store and Follow are left for the caller.
func DefaultConfig() Config {
	return Config{
		MinBackoff:     100 * time.Millisecond,
		MaxBackoff:     5 * time.Second,
		ReleaseTimeout: 5 * time.Second,
		SettleTimeout:  time.Second,
		DeferTimeout:   5 * time.Second,
		CatchUpTimeout: 2 * time.Second,
	}
}

// Validate reports the first missing or bad field.
func (c Config) Validate() error {
	// What must be wired in.
	if c.Leaser == nil || c.Store == nil || c.Follow == nil {
		return errors.New("roles: Leaser, Store and Follow are required")
	}
	if _, ok := c.Leaser.(leaser.Board); ok && c.Hostname != "" && c.Positions == nil {
		return errors.New("roles: Positions is required when the leaser is a leaser.Board and Hostname is set")
	}

	// The bounds, which DefaultConfig sets.
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"MinBackoff", c.MinBackoff},
		{"ReleaseTimeout", c.ReleaseTimeout},
		{"SettleTimeout", c.SettleTimeout},
		{"DeferTimeout", c.DeferTimeout},
		{"CatchUpTimeout", c.CatchUpTimeout},
	} {
		if d.v <= 0 {
			return fmt.Errorf("roles: %s is %s, want > 0 (start from roles.DefaultConfig())", d.name, d.v)
		}
	}
	switch {
	case c.MaxBackoff < c.MinBackoff:
		return fmt.Errorf("roles: MaxBackoff %s is below MinBackoff %s (start from roles.DefaultConfig())", c.MaxBackoff, c.MinBackoff)
	case c.DemoteDelay < 0:
		return fmt.Errorf("roles: DemoteDelay is %s, want >= 0 (lease.demote-delay)", c.DemoteDelay)
	}
	return nil
}

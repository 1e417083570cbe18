package static

import (
	"context"
	"errors"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/leaser"
)

// Leaser is LiteFS's static lease: the node with candidate true is always
// the primary, at epoch 1; the others name it through lease.hostname and
// lease.advertise-url.
type Leaser struct {
	// Candidate: this node is the primary.
	Candidate bool
	// Holder is the primary: this node when Candidate, else the
	// configured one.
	Holder leaser.Info
}

var _ leaser.Leaser = (*Leaser)(nil)

// New returns a static lease: this node is the primary if candidate,
// else primary names it.
func New(candidate bool, primary leaser.Info) *Leaser {
	return &Leaser{Candidate: candidate, Holder: primary}
}

// Type is "static", as in lease.type.
func (s *Leaser) Type() string { return "static" }

// Acquire succeeds at once on the primary and is refused elsewhere.
func (s *Leaser) Acquire(context.Context) (leaser.Lease, error) {
	if !s.Candidate {
		if s.Holder.Hostname == "" {
			return nil, leaser.ErrNotCandidate
		}
		return nil, &leaser.HeldError{Holder: s.Holder}
	}
	return lease{}, nil
}

// Primary is the configured primary.
func (s *Leaser) Primary(context.Context) (leaser.Info, error) {
	if s.Holder.Hostname == "" {
		return leaser.Info{}, leaser.ErrNoPrimary
	}
	return s.Holder, nil
}

// WaitPrimary answers at once for index 0; the static primary never
// changes, so later calls wait for ctx.
func (s *Leaser) WaitPrimary(ctx context.Context, index uint64) (leaser.Holder, uint64, error) {
	if index != 0 {
		<-ctx.Done()
		return leaser.Holder{}, index, ctx.Err()
	}
	info, err := s.Primary(ctx)
	return leaser.Holder{Info: info, Epoch: 1}, 1, err
}

// lease never expires.
type lease struct{}

var _ leaser.Lease = lease{}

func (lease) Epoch() pagewire.Epoch         { return 1 }
func (lease) Lost() <-chan struct{}         { return nil }
func (lease) ValidUntil() time.Time         { return time.Time{} }
func (lease) Release(context.Context) error { return errRelease }

var errRelease = errors.New("a static lease cannot be handed off: change lease.candidate in the config and restart the nodes")

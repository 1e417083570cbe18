package leaser

import (
	"context"
	"errors"
	"time"

	"github.com/pagewire/pagewire"
)

// Static is LiteFS's static lease: the node with candidate true is always
// the primary, at epoch 1; the others name it through lease.hostname and
// lease.advertise-url.
type Static struct {
	// Candidate: this node is the primary.
	Candidate bool
	// Holder is the primary: this node when Candidate, else the
	// configured one.
	Holder Info
}

var _ Leaser = (*Static)(nil)

// NewStatic returns a static lease: this node is the primary if candidate,
// else primary names it.
func NewStatic(candidate bool, primary Info) *Static {
	return &Static{Candidate: candidate, Holder: primary}
}

func (s *Static) Type() string { return "static" }

// Acquire succeeds at once on the primary and is refused elsewhere.
func (s *Static) Acquire(context.Context) (Lease, error) {
	if !s.Candidate {
		if s.Holder.Hostname == "" {
			return nil, ErrNotCandidate
		}
		return nil, &HeldError{Holder: s.Holder}
	}
	return staticLease{}, nil
}

// Primary is the configured primary.
func (s *Static) Primary(context.Context) (Info, error) {
	if s.Holder.Hostname == "" {
		return Info{}, ErrNoPrimary
	}
	return s.Holder, nil
}

// WaitPrimary answers at once for index 0; the static primary never
// changes, so later calls wait for ctx.
func (s *Static) WaitPrimary(ctx context.Context, index uint64) (Holder, uint64, error) {
	if index != 0 {
		<-ctx.Done()
		return Holder{}, index, ctx.Err()
	}
	info, err := s.Primary(ctx)
	return Holder{Info: info, Epoch: 1}, 1, err
}

// staticLease never expires.
type staticLease struct{}

func (staticLease) Epoch() pagewire.Epoch         { return 1 }
func (staticLease) Lost() <-chan struct{}         { return nil }
func (staticLease) ValidUntil() time.Time         { return time.Time{} }
func (staticLease) Release(context.Context) error { return errStaticRelease }

var errStaticRelease = errors.New("a static lease cannot be handed off: change lease.candidate in the config and restart the nodes")

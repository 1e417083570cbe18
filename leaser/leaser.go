package leaser

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pagewire/pagewire"
)

// Info names a node: its hostname and the URL its API is reached at. It is
// what the lease's holder publishes (LiteFS's JSON value).
type Info struct {
	Hostname     string `json:"hostname"`
	AdvertiseURL string `json:"advertise-url"`
}

// Holder is the node holding the lease and the epoch it holds it at.
type Holder struct {
	Info
	Epoch pagewire.Epoch
	// Freed, when WaitPrimary finds no holder, is the index at which the
	// lease was last released or expired (0 if never held): positions
	// published after it are fresh.
	Freed uint64
}

// Leaser takes and observes the write lease.
type Leaser interface {
	// Acquire takes the lease for this node. It returns ErrHeld (as a
	// *HeldError naming the holder) when another node holds it, and
	// ErrNotCandidate when this node may never hold it.
	Acquire(ctx context.Context) (Lease, error)
	// Primary returns the current holder, ErrNoPrimary if none.
	Primary(ctx context.Context) (Info, error)
	// WaitPrimary blocks until the holder may have changed since index (0:
	// answers at once) or ctx is done. It returns the holder (ErrNoPrimary
	// if none) and the index to wait on next.
	WaitPrimary(ctx context.Context, index uint64) (Holder, uint64, error)
	// Type is the lease type, as in lease.type.
	Type() string
}

// Lease is a held lease. It stays held until Release, or until it is lost:
// Lost is closed (before the lease could expire and another node take it)
// when it could not be renewed; the node must stop accepting writes then.
type Lease interface {
	Epoch() pagewire.Epoch
	Lost() <-chan struct{}
	// ValidUntil is when the lease could pass to another node unless it
	// is renewed before then (zero: never). Writes must stop by then, even
	// if Lost has not been closed yet (a frozen process sees it late).
	ValidUntil() time.Time
	// Release gives the lease up, so that another node can take it
	// without waiting for it to expire.
	Release(ctx context.Context) error
}

var (
	// ErrHeld: another node holds the lease.
	ErrHeld = errors.New("another node holds the lease")
	// ErrNoPrimary: no node holds the lease.
	ErrNoPrimary = errors.New("no node holds the lease")
	// ErrNotCandidate: this node is not a candidate (lease.candidate: false).
	ErrNotCandidate = errors.New("this node is not a candidate for the lease (lease.candidate is false)")
)

// HeldError is ErrHeld with the holder.
type HeldError struct{ Holder Info }

func (e *HeldError) Error() string {
	return fmt.Sprintf("%s %s (%s)", ErrHeld, e.Holder.Hostname, e.Holder.AdvertiseURL)
}

func (e *HeldError) Unwrap() error { return ErrHeld }

package leaser

import (
	"context"
	"time"

	"github.com/pagewire/pagewire"
)

// Position is how far a node has got: the TXID of each of its databases.
// Candidates publish theirs when the lease is free, so that one behind
// does not take it from one ahead; a primary handing off publishes its
// last one (Final) before it releases the lease.
type Position struct {
	Hostname  string                   `json:"hostname"`
	Candidate bool                     `json:"candidate"`
	DBs       map[string]pagewire.TXID `json:"dbs"`
	// Final marks the last position of the primary at Epoch, published
	// after it stopped taking writes and before it released the lease.
	Final bool           `json:"final,omitempty"`
	Epoch pagewire.Epoch `json:"epoch,omitempty"`
	// Target, on a Final position, is the candidate the primary hands
	// the lease to ("" for any caught-up candidate).
	Target string `json:"target,omitempty"`
}

// Ahead reports whether p has some database at a larger TXID than q.
func (p Position) Ahead(q Position) bool {
	for db, txid := range p.DBs {
		if txid > q.DBs[db] {
			return true
		}
	}
	return false
}

// Published is a Position as read back, with the index it was written at
// (larger than the lease key's index when it was written after it).
type Published struct {
	Position
	Index uint64
}

// Board is where positions are published. consul.Leaser implements it; a
// static lease has no use for it.
type Board interface {
	// Publish writes this node's position.
	Publish(ctx context.Context, p Position) error
	// Positions lists every published position; with index > 0 it first
	// waits (up to wait) until one changes after index. It returns the
	// index to wait on next.
	Positions(ctx context.Context, index uint64, wait time.Duration) ([]Published, uint64, error)
}

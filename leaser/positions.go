package leaser

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

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

// Board is where positions are published. Consul implements it; a static
// lease has no use for it.
type Board interface {
	// Publish writes this node's position.
	Publish(ctx context.Context, p Position) error
	// Positions lists every published position; with index > 0 it first
	// waits (up to wait) until one changes after index. It returns the
	// index to wait on next.
	Positions(ctx context.Context, index uint64, wait time.Duration) ([]Published, uint64, error)
}

var _ Board = (*Consul)(nil)

func (l *Consul) positionsPrefix() string { return l.cfg.Key + "/positions/" }

// Publish writes p under <key>/positions/<hostname>.
func (l *Consul) Publish(ctx context.Context, p Position) error {
	if p.Hostname == "" || strings.Contains(p.Hostname, "/") {
		return fmt.Errorf("leaser: cannot publish a position for hostname %q", p.Hostname)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if _, err := l.c.KV().Put(&api.KVPair{Key: l.positionsPrefix() + p.Hostname, Value: b}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return l.unreachable("publish this node's position", err)
	}
	return nil
}

// Positions lists <key>/positions/. Values that do not parse are skipped
// with a log line: they can only be from something else writing there.
func (l *Consul) Positions(ctx context.Context, index uint64, wait time.Duration) ([]Published, uint64, error) {
	opts := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
	pairs, meta, err := l.c.KV().List(l.positionsPrefix(), opts)
	if err != nil {
		return nil, index, l.unreachable("read the candidates' positions", err)
	}
	var out []Published
	for _, kv := range pairs {
		var p Position
		if err := json.Unmarshal(kv.Value, &p); err != nil || p.Hostname == "" {
			l.log.Warn("ignoring a position that is not pagewire's", "key", kv.Key, "error", errors.Join(err, pagewire.ErrCorrupt))
			continue
		}
		out = append(out, Published{Position: p, Index: kv.ModifyIndex})
	}
	return out, meta.LastIndex, nil
}

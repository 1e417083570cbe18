package engine

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/logkey"
)

// This file is synchronous replication on the primary
// (replication.sync-replicas, DESIGN §7): replicas acknowledge what they
// have applied (Acknowledge), and an app's commit returns only once
// StoreConfig.SyncReplicas replicas acknowledged it durably. The commit
// waits, without the database's lock, in the WAL fsync that follows it on
// a database learned to run under synchronous=FULL, else in its commit
// frame's write (durable.go says how and why).

// maxAckers bounds the replicas whose acknowledgements a database keeps.
const maxAckers = 256

// maxHostnameLen bounds a replica's hostname in an acknowledgement.
const maxHostnameLen = 255

// replicaAcks is what replicas acknowledged of one database, and the
// commits waiting for it.
type replicaAcks struct {
	// mu guards by, waiters and degraded.
	mu      sync.Mutex
	by      map[string]*replicaAck // by replica hostname
	waiters []*ackWaiter
	// degraded is set once a commit gave up waiting (sync-timeout): later
	// commits do not wait until enough replicas have every transaction.
	degraded bool
	// unacked counts commits that returned unacknowledged on a switch
	// from synchronous=FULL to NORMAL (durable.go).
	unacked atomic.Uint64
}

// replicaAck is one replica's last acknowledgement.
type replicaAck struct {
	epoch   pagewire.Epoch
	applied pagewire.Pos  // what its readers see
	durable pagewire.TXID // the last TXID it has durably
	at      time.Time
}

// ackWaiter is a commit waiting for acknowledgements of txid in epoch.
type ackWaiter struct {
	txid  pagewire.TXID
	epoch pagewire.Epoch
	done  chan struct{} // closed once enough replicas acknowledged
}

// durableCount is how many replicas acknowledged txid durably in epoch.
// mu must be held.
func (r *replicaAcks) durableCount(txid pagewire.TXID, epoch pagewire.Epoch) int {
	n := 0
	for _, a := range r.by {
		if a.epoch == epoch && a.durable >= txid {
			n++
		}
	}
	return n
}

// remove drops w from the waiters.
func (r *replicaAcks) remove(w *ackWaiter) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, x := range r.waiters {
		if x == w {
			r.waiters = append(r.waiters[:i], r.waiters[i+1:]...)
			return
		}
	}
}

// isDegraded reports whether commits go on without waiting.
func (r *replicaAcks) isDegraded() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.degraded
}

// syncStats counts the waits of synchronous replication, for metrics.
type syncStats struct {
	waits, timeouts atomic.Uint64
	waitNanos       atomic.Int64
	waiting         atomic.Int64
}

// SyncStats are synchronous replication's counters since the node started.
type SyncStats struct {
	Replicas    int           // StoreConfig.SyncReplicas
	Timeout     time.Duration // StoreConfig.SyncTimeout
	Waits       uint64        // commits that waited for acknowledgements
	Timeouts    uint64        // waits that gave up at SyncTimeout
	WaitSeconds float64       // time spent waiting, in all
	Waiting     int64         // commits waiting now
	// Unacknowledged counts commits that returned before replicas
	// acknowledged them because the database switched from
	// synchronous=FULL to NORMAL (their wait was to be in an fsync that
	// never came), in databases open now.
	Unacknowledged uint64
	Degraded       []string // databases whose commits go on without waiting, sorted
}

// SyncStats reports synchronous replication's counters.
func (s *Store) SyncStats() SyncStats {
	st := SyncStats{Replicas: s.syncReplicas, Timeout: s.syncTimeout, Waits: s.sync.waits.Load(), Timeouts: s.sync.timeouts.Load(),
		WaitSeconds: time.Duration(s.sync.waitNanos.Load()).Seconds(), Waiting: s.sync.waiting.Load()}
	s.mu.RLock()
	for name, d := range s.dbs {
		if d.acks.isDegraded() {
			st.Degraded = append(st.Degraded, name)
		}
		st.Unacknowledged += d.acks.unacked.Load()
	}
	s.mu.RUnlock()
	sort.Strings(st.Degraded)
	return st
}

// SyncReplicas is StoreConfig.SyncReplicas: how many replicas each commit
// waits for.
func (s *Store) SyncReplicas() int { return s.syncReplicas }

// ReplicaPosition is what a replica acknowledged of a database.
type ReplicaPosition struct {
	Hostname string
	Applied  pagewire.Pos  // what its readers see
	Durable  pagewire.TXID // the last TXID it has durably
	At       time.Time     // when it said so
}

// Acknowledge records that replica hostname, following this primary's
// lease epoch, has applied db up to pos (durably, if durable). Commits
// waiting for it may return.
//
// Errors: ErrInvalidArgument for an empty or overlong hostname, a TXID past
// what the primary has sent, or a checksum other than the primary's at its
// TXID; ErrNotFound for an unknown database; a *pagewire.ReadOnlyError when
// this node does not send as the primary of epoch; ErrTooMany past
// maxAckers replicas.
func (s *Store) Acknowledge(db, hostname string, epoch pagewire.Epoch, pos pagewire.Pos, durable bool) error {
	d, err := s.db(db)
	if err != nil {
		return err
	}
	if hostname == "" || len(hostname) > maxHostnameLen {
		return fmt.Errorf("%w: an acknowledgement needs the replica's hostname (1 to %d bytes)", pagewire.ErrInvalidArgument, maxHostnameLen)
	}
	sends, err := s.SendsAs()
	if err != nil {
		return err
	}
	if epoch != sends {
		return fmt.Errorf("the acknowledgement follows lease epoch %d, this primary's is %d; follow the current primary: %w", epoch, sends, &pagewire.ReadOnlyError{})
	}

	// A replica can only have what it was sent.
	d.mu.RLock()
	sent, have := d.streamablePos(), d.pos
	d.mu.RUnlock()
	switch {
	case pos.TXID > sent.TXID:
		return fmt.Errorf("%w: acknowledgement of TXID %d of %q, but this primary has sent up to %d", pagewire.ErrInvalidArgument, pos.TXID, db, sent.TXID)
	case pos.TXID == have.TXID && pos.Checksum != have.Checksum:
		return fmt.Errorf("%w: acknowledgement of TXID %d of %q with checksum %016x, the primary's is %016x: the replica diverged and must re-seed",
			pagewire.ErrInvalidArgument, pos.TXID, db, pos.Checksum, have.Checksum)
	}

	// Record it, and let the commits it satisfies return.
	r := &d.acks
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.by[hostname]
	if a == nil {
		if len(r.by) >= maxAckers {
			return fmt.Errorf("%w: %d replicas acknowledge %q already", pagewire.ErrTooMany, maxAckers, db)
		}
		if r.by == nil {
			r.by = map[string]*replicaAck{}
		}
		a = &replicaAck{}
		r.by[hostname] = a
	}
	if a.epoch != epoch {
		*a = replicaAck{epoch: epoch}
	}
	a.applied, a.at = pos, time.Now()
	if durable && pos.TXID > a.durable {
		a.durable = pos.TXID
	}
	n := s.syncReplicas
	kept := r.waiters[:0]
	for _, w := range r.waiters {
		if r.durableCount(w.txid, w.epoch) >= n {
			close(w.done)
		} else {
			kept = append(kept, w)
		}
	}
	r.waiters = kept
	if r.degraded && n > 0 && r.durableCount(sent.TXID, epoch) >= n {
		r.degraded = false
		d.log.Info("commits wait for replicas again: enough replicas have every transaction", "sync_replicas", n, logkey.TXID, sent.TXID)
	}
	return nil
}

// ForgetReplica drops what replica hostname acknowledged of db: its
// acknowledgement stream ended.
func (s *Store) ForgetReplica(db, hostname string) {
	d, err := s.db(db)
	if err != nil {
		return
	}
	d.acks.mu.Lock()
	delete(d.acks.by, hostname)
	d.acks.mu.Unlock()
}

// ReplicaPositions lists what db's replicas acknowledged, by hostname.
func (s *Store) ReplicaPositions(db string) []ReplicaPosition {
	d, err := s.db(db)
	if err != nil {
		return nil
	}
	d.acks.mu.Lock()
	defer d.acks.mu.Unlock()
	out := make([]ReplicaPosition, 0, len(d.acks.by))
	for host, a := range d.acks.by {
		out = append(out, ReplicaPosition{Hostname: host, Applied: a.applied, Durable: a.durable, At: a.at})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Hostname < out[j].Hostname })
	return out
}

// errSyncLost is the cause of a commit that failed while it waited for
// replicas because the node stopped being the primary.
var errSyncLost = errors.New("this node stopped being the primary while the commit waited for replicas")

// awaitReplicas waits until SyncReplicas replicas acknowledged txid of d
// durably: at most SyncTimeout (then the database's commits go on
// without waiting until the replicas catch up), or without limit when it
// is 0. It fails if the node stops being the primary meanwhile: the
// app is then told the commit failed (it may have reached replicas).
func (s *Store) awaitReplicas(d *database, txid pagewire.TXID) error {
	n := s.syncReplicas
	if n == 0 || txid == 0 {
		return nil
	}
	epoch, err := s.SendsAs()
	if err != nil {
		// No longer the primary (or past its lease, frozen): nobody will
		// acknowledge it, and the app must not be told it committed.
		return fmt.Errorf("%w: %w", errSyncLost, err)
	}

	// Register, unless it is acknowledged already or commits go on without waiting.
	r := &d.acks
	r.mu.Lock()
	if r.degraded || r.durableCount(txid, epoch) >= n {
		r.mu.Unlock()
		return nil
	}
	w := &ackWaiter{txid: txid, epoch: epoch, done: make(chan struct{})}
	r.waiters = append(r.waiters, w)
	r.mu.Unlock()
	start := time.Now()
	s.sync.waiting.Add(1)
	defer func() {
		s.sync.waiting.Add(-1)
		s.sync.waits.Add(1)
		s.sync.waitNanos.Add(int64(time.Since(start)))
	}()

	// Wait for it, for the timeout, or for the node to stop being the
	// primary (a role change, or a lease deadline that passes unnoticed).
	var timeout <-chan time.Time
	if s.syncTimeout > 0 {
		t := time.NewTimer(s.syncTimeout)
		defer t.Stop()
		timeout = t.C
	}
	check := time.NewTicker(100 * time.Millisecond)
	defer check.Stop()
	for {
		roleChanged := s.RoleChanged()
		if err := s.checkWritable(App); err != nil {
			r.remove(w)
			return fmt.Errorf("%w: %w", errSyncLost, err)
		}
		select {
		case <-w.done:
			return nil
		case <-timeout:
			r.remove(w)
			s.sync.timeouts.Add(1)
			r.mu.Lock()
			first := !r.degraded
			r.degraded = true
			r.mu.Unlock()
			if first {
				d.log.Warn("commits no longer wait for replicas: fewer than replication.sync-replicas acknowledged a transaction within replication.sync-timeout, so it and later commits return without them (asynchronous) until enough replicas catch up; check the replicas, or set sync-timeout: 0 to wait for them without limit",
					logkey.TXID, txid, "sync_replicas", n, "sync_timeout", s.syncTimeout, "acknowledged_by", s.ackedBy(d, txid, epoch))
			}
			return nil
		case <-roleChanged:
		case <-check.C:
		}
	}
}

// ackedBy is how many replicas acknowledged txid durably in epoch.
func (s *Store) ackedBy(d *database, txid pagewire.TXID, epoch pagewire.Epoch) int {
	d.acks.mu.Lock()
	defer d.acks.mu.Unlock()
	return d.acks.durableCount(txid, epoch)
}

package replicator

import (
	"time"

	"github.com/pagewire/pagewire"
)

// DBStatus is how a replica stands with one database: what the metrics
// litefs_db_position_primary and litefs_lag_seconds report.
type DBStatus struct {
	// PrimaryTXID is the highest TXID the primary is known to have.
	PrimaryTXID pagewire.TXID
	// Lag is how far behind the primary this replica is, in time: since
	// the newest moment at which it had everything the primary had. It is
	// 0 while the database's stream is idle and caught up, and grows while
	// the stream is down.
	Lag time.Duration
}

// dbStatus is the replica's record behind a DBStatus; r.mu guards it.
type dbStatus struct {
	primaryTXID pagewire.TXID
	currentAsOf time.Time // the replica had everything the primary had then
	caughtUp    bool      // the stream is up, idle, and everything is applied
}

// Status returns every followed database's status.
func (r *Replica) Status() map[string]DBStatus {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]DBStatus, len(r.status))
	for name, st := range r.status {
		s := DBStatus{PrimaryTXID: st.primaryTXID}
		if !st.caughtUp && !st.currentAsOf.IsZero() {
			s.Lag = max(0, now.Sub(st.currentAsOf))
		}
		out[name] = s
	}
	return out
}

// Lag is the largest lag of any database (0 with none).
func (r *Replica) Lag() time.Duration {
	var lag time.Duration
	for _, s := range r.Status() {
		lag = max(lag, s.Lag)
	}
	return lag
}

// noteStatus updates a database's status under r.mu.
func (r *Replica) noteStatus(name string, f func(st *dbStatus)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.status == nil {
		r.status = map[string]*dbStatus{}
	}
	st := r.status[name]
	if st == nil {
		st = &dbStatus{currentAsOf: time.Now()}
		r.status[name] = st
	}
	f(st)
}

// forgetStatus drops a database no longer followed.
func (r *Replica) forgetStatus(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.status, name)
}

// noteReceived records transactions received, not yet applied.
func (a *applier) noteReceived(txns []pagewire.Txn) {
	a.r.noteStatus(a.name, func(st *dbStatus) {
		st.caughtUp = false
		st.primaryTXID = max(st.primaryTXID, txns[len(txns)-1].TXID)
	})
}

// noteApplied records transactions applied: the replica is current as of
// the last one's commit.
func (a *applier) noteApplied(txns []pagewire.Txn) {
	a.r.noteStatus(a.name, func(st *dbStatus) {
		t, now := txns[len(txns)-1].CommitTime, time.Now()
		if t.After(now) {
			t = now // the primary's clock is ahead of this one
		}
		if t.After(st.currentAsOf) {
			st.currentAsOf = t
		}
	})
}

// noteCurrent records that the replica has everything the primary sent
// and the primary said so (a heartbeat, a snapshot's end): it is current
// now.
func (a *applier) noteCurrent(pos pagewire.Pos, idle bool) {
	a.r.noteStatus(a.name, func(st *dbStatus) {
		st.primaryTXID = max(st.primaryTXID, pos.TXID)
		st.currentAsOf, st.caughtUp = time.Now(), idle
	})
}

// noteStreamDown records that the stream ended: the lag grows from the
// last moment the replica was current.
func (a *applier) noteStreamDown() {
	a.r.noteStatus(a.name, func(st *dbStatus) { st.caughtUp = false })
}

package engine

import (
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/logkey"
)

// This file decides when the primary's transactions may be streamed to
// replicas: once the primary's own copy is durable, as SQLite's synchronous
// setting makes it (README, Replication).
//
// SQLite does not tell the storage server its synchronous setting, so each
// database learns it from what follows its commits. Under FULL, SQLite
// fsyncs the -wal right after writing a commit frame, before it releases
// the WAL write lock (sqlite3WalFrames), so nothing else reaches the WAL
// before that fsync. Under NORMAL (and OFF) there is no fsync at commit.
// So:
//
//   - A commit of the app's is held back from replicas until a WAL fsync
//     that began after it completes (the position is read before the
//     fsync and published after it succeeds).
//   - A commit followed instead by another write or truncation of the WAL,
//     with no fsync begun in between, was made under NORMAL: it is
//     released then, and the database is marked NORMAL.
//   - A commit followed by nothing for normalGrace, with no fsync in
//     flight, is released then and marks the database NORMAL too.
//   - On a database marked NORMAL a commit is streamed at once; a WAL
//     fsync that follows a commit before anything else marks it FULL again
//     (unless a checkpoint's database writes show that fsync was a
//     checkpoint's).
//
// With synchronous replication (syncrep.go) a commit also waits for
// replicas' acknowledgements, and where it waits follows the same
// learning:
//
//   - On a database learned FULL, the commit is held like any other and
//     its write returns at once; the WAL fsync that follows streams it
//     once the primary's copy is durable, then waits for the replicas
//     before it returns to SQLite (and so to the app).
//   - On a database learned NORMAL, or not learned yet (no commit seen
//     since the node started), the commit streams at once and its commit
//     frame's write waits.
//   - FULL then NORMAL: a commit whose write returned expecting an fsync
//     that never came has returned to the app unacknowledged. It is found
//     when NORMAL is learned (the next write, or normalGrace), logged and
//     counted (SyncStats.Unacknowledged); later commits wait in the write.
//   - NORMAL then FULL: the first FULL commit waits in its write and so
//     reaches replicas before the primary's fsync (README, Replication);
//     its fsync marks the database FULL and later ones wait in the fsync.
//
// The node's own apply worker's commits (a replica's, or a halt lock's
// holder's forwarded to the primary) are the primary's history already and
// are never held back.
//
// A commit the app was told failed because the node stopped being the
// primary as it committed is never streamed: the watermark stays below it
// (capped) until the node is the primary of a newer epoch.

// normalGrace is how long a commit waits for SQLite's fsync before the
// database is taken to run under synchronous=NORMAL. SQLite under FULL
// sends its fsync right after the commit frame's write returns, one FUSE
// round trip later; a second allows for a very loaded machine.
const normalGrace = time.Second

// durableState is what database.mu guards for the streamable watermark.
type durableState struct {
	// held is set while app commits past heldAt wait for the fsync that
	// makes them durable; heldAt is then the streamable position.
	held   bool
	heldAt pagewire.Pos
	gen    uint64 // counts holds: a grace timer acts only on its own
	// syncsBegun counts WAL fsyncs begun, syncing those in flight;
	// heldSyncs is syncsBegun when the hold began.
	syncsBegun, heldSyncs uint64
	syncing               int
	// normal is set once the database's commits were seen not to be
	// followed by an fsync (synchronous=NORMAL or OFF); full once one was
	// (FULL). Neither: not learned yet.
	normal, full bool
	// afterCommit is set from an app's commit to the next appending write
	// of the WAL: an fsync meanwhile follows that commit.
	afterCommit bool
	// learnedBySync is set when the last fsync marked the database FULL,
	// with wasNormal what it was before: a checkpoint's database writes
	// that follow show that fsync was the checkpoint's, and undo it.
	learnedBySync, wasNormal, wasFull bool
	// syncPending is the TXID of an app's commit whose write returned
	// without waiting for replicas, on a database learned FULL: the WAL
	// fsync that follows it waits instead. pendingSyncs is syncsBegun
	// when it committed.
	syncPending  pagewire.TXID
	pendingSyncs uint64
	// heldSince is when the current hold began, for its grace timer.
	heldSince time.Time
	// capped is set after a commit the app was told failed: capAt, the
	// position before it, is as far as replicas may be sent, while the
	// node's role epoch is capEpoch.
	capped   bool
	capAt    pagewire.Pos
	capEpoch pagewire.Epoch
}

// streamablePos is the position replicas may be sent up to. mu must be
// held.
func (d *database) streamablePos() pagewire.Pos {
	p := d.pos
	if s := &d.durable; s.held && s.heldAt.TXID < p.TXID {
		p = s.heldAt
	}
	if s := &d.durable; s.capped && s.capAt.TXID < p.TXID {
		p = s.capAt
	}
	return p
}

// watchStreamable is watchPos for the streamable position.
func (d *database) watchStreamable() (pagewire.Pos, <-chan struct{}, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.streamablePos(), d.changed, d.deleted
}

// wake closes the change channel: feeds look at the position again. mu
// must be held.
func (d *database) wake() {
	if d.changed != nil {
		close(d.changed)
	}
	d.changed = make(chan struct{})
}

// noteAppCommit follows an app's commit that took the position from prev
// to d.pos, and returns the TXID its write must not return before
// replicas acknowledge (0: none). syncWait says whether commits wait for
// replicas. On a database marked NORMAL it streams at once; else it waits
// for SQLite's fsync, except a commit that waits for replicas on a
// database not learned FULL, which streams at once and waits in its write
// (the top of this file says why). mu must be held.
func (d *database) noteAppCommit(prev pagewire.Pos, syncWait bool) pagewire.TXID {
	s := &d.durable
	if s.held && s.syncsBegun == s.heldSyncs {
		// The commit held before this one had no fsync: SQLite went on
		// without one (NORMAL), and this write is its next.
		d.releaseAsNormal()
	}
	if s.syncPending != 0 && s.syncsBegun == s.pendingSyncs {
		d.syncUnacked() // its write returned for an fsync that never came
	}
	s.learnedBySync, s.afterCommit = false, true
	s.syncPending = 0
	if s.normal || (syncWait && !s.full) {
		if s.held {
			s.held = false // what was held goes with it
			d.wake()
		}
		if !syncWait {
			return 0
		}
		return d.pos.TXID // d.pos is streamable: nothing is held
	}
	if !s.held || s.heldAt.TXID >= d.pos.TXID {
		s.held, s.heldAt = true, prev
	}
	s.gen++
	s.heldSyncs = s.syncsBegun
	if syncWait {
		s.syncPending, s.pendingSyncs = d.pos.TXID, s.syncsBegun
	}
	gen := s.gen
	s.heldSince = time.Now()
	time.AfterFunc(normalGrace, func() { d.graceOver(gen) })
	return 0
}

// graceOver releases hold gen if no fsync began since: the commit was made
// under NORMAL. A timer that fires a grace late (the node was frozen, or
// starved of CPU) waits another grace instead: SQLite's fsync may be
// queued behind it. Released, a commit whose fsync was to wait for
// replicas still waits in that fsync if it comes next (releaseAsNormal).
func (d *database) graceOver(gen uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := &d.durable
	if !s.held || s.gen != gen || s.syncsBegun != s.heldSyncs || s.syncing != 0 {
		return
	}
	if late := time.Since(s.heldSince); late > 2*normalGrace {
		s.heldSince = time.Now()
		time.AfterFunc(normalGrace, func() { d.graceOver(gen) })
		return
	}
	d.releaseAsNormal()
}

// noteWALChange follows a write or truncation of the -wal that counted no
// commit: if an app's commit is held with no fsync begun since, SQLite
// went on without one (NORMAL). mu must be held.
func (d *database) noteWALChange() {
	s := &d.durable
	s.afterCommit = false
	if s.held && s.syncsBegun == s.heldSyncs {
		d.releaseAsNormal()
	}
	if s.syncPending != 0 && s.syncsBegun == s.pendingSyncs {
		d.syncUnacked() // its write returned for an fsync that never came
	}
}

// releaseAsNormal streams what is held and marks the database NORMAL. mu
// must be held. A commit whose wait for replicas was left to the fsync
// that FULL makes stays pending: until SQLite writes the WAL again without
// an fsync (noteWALChange, noteAppCommit), that fsync may still come, late,
// and then waits as it would have.
func (d *database) releaseAsNormal() {
	s := &d.durable
	s.held, s.normal, s.full, s.learnedBySync = false, true, false, false
	d.wake()
}

// syncUnacked counts and logs the pending commit, which returned to the
// app before replicas acknowledged it. mu must be held.
func (d *database) syncUnacked() {
	s := &d.durable
	d.acks.unacked.Add(1)
	d.log.Warn("a commit returned to the app before replicas acknowledged it: the database went from synchronous=FULL to NORMAL, and the commit's wait was to be in the fsync that FULL makes; later commits wait in their write",
		logkey.TXID, s.syncPending)
	s.syncPending = 0
}

// forgetFull follows the deletion of the -wal, which SQLite does as its
// last connection to the database closes: the next connection may run
// under another synchronous setting, so commits that wait for replicas
// wait in their write until an fsync shows FULL again. mu must be held.
func (d *database) forgetFull() {
	s := &d.durable
	s.full, s.learnedBySync, s.syncPending = false, false, 0
}

// noteDBWrite follows a write to the database file (a checkpoint): an
// fsync that just marked the database FULL was the checkpoint's. mu must
// be held.
func (d *database) noteDBWrite() {
	s := &d.durable
	if !s.learnedBySync {
		return
	}
	s.learnedBySync = false
	if s.syncPending != 0 && s.syncsBegun == s.pendingSyncs+1 {
		// The only fsync after the pending commit was this
		// checkpoint's (under FULL SQLite's own comes first): the
		// commit was made under NORMAL, and returned unacknowledged.
		s.normal, s.full = true, false
		d.syncUnacked()
		return
	}
	s.normal, s.full = s.wasNormal, s.wasFull
}

// beginWALSync notes a WAL fsync about to start and returns the position
// it covers. mu must be held.
func (d *database) beginWALSync() pagewire.Pos {
	d.durable.syncsBegun++
	d.durable.syncing++
	return d.pos
}

// endWALSync notes the end of a WAL fsync that covered pos; ok if it
// succeeded. It returns the TXID of an app's commit the fsync must not
// return before replicas acknowledge (0: none). mu must be held.
func (d *database) endWALSync(pos pagewire.Pos, ok bool) (wait pagewire.TXID) {
	s := &d.durable
	s.syncing--
	if !ok || pos.TXID > d.pos.TXID {
		return 0 // failed, or the database was replaced meanwhile
	}
	if s.syncPending != 0 && pos.TXID >= s.syncPending {
		// The commit whose write left its wait to this fsync. It stays
		// pending: an fsync of another connection's (a checkpoint's)
		// may cover it before SQLite's own, and both wait.
		wait = s.syncPending
	}
	if s.held && pos.TXID > s.heldAt.TXID {
		if pos.TXID >= d.pos.TXID {
			s.held = false
		} else {
			s.heldAt = pos
		}
		d.wake()
	}
	if s.afterCommit && pos.TXID == d.pos.TXID && !s.learnedBySync {
		// A commit followed by an fsync: FULL, unless what comes next
		// shows this fsync was a checkpoint's.
		s.learnedBySync, s.wasNormal, s.wasFull = true, s.normal, s.full
		s.normal, s.full = false, true
	}
	return wait
}

// capStream keeps replicas from being sent the app's commit after prev,
// which the app was told failed, while the node's role epoch is epoch.
// mu must be held.
func (d *database) capStream(prev pagewire.Pos, epoch pagewire.Epoch) {
	s := &d.durable
	if s.capped && s.capEpoch == epoch && s.capAt.TXID <= prev.TXID {
		return // capped lower already
	}
	s.capped, s.capAt, s.capEpoch = true, prev, epoch
	if s.held && s.heldAt.TXID < prev.TXID {
		s.heldAt = prev // SQLite went on: what came before is released
	}
}

// uncap lifts a cap set in an older epoch than epoch: the node is the
// primary of a newer one, whose history starts from its files. mu must be
// held.
func (d *database) uncap(epoch pagewire.Epoch) {
	if s := &d.durable; s.capped && s.capEpoch < epoch {
		s.capped = false
		d.wake()
	}
}

// resetDurable forgets holds and caps: the database's history was replaced
// (a snapshot, an import). mu must be held.
func (d *database) resetDurable() {
	s := &d.durable
	s.held, s.capped, s.learnedBySync = false, false, false
	s.syncPending = 0
}

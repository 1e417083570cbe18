package engine

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire"
)

// result is what a write or fsync returned, from a goroutine.
type result struct{ err error }

// waitResult waits, at most 10 s, for a result.
func waitResult(t *testing.T, c <-chan result) error {
	t.Helper()
	select {
	case r := <-c:
		return r.err
	case <-time.After(10 * time.Second):
		t.Fatal("the commit did not return")
		return nil
	}
}

// waitWaiting waits, at most 10 s, until n commits wait for replicas.
func waitWaiting(t *testing.T, s *Store, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.SyncStats().Waiting != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d commits wait for replicas, want %d", s.SyncStats().Waiting, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A commit's write waits for the replicas' durable acknowledgements when
// the database's synchronous setting is not learned yet (its first commit);
// one that is not durable does not count. The commit streams at once.
func TestStore_CommitWaitsInItsWrite(t *testing.T) {
	s, w := newDurableStore(t, func(c *StoreConfig) { c.SyncReplicas, c.SyncTimeout = 1, 0 })
	done := make(chan result, 1)
	go func() { _, err := w.tryFrame(1, newDatabasePage(defaultPageSize), 1); done <- result{err} }() // TXID 2
	waitWaiting(t, s, 1)
	if got := streamable(t, s); got != 2 {
		t.Fatalf("a commit waiting for replicas streams up to %d, want 2", got)
	}

	pos, _ := s.Position("app.db")
	if err := s.Acknowledge("app.db", "r1", 1, pos, false); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
		t.Fatal("the commit returned on an acknowledgement that is not durable")
	default:
	}
	if err := s.Acknowledge("app.db", "r1", 1, pos, true); err != nil {
		t.Fatal(err)
	}
	if err := waitResult(t, done); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(w.id, App); err != nil { // SQLite's fsync after it does not wait
		t.Fatal(err)
	}
	if st := s.SyncStats(); st.Waits != 1 || st.Timeouts != 0 || st.Waiting != 0 {
		t.Fatalf("stats %+v, want 1 wait", st)
	}
	if got := s.ReplicaPositions("app.db"); len(got) != 1 || got[0].Hostname != "r1" || got[0].Applied != pos || got[0].Durable != 2 {
		t.Fatalf("replica positions %+v", got)
	}
}

// ackDurable acknowledges app.db's position for replica host, durably.
func ackDurable(t *testing.T, s *Store, host string) pagewire.Pos {
	t.Helper()
	pos, _ := s.Position("app.db")
	if err := s.Acknowledge("app.db", host, 1, pos, true); err != nil {
		t.Fatal(err)
	}
	return pos
}

// learnFull commits TXID 2 (its write waits: nothing is learned yet), has
// r1 acknowledge it, and fsyncs it: app.db is learned FULL.
func learnFull(t *testing.T, s *Store, w *walBuilder) {
	t.Helper()
	done := make(chan result, 1)
	go func() { _, err := w.tryFrame(1, newDatabasePage(defaultPageSize), 1); done <- result{err} }()
	waitWaiting(t, s, 1)
	ackDurable(t, s, "r1")
	if err := waitResult(t, done); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(w.id, App); err != nil {
		t.Fatal(err)
	}
}

// On a database learned FULL a commit's write returns at once, held from
// replicas; the fsync that follows streams it once the primary's copy is
// durable, then waits for the replicas' acknowledgements.
func TestStore_FullCommitWaitsInItsFsync(t *testing.T) {
	s, w := newDurableStore(t, func(c *StoreConfig) { c.SyncReplicas, c.SyncTimeout = 1, 0 })
	learnFull(t, s, w)
	if txid := w.frame(2, testPage(3), 2); txid != 3 { // returns: no replica acknowledges
		t.Fatalf("TXID %d, want 3", txid)
	}
	if got := streamable(t, s); got != 2 {
		t.Fatalf("before its fsync a FULL commit streams up to %d, want 2", got)
	}
	if st := s.SyncStats(); st.Waiting != 0 {
		t.Fatalf("a FULL commit's write waits: %+v", st)
	}
	done := make(chan result, 1)
	go func() { done <- result{s.Sync(w.id, App)} }()
	waitWaiting(t, s, 1)
	if got := streamable(t, s); got != 3 {
		t.Fatalf("while its fsync waits for replicas the commit streams up to %d, want 3", got)
	}
	ackDurable(t, s, "r1")
	if err := waitResult(t, done); err != nil {
		t.Fatal(err)
	}
	if st := s.SyncStats(); st.Waits != 2 || st.Unacknowledged != 0 {
		t.Fatalf("stats %+v, want 2 waits", st)
	}
}

// A FULL commit's fsync that waits for replicas fails when the node stops
// being the primary meanwhile: SQLite reports the commit failed.
func TestStore_FsyncWaitFailsWhenTheNodeStepsDown(t *testing.T) {
	s, w := newDurableStore(t, func(c *StoreConfig) { c.SyncReplicas, c.SyncTimeout = 1, 0 })
	learnFull(t, s, w)
	w.frame(2, testPage(3), 2)
	done := make(chan result, 1)
	go func() { done <- result{s.Sync(w.id, App)} }()
	waitWaiting(t, s, 1)
	s.SetRole(pagewire.RoleReplica, pagewire.ReadOnlyError{Primary: "other"}, 2)
	if err := waitResult(t, done); !errors.Is(err, pagewire.ErrReadOnly) || !errors.Is(err, errSyncLost) {
		t.Fatalf("err=%v, want ErrReadOnly for a node that stopped being the primary", err)
	}
}

// A FULL commit whose fsync comes once the node is no longer the primary
// (it was frozen past its lease between the write and the fsync) fails:
// nobody acknowledges it, and the app must not be told it committed.
func TestStore_FsyncAfterSteppingDownFails(t *testing.T) {
	s, w := newDurableStore(t, func(c *StoreConfig) { c.SyncReplicas, c.SyncTimeout = 1, 0 })
	learnFull(t, s, w)
	w.frame(2, testPage(3), 2)
	s.SetRole(pagewire.RoleReplica, pagewire.ReadOnlyError{Primary: "other"}, 2)
	if err := s.Sync(w.id, App); !errors.Is(err, pagewire.ErrReadOnly) || !errors.Is(err, errSyncLost) {
		t.Fatalf("err=%v, want ErrReadOnly for a node that stopped being the primary", err)
	}
	// The node, now a replica, applies the new primary's transactions: the
	// apply worker's fsyncs do not wait for the app's failed commit (chaos:
	// a replica that failed every apply, never converging).
	if err := s.Sync(w.id, Applier); err != nil {
		t.Fatalf("the apply worker's fsync on a replica: %v", err)
	}
}

// FULL then NORMAL: the commit whose write returned for an fsync that
// never came is counted unacknowledged when the next write shows NORMAL,
// and later commits wait in their write, streamed at once. NORMAL then
// FULL: the first FULL commit waits in its write; its fsync marks the
// database FULL, and the next commit waits in its fsync again.
func TestStore_SyncWaitFollowsModeSwitches(t *testing.T) {
	for _, tc := range []struct {
		name string
		next func(t *testing.T, w *walBuilder) // the write after the commit with no fsync
	}{
		{"NextFrame", func(_ *testing.T, w *walBuilder) { w.frame(3, testPage(4), 0) }},
		{"NextCommit", nil}, // the next transaction is its commit frame alone
		{"Checkpoint", func(t *testing.T, w *walBuilder) { // one fsync, the checkpoint's, then its database writes
			s := w.s
			done := make(chan result, 1)
			go func() { done <- result{s.Sync(w.id, App)} }()
			waitWaiting(t, s, 1) // the checkpoint's fsync covers the commit: it waits
			ackDurable(t, s, "r1")
			if err := waitResult(t, done); err != nil {
				t.Fatal(err)
			}
			db := mustLookup(t, s, "app.db")
			if _, _, err := s.WriteAt(db.ID, testPage(3), defaultPageSize, App); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, w := newDurableStore(t, func(c *StoreConfig) { c.SyncReplicas, c.SyncTimeout = 1, 0 })
			learnFull(t, s, w)
			w.frame(2, testPage(3), 2) // TXID 3: its wait is left to an fsync
			if tc.next != nil {
				tc.next(t, w)
				if st := s.SyncStats(); st.Unacknowledged != 1 || streamable(t, s) != 3 {
					t.Fatalf("after FULL then NORMAL: stats %+v, streamable %d; want 1 unacknowledged, 3", st, streamable(t, s))
				}
			}

			// NORMAL: the commit waits in its write, streamed at once.
			done := make(chan result, 1)
			go func() { _, err := w.tryFrame(2, testPage(5), 3); done <- result{err} }() // TXID 4
			waitWaiting(t, s, 1)
			if st := s.SyncStats(); st.Unacknowledged != 1 || streamable(t, s) != 4 {
				t.Fatalf("a NORMAL commit waiting in its write: stats %+v, streamable %d; want 1 unacknowledged, 4", st, streamable(t, s))
			}
			ackDurable(t, s, "r1")
			if err := waitResult(t, done); err != nil {
				t.Fatal(err)
			}

			// NORMAL then FULL: that commit's fsync marks the database
			// FULL without waiting, and the next commit waits in its fsync.
			if err := s.Sync(w.id, App); err != nil {
				t.Fatal(err)
			}
			w.frame(2, testPage(6), 3) // TXID 5
			if got := streamable(t, s); got != 4 {
				t.Fatalf("a FULL commit streams up to %d before its fsync, want 4", got)
			}
			go func() { done <- result{s.Sync(w.id, App)} }()
			waitWaiting(t, s, 1)
			ackDurable(t, s, "r1")
			if err := waitResult(t, done); err != nil {
				t.Fatal(err)
			}
			if st := s.SyncStats(); st.Unacknowledged != 1 || st.Timeouts != 0 {
				t.Fatalf("stats %+v, want 1 unacknowledged", st)
			}
		})
	}
}

// Once the -wal is deleted (its last connection closed), what was learned
// of FULL is forgotten: the next connection's first commit waits in its
// write.
func TestStore_SyncForgetsFullWithTheWAL(t *testing.T) {
	s, w := newDurableStore(t, func(c *StoreConfig) { c.SyncReplicas, c.SyncTimeout = 1, 0 })
	learnFull(t, s, w)
	if err := s.Delete("app.db-wal"); err != nil {
		t.Fatal(err)
	}
	w = newWALBuilder(t, s, "app.db", 2)
	done := make(chan result, 1)
	go func() { _, err := w.tryFrame(2, testPage(3), 2); done <- result{err} }() // TXID 3
	waitWaiting(t, s, 1)
	ackDurable(t, s, "r1")
	if err := waitResult(t, done); err != nil {
		t.Fatal(err)
	}
	if st := s.SyncStats(); st.Unacknowledged != 0 {
		t.Fatalf("stats %+v, want none unacknowledged", st)
	}
}

// A FULL commit that nothing follows for normalGrace is counted
// unacknowledged too.
func TestStore_SyncFullCommitWithoutFsyncIsCounted(t *testing.T) {
	s, w := newDurableStore(t, func(c *StoreConfig) { c.SyncReplicas, c.SyncTimeout = 1, 0 })
	learnFull(t, s, w)
	w.frame(2, testPage(3), 2)
	waitStreamable(t, s, 3) // released after its grace: the fsync may still come
	if st := s.SyncStats(); st.Unacknowledged != 0 {
		t.Fatalf("stats %+v before SQLite went on, want none unacknowledged", st)
	}
	w.frame(3, testPage(4), 0) // SQLite went on without the fsync
	if st := s.SyncStats(); st.Unacknowledged != 1 {
		t.Fatalf("stats %+v, want 1 unacknowledged", st)
	}
}

// A FULL commit's fsync that comes after its grace (the node was frozen
// between the commit's write and the fsync, or starved) still waits for
// the replicas: the app is not told the commit succeeded without them.
func TestStore_LateFsyncOfAFullCommitStillWaits(t *testing.T) {
	s, w := newDurableStore(t, func(c *StoreConfig) { c.SyncReplicas, c.SyncTimeout = 1, 0 })
	learnFull(t, s, w)
	w.frame(2, testPage(3), 2)
	waitStreamable(t, s, 3) // the grace ran out before the fsync came
	done := make(chan result, 1)
	go func() { done <- result{s.Sync(w.id, App)} }()
	waitWaiting(t, s, 1)
	ackDurable(t, s, "r1")
	if err := waitResult(t, done); err != nil {
		t.Fatal(err)
	}
	if st := s.SyncStats(); st.Unacknowledged != 0 {
		t.Fatalf("stats %+v, want none unacknowledged", st)
	}
}

// Two replicas: the write waits for both, without the database's lock:
// readers go on meanwhile.
func TestStore_CommitWaitsForEveryReplica(t *testing.T) {
	s, w := newDurableStore(t, func(c *StoreConfig) { c.SyncReplicas, c.SyncTimeout = 2, 0 })
	done := make(chan result, 1)
	go func() { _, err := w.tryFrame(1, newDatabasePage(defaultPageSize), 1); done <- result{err} }()
	waitWaiting(t, s, 1)
	if _, err := s.Database("app.db"); err != nil { // takes the lock, shared
		t.Fatal(err)
	}
	pos, _ := s.Position("app.db")
	if err := s.Acknowledge("app.db", "r1", 1, pos, true); err != nil {
		t.Fatal(err)
	}
	waitWaiting(t, s, 1) // one of two
	if err := s.Acknowledge("app.db", "r2", 1, pos, true); err != nil {
		t.Fatal(err)
	}
	if err := waitResult(t, done); err != nil {
		t.Fatal(err)
	}
}

// Past SyncTimeout the commit returns, counted as a timeout, and later
// commits do not wait until enough replicas have every transaction.
func TestStore_SyncTimeoutGoesOnAsynchronously(t *testing.T) {
	s, w := newDurableStore(t, func(c *StoreConfig) { c.SyncReplicas, c.SyncTimeout = 1, 50*time.Millisecond })
	w.frame(1, newDatabasePage(defaultPageSize), 1) // no replica: returns after the timeout
	st := s.SyncStats()
	if st.Timeouts != 1 || len(st.Degraded) != 1 || st.Degraded[0] != "app.db" {
		t.Fatalf("stats %+v, want a timeout and app.db degraded", st)
	}
	w.frame(2, testPage(2), 2) // degraded: no wait
	if st := s.SyncStats(); st.Timeouts != 1 || st.Waits != 1 {
		t.Fatalf("a commit after the timeout waited: %+v", st)
	}

	// A replica that catches up brings the waits back.
	if err := s.Sync(w.id, App); err != nil {
		t.Fatal(err)
	}
	pos, _ := s.Position("app.db")
	if err := s.Acknowledge("app.db", "r1", 1, pos, true); err != nil {
		t.Fatal(err)
	}
	if st := s.SyncStats(); len(st.Degraded) != 0 {
		t.Fatalf("after a replica caught up app.db is still degraded: %+v", st)
	}
}

// A commit waiting for replicas fails when the node stops being the
// primary meanwhile.
func TestStore_SyncWaitFailsWhenTheNodeStepsDown(t *testing.T) {
	s, w := newDurableStore(t, func(c *StoreConfig) { c.SyncReplicas, c.SyncTimeout = 1, 0 })
	done := make(chan result, 1)
	go func() { _, err := w.tryFrame(1, newDatabasePage(defaultPageSize), 1); done <- result{err} }()
	waitWaiting(t, s, 1)
	s.SetRole(pagewire.RoleReplica, pagewire.ReadOnlyError{Primary: "other"}, 2)
	err := waitResult(t, done)
	if !errors.Is(err, pagewire.ErrReadOnly) || !errors.Is(err, errSyncLost) {
		t.Fatalf("err=%v, want ErrReadOnly for a node that stopped being the primary", err)
	}
}

// Acknowledgements that cannot be true are refused and change nothing.
func TestStore_AcknowledgeRefusesBadInput(t *testing.T) {
	s, w := newDurableStore(t, nil)
	w.frame(1, newDatabasePage(defaultPageSize), 1)
	w.frame(2, testPage(2), 0) // TXID 2 streamable
	pos, _ := s.Position("app.db")
	for _, tc := range []struct {
		name, db, host string
		epoch          pagewire.Epoch
		pos            pagewire.Pos
		want           error
	}{
		{"UnknownDB", "nosuch.db", "r1", 1, pos, pagewire.ErrNotFound},
		{"BadName", "../x", "r1", 1, pos, pagewire.ErrInvalidName},
		{"NoHostname", "app.db", "", 1, pos, pagewire.ErrInvalidArgument},
		{"LongHostname", "app.db", strings.Repeat("h", 256), 1, pos, pagewire.ErrInvalidArgument},
		{"OlderEpoch", "app.db", "r1", 0, pos, pagewire.ErrReadOnly},
		{"NewerEpoch", "app.db", "r1", 7, pos, pagewire.ErrReadOnly},
		{"TXIDNotSent", "app.db", "r1", 1, pagewire.Pos{TXID: pos.TXID + 1}, pagewire.ErrInvalidArgument},
		{"AbsurdTXID", "app.db", "r1", 1, pagewire.Pos{TXID: 1<<64 - 1}, pagewire.ErrInvalidArgument},
		{"OtherChecksum", "app.db", "r1", 1, pagewire.Pos{TXID: pos.TXID, Checksum: pos.Checksum ^ 1}, pagewire.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Acknowledge(tc.db, tc.host, tc.epoch, tc.pos, true)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err=%v, want %v", err, tc.want)
			}
			if got := s.ReplicaPositions("app.db"); len(got) != 0 {
				t.Fatalf("a refused acknowledgement was recorded: %+v", got)
			}
		})
	}

	// A replica node takes none.
	s.SetRole(pagewire.RoleReplica, pagewire.ReadOnlyError{Primary: "p"}, 1)
	if err := s.Acknowledge("app.db", "r1", 1, pos, true); !errors.Is(err, pagewire.ErrReadOnly) {
		t.Fatalf("a replica took an acknowledgement: err=%v", err)
	}
}

// The replicas a database keeps acknowledgements of are bounded.
func TestStore_AcknowledgersAreBounded(t *testing.T) {
	s, _ := newDurableStore(t, nil)
	pos, _ := s.Position("app.db")
	for i := range maxAckers {
		if err := s.Acknowledge("app.db", fmt.Sprintf("r%d", i), 1, pos, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Acknowledge("app.db", "one-more", 1, pos, false); !errors.Is(err, pagewire.ErrTooMany) {
		t.Fatalf("err=%v, want ErrTooMany", err)
	}
	s.ForgetReplica("app.db", "r0")
	if err := s.Acknowledge("app.db", "one-more", 1, pos, false); err != nil {
		t.Fatalf("after a replica went: %v", err)
	}
}

func TestStoreConfig_ValidateSync(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*StoreConfig)
		want string
	}{
		{"NegativeReplicas", func(c *StoreConfig) { c.SyncReplicas = -1 }, "replication.sync-replicas"},
		{"NegativeTimeout", func(c *StoreConfig) { c.SyncTimeout = -time.Second }, "replication.sync-timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := storeConfig(t.TempDir())
			tc.set(&c)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err=%v, want one naming %s", err, tc.want)
			}
		})
	}
}

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

// A commit's write waits for the replicas' durable acknowledgements, under
// FULL too (the first commit of a database is taken as FULL); one that is
// not durable does not count. The commit streams at once.
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
	if err := s.Sync(w.id); err != nil { // SQLite's fsync after it does not wait
		t.Fatal(err)
	}
	if st := s.SyncStats(); st.Waits != 1 || st.Timeouts != 0 || st.Waiting != 0 {
		t.Fatalf("stats %+v, want 1 wait", st)
	}
	if got := s.ReplicaPositions("app.db"); len(got) != 1 || got[0].Hostname != "r1" || got[0].Applied != pos || got[0].Durable != 2 {
		t.Fatalf("replica positions %+v", got)
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
	if err := s.Sync(w.id); err != nil {
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

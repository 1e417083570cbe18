package engine

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/wal"
)

// streamable is how far a new feed of app.db sends: the TXID of the last
// transaction it gives before going idle.
func streamable(t *testing.T, s *Store) pagewire.TXID {
	t.Helper()
	d, err := s.db("app.db")
	if err != nil {
		t.Fatal(err)
	}
	pos, _, _ := d.watchStreamable()
	return pos.TXID
}

// waitStreamable waits, at most 10 s, until app.db is streamable up to txid.
func waitStreamable(t *testing.T, s *Store, txid pagewire.TXID) {
	t.Helper()
	d, _ := s.db("app.db")
	deadline := time.After(10 * time.Second)
	for {
		pos, changed, _ := d.watchStreamable()
		if pos.TXID >= txid {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("app.db is streamable up to %d, want %d", pos.TXID, txid)
		}
	}
}

// newDurableStore is a store with app.db at TXID 1 and its WAL open.
func newDurableStore(t *testing.T, cfg func(*StoreConfig)) (*Store, *walBuilder) {
	t.Helper()
	c := storeConfig(t.TempDir())
	if cfg != nil {
		cfg(&c)
	}
	s, err := OpenStore(c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Create("app.db", App); err != nil {
		t.Fatal(err)
	}
	return s, newWALBuilder(t, s, "app.db", 1)
}

// Under synchronous=FULL a commit streams once the WAL fsync after it
// returns, not at its commit frame's write.
func TestStore_FullCommitStreamsAfterItsFsync(t *testing.T) {
	s, w := newDurableStore(t, nil)
	if txid := w.frame(1, newDatabasePage(defaultPageSize), 1); txid != 2 {
		t.Fatalf("TXID %d, want 2", txid)
	}
	if got := streamable(t, s); got != 1 {
		t.Fatalf("before the fsync app.db streams up to %d, want 1", got)
	}
	if err := s.Sync(w.id, App); err != nil {
		t.Fatal(err)
	}
	if got := streamable(t, s); got != 2 {
		t.Fatalf("after the fsync app.db streams up to %d, want 2", got)
	}

	// A feed sends it now, and nothing before.
	f, err := s.Feed("app.db", pagewire.Pos{TXID: 1, Checksum: firstChecksum(t, s)}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if txns, _ := feedAll(t, f); len(txns) != 1 || txns[0].TXID != 2 {
		t.Fatalf("the feed sent %d transactions", len(txns))
	}
}

// Under synchronous=NORMAL nothing fsyncs a commit: the next write to the
// WAL shows it, releases it, and later commits stream at once.
func TestStore_NormalCommitStreamsAtTheNextWrite(t *testing.T) {
	s, w := newDurableStore(t, nil)
	w.frame(1, newDatabasePage(defaultPageSize), 1) // TXID 2, held: FULL is assumed
	if got := streamable(t, s); got != 1 {
		t.Fatalf("app.db streams up to %d, want 1", got)
	}
	w.frame(2, testPage(2), 0) // the next transaction's first frame
	if got := streamable(t, s); got != 2 {
		t.Fatalf("after the next transaction's first write app.db streams up to %d, want 2", got)
	}
	if txid := w.frame(3, testPage(3), 3); txid != 3 || streamable(t, s) != 3 {
		t.Fatalf("a commit on a NORMAL database: TXID %d, streamable %d; want both 3", txid, streamable(t, s))
	}

	// An fsync that follows a commit marks it FULL again.
	if err := s.Sync(w.id, App); err != nil {
		t.Fatal(err)
	}
	w.frame(1, testPage(4), 3) // TXID 4
	if got := streamable(t, s); got != 3 {
		t.Fatalf("after a commit's fsync, the next commit streams before its own: up to %d, want 3", got)
	}
}

// A checkpoint's fsync after a NORMAL commit does not make the database
// FULL: the checkpoint's database writes show it was a checkpoint's.
func TestStore_CheckpointFsyncKeepsNormal(t *testing.T) {
	s, w := newDurableStore(t, nil)
	w.frame(1, newDatabasePage(defaultPageSize), 1)
	w.frame(2, testPage(2), 2) // TXID 3; TXID 2 released: NORMAL
	if err := s.Sync(w.id, App); err != nil {
		t.Fatal(err)
	}
	db := mustLookup(t, s, "app.db")
	if _, _, err := s.WriteAt(db.ID, testPage(2), defaultPageSize, App); err != nil { // the checkpoint copies page 2
		t.Fatal(err)
	}
	if txid := w.frame(2, testPage(5), 2); txid != 4 || streamable(t, s) != 4 {
		t.Fatalf("a commit after a checkpoint: TXID %d, streamable %d; want both 4", txid, streamable(t, s))
	}
}

// A commit that nothing follows streams after normalGrace.
func TestStore_LoneCommitStreamsAfterTheGrace(t *testing.T) {
	s, w := newDurableStore(t, nil)
	w.frame(1, newDatabasePage(defaultPageSize), 1)
	waitStreamable(t, s, 2)
}

// A commit the app is told failed, because the node stopped being the
// primary as it committed, is never streamed, whatever fsync follows; the
// node's next term as the primary of a newer epoch streams it.
func TestStore_CommitReportedFailedIsNotStreamed(t *testing.T) {
	s, w := newDurableStore(t, nil)
	w.frame(1, newDatabasePage(defaultPageSize), 1)
	if err := s.Sync(w.id, App); err != nil {
		t.Fatal(err)
	}

	// The lease runs out between the commit's check and its end: the
	// frame header's and page's writes pass, the check after the commit
	// does not.
	var calls atomic.Int32
	s.SetPrimaryUntil(1, func() time.Time {
		if calls.Add(1) > 2 {
			return time.Now().Add(-time.Second)
		}
		return time.Time{}
	})
	if _, err := w.tryFrame(2, testPage(2), 2); err == nil {
		t.Fatal("a commit made as the lease ran out reported success")
	}
	if err := s.Sync(w.id, App); err != nil {
		t.Fatal(err)
	}
	if got := streamable(t, s); got != 2 {
		t.Fatalf("app.db streams up to %d, want 2: TXID 3 was reported failed", got)
	}
	if err := s.Acknowledge("app.db", "r1", 1, pagewire.Pos{TXID: 3}, true); err == nil {
		t.Fatal("an acknowledgement of the failed commit was taken")
	}

	s.SetPrimaryUntil(2, nil)
	if got := streamable(t, s); got != 3 {
		t.Fatalf("as primary of epoch 2 app.db streams up to %d, want 3", got)
	}
}

// A feed of a busy database batches, but not while commits wait for
// replicas.
func TestFeed_DoesNotBatchWhileCommitsWait(t *testing.T) {
	s, _ := newDurableStore(t, func(c *StoreConfig) { c.SyncReplicas = 1 })
	f, err := s.Feed("app.db", pagewire.Pos{}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !f.commitsWait() {
		t.Fatal("with SyncReplicas 1 the feed would hold sends back to batch")
	}
	d, _ := s.db("app.db")
	d.acks.mu.Lock()
	d.acks.degraded = true
	d.acks.mu.Unlock()
	if f.commitsWait() {
		t.Fatal("after a sync-timeout the feed would not batch")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if item, err := f.Next(ctx); err != nil || item.Snapshot == nil {
		t.Fatalf("a feed from nothing: err=%v, want a snapshot", err)
	} else {
		item.Snapshot.Close()
	}
}

// When the rest of a refused commit's split write carries part of the
// commit frame's header (the writer writes the rest again), the header
// the refusal zeroed is zeroed again: a scan of the WAL (SQLite's
// recovery, the apply worker's) must not find the refused commit valid.
func TestStore_RefusedCommitHeaderStaysZeroedAfterTheRestIsWrittenAgain(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	txns := expectTxns(3)
	w := newWALBuilder(t, s, "app.db", 1)
	w.by = Applier
	frame := w.enc.AppendFrame(nil, 2, 2, testPage(9)) // not the announced page
	off := wal.FrameOffset(1, defaultPageSize)
	done, err := s.ExpectCommit("app.db", txns)
	if err != nil {
		t.Fatal(err)
	}
	const cut = 10 // inside the frame's header
	if _, _, err := s.WriteAt(w.id, frame[:cut], off, Applier); err != nil {
		t.Fatal(err)
	}
	for range 2 { // refused, then written again by the writer: refused
		if _, _, err := s.WriteAt(w.id, frame[cut:], off+cut, Applier); err == nil {
			t.Fatal("the rest of a refused commit was taken")
		}
	}
	done()
	hdr := make([]byte, wal.FrameHeaderSize)
	if _, err := s.ReadAt(w.id, hdr, off); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(hdr, make([]byte, wal.FrameHeaderSize)) {
		t.Fatalf("the refused commit's header is % x after its rest was written again, want zeroes", hdr)
	}
}

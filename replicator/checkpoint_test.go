package replicator

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/pagewire/pagewire"
)

func walMustCheckpoint(t testing.TB, w *WALWriter, want bool) {
	t.Helper()
	complete, err := w.Checkpoint(context.Background())
	if err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	if complete != want {
		t.Fatalf("Checkpoint()=%v, want %v", complete, want)
	}
}

// TestWALWriter_Checkpoint: a checkpoint with no readers copies everything
// (the database file alone is then the whole database) and the next Apply
// restarts the WAL; a reader pinned to a snapshot stops the copy at its
// frame and keeps a consistent view; a reader of the database file alone
// stops any copy.
func TestWALWriter_Checkpoint(t *testing.T) {
	dir := t.TempDir()
	s := walNewSourceDB(t, dir, 4096, walSetupT)
	rpath := s.newReplicaFile(dir, "replica.db")
	w := walOpenWriter(t, rpath)
	rp := walStartPy(t)
	rp.open("r", rpath)

	for i := range 5 {
		walApply(t, w, s.exec(walInsertRows(100+20*i, 20)))
	}
	walApply(t, w, s.exec("DELETE FROM t WHERE id % 2 = 0"))
	mx := w.Frames()
	walMustCheckpoint(t, w, true)
	hdr, ckpt := walReadIndex(t, w)
	if ckpt.nBackfill != mx || w.Frames() != mx {
		t.Fatalf("nBackfill=%d, Frames()=%d after a full checkpoint, want %d", ckpt.nBackfill, w.Frames(), mx)
	}
	if got, want := walFileSize(t, rpath), int64(hdr.nPage)*4096; got != want {
		t.Fatalf("database file %d bytes, want %d", got, want)
	}
	cp := walCopyDB(t, w)
	walCheckSame(t, s, cp, "c")
	walMustCheckpoint(t, w, true) // nothing left to do

	// The next Apply starts the WAL over.
	old := walHeaderOf(t, w)
	txn := s.exec(walInsertRows(500, 5))
	walApply(t, w, txn)
	nh := walHeaderOf(t, w)
	if got, want := w.Frames(), uint32(len(txn.pages)); got != want {
		t.Fatalf("Frames()=%d after the restart, want %d", got, want)
	}
	if binary.BigEndian.Uint32(nh.salt[:]) != binary.BigEndian.Uint32(old.salt[:])+1 || nh.ckptSeq != old.ckptSeq+1 || [4]byte(nh.salt[4:]) == [4]byte(old.salt[4:]) {
		t.Fatalf("WAL header after the restart: salts %x, sequence %d; before: %x, %d", nh.salt, nh.ckptSeq, old.salt, old.ckptSeq)
	}
	if hdr, ckpt := walReadIndex(t, w); hdr.salt != nh.salt || ckpt.nBackfill != 0 || ckpt.readMark[1] > hdr.mxFrame {
		t.Fatalf("wal-index after the restart: salts %x, nBackfill %d, marks %v", hdr.salt, ckpt.nBackfill, ckpt.readMark)
	}
	walCheckSame(t, s, rp, "r")

	// A reader pinned to a snapshot in the WAL.
	walApply(t, w, s.exec(walInsertRows(600, 5)))
	pinned := walStartPy(t)
	pinned.open("p", rpath)
	pinned.exec("p", "BEGIN")
	count := pinned.queryInt("p", "SELECT count(*) FROM t")
	at := w.Frames()
	for i := range 3 {
		walApply(t, w, s.exec(walSQLTxn(walInsertRows(700+10*i, 10), "UPDATE t SET n = n + 1")))
	}
	walMustCheckpoint(t, w, false)
	if _, ckpt := walReadIndex(t, w); ckpt.nBackfill != at {
		t.Fatalf("nBackfill=%d with a reader at frame %d", ckpt.nBackfill, at)
	}
	if got := pinned.queryInt("p", "SELECT count(*) FROM t"); got != count {
		t.Fatalf("pinned reader: count=%d, want its snapshot's %d", got, count)
	}
	pinned.integrity("p")
	pinned.exec("p", "COMMIT")
	walMustCheckpoint(t, w, true)
	if _, ckpt := walReadIndex(t, w); ckpt.nBackfill != w.Frames() {
		t.Fatalf("nBackfill=%d, want %d", ckpt.nBackfill, w.Frames())
	}
	walCheckSame(t, s, pinned, "p")

	// A reader of the database file alone: it began when the WAL was all
	// copied, and the Apply after it restarts the WAL.
	pinned.exec("p", "BEGIN")
	count = pinned.queryInt("p", "SELECT count(*) FROM t")
	txn = s.exec(walSQLTxn(walInsertRows(800, 10), "UPDATE t SET n = n + 1"))
	walApply(t, w, txn)
	if got, want := w.Frames(), uint32(len(txn.pages)); got != want {
		t.Fatalf("Frames()=%d, want %d (restarted)", got, want)
	}
	walMustCheckpoint(t, w, false)
	if _, ckpt := walReadIndex(t, w); ckpt.nBackfill != 0 {
		t.Fatalf("nBackfill=%d with a reader of the database file, want 0", ckpt.nBackfill)
	}
	if got := pinned.queryInt("p", "SELECT count(*) FROM t"); got != count {
		t.Fatalf("reader of the database file: count=%d, want its snapshot's %d", got, count)
	}
	pinned.integrity("p")
	pinned.exec("p", "COMMIT")
	walMustCheckpoint(t, w, true)
	walCheckSame(t, s, pinned, "p")
	cp = walCopyDB(t, w)
	walCheckSame(t, s, cp, "c")

	if _, err := w.Checkpoint(walCanceledCtx()); !errors.Is(err, context.Canceled) {
		t.Fatalf("Checkpoint with a cancelled ctx: %v", err)
	}
}

// TestWALWriter_Checkpoint_busy: another process checkpointing makes
// Checkpoint return ErrBusy, having copied nothing.
func TestWALWriter_Checkpoint_busy(t *testing.T) {
	dir := t.TempDir()
	s := walNewSourceDB(t, dir, 4096, walSetupT)
	rpath := s.newReplicaFile(dir, "replica.db")
	w := walOpenWriter(t, rpath)
	walApply(t, w, s.exec(walInsertRows(100, 10)))
	unlock := walLockFromOtherProcess(t, rpath+"-shm", shmLockCkpt, 1, true)
	complete, err := w.Checkpoint(context.Background())
	if !errors.Is(err, pagewire.ErrBusy) || complete {
		t.Fatalf("Checkpoint()=%v, %v; want false, ErrBusy", complete, err)
	}
	if _, ckpt := walReadIndex(t, w); ckpt.nBackfill != 0 {
		t.Fatalf("nBackfill=%d, want 0", ckpt.nBackfill)
	}
	unlock()
	walMustCheckpoint(t, w, true)
}

func walCanceledCtx() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

package replicator

import (
	"context"
	"errors"
	"testing"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/wal"
)

func mustCheckpoint(t testing.TB, w *WALWriter, want bool) {
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
	s := newSourceDB(t, dir, 4096, setupT)
	rpath := s.newReplicaFile(dir, "replica.db")
	w := openWriter(t, rpath)
	rp := startPy(t)
	rp.open("r", rpath)

	for i := range 5 {
		mustApply(t, w, s.exec(insertRows(100+20*i, 20)))
	}
	mustApply(t, w, s.exec("DELETE FROM t WHERE id % 2 = 0"))
	mx := w.Frames()
	mustCheckpoint(t, w, true)
	hdr, ckpt := readIndex(t, w)
	if ckpt.NBackfill != mx || w.Frames() != mx {
		t.Fatalf("nBackfill=%d, Frames()=%d after a full checkpoint, want %d", ckpt.NBackfill, w.Frames(), mx)
	}
	if got, want := fileSize(t, rpath), int64(hdr.NPage)*4096; got != want {
		t.Fatalf("database file %d bytes, want %d", got, want)
	}
	cp := copyDB(t, w)
	s.checkSame(t, cp, "c")
	mustCheckpoint(t, w, true) // nothing left to do

	// The next Apply starts the WAL over.
	old := headerOf(t, w)
	txn := s.exec(insertRows(500, 5))
	mustApply(t, w, txn)
	nh := headerOf(t, w)
	if got, want := w.Frames(), uint32(len(txn.pages)); got != want {
		t.Fatalf("Frames()=%d after the restart, want %d", got, want)
	}
	if nh.Salt[0] != old.Salt[0]+1 || nh.CheckpointSeq != old.CheckpointSeq+1 || nh.Salt[1] == old.Salt[1] {
		t.Fatalf("WAL header after the restart: salts %x, sequence %d; before: %x, %d", nh.Salt, nh.CheckpointSeq, old.Salt, old.CheckpointSeq)
	}
	if hdr, ckpt := readIndex(t, w); hdr.Salt != nh.Salt || ckpt.NBackfill != 0 || ckpt.ReadMark[1] > hdr.MxFrame {
		t.Fatalf("wal-index after the restart: salts %x, nBackfill %d, marks %v", hdr.Salt, ckpt.NBackfill, ckpt.ReadMark)
	}
	s.checkSame(t, rp, "r")

	// A reader pinned to a snapshot in the WAL.
	mustApply(t, w, s.exec(insertRows(600, 5)))
	pinned := startPy(t)
	pinned.open("p", rpath)
	pinned.exec("p", "BEGIN")
	count := pinned.queryInt("p", "SELECT count(*) FROM t")
	at := w.Frames()
	for i := range 3 {
		mustApply(t, w, s.exec(sqlTxn(insertRows(700+10*i, 10), "UPDATE t SET n = n + 1")))
	}
	mustCheckpoint(t, w, false)
	if _, ckpt := readIndex(t, w); ckpt.NBackfill != at {
		t.Fatalf("nBackfill=%d with a reader at frame %d", ckpt.NBackfill, at)
	}
	if got := pinned.queryInt("p", "SELECT count(*) FROM t"); got != count {
		t.Fatalf("pinned reader: count=%d, want its snapshot's %d", got, count)
	}
	pinned.integrity("p")
	pinned.exec("p", "COMMIT")
	mustCheckpoint(t, w, true)
	if _, ckpt := readIndex(t, w); ckpt.NBackfill != w.Frames() {
		t.Fatalf("nBackfill=%d, want %d", ckpt.NBackfill, w.Frames())
	}
	s.checkSame(t, pinned, "p")

	// A reader of the database file alone: it began when the WAL was all
	// copied, and the Apply after it restarts the WAL.
	pinned.exec("p", "BEGIN")
	count = pinned.queryInt("p", "SELECT count(*) FROM t")
	txn = s.exec(sqlTxn(insertRows(800, 10), "UPDATE t SET n = n + 1"))
	mustApply(t, w, txn)
	if got, want := w.Frames(), uint32(len(txn.pages)); got != want {
		t.Fatalf("Frames()=%d, want %d (restarted)", got, want)
	}
	mustCheckpoint(t, w, false)
	if _, ckpt := readIndex(t, w); ckpt.NBackfill != 0 {
		t.Fatalf("nBackfill=%d with a reader of the database file, want 0", ckpt.NBackfill)
	}
	if got := pinned.queryInt("p", "SELECT count(*) FROM t"); got != count {
		t.Fatalf("reader of the database file: count=%d, want its snapshot's %d", got, count)
	}
	pinned.integrity("p")
	pinned.exec("p", "COMMIT")
	mustCheckpoint(t, w, true)
	s.checkSame(t, pinned, "p")
	cp = copyDB(t, w)
	s.checkSame(t, cp, "c")

	if _, err := w.Checkpoint(canceledCtx()); !errors.Is(err, context.Canceled) {
		t.Fatalf("Checkpoint with a cancelled ctx: %v", err)
	}
}

// TestWALWriter_Checkpoint_busy: another process checkpointing makes
// Checkpoint return ErrBusy, having copied nothing.
func TestWALWriter_Checkpoint_busy(t *testing.T) {
	dir := t.TempDir()
	s := newSourceDB(t, dir, 4096, setupT)
	rpath := s.newReplicaFile(dir, "replica.db")
	w := openWriter(t, rpath)
	mustApply(t, w, s.exec(insertRows(100, 10)))
	unlock := lockFromOtherProcess(t, rpath+"-shm", wal.LockCkpt, 1, true)
	complete, err := w.Checkpoint(context.Background())
	if !errors.Is(err, pagewire.ErrBusy) || complete {
		t.Fatalf("Checkpoint()=%v, %v; want false, ErrBusy", complete, err)
	}
	if _, ckpt := readIndex(t, w); ckpt.NBackfill != 0 {
		t.Fatalf("nBackfill=%d, want 0", ckpt.NBackfill)
	}
	unlock()
	mustCheckpoint(t, w, true)
}

func canceledCtx() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

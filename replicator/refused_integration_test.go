//go:build integration

package replicator

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire"
)

// After the storage refused a commit of the apply worker (its frame
// header zeroed on disk), whether written in one write or a part at a
// time, the worker's writer starts again at the commit the storage
// counted: the next applies write over the refused frames and count, and
// SQLite readers see exactly them.
func TestApply_RefusedCommitIsWrittenOverAndCounts(t *testing.T) {
	needPython(t)
	store, mnt, mntDir := mountStore(t)
	worker := startApplyWorker(t, mnt)
	src := newSourceDB(t, t.TempDir(), 4096, setupT)
	f, err := os.Open(src.path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = store.Import("app.db", f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(mntDir, "app.db")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w, err := worker.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}

	// This node is a replica: a commit of the apply worker that was not
	// announced (its apply was cancelled) is refused, header zeroed.
	store.SetRole(pagewire.RoleReplica, pagewire.ReadOnlyError{Primary: "node0"}, 2)
	txn := src.exec(insertRows(1000, 300))
	if len(txn.pages) < 4 {
		t.Fatalf("the transaction has %d pages; the test needs several", len(txn.pages))
	}
	pos, _ := store.Position("app.db")
	if err := w.Apply(ctx, txn.pageCount, txn.pages, false); err == nil {
		t.Fatal("an unannounced apply succeeded")
	}

	// A writer opened anew (a new stream's, a restarted worker's) rebuilds
	// the wal-index from the WAL, as SQLite's recovery does: it must not
	// find the refused commit there, though the rest of the refused write
	// wrote its header again.
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w, err = worker.Open(ctx, path); err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	// The same, a part at a time: refused at its last part. Its first
	// part rebuilt the wal-index (the writer is new): a SQLite reader sees
	// none of the refused commit meanwhile.
	half := len(txn.pages) / 2
	if err := w.ApplyPart(ctx, TxnPart{PageCount: txn.pageCount, Pages: txn.pages[:half], First: true}, false); err != nil {
		t.Fatalf("first part: %v", err)
	}
	rp := startPy(t)
	rp.open("r", path)
	if n := rp.queryInt("r", "SELECT count(*) FROM t"); n != 50 {
		t.Fatalf("rows=%d after a refused commit, want 50: the refused commit was found in the WAL", n)
	}
	rp.close("r")
	if err := w.ApplyPart(ctx, TxnPart{PageCount: txn.pageCount, Pages: txn.pages[half:], Last: true}, false); err == nil {
		t.Fatal("an unannounced last part succeeded")
	}
	if got, _ := store.Position("app.db"); got != pos {
		t.Fatalf("position %v after refused applies, want %v", got, pos)
	}
	if err := store.Damaged("app.db"); err != nil {
		t.Fatalf("an unannounced commit marked the copy damaged: %v", err)
	}

	// Announced, the same transaction, then the next, count: the writer
	// wrote over the refused frames from the counted end.
	txn2 := src.exec(insertRows(2000, 5))
	at := pos
	for i, tx := range []testTxn{txn, txn2} {
		sum, err := store.ChecksumPages("app.db", at, at.Checksum, tx.pages, tx.pageCount)
		if err != nil {
			t.Fatal(err)
		}
		ptxn := pagewire.Txn{TXID: at.TXID + 1, PreChecksum: at.Checksum, PostChecksum: sum, PageSize: 4096, PageCount: tx.pageCount, Pages: tx.pages}
		done, err := store.ExpectCommit("app.db", []pagewire.Txn{ptxn})
		if err != nil {
			t.Fatal(err)
		}
		err = w.Apply(ctx, tx.pageCount, tx.pages, false)
		done()
		if err != nil {
			t.Fatalf("announced apply %d after the refusals: %v", i, err)
		}
		at = pagewire.Pos{TXID: ptxn.TXID, Checksum: sum}
		if got, _ := store.Position("app.db"); got != at {
			t.Fatalf("position %v after announced apply %d, want %v", got, i, at)
		}
	}

	// SQLite readers, and SQLite's own recovery, see exactly the counted
	// transactions.
	rp.open("r", path)
	if n := rp.queryInt("r", "SELECT count(*) FROM t"); n != 50+300+5 {
		t.Fatalf("rows=%d, want %d", n, 50+300+5)
	}
	rp.integrity("r")
}

// Abandon kills the apply worker (SetKill) and returns once its output
// ended: nothing it was asked can land after, and every call fails.
func TestApplyClient_AbandonKillsTheWorker(t *testing.T) {
	_, mnt, mntDir := mountStore(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestApplyWorkerProcess$")
	cmd.Env = append(os.Environ(), applyWorkerEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	mnt.Trust(cmd.Process.Pid)
	c := NewApplyClient(stdin, stdout, nil)
	c.SetKill(func() { _ = cmd.Process.Kill() })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, err := c.Open(ctx, filepath.Join(mntDir, "missing.db"))
	if err == nil {
		w.Close()
		t.Fatal("opened a database that does not exist")
	}
	c.Abandon()
	select {
	case <-exited:
		exited <- nil // for the cleanup
	case <-ctx.Done():
		t.Fatal("the worker did not exit once abandoned")
	}
	if _, err := c.Open(ctx, filepath.Join(mntDir, "missing.db")); err == nil || !strings.Contains(err.Error(), "stopped") {
		t.Fatalf("a call after Abandon: %v, want the worker stopped", err)
	}
}

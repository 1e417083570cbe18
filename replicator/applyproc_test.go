package replicator

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/pagewire/pagewire"
)

// startApplyPipe runs ServeApply on one end of two pipes, as the apply
// worker process does, and returns the client end.
func startApplyPipe(t *testing.T) *ApplyClient {
	t.Helper()
	reqR, reqW := io.Pipe()
	respR, respW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := ServeApply(reqR, respW, slog.New(slog.NewTextHandler(io.Discard, nil)))
		respW.Close()
		done <- err
	}()
	c := NewApplyClient(reqW, respR, nil)
	t.Cleanup(func() {
		c.Close()
		if err := <-done; err != nil {
			t.Errorf("ServeApply: %v", err)
		}
	})
	return c
}

// The apply worker protocol carries transactions to a WALWriter and its
// errors back, sentinels included.
func TestApplyClient_AppliesThroughTheWorker(t *testing.T) {
	dir := t.TempDir()
	src := newSourceDB(t, dir, 4096, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);")
	path := src.newReplicaFile(dir, "replica.db")
	c := startApplyPipe(t)
	ctx := context.Background()
	w, err := c.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if w.PageSize() != 4096 {
		t.Fatalf("page size %d", w.PageSize())
	}
	for i := range 5 {
		txn := src.exec("INSERT INTO t(v) VALUES ('row');")
		if err := w.Apply(ctx, txn.pageCount, txn.pages, i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	if w.Frames() == 0 {
		t.Fatal("Frames() is 0 after applies")
	}
	py := startPy(t)
	py.open("r", path)
	if got := py.queryInt("r", "SELECT count(*) FROM t"); got != 5 {
		t.Fatalf("replica has %d rows, want 5", got)
	}
	// A bad transaction comes back as ErrInvalidArgument.
	if err := w.Apply(ctx, 1, nil, false); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("err=%v, want ErrInvalidArgument", err)
	}
	if _, err := w.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Apply(ctx, 1, nil, false); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("apply after close: err=%v, want ErrInvalidArgument", err)
	}
}

// A worker that dies fails every call, pending or new, with an error.
func TestApplyClient_WorkerGone(t *testing.T) {
	reqR, reqW := io.Pipe()
	respR, respW := io.Pipe()
	c := NewApplyClient(reqW, respR, nil)
	go func() {
		var buf [1]byte
		reqR.Read(buf[:]) // read part of the request, then die
		reqR.Close()
		respW.Close()
	}()
	if _, err := c.Open(context.Background(), "/nonexistent"); err == nil {
		t.Fatal("Open through a dead worker succeeded")
	}
	if _, err := c.Open(context.Background(), "/nonexistent"); err == nil {
		t.Fatal("a second call through a dead worker succeeded")
	}
}

// Several transactions in one batch: each gets its own commit frame, and a
// reader sees all of them.
func TestWALWriter_ApplyBatch(t *testing.T) {
	dir := t.TempDir()
	src := newSourceDB(t, dir, 4096, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);")
	path := src.newReplicaFile(dir, "replica.db")
	w := openWriter(t, path)
	var txns []pagewire.Txn
	for range 4 {
		txn := src.exec("INSERT INTO t(v) VALUES (hex(randomblob(3000)));")
		txns = append(txns, pagewire.Txn{PageCount: txn.pageCount, Pages: txn.pages})
	}
	if err := w.ApplyBatch(context.Background(), txns, false); err != nil {
		t.Fatal(err)
	}
	frames := 0
	for _, t := range txns {
		frames += len(t.Pages)
	}
	if int(w.Frames()) != frames {
		t.Fatalf("Frames()=%d, want %d", w.Frames(), frames)
	}
	py := startPy(t)
	py.open("r", path)
	if got := py.queryInt("r", "SELECT count(*) FROM t"); got != 4 {
		t.Fatalf("replica has %d rows, want 4", got)
	}
	py.integrity("r")
	// A malformed transaction anywhere in a batch writes nothing.
	bad := append([]pagewire.Txn{txns[0]}, pagewire.Txn{PageCount: 1})
	if err := w.ApplyBatch(context.Background(), bad, false); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("err=%v, want ErrInvalidArgument", err)
	}
	if int(w.Frames()) != frames {
		t.Fatal("a refused batch wrote frames")
	}
}

package replicator

import (
	"context"
	"errors"
	"testing"

	"github.com/pagewire/pagewire"
)

// A transaction applied a part at a time through the apply worker: the
// parts are checked against each other, nothing is visible before the last,
// and a transaction given up leaves the WAL and wal-index as they were for
// the next one.
func TestWALWriter_ApplyPartThroughTheWorker(t *testing.T) {
	dir := t.TempDir()
	src := newSourceDB(t, dir, 1024, "CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB)")
	path := src.newReplicaFile(dir, "replica.db")
	c := startApplyPipe(t)
	ctx := context.Background()
	w, err := c.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	py := startPy(t)
	py.open("r", path)
	txn := src.exec(`WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<200)
INSERT INTO big SELECT x, randomblob(900) FROM c`)
	part := func(i int, first, last bool) TxnPart {
		return TxnPart{PageCount: txn.pageCount, Pages: txn.pages[i*testPartPages : min(len(txn.pages), (i+1)*testPartPages)], First: first, Last: last}
	}
	nParts := (len(txn.pages) + testPartPages - 1) / testPartPages

	// Bad parts are refused; one in the middle gives the transaction up.
	for _, tc := range []struct {
		name  string
		parts []TxnPart
	}{
		{"a part of no transaction", []TxnPart{part(1, false, false)}},
		{"pages not after the last part's", []TxnPart{part(1, true, false), part(0, false, false)}},
		{"another database size", []TxnPart{part(0, true, false), {PageCount: txn.pageCount + 1, Pages: part(1, false, false).Pages}}},
		{"no pages", []TxnPart{part(0, true, false), {PageCount: txn.pageCount, Last: true}}},
		{"after a refused part", []TxnPart{part(0, true, false), part(0, false, false), part(1, false, false)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			for _, p := range tc.parts {
				if err = w.ApplyPart(ctx, p, false); err != nil {
					break
				}
			}
			if !errors.Is(err, pagewire.ErrInvalidArgument) {
				t.Fatalf("err=%v, want ErrInvalidArgument", err)
			}
			if got := py.queryInt("r", "SELECT count(*) FROM big"); got != 0 {
				t.Fatalf("the reader sees %d rows", got)
			}
		})
	}

	// Begun, a whole Apply waits for it; given up, the next one goes in.
	if err := w.ApplyPart(ctx, part(0, true, false), false); err != nil {
		t.Fatal(err)
	}
	if err := w.Apply(ctx, txn.pageCount, txn.pages, false); !errors.Is(err, pagewire.ErrBusy) {
		t.Fatalf("Apply during a part: err=%v, want ErrBusy", err)
	}
	if err := w.AbortPart(); err != nil {
		t.Fatal(err)
	}
	for i := range nParts {
		if err := w.ApplyPart(ctx, part(i, i == 0, i == nParts-1), i == nParts-1); err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		if want := int64(0); i < nParts-1 && py.queryInt("r", "SELECT count(*) FROM big") != want {
			t.Fatalf("the reader sees rows after part %d of %d", i, nParts)
		}
	}
	src.checkSame(t, py, "r")
	if w.Frames() != uint32(len(txn.pages)) {
		t.Fatalf("Frames()=%d, want %d", w.Frames(), len(txn.pages))
	}
}

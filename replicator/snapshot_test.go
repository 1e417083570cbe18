package replicator

import (
	"context"
	"errors"
	"runtime"
	"testing"

	"github.com/pagewire/pagewire"
)

// A snapshot's announced page count is not trusted for memory: a start
// claiming SQLite's most pages costs no more than a small one, and a page
// past the count it announced is refused.
func TestApplier_SnapshotCountIsNotTrusted(t *testing.T) {
	a := &applier{}
	var sb snapshotBuf
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := a.snapshotEvent(context.Background(), &sb, TxnEvent{Snapshot: &Snapshot{PageSize: 512, PageCount: pagewire.MaxPageCount}})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
		t.Fatalf("a snapshot's start allocated %d MiB", n>>20)
	}

	sb = snapshotBuf{}
	if err := a.snapshotEvent(context.Background(), &sb, TxnEvent{Snapshot: &Snapshot{PageSize: 512, PageCount: 1}}); err != nil {
		t.Fatal(err)
	}
	pages := []pagewire.Page{{Pgno: 1, Data: make([]byte, 512)}, {Pgno: 2, Data: make([]byte, 512)}}
	if err := a.snapshotEvent(context.Background(), &sb, TxnEvent{SnapshotPages: pages}); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("a page past the snapshot's count: %v, want ErrInvalidArgument", err)
	}
}

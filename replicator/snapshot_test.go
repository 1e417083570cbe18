package replicator

import (
	"errors"
	"runtime"
	"testing"

	"github.com/pagewire/pagewire"
)

// A snapshot's announced page count is not trusted for memory: a start
// claiming SQLite's most pages costs no more than a small one, and a page
// past the count it announced is refused, changing nothing.
func TestApplier_SnapshotCountIsNotTrusted(t *testing.T) {
	needPython(t)
	g := newBigTxnRig(t)

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := g.stream([]TxnEvent{{Snapshot: &Snapshot{PageSize: 1024, PageCount: pagewire.MaxPageCount}}})
	runtime.ReadMemStats(&after)
	if err != nil && errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("a snapshot's start alone: %v", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
		t.Fatalf("a snapshot's start allocated %d MiB", n>>20)
	}
	g.at(1, 0)

	pages := []pagewire.Page{{Pgno: 1, Data: make([]byte, 1024)}, {Pgno: 2, Data: make([]byte, 1024)}}
	err = g.stream([]TxnEvent{{Snapshot: &Snapshot{PageSize: 1024, PageCount: 1}}, {SnapshotPages: pages}})
	if !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("a page past the snapshot's count: %v, want ErrInvalidArgument", err)
	}
	g.at(1, 0)
}

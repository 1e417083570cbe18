package engine

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/pagewire/pagewire"
)

// testEpoch is when test transactions commit: recent, inside retention.
var testEpoch = time.Now().Truncate(time.Second)

func testTxn(txid pagewire.TXID, fill byte) pagewire.Txn {
	return pagewire.Txn{TXID: txid, PreChecksum: uint64(txid), PostChecksum: uint64(txid) + 1, PageSize: 512, PageCount: 3,
		CommitTime: testEpoch.Add(time.Duration(txid) * time.Second), Pages: []pagewire.Page{{Pgno: 1, Data: bytes.Repeat([]byte{fill}, 512)}, {Pgno: 3, Data: bytes.Repeat([]byte{fill + 1}, 512)}}}
}

func TestTxlog_AppendReadGap(t *testing.T) {
	dir := t.TempDir()
	l, err := openTxlog(dir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	l.segmentMax = 3000 // a few records per segment
	for txid := pagewire.TXID(2); txid <= 9; txid++ {
		if err := l.append(testTxn(txid, byte(txid))); err != nil {
			t.Fatal(err)
		}
	}
	if len(l.segs) < 2 {
		t.Fatalf("segments=%d, want rolls", len(l.segs))
	}
	r, err := l.readFrom(4)
	if err != nil {
		t.Fatal(err)
	}
	for want := pagewire.TXID(4); want <= 9; want++ {
		txn, ok, err := r.Next()
		if err != nil || !ok {
			t.Fatalf("Next at %d: ok=%v err=%v", want, ok, err)
		}
		if txn.TXID != want || txn.Pages[1].Data[0] != byte(want)+1 || !txn.CommitTime.Equal(testEpoch.Add(time.Duration(want)*time.Second)) {
			t.Fatalf("got txn %d (%+v), want %d", txn.TXID, txn.Pages[1].Data[0], want)
		}
	}
	if _, ok, err := r.Next(); ok || err != nil {
		t.Fatalf("past the end: ok=%v err=%v", ok, err)
	}
	// Live: a new record shows up for the same reader.
	l.append(testTxn(10, 10))
	if txn, ok, _ := r.Next(); !ok || txn.TXID != 10 {
		t.Fatalf("live record not read: ok=%v", ok)
	}
	r.Close()
	// A jump (an import) is a gap for readers from before it.
	l.append(testTxn(12, 12))
	r, _ = l.readFrom(10)
	r.Next()
	if _, _, err := r.Next(); !errors.Is(err, errTxlogGap) {
		t.Fatalf("err=%v, want errTxlogGap", err)
	}
	r.Close()
	if _, err := l.readFrom(1); !errors.Is(err, errTxlogGap) {
		t.Fatalf("before the first record: err=%v, want errTxlogGap", err)
	}
	l.close()

	// Reopen: a torn record at the tail is cut off, the rest kept.
	last := l.segs[len(l.segs)-1]
	f, _ := os.OpenFile(last.path, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(encodeRecord(testTxn(13, 13))[:700])
	f.Close()
	l2, err := openTxlog(dir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.close()
	if got := l2.segs[len(l2.segs)-1].last; got != 12 {
		t.Fatalf("last after reopen=%d, want 12", got)
	}
	if err := l2.append(testTxn(13, 13)); err != nil {
		t.Fatal(err)
	}
	r, _ = l2.readFrom(12)
	defer r.Close()
	for want := pagewire.TXID(12); want <= 13; want++ {
		if txn, ok, err := r.Next(); !ok || err != nil || txn.TXID != want {
			t.Fatalf("after reopen: txn=%d ok=%v err=%v, want %d", txn.TXID, ok, err, want)
		}
	}
}

func TestTxlog_PrunesPastRetention(t *testing.T) {
	l, err := openTxlog(t.TempDir(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	l.segmentMax = 1 // a segment per record
	for txid := pagewire.TXID(2); txid <= 5; txid++ {
		l.append(testTxn(txid, 1))
	}
	l.prune(testEpoch.Add(64500 * time.Millisecond)) // all but txid 5 are past retention
	if len(l.segs) != 1 || l.segs[0].first != 5 {
		t.Fatalf("segments after prune: %d, want only the last (txid 5, committed 5s after the others)", len(l.segs))
	}
	if _, err := l.readFrom(3); !errors.Is(err, errTxlogGap) {
		t.Fatalf("err=%v, want errTxlogGap", err)
	}
	// Later still, the last one goes too, and appends start afresh.
	l.prune(testEpoch.Add(2 * time.Hour))
	if len(l.segs) != 0 {
		t.Fatalf("segments=%d, want none", len(l.segs))
	}
	if err := l.append(testTxn(6, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.readFrom(5); !errors.Is(err, errTxlogGap) {
		t.Fatalf("err=%v, want errTxlogGap", err)
	}
}

func TestStore_LogsCommittedTransactions(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 1)
	w.frame(2, testPage(2), 0)
	w.frame(2, testPage(3), 0) // the same page again: the newest frame wins
	w.frame(3, testPage(4), 3)
	d := s.dbs["app.db"]
	r, err := d.txlog.readFrom(2)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	txn, ok, err := r.Next()
	if !ok || err != nil {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	di, _ := s.Database("app.db")
	if txn.TXID != 2 || txn.PostChecksum != di.Pos.Checksum || txn.PageCount != 3 || len(txn.Pages) != 2 {
		t.Fatalf("txn %+v", txn)
	}
	if txn.Pages[0].Pgno != 2 || !bytes.Equal(txn.Pages[0].Data, testPage(3)) || txn.Pages[1].Pgno != 3 {
		t.Fatal("txn pages are not the newest versions in pgno order")
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord(testTxn(2, 1)))
	f.Fuzz(func(t *testing.T, b []byte) {
		txn, n, err := decodeRecord(b)
		if err != nil {
			return
		}
		if n != int64(len(b)) || !bytes.Equal(encodeRecord(txn), b) {
			t.Fatal("a decoded record does not re-encode to itself")
		}
	})
}

func TestTxlog_AppendAllReadsBackLikeAppend(t *testing.T) {
	l, err := openTxlog(t.TempDir(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	l.segmentMax = 5000
	// Into an empty log (one by one), then batches into the current
	// segment (one write) and across a roll.
	batches := [][]pagewire.TXID{{2, 3}, {4, 5, 6}, {7}, {8, 9, 10, 11, 12}}
	for _, b := range batches {
		var txns []pagewire.Txn
		for _, id := range b {
			txns = append(txns, testTxn(id, byte(id)))
		}
		if err := l.appendAll(txns); err != nil {
			t.Fatal(err)
		}
	}
	r, err := l.readFrom(2)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for want := pagewire.TXID(2); want <= 12; want++ {
		txn, ok, err := r.Next()
		if err != nil || !ok || txn.TXID != want || txn.Pages[0].Data[0] != byte(want) {
			t.Fatalf("Next: %d ok=%v err=%v, want transaction %d", txn.TXID, ok, err, want)
		}
	}
	if _, ok, err := r.Next(); ok || err != nil {
		t.Fatalf("past the end: ok=%v err=%v", ok, err)
	}
}

// TestTxlog_RecentInMemory: the newest records are served from memory,
// shared with the writer, and a reader whose next record was dropped from
// memory goes on from the file at the right place, across segments.
func TestTxlog_RecentInMemory(t *testing.T) {
	l, err := openTxlog(t.TempDir(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	l.segmentMax = 3000    // a few records per segment
	l.recentMax = 3 * 1024 // three test transactions' pages
	appended := map[pagewire.TXID]pagewire.Txn{}
	add := func(from, to pagewire.TXID) {
		t.Helper()
		var batch []pagewire.Txn
		for txid := from; txid <= to; txid++ {
			txn := testTxn(txid, byte(txid))
			appended[txid] = txn
			batch = append(batch, txn)
		}
		if err := l.appendAll(batch); err != nil {
			t.Fatal(err)
		}
	}
	check := func(r *txlogReader, want pagewire.TXID) (fromMemory bool) {
		t.Helper()
		txn, ok, err := r.Next()
		if err != nil || !ok {
			t.Fatalf("Next at %d: ok=%v err=%v", want, ok, err)
		}
		w := appended[want]
		if txn.TXID != want || txn.PostChecksum != w.PostChecksum || len(txn.Pages) != 2 ||
			!bytes.Equal(txn.Pages[0].Data, w.Pages[0].Data) || !bytes.Equal(txn.Pages[1].Data, w.Pages[1].Data) {
			t.Fatalf("Next: got txn %d, want %d with its pages", txn.TXID, want)
		}
		return &txn.Pages[0].Data[0] == &w.Pages[0].Data[0]
	}

	for txid := pagewire.TXID(2); txid <= 6; txid++ {
		add(txid, txid) // one by one: segments roll
	}
	add(7, 9) // one write; only 7..9 stay in memory
	if len(l.segs) < 2 {
		t.Fatalf("segments=%d, want rolls", len(l.segs))
	}
	if got := len(l.recent); got != 3 || l.recent[0].txn.TXID != 7 {
		t.Fatalf("kept %d records from %d, want 3 from 7", got, l.recent[0].txn.TXID)
	}
	r, err := l.readFrom(2)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for txid := pagewire.TXID(2); txid <= 9; txid++ {
		if mem := check(r, txid); mem != (txid >= 7) {
			t.Fatalf("txn %d read from memory=%v, want %v", txid, mem, txid >= 7)
		}
	}
	// The reader is at the end, its position taken from memory. Six more
	// go in; it has to go back to the file for the first three of them.
	for txid := pagewire.TXID(10); txid <= 15; txid++ {
		if err := l.append(testTxn(txid, byte(txid))); err != nil {
			t.Fatal(err)
		}
		appended[txid] = l.recent[len(l.recent)-1].txn
	}
	for txid := pagewire.TXID(10); txid <= 15; txid++ {
		if mem := check(r, txid); mem != (txid >= 13) {
			t.Fatalf("txn %d read from memory=%v, want %v", txid, mem, txid >= 13)
		}
	}
	if _, ok, err := r.Next(); ok || err != nil {
		t.Fatalf("past the end: ok=%v err=%v", ok, err)
	}

	// A jump starts memory over: a reader from before it finds the gap.
	add(20, 20)
	if got := len(l.recent); got != 1 || l.recent[0].txn.TXID != 20 {
		t.Fatalf("after a jump kept %d records, want only 20", got)
	}
	if _, _, err := r.Next(); !errors.Is(err, errTxlogGap) {
		t.Fatalf("reading across the jump: %v, want errTxlogGap", err)
	}

	// Pruning drops kept records older than recentAge; the file still
	// has them.
	l.prune(appended[20].CommitTime.Add(recentAge + time.Second))
	if len(l.recent) != 0 || l.recentBytes != 0 {
		t.Fatalf("after pruning kept %d records (%d bytes), want none", len(l.recent), l.recentBytes)
	}
	r2, err := l.readFrom(20)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if check(r2, 20) {
		t.Fatal("txn 20 read from memory after pruning")
	}

	// reset forgets them too.
	add(21, 21)
	if err := l.reset(); err != nil {
		t.Fatal(err)
	}
	if len(l.recent) != 0 || l.recentBytes != 0 {
		t.Fatalf("after reset kept %d records, want none", len(l.recent))
	}
}

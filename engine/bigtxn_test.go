package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pagewire/pagewire"
)

// partBytes is the part size the big-transaction tests use: 16 pages.
const partBytes = 64 << 10

// openSmallPartStore opens a store that streams every commit of more than
// partBytes of pages.
func openSmallPartStore(t testing.TB, dir string) *Store {
	t.Helper()
	cfg := storeConfig(dir)
	cfg.StreamTxnBytes = partBytes
	s, err := OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// bigPage is a page no other test page equals.
func bigPage(pgno uint32, round byte) []byte {
	p := testPage(round)
	binary.BigEndian.PutUint32(p, pgno)
	return p
}

// writeBigTxn commits, through w, a transaction of pages 2..n+1 (page 5
// written twice, the second version counting) on a database of n+1 pages.
func writeBigTxn(t *testing.T, w *walBuilder, n uint32, round byte) {
	t.Helper()
	w.frame(5, testPage(0xee), 0) // overwritten below
	for pgno := uint32(2); pgno <= n+1; pgno++ {
		commit := uint32(0)
		if pgno == n+1 {
			commit = n + 1
		}
		w.frame(pgno, bigPage(pgno, round), commit)
	}
}

// feedAll reads a feed's items until it is idle, joining the parts of
// large transactions, and checks the parts: each at most partBytes, More on
// all but the last, the replica's TXID moving only at the last.
func feedAll(t *testing.T, f *Feed) (txns []pagewire.Txn, parts int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []pagewire.Txn
	var open *pagewire.Txn
	for {
		item, err := f.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if item.Idle {
			if open != nil {
				t.Fatal("the feed went idle in the middle of a transaction")
			}
			return out, parts
		}
		if item.Snapshot != nil {
			item.Snapshot.Close()
			t.Fatal("the feed sent a snapshot")
		}
		before := f.next
		got, _ := f.Sent(item)
		if !item.Large {
			out = append(out, item.Txns...)
			continue
		}
		part := item.Txns[0]
		parts++
		if len(item.Txns) != 1 || len(part.Pages) == 0 || len(part.Pages)*int(part.PageSize) > partBytes {
			t.Fatalf("a part of %d transactions, %d pages", len(item.Txns), len(part.Pages))
		}
		if open == nil {
			cp := part
			cp.Pages = nil
			open = &cp
		}
		for _, p := range part.Pages { // valid until the next call: copy
			open.Pages = append(open.Pages, pagewire.Page{Pgno: p.Pgno, Data: bytes.Clone(p.Data)})
		}
		if item.More != (got == before-1) || (!item.More && got != part.TXID) {
			t.Fatalf("after a part (more=%v) of %d the replica has %d", item.More, part.TXID, got)
		}
		if !item.More {
			out = append(out, *open)
			open = nil
		}
	}
}

// A commit of more than StreamTxnBytes of pages goes to the transaction log
// straight from the WAL, is not kept in memory, and a feed sends it a part
// at a time; the checksum ChecksumPages predicts before the commit is the
// one it counts.
func TestStore_BigCommitIsStreamedAndFedInParts(t *testing.T) {
	dir := t.TempDir()
	s := openSmallPartStore(t, dir)
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 1)
	w.frame(1, newDatabasePage(defaultPageSize), 1) // TXID 2: small, kept in memory
	before, _ := s.Position("app.db")

	// The big one: 40 pages, three parts of at most 16.
	const n = 40
	want := []pagewire.Page{}
	for pgno := uint32(2); pgno <= n+1; pgno++ {
		want = append(want, pagewire.Page{Pgno: pgno, Data: bigPage(pgno, 1)})
	}
	predicted, err := s.ChecksumPages("app.db", before, before.Checksum, want[:10], 0)
	if err == nil {
		predicted, err = s.ChecksumPages("app.db", before, predicted, want[10:], n+1)
	}
	if err != nil {
		t.Fatal(err)
	}
	writeBigTxn(t, w, n, 1)
	after, _ := s.Position("app.db")
	if after.TXID != 3 || predicted != after.Checksum {
		t.Fatalf("after the big commit at %v; ChecksumPages predicted %016x", after, predicted)
	}
	if _, err := s.ChecksumPages("app.db", before, before.Checksum, want, 0); !errors.Is(err, pagewire.ErrBusy) {
		t.Fatalf("ChecksumPages at a position left behind: err=%v, want ErrBusy", err)
	}

	// Not in memory.
	d := s.dbs["app.db"]
	d.txlog.mu.Lock()
	for _, r := range d.txlog.recent {
		if r.txn.TXID == 3 {
			t.Error("the big transaction is kept in memory")
		}
	}
	d.txlog.mu.Unlock()

	// A replica at TXID 1 gets transaction 2 whole, then 3 in parts.
	check := func(s *Store) {
		t.Helper()
		f, err := s.Feed("app.db", pagewire.Pos{TXID: 1, Checksum: firstChecksum(t, s)}, partBytes)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		txns, parts := feedAll(t, f)
		if len(txns) != 2 || txns[0].TXID != 2 || txns[1].TXID != 3 || parts != 3 {
			t.Fatalf("fed %d transactions, %d parts; want 2, the second in 3 parts", len(txns), parts)
		}
		big := txns[1]
		if big.PreChecksum != before.Checksum || big.PostChecksum != after.Checksum || big.PageCount != n+1 || len(big.Pages) != n {
			t.Fatalf("big transaction %d: %016x -> %016x, %d pages of %d", big.TXID, big.PreChecksum, big.PostChecksum, len(big.Pages), big.PageCount)
		}
		for i, p := range big.Pages {
			if p.Pgno != want[i].Pgno || !bytes.Equal(p.Data, want[i].Data) {
				t.Fatalf("page %d of the big transaction: pgno %d, want %d with its newest data", i, p.Pgno, want[i].Pgno)
			}
		}
	}
	check(s)

	// After a restart, the log's scan takes the streamed record as whole.
	s.Close()
	s = openSmallPartStore(t, dir)
	check(s)

	// A damaged byte in its pages fails its last part.
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "dbs", "app.db", txlogDirName, "*.log"))
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	f, err := os.OpenFile(segs[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	if _, err := f.WriteAt([]byte{0xff}, st.Size()-100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	l, err := openTxlog(filepath.Join(dir, "dbs", "app.db", txlogDirName), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	if got := len(l.segs); got != 1 || l.segs[0].last != 2 {
		t.Fatalf("the scan kept %d segments ending at %d, want the damaged record cut off after 2", got, l.segs[0].last)
	}
}

// firstChecksum is the checksum of app.db at TXID 1: an empty one-page
// database.
func firstChecksum(t *testing.T, s *Store) uint64 {
	t.Helper()
	return pageChecksum(1, newDatabasePage(s.dbs["app.db"].pageSize)) | checksumFlag
}

// A damaged big record is found as its parts are read: the last part fails
// with ErrCorrupt, so the replica never commits it.
func TestTxlog_DamagedBigRecordFailsItsLastPart(t *testing.T) {
	l, err := openTxlog(t.TempDir(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	txn := pagewire.Txn{TXID: 2, PreChecksum: 1, PostChecksum: 2, PageSize: 512, PageCount: 40, CommitTime: testEpoch}
	fill := func(emit func(uint32, []byte) error) error {
		for pgno := uint32(1); pgno <= 40; pgno++ {
			if err := emit(pgno, bytes.Repeat([]byte{byte(pgno)}, 512)); err != nil {
				return err
			}
		}
		return nil
	}
	if err := l.appendPages(txn, 40, fill); err != nil {
		t.Fatal(err)
	}
	if err := l.appendPages(pagewire.Txn{TXID: 3, PageSize: 512}, 2, fill); err == nil {
		t.Fatal("a record given more pages than it said was appended")
	}
	if err := l.append(testTxn(3, 3)); err != nil {
		t.Fatal("the log does not go on after a failed append:", err)
	}

	read := func() error {
		r, err := l.readFrom(2)
		if err != nil {
			return err
		}
		defer r.Close()
		hdr, pages, ok, err := r.nextRecord(4 * 512)
		if err != nil || !ok || pages == nil || hdr.TXID != 2 || hdr.Pages != nil {
			t.Fatalf("nextRecord: %+v pages=%v ok=%v err=%v", hdr, pages != nil, ok, err)
		}
		defer pages.close()
		var pgno uint32
		for {
			part, last, err := pages.next(4 * 512)
			if err != nil {
				return err
			}
			for _, p := range part {
				if pgno++; p.Pgno != pgno || p.Data[0] != byte(pgno) {
					t.Fatalf("page %d read as %d", pgno, p.Pgno)
				}
			}
			if last {
				if pgno != 40 {
					t.Fatalf("last part after %d pages", pgno)
				}
				return nil
			}
		}
	}
	if err := read(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.tail.WriteAt([]byte{0xff}, txlogHeaderSize+5*(4+512)+9); err != nil {
		t.Fatal(err)
	}
	if err := read(); !errors.Is(err, pagewire.ErrCorrupt) {
		t.Fatalf("reading a damaged record: err=%v, want ErrCorrupt", err)
	}
}

// A record of 4 GiB or more keeps the low 32 bits of its size in its
// header: it is told by its page count.
func TestRecordHeader_FourGiBAndMore(t *testing.T) {
	const n = 70000 // pages of 64 KiB: 4.6 GB
	txn := pagewire.Txn{TXID: 9, PageSize: 65536, PageCount: n}
	size := recordSize64(n, 65536)
	if size <= 1<<32 {
		t.Fatalf("size %d", size)
	}
	var h recordHeader
	copy(h.raw[:], appendRecordHeader(nil, txn, n, size))
	if err := h.decode(); err != nil || h.size != size || h.pages != n {
		t.Fatalf("decode: size %d pages %d err %v", h.size, h.pages, err)
	}
	binary.BigEndian.PutUint32(h.raw[4:], uint32(size)+1)
	if err := h.decode(); !errors.Is(err, pagewire.ErrCorrupt) {
		t.Fatalf("a wrong size field: err=%v, want ErrCorrupt", err)
	}
}

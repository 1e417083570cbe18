package engine

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/wal"
)

func mustVerify(t *testing.T, s *Store, repair bool) VerifyReport {
	t.Helper()
	r, err := s.Verify("app.db", repair)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestVerify_MatchingDatabaseIsOK(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 5)
	w.frame(2, testPage(2), 0)
	w.frame(3, testPage(3), 3)
	w.frame(2, testPage(4), 3)
	r := mustVerify(t, s, false)
	if !r.OK() || r.Pos.TXID != 3 || r.PageCount != 3 || r.Checksum != r.Pos.Checksum {
		t.Fatalf("report %+v, want OK at TXID 3 with 3 pages", r)
	}
}

// Transactions in the WAL that the position missed (as the spilled
// transactions of issue 12 were) are found, and counted with repair.
func TestVerify_FindsAndCountsUncountedCommits(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 5)
	w.frame(2, testPage(2), 2)
	// Two more commits written behind the store's back.
	f, err := os.OpenFile(filepath.Join(dir, "dbs", "app.db", walFileName), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i, fill := range []byte{7, 8} {
		fh := w.frameHeader(2, 2, testPage(fill))
		off := wal.FrameOffset(w.next+uint32(i), w.pageSize)
		f.WriteAt(append(fh, testPage(fill)...), off)
	}
	r := mustVerify(t, s, false)
	if r.OK() || r.Uncounted != 2 || r.Repaired {
		t.Fatalf("report %+v, want 2 uncounted transactions", r)
	}
	r = mustVerify(t, s, true)
	if !r.OK() || !r.Repaired || r.Pos.TXID != 4 {
		t.Fatalf("report after repair %+v, want OK at TXID 4", r)
	}
	want := checksumOf(map[uint32][]byte{1: newDatabasePage(defaultPageSize), 2: testPage(8)}, 2)
	if r.Pos.Checksum != want {
		t.Fatalf("checksum %016x, want %016x", r.Pos.Checksum, want)
	}
}

// Damage to a committed page, in the WAL or in the database file, is
// reported with the page number.
func TestVerify_NamesDamagedPages(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 5)
	w.frame(2, testPage(2), 2)
	w.frame(3, testPage(3), 3)

	db, err := os.OpenFile(filepath.Join(dir, "dbs", "app.db", databaseFileName), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.WriteAt([]byte("x"), 3000) // page 1 lives in the database file
	r := mustVerify(t, s, true)
	if r.OK() || r.BadPageCount != 1 || len(r.BadPages) != 1 || r.BadPages[0] != 1 {
		t.Fatalf("report %+v, want page 1 bad", r)
	}

	walFile, err := os.OpenFile(filepath.Join(dir, "dbs", "app.db", walFileName), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer walFile.Close()
	walFile.WriteAt([]byte("x"), wal.FrameOffset(2, defaultPageSize)+100) // page 3's frame
	r = mustVerify(t, s, true)
	if r.OK() || r.WAL == "" || r.BadPageCount != 2 {
		t.Fatalf("report %+v, want a WAL problem and pages 1 and 3 bad", r)
	}
	if r.BadPages[1] != 3 {
		t.Fatalf("bad pages %v, want [1 3]", r.BadPages)
	}
}

func TestVerify_UnknownDatabase(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	if _, err := s.Verify("nope.db", false); !errors.Is(err, pagewire.ErrNotFound) {
		t.Fatalf("err=%v, want ErrNotFound", err)
	}
}

func TestPageSums_RoundTripAndRejectBadFiles(t *testing.T) {
	p := pageSums{Pos: pagewire.Pos{TXID: 9, Checksum: 1<<63 | 5}, Pages: []uint64{1, 2, 3}}
	b := p.encode()
	got, err := decodePageSums(b)
	if err != nil || got.Pos != p.Pos || len(got.Pages) != 3 || got.Pages[2] != 3 {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	huge := append([]byte(nil), b...)
	huge[24], huge[25] = 0xff, 0xff // a count the file does not hold
	flipped := append([]byte(nil), b...)
	flipped[30] ^= 1
	for name, bad := range map[string][]byte{"short": b[:10], "count": huge, "crc": flipped} {
		if _, err := decodePageSums(bad); !errors.Is(err, pagewire.ErrCorrupt) {
			t.Errorf("%s: err=%v, want ErrCorrupt", name, err)
		}
	}
}

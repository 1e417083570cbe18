package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/wal"
)

// Every size a request or a file states is checked against what it holds
// before anything is allocated for it or changed: these tests send hostile
// ones and check that they are refused and that the databases are as they
// were.

// dbFile makes a database file of n pages in rollback mode (as exported),
// whose header says count pages, trusted by SQLite when valid.
func dbFile(n int, count uint32, valid bool) []byte {
	p1 := newDatabasePage(defaultPageSize)
	p1[18], p1[19] = 1, 1
	binary.BigEndian.PutUint32(p1[28:], count)
	binary.BigEndian.PutUint32(p1[24:], 5)
	binary.BigEndian.PutUint32(p1[92:], 5)
	if !valid {
		binary.BigEndian.PutUint32(p1[92:], 4) // version-valid-for differs from the change counter
	}
	b := p1
	for i := 2; i <= n; i++ {
		b = append(b, testPage(byte(i))...)
	}
	return b
}

// allocated returns the bytes the process allocated while f ran.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// committedDB makes "app.db" of 3 pages, with two committed transactions
// in frames 1 and 2 of its WAL, and returns its position.
func committedDB(t *testing.T, s *Store) pagewire.Pos {
	t.Helper()
	pos, _ := committedDBWAL(t, s)
	return pos
}

// committedDBWAL is committedDB, returning the WAL's builder too.
func committedDBWAL(t *testing.T, s *Store) (pagewire.Pos, *walBuilder) {
	t.Helper()
	if _, err := s.Create("app.db", App); err != nil {
		t.Fatal(err)
	}
	w := newWALBuilder(t, s, "app.db", 9)
	w.frame(2, testPage(2), 2)
	w.frame(3, testPage(3), 3)
	pos, _ := s.Position("app.db")
	return pos, w
}

// rewind makes the builder's next frame `frame` again, as SQLite does
// after a transaction failed.
func (w *walBuilder) rewind(frame uint32) {
	if int(frame) <= len(w.frames) {
		w.next, w.enc.Checksum = frame, w.frames[frame-1].ck
	}
}

// dbsEntries lists data.dir/dbs.
func dbsEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "dbs"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestStore_ImportRefusesFilesThatAreNoDatabase(t *testing.T) {
	dir := t.TempDir()
	cfg := storeConfig(dir)
	cfg.MaxImportSize = 8 * defaultPageSize
	s, err := OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	pos := committedDB(t, s)

	// A 100-byte header claiming 2^32-1 pages: what once allocated 32 GiB.
	tiny := dbFile(1, 0xFFFFFFFF, true)[:100]
	badPageSize := dbFile(2, 2, true)
	binary.BigEndian.PutUint16(badPageSize[16:], 1000)
	badMagic := dbFile(1, 1, true)
	badMagic[0] = 'X'
	for name, file := range map[string][]byte{
		"100 bytes claiming 2^32-1 pages": tiny,
		"one page claiming 2^32-1 pages":  dbFile(1, 0xFFFFFFFF, true),
		"truncated: 3 pages, 2 in file":   dbFile(2, 3, true),
		"not whole pages":                 append(dbFile(2, 2, true), 1, 2, 3),
		"bad page size":                   badPageSize,
		"not SQLite":                      badMagic,
		"shorter than a header":           []byte("SQLite format 3\x00"),
		"empty":                           nil,
		"over data.max-import-size":       dbFile(9, 9, true),
	} {
		t.Run(name, func(t *testing.T) {
			var err error
			for _, db := range []string{"app.db", "new.db"} {
				n := allocated(func() { _, err = s.Import(db, bytes.NewReader(file)) })
				if !errors.Is(err, pagewire.ErrInvalidArgument) {
					t.Fatalf("import into %s: %v, want ErrInvalidArgument", db, err)
				}
				if n > 16<<20 {
					t.Errorf("import into %s allocated %d MiB", db, n>>20)
				}
			}
			if name == "over data.max-import-size" && !strings.Contains(err.Error(), "data.max-import-size") {
				t.Errorf("the error does not name the key to raise: %v", err)
			}
			if got, _ := s.Position("app.db"); got != pos {
				t.Fatalf("app.db moved from %s to %s", pos, got)
			}
			if _, ok := s.Position("new.db"); ok {
				t.Fatal("a refused import created new.db")
			}
			if got := dbsEntries(t, dir); len(got) != 1 || got[0] != "app.db" {
				t.Fatalf("data.dir/dbs holds %v, want app.db alone", got)
			}
		})
	}

	// SQLite's rule: a count whose version-valid-for differs from the
	// change counter is not trusted; the file's length says the size.
	di, err := s.Import("new.db", bytes.NewReader(dbFile(2, 0xFFFFFFFF, false)))
	if err != nil {
		t.Fatalf("import with an untrusted count: %v", err)
	}
	if di.PageCount != 2 {
		t.Fatalf("imported %d pages, want the 2 the file holds", di.PageCount)
	}
}

// endless reads as a database that never ends, counting the bytes read.
type endless struct{ n int64 }

func (e *endless) Read(p []byte) (int, error) {
	file := dbFile(1, 0, false)
	for i := range p {
		p[i] = file[(e.n+int64(i))%int64(len(file))]
	}
	e.n += int64(len(p))
	return len(p), nil
}

// An import over the cap stops receiving one byte past it.
func TestStore_ImportStopsReadingAtTheCap(t *testing.T) {
	cfg := storeConfig(t.TempDir())
	cfg.MaxImportSize = 1 << 20
	s, err := OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := &endless{}
	if _, err := s.Import("app.db", r); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("endless import: %v, want ErrInvalidArgument", err)
	}
	if r.n > cfg.MaxImportSize+1 {
		t.Fatalf("read %d bytes of an import capped at %d", r.n, cfg.MaxImportSize)
	}
}

func TestStoreConfig_MaxImportSizeMustBePositive(t *testing.T) {
	cfg := storeConfig(t.TempDir())
	cfg.MaxImportSize = 0
	if _, err := OpenStore(cfg); err == nil || !strings.Contains(err.Error(), "data.max-import-size") {
		t.Fatalf("no max import size: %v, want an error naming data.max-import-size", err)
	}
}

// A node whose data.dir holds a database file no SQLite could have written
// (put there by an older version's import, or by hand) still starts: that
// database reports why and takes no writes until replaced; the others are
// as they were.
func TestStore_OpensWithADamagedDatabaseFile(t *testing.T) {
	huge := dbFile(1, 0xFFFFFFFF, true)
	huge[18], huge[19] = 2, 2
	for name, file := range map[string][]byte{
		"header claims 2^32-1 pages": huge,
		"100 bytes":                  huge[:100],
		"not SQLite":                 bytes.Repeat([]byte{0xAB}, defaultPageSize),
		"empty":                      nil,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTestStore(t, dir)
			good := committedDB(t, s)
			if _, err := s.Create("bad.db", App); err != nil {
				t.Fatal(err)
			}
			s.Close()
			if err := os.WriteFile(filepath.Join(dir, "dbs", "bad.db", databaseFileName), file, 0o644); err != nil {
				t.Fatal(err)
			}

			var s2 *Store
			n := allocated(func() { s2 = openTestStore(t, dir) })
			if n > 16<<20 {
				t.Errorf("opening the store allocated %d MiB", n>>20)
			}
			if got, _ := s2.Position("app.db"); got != good {
				t.Fatalf("app.db is at %s, was %s", got, good)
			}
			di, err := s2.Database("bad.db")
			if err != nil {
				t.Fatal(err)
			}
			if !errors.Is(di.Err, pagewire.ErrCorrupt) || !strings.Contains(di.Err.Error(), "import a good copy") {
				t.Fatalf("bad.db's error: %v, want ErrCorrupt saying what to do", di.Err)
			}

			// It takes no app writes, and comes back with an import.
			fi := mustLookup(t, s2, "bad.db")
			if _, _, err := s2.WriteAt(fi.ID, make([]byte, defaultPageSize), 0, App); !errors.Is(err, pagewire.ErrCorrupt) {
				t.Fatalf("write to the damaged database: %v, want ErrCorrupt", err)
			}
			if _, err := s2.Import("bad.db", bytes.NewReader(dbFile(2, 2, true))); err != nil {
				t.Fatal(err)
			}
			if di, _ := s2.Database("bad.db"); di.Err != nil || di.PageCount != 2 {
				t.Fatalf("after an import: %+v", di)
			}
		})
	}
}

// A database file whose header counts pages only its WAL holds (page 1
// checkpointed, the others not yet) is fine: the count may exceed the
// file by the WAL's frames. Without the WAL, it is damaged.
func TestStore_HeaderMayCountPagesInTheWAL(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	db, err := s.Create("app.db", App)
	if err != nil {
		t.Fatal(err)
	}
	w := newWALBuilder(t, s, "app.db", 9)
	p1 := newDatabasePage(defaultPageSize)
	binary.BigEndian.PutUint32(p1[28:], 3)
	w.frame(2, testPage(2), 0)
	w.frame(3, testPage(3), 0)
	w.frame(1, p1, 3)
	if _, _, err := s.WriteAt(db.ID, p1, 0, App); err != nil { // a checkpoint that copied page 1 only
		t.Fatal(err)
	}
	pos, _ := s.Position("app.db")
	s.Close()

	s2 := openTestStore(t, dir)
	di, err := s2.Database("app.db")
	if err != nil || di.Err != nil || di.Pos != pos || di.PageCount != 3 {
		t.Fatalf("app.db: %+v, %v; want it at %s, 3 pages, no error", di, err, pos)
	}
	s2.Close()

	if err := os.Remove(filepath.Join(dir, "dbs", "app.db", walFileName)); err != nil {
		t.Fatal(err)
	}
	s3 := openTestStore(t, dir)
	if di, _ := s3.Database("app.db"); !errors.Is(di.Err, pagewire.ErrCorrupt) {
		t.Fatalf("without its WAL app.db's header counts 3 pages in a file of 1; error %v, want ErrCorrupt", di.Err)
	}
}

// A commit frame whose database size claims pages its transaction does not
// hold is refused: the app's write fails, nothing is allocated for the
// claim, the position stays, and the next commit counts.
func TestStore_RefusesCommitsClaimingPagesTheyDoNotHold(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	pos, w := committedDBWAL(t, s) // 3 pages, 2 frames
	for name, commit := range map[string]uint32{
		"2^32-1 pages":                0xFFFFFFFF,
		"SQLite's most pages":         pagewire.MaxPageCount,
		"two pages more than written": 6,
	} {
		t.Run(name, func(t *testing.T) {
			w.rewind(3)
			w.frame(4, testPage(4), 0)
			var err error
			n := allocated(func() { _, err = w.tryFrame(2, testPage(22), commit) })
			if !errors.Is(err, pagewire.ErrInvalidArgument) {
				t.Fatalf("commit to %d pages: %v, want ErrInvalidArgument", commit, err)
			}
			if n > 16<<20 {
				t.Errorf("the refused commit allocated %d MiB", n>>20)
			}
			if got, _ := s.Position("app.db"); got != pos {
				t.Fatalf("app.db moved from %s to %s", pos, got)
			}
		})
	}

	// The refused commits are not brought back by a restart.
	s.Close()
	s2 := openTestStore(t, dir)
	if di, _ := s2.Database("app.db"); di.Pos != pos || di.Err != nil {
		t.Fatalf("after a restart: %+v, want %s", di, pos)
	}

	// A commit that adds the pages it writes counts.
	w2 := newWALBuilder(t, s2, "app.db", 31)
	w2.frame(4, testPage(4), 0)
	if txid := w2.frame(5, testPage(5), 5); txid != pos.TXID+1 {
		t.Fatalf("TXID after a good commit %s, want %s", txid, pos.TXID+1)
	}
}

// A WAL on disk holding such a commit (written by hand) does not stop the
// node: its database reports the damage and keeps the position recorded.
func TestStore_OpensWithAWALClaimingPagesItDoesNotHold(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	good := committedDB(t, s)
	if _, err := s.Create("bad.db", App); err != nil {
		t.Fatal(err)
	}
	bad, _ := s.Position("bad.db")
	s.Close()

	h := wal.Header{PageSize: defaultPageSize, Salt: wal.Salt{3, 4}}
	b := h.AppendTo(nil)
	enc := h.Encoder()
	b = enc.AppendFrame(b, 2, 0xFFFFFFFF, testPage(2))
	if err := os.WriteFile(filepath.Join(dir, "dbs", "bad.db", walFileName), b, 0o644); err != nil {
		t.Fatal(err)
	}
	var s2 *Store
	if n := allocated(func() { s2 = openTestStore(t, dir) }); n > 16<<20 {
		t.Errorf("opening the store allocated %d MiB", n>>20)
	}
	if got, _ := s2.Position("app.db"); got != good {
		t.Fatalf("app.db is at %s, was %s", got, good)
	}
	di, err := s2.Database("bad.db")
	if err != nil || !errors.Is(di.Err, pagewire.ErrCorrupt) || di.Pos != bad || di.PageCount != 1 {
		t.Fatalf("bad.db: %+v, %v; want ErrCorrupt at %s with 1 page", di, err, bad)
	}
}

// Offsets whose end overflows int64, or lies past the largest file of its
// kind, are refused for every kind of file, and change nothing.
func TestStore_OffsetsAreBounded(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	pos := committedDB(t, s)
	files := map[string]FileInfo{}
	for _, name := range []string{"app.db", "app.db-wal", "app.db-shm", "app.db-pos"} {
		fi, err := s.Create(name, App)
		if name == "app.db-pos" {
			fi, err = s.Lookup(name)
		}
		if err != nil {
			t.Fatal(err)
		}
		files[name] = fi
	}
	page1 := make([]byte, defaultPageSize)
	if _, err := s.ReadAt(files["app.db"].ID, page1, 0); err != nil {
		t.Fatal(err)
	}

	for name, fi := range files {
		for _, off := range []int64{-1, math.MinInt64, math.MaxInt64 - 2, math.MaxInt64} {
			if _, err := s.ReadAt(fi.ID, make([]byte, 10), off); !errors.Is(err, pagewire.ErrInvalidArgument) {
				t.Errorf("read %s at %d: %v, want ErrInvalidArgument", name, off, err)
			}
			if _, _, err := s.WriteAt(fi.ID, make([]byte, 10), off, App); !errors.Is(err, pagewire.ErrInvalidArgument) {
				t.Errorf("write %s at %d: %v, want ErrInvalidArgument", name, off, err)
			}
		}
	}
	for name, tc := range map[string]struct {
		file string
		data []byte
		off  int64
	}{
		// Page 1's bytes at page 2^32+1: a page number that wraps to 1.
		"page 1 at page 2^32+1": {"app.db", page1, defaultPageSize << 32},
		"db at 2^62":            {"app.db", page1, 1 << 62},
		"wal at 2^62":           {"app.db-wal", make([]byte, walFrameHeaderSize), 1 << 62},
		"wal past 2^32 frames":  {"app.db-wal", make([]byte, walFrameHeaderSize), wal.FrameOffset(math.MaxUint32, defaultPageSize) + walFrameHeaderSize + defaultPageSize},
	} {
		if _, _, err := s.WriteAt(files[tc.file].ID, tc.data, tc.off, App); !errors.Is(err, pagewire.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
	for name, tc := range map[string]struct {
		file string
		size int64
	}{
		"db to 1 TiB":           {"app.db", 1 << 40},
		"db past its pages":     {"app.db", 4 * defaultPageSize},
		"db to MaxInt64":        {"app.db", math.MaxInt64},
		"wal to MaxInt64":       {"app.db-wal", math.MaxInt64},
		"db to a negative size": {"app.db", -1},
	} {
		if _, err := s.Truncate(files[tc.file].ID, tc.size, App); !errors.Is(err, pagewire.ErrInvalidArgument) {
			t.Errorf("truncate %s: %v, want ErrInvalidArgument", name, err)
		}
	}

	// Nothing changed.
	if got, _ := s.Position("app.db"); got != pos {
		t.Fatalf("app.db moved from %s to %s", pos, got)
	}
	for _, name := range []string{"app.db", "app.db-wal"} {
		if fi := mustLookup(t, s, name); fi.Size != files[name].Size {
			t.Errorf("%s is %d bytes, was %d", name, fi.Size, files[name].Size)
		}
	}
	if r, err := s.Verify("app.db", false); err != nil || !r.OK() {
		t.Fatalf("verify: %v, %v", r, err)
	}
}

// checkImport: whatever the bytes and the length, it never panics, and what
// it accepts holds the pages it counts.
func FuzzCheckImport(f *testing.F) {
	f.Add(dbFile(1, 1, true)[:100], int64(defaultPageSize))
	f.Add(dbFile(1, 0xFFFFFFFF, true)[:100], int64(100))
	f.Fuzz(func(t *testing.T, hdr []byte, size int64) {
		n, err := checkImport(hdr, size)
		if err != nil {
			if !errors.Is(err, pagewire.ErrInvalidArgument) {
				t.Fatalf("error %v does not wrap ErrInvalidArgument", err)
			}
			return
		}
		if n == 0 || int64(n)*int64(dbHeaderPageSize(hdr)) > size {
			t.Fatalf("accepted %d pages of %d bytes in a file of %d", n, dbHeaderPageSize(hdr), size)
		}
	})
}

var _ io.Reader = (*endless)(nil)

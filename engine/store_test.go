package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/wal"
)

// walBuilder writes a WAL the way SQLite does: a header, then per frame a
// 24-byte header write and a page write, checksums chained.
type walBuilder struct {
	t        testing.TB
	s        *Store
	id       uint64
	pageSize uint32
	enc      wal.Encoder // the salts and the running checksum
	next     uint32      // next frame number
	// frames holds what was written since the last header, index frame-1,
	// for overwrite and rewriteChecksums.
	frames []builtFrame
	// split writes each page in two, at the 4 KiB boundary of the file
	// inside it, as the kernel may send one write() to the mount.
	split bool
	// by is who writes: App unless a test sets Applier.
	by Writer
}

// writePage writes a frame's page data at off, in one write or split.
func (w *walBuilder) writePage(page []byte, off int64) (pagewire.TXID, error) {
	if cut := (off/4096+1)*4096 - off; w.split && cut < int64(len(page)) {
		if _, _, err := w.s.WriteAt(w.id, page[:cut], off, w.by); err != nil {
			return 0, err
		}
		page, off = page[cut:], off+cut
	}
	_, txid, err := w.s.WriteAt(w.id, page, off, w.by)
	return txid, err
}

type builtFrame struct {
	pgno, commit uint32
	page         []byte
	ck           wal.Checksum // the chained checksum before this frame
}

func newWALBuilder(t testing.TB, s *Store, db string, salt1 uint32) *walBuilder {
	t.Helper()
	fi, err := s.Create(db+"-wal", App)
	if err != nil {
		t.Fatal(err)
	}
	w := &walBuilder{t: t, s: s, id: fi.ID, pageSize: defaultPageSize}
	w.restart(salt1)
	return w
}

// restart writes a new WAL header with new salts, as SQLite does after a
// checkpoint.
func (w *walBuilder) restart(salt1 uint32) {
	h := wal.Header{PageSize: w.pageSize, Salt: wal.Salt{salt1, salt1 * 7}}
	hdr := h.AppendTo(nil)
	w.enc = h.Encoder()
	w.frames = nil
	if _, _, err := w.s.WriteAt(w.id, hdr, 0, App); err != nil {
		w.t.Fatal(err)
	}
	w.next = 1
}

// enc0 is the encoder at the start of the current header's frames.
func (w *walBuilder) enc0() wal.Encoder {
	e := w.enc
	if len(w.frames) > 0 {
		e.Checksum = w.frames[0].ck
	}
	return e
}

// frame appends one frame; commit is the db size for a commit frame, else 0.
func (w *walBuilder) frame(pgno uint32, page []byte, commit uint32) pagewire.TXID {
	w.t.Helper()
	txid, err := w.tryFrame(pgno, page, commit)
	if err != nil {
		w.t.Fatal(err)
	}
	return txid
}

// tryFrame is frame, returning the error of the write that completes the
// frame (the checksums run on as if it was written).
func (w *walBuilder) tryFrame(pgno uint32, page []byte, commit uint32) (pagewire.TXID, error) {
	w.t.Helper()
	w.frames = append(w.frames[:w.next-1], builtFrame{pgno: pgno, commit: commit, page: page, ck: w.enc.Checksum})
	fh := w.frameHeader(pgno, commit, page)
	off := wal.FrameOffset(w.next, w.pageSize)
	if _, _, err := w.s.WriteAt(w.id, fh, off, w.by); err != nil {
		w.t.Fatal(err)
	}
	txid, err := w.writePage(page, off+walFrameHeaderSize)
	if err != nil {
		return 0, err
	}
	w.next++
	return txid, nil
}

// frameHeader encodes a frame header, chaining the checksum on from
// w.enc's.
func (w *walBuilder) frameHeader(pgno, commit uint32, page []byte) []byte {
	frame := w.enc.AppendFrame(nil, pgno, commit, page)
	return frame[:walFrameHeaderSize]
}

// overwrite writes a new page into an earlier frame in place, leaving its
// checksum stale, as SQLite does with a spilled page that changed again.
func (w *walBuilder) overwrite(frame uint32, page []byte) {
	w.t.Helper()
	w.frames[frame-1].page = page
	if _, err := w.writePage(page, wal.FrameOffset(frame, w.pageSize)+walFrameHeaderSize); err != nil {
		w.t.Fatal(err)
	}
}

// rewriteChecksums rewrites the frame headers from frame `first` to the
// last frame, one 24-byte write each (wal.c walRewriteChecksums), and
// returns the TXID and error of the last write.
func (w *walBuilder) rewriteChecksums(first uint32) (pagewire.TXID, error) {
	w.t.Helper()
	w.enc.Checksum = w.frames[first-1].ck
	var txid pagewire.TXID
	var err error
	for f := first; f < w.next; f++ {
		bf := &w.frames[f-1]
		bf.ck = w.enc.Checksum
		_, txid, err = w.s.WriteAt(w.id, w.frameHeader(bf.pgno, bf.commit, bf.page), wal.FrameOffset(f, w.pageSize), App)
	}
	return txid, err
}

func testPage(fill byte) []byte { return bytes.Repeat([]byte{fill}, defaultPageSize) }

// checksumOf computes a database checksum from scratch.
func checksumOf(pages map[uint32][]byte, nPage uint32) uint64 {
	var sum uint64
	for pgno := uint32(1); pgno <= nPage; pgno++ {
		sum ^= pageChecksum(pgno, pages[pgno])
	}
	return sum | checksumFlag
}

func openTestStore(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := OpenStore(storeConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStore_CreateIsWALAtTXID1(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	fi, err := s.Create("app.db", App)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size != defaultPageSize {
		t.Fatalf("size=%d, want one page", fi.Size)
	}
	page := make([]byte, 100)
	if _, err := s.ReadAt(fi.ID, page, 0); err != nil {
		t.Fatal(err)
	}
	if page[18] != 2 || page[19] != 2 {
		t.Fatalf("header bytes 18/19 = %d/%d, want 2/2 (WAL)", page[18], page[19])
	}
	di, err := s.Database("app.db")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := di.Pos.TXID, pagewire.TXID(1); got != want {
		t.Fatalf("TXID=%d, want %d", got, want)
	}
	if got, want := di.Pos.Checksum, checksumOf(map[uint32][]byte{1: newDatabasePage(defaultPageSize)}, 1); got != want {
		t.Fatalf("checksum=%016x, want %016x", got, want)
	}
}

func TestStore_CountsCommitFrames(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	if _, err := s.Create("app.db", App); err != nil {
		t.Fatal(err)
	}
	pages := map[uint32][]byte{1: newDatabasePage(defaultPageSize)}
	w := newWALBuilder(t, s, "app.db", 11)

	// A two-frame transaction: no commit until its last frame.
	if got := w.frame(2, testPage(2), 0); got != 1 {
		t.Fatalf("TXID after a non-commit frame = %d, want 1", got)
	}
	if got := w.frame(3, testPage(3), 3); got != 2 {
		t.Fatalf("TXID after a commit frame = %d, want 2", got)
	}
	pages[2], pages[3] = testPage(2), testPage(3)
	// A page rewritten, then the database shrunk to two pages.
	w.frame(2, testPage(9), 2)
	pages[2] = testPage(9)
	di, _ := s.Database("app.db")
	if got, want := di.Pos, (pagewire.Pos{TXID: 3, Checksum: checksumOf(pages, 2)}); got != want {
		t.Fatalf("pos=%v, want %v", got, want)
	}
	if di.PageCount != 2 {
		t.Fatalf("page count=%d, want 2", di.PageCount)
	}

	// A commit frame with a bad checksum is not counted, and the write
	// that completes it fails: SQLite must not report a commit that no
	// replica would get.
	enc := w.enc
	bad := enc.AppendFrame(nil, 2, 2, testPage(5))[:walFrameHeaderSize]
	clear(bad[16:]) // no checksum
	off := wal.FrameOffset(w.next, w.pageSize)
	s.WriteAt(w.id, bad, off, App)
	if _, _, err := s.WriteAt(w.id, testPage(5), off+walFrameHeaderSize, App); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("write completing a bad commit frame: err=%v, want ErrInvalidArgument", err)
	}
	if di, _ := s.Database("app.db"); di.Pos.TXID != 3 {
		t.Fatalf("TXID after a bad frame = %d, want 3", di.Pos.TXID)
	}

	// The position survives a restart.
	want := di.Pos
	s.Close()
	s2 := openTestStore(t, dir)
	di2, err := s2.Database("app.db")
	if err != nil {
		t.Fatal(err)
	}
	if di2.Pos != want || di2.Err != nil {
		t.Fatalf("after restart pos=%v err=%v, want %v", di2.Pos, di2.Err, want)
	}
}

func TestStore_NewWALGenerationKeepsCounting(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 1)
	w.frame(2, testPage(2), 2)
	// SQLite checkpoints (copies frames into the db file), then restarts
	// the WAL with new salts and overwrites frames from the start.
	dbID := mustLookup(t, s, "app.db").ID
	if _, _, err := s.WriteAt(dbID, testPage(2), defaultPageSize, App); err != nil {
		t.Fatal(err)
	}
	w.restart(2)
	if got := w.frame(2, testPage(7), 2); got != 3 {
		t.Fatalf("TXID=%d, want 3", got)
	}
	want := pagewire.Pos{TXID: 3, Checksum: checksumOf(map[uint32][]byte{1: newDatabasePage(defaultPageSize), 2: testPage(7)}, 2)}
	if di, _ := s.Database("app.db"); di.Pos != want {
		t.Fatalf("pos=%v, want %v", di.Pos, want)
	}
	s.Close()
	s2 := openTestStore(t, dir)
	if di, _ := s2.Database("app.db"); di.Pos != want || di.Err != nil {
		t.Fatalf("after restart pos=%v err=%v, want %v", di.Pos, di.Err, want)
	}
}

func TestStore_RecoversCommitsTheMetaMissed(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	s.Create("app.db", App)
	metaPath := filepath.Join(dir, "dbs", "app.db", metaFileName)
	w := newWALBuilder(t, s, "app.db", 1)
	w.frame(2, testPage(2), 2)
	old, err := os.ReadFile(metaPath)
	if err != nil {
		t.Fatal(err)
	}
	w.frame(2, testPage(3), 2)
	w.frame(3, testPage(4), 3)
	di, _ := s.Database("app.db")
	s.Close()
	// As after a power failure: the meta file lost its last writes.
	if err := os.WriteFile(metaPath, old, 0o644); err != nil {
		t.Fatal(err)
	}
	s2 := openTestStore(t, dir)
	di2, _ := s2.Database("app.db")
	if di2.Pos != di.Pos || di2.Err != nil {
		t.Fatalf("recovered pos=%v err=%v, want %v", di2.Pos, di2.Err, di.Pos)
	}
}

func TestStore_ReportsFilesChangedOutside(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	s.Create("app.db", App)
	s.Close()
	f, err := os.OpenFile(filepath.Join(dir, "dbs", "app.db", databaseFileName), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("tampered"), 3000)
	f.Close()
	s2 := openTestStore(t, dir)
	di, _ := s2.Database("app.db")
	if !errors.Is(di.Err, pagewire.ErrCorrupt) {
		t.Fatalf("Err=%v, want ErrCorrupt", di.Err)
	}
	// The node stopped cleanly before, so the error names the page.
	if !strings.Contains(di.Err.Error(), "1 pages differ from when the node last stopped: [1]") {
		t.Fatalf("Err=%v, want it to name page 1", di.Err)
	}
	// Writes are refused so that the damage is not built upon.
	if _, _, err := s2.WriteAt(mustLookup(t, s2, "app.db").ID, testPage(1)[:10], 200, App); !errors.Is(err, pagewire.ErrCorrupt) {
		t.Fatalf("write err=%v, want ErrCorrupt", err)
	}
}

func TestStore_RefusesLeavingWAL(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	fi, _ := s.Create("app.db", App)
	if _, err := s.Create("app.db-journal", App); !errors.Is(err, pagewire.ErrNotWAL) {
		t.Fatalf("create journal err=%v, want ErrNotWAL", err)
	}
	page := newDatabasePage(defaultPageSize)
	page[18], page[19] = 1, 1
	if _, _, err := s.WriteAt(fi.ID, page, 0, App); !errors.Is(err, pagewire.ErrNotWAL) {
		t.Fatalf("write rollback header err=%v, want ErrNotWAL", err)
	}
	if _, _, err := s.WriteAt(fi.ID, []byte("not sqlite at all"), 0, App); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("write garbage header err=%v, want ErrInvalidArgument", err)
	}
	if _, err := s.Truncate(fi.ID, 0, App); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("truncate to 0 err=%v, want ErrInvalidArgument", err)
	}
	got := make([]byte, 20)
	s.ReadAt(fi.ID, got, 0)
	if got[18] != 2 || got[19] != 2 {
		t.Fatal("header changed after refused writes")
	}
}

func TestStore_RefusesBadNames(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	for _, name := range []string{"", ".hidden", "a/b", "x-wal-shm", "nosuch.db-wal"} {
		if _, err := s.Create(name, App); err == nil {
			t.Errorf("Create(%q) succeeded", name)
		}
	}
	if got := s.List(); len(got) != 0 {
		t.Fatalf("files after refused creates: %v", got)
	}
}

func TestStore_ReplicaRefusesWrites(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	fi, _ := s.Create("app.db", App)
	s.SetRole(pagewire.RoleReplica, pagewire.ReadOnlyError{Primary: "node1", AdvertiseURL: "http://node1:20202"}, 1)
	_, _, err := s.WriteAt(fi.ID, []byte{0}, 200, App)
	var ro *pagewire.ReadOnlyError
	if !errors.As(err, &ro) || ro.Primary != "node1" {
		t.Fatalf("err=%v, want ReadOnlyError naming node1", err)
	}
	if _, err := s.Open(fi.ID, true, App); !errors.Is(err, pagewire.ErrReadOnly) {
		t.Fatalf("open for write err=%v, want ErrReadOnly", err)
	}
	if _, err := s.Open(fi.ID, false, App); err != nil {
		t.Fatalf("open for read: %v", err)
	}
	// Readers still need the -shm.
	shm, err := s.Create("app.db-shm", App)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.WriteAt(shm.ID, []byte{1, 2, 3}, 0, App); err != nil {
		t.Fatalf("write -shm on a replica: %v", err)
	}
}

func TestStore_ExportIsConsistentRollbackFile(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 1)
	p1 := newDatabasePage(defaultPageSize)
	p1[50] = 0x42                          // a change to page 1 that only the WAL has
	binary.BigEndian.PutUint32(p1[28:], 2) // the database grows to two pages
	w.frame(1, p1, 0)
	w.frame(2, testPage(2), 2)
	w.frame(2, testPage(3), 0) // uncommitted: must not be exported
	var buf bytes.Buffer
	pos, err := s.Export(context.Background(), "app.db", &buf)
	if err != nil {
		t.Fatal(err)
	}
	if pos.TXID != 2 || buf.Len() != 2*defaultPageSize {
		t.Fatalf("export pos=%v len=%d, want TXID 2 and two pages", pos, buf.Len())
	}
	got := buf.Bytes()
	if got[50] != 0x42 || got[18] != 1 || got[19] != 1 {
		t.Fatalf("page 1: byte 50=%x, 18/19=%d/%d; want 42 and rollback mode", got[50], got[18], got[19])
	}
	if !bytes.Equal(got[defaultPageSize:], testPage(2)) {
		t.Fatal("page 2 is not the committed version")
	}
	// Import it under a new name: WAL mode again, TXID 2 (created, replaced).
	di, err := s.Import("copy.db", bytes.NewReader(got))
	if err != nil {
		t.Fatal(err)
	}
	if di.Pos.TXID != 2 || di.PageCount != 2 {
		t.Fatalf("imported %+v", di)
	}
	hdr := make([]byte, 20)
	s.ReadAt(mustLookup(t, s, "copy.db").ID, hdr, 0)
	if hdr[18] != 2 || hdr[19] != 2 {
		t.Fatal("imported database is not in WAL mode")
	}
}

func TestStore_ImportRefusedWhileOpen(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	fi, _ := s.Create("app.db", App)
	if _, err := s.Open(fi.ID, true, App); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import("app.db", bytes.NewReader(newDatabasePage(defaultPageSize))); !errors.Is(err, pagewire.ErrBusy) {
		t.Fatalf("err=%v, want ErrBusy", err)
	}
	s.CloseHandle(fi.ID)
	if _, err := s.Import("app.db", bytes.NewReader(newDatabasePage(defaultPageSize))); err != nil {
		t.Fatal(err)
	}
	// The old handle is stale now: the kernel must look the file up again.
	if _, err := s.ReadAt(fi.ID, make([]byte, 10), 0); !errors.Is(err, pagewire.ErrStale) {
		t.Fatalf("read through old id err=%v, want ErrStale", err)
	}
}

func TestStore_OneNodePerDataDir(t *testing.T) {
	dir := t.TempDir()
	openTestStore(t, dir)
	_, err := OpenStore(storeConfig(dir))
	if err == nil {
		t.Fatal("a second store opened the same data.dir")
	}
	if want := "give each node its own data.dir"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
}

// A data.dir that cannot be written names the fix: a read-only volume
// (Docker's -v ...:ro) or its permissions.
func TestDataDirError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&os.PathError{Op: "open", Path: "/data/.lock", Err: syscall.EROFS}, "read-only filesystem: mount its volume read-write (in Docker, drop :ro from -v)"},
		{&os.PathError{Op: "mkdir", Path: "/data/dbs", Err: syscall.EACCES}, "not writable (permission denied): fix its permissions"},
		{&os.PathError{Op: "mkdir", Path: "/data/dbs", Err: syscall.ENOSPC}, "cannot be created: mkdir /data/dbs: no space left on device"},
	} {
		if got := dataDirError("/data", tc.err).Error(); !strings.Contains(got, tc.want) {
			t.Errorf("dataDirError(%v)=%q, want it to contain %q", tc.err, got, tc.want)
		}
	}
}

func mustLookup(t testing.TB, s *Store, name string) FileInfo {
	t.Helper()
	fi, err := s.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

// A deleted -shm stays writable through its id until the mount releases
// it (the kernel writes back mmapped pages after unlink), and handle counts
// follow releases of deleted files.
func TestStore_DeletedSHMLivesUntilReleased(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	shm, err := s.Create("app.db-shm", App)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(shm.ID, true, App); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("app.db-shm"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup("app.db-shm"); !errors.Is(err, pagewire.ErrNotFound) {
		t.Fatalf("lookup after delete err=%v, want ErrNotFound", err)
	}
	if _, _, err := s.WriteAt(shm.ID, []byte("late writeback"), 0, App); err != nil {
		t.Fatalf("write back to a deleted, open -shm: %v", err)
	}
	if di, _ := s.Database("app.db"); di.OpenHandles != 1 {
		t.Fatalf("open handles=%d, want 1", di.OpenHandles)
	}
	s.CloseHandle(shm.ID)
	if di, _ := s.Database("app.db"); di.OpenHandles != 0 {
		t.Fatalf("open handles after release=%d, want 0", di.OpenHandles)
	}
	if _, _, err := s.WriteAt(shm.ID, []byte("x"), 0, App); !errors.Is(err, pagewire.ErrStale) {
		t.Fatalf("write after release err=%v, want ErrStale", err)
	}
}

// A writer that sends the WAL header and its first frames in one write
// still has its commit counted.
func TestStore_HeaderAndFramesInOneWrite(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	walFile, _ := s.Create("app.db-wal", App)
	w := &walBuilder{t: t, s: s, id: walFile.ID, pageSize: defaultPageSize}
	w.restart(3)
	// Build frame 1 into the same buffer as the header.
	hdr := make([]byte, walHeaderSize)
	s.ReadAt(walFile.ID, hdr, 0)
	fh := w.frameHeader(2, 2, testPage(4))
	buf := append(append(hdr, fh...), testPage(4)...)
	if _, txid, err := s.WriteAt(walFile.ID, buf, 0, App); err != nil || txid != 2 {
		t.Fatalf("txid=%d err=%v, want 2", txid, err)
	}
}

// A replica with no copy restores a snapshot straight into a new database
// file, which must come out at the snapshot's position.
func TestStore_RestoreDatabase(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 1)
	p1 := newDatabasePage(defaultPageSize)
	binary.BigEndian.PutUint32(p1[28:], 2)
	w.frame(1, p1, 0)
	w.frame(2, testPage(2), 2)
	pos, _ := s.Position("app.db")
	pages := []pagewire.Page{{Pgno: 1, Data: p1}, {Pgno: 2, Data: testPage(2)}}
	if err := s.RestoreDatabase("copy.db", defaultPageSize, pos, pagesOneByOne(pages), nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Position("copy.db"); got != pos {
		t.Fatalf("restored at %v, want %v", got, pos)
	}
	// A snapshot that does not match its position is refused and leaves
	// nothing behind.
	bad := pagewire.Pos{TXID: pos.TXID, Checksum: pos.Checksum ^ 1}
	if err := s.RestoreDatabase("bad.db", defaultPageSize, bad, pagesOneByOne(pages), nil); !errors.Is(err, pagewire.ErrCorrupt) {
		t.Fatalf("err=%v, want ErrCorrupt", err)
	}
	if _, ok := s.Position("bad.db"); ok {
		t.Fatal("a refused restore left a database")
	}

	// Pages out of order, or a snapshot cut off, leave nothing either.
	swapped := []pagewire.Page{pages[1], pages[0]}
	if err := s.RestoreDatabase("bad.db", defaultPageSize, pos, pagesOneByOne(swapped), nil); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("pages out of order: err=%v, want ErrInvalidArgument", err)
	}
	cut := errors.New("stream cut")
	calls := 0
	if err := s.RestoreDatabase("bad.db", defaultPageSize, pos, func() ([]pagewire.Page, error) {
		if calls++; calls == 1 {
			return pages[:1], nil
		}
		return nil, cut
	}, nil); !errors.Is(err, cut) {
		t.Fatalf("cut off: err=%v, want the stream's", err)
	}
	if _, ok := s.Position("bad.db"); ok {
		t.Fatal("a failed restore left a database")
	}
	if leftovers, _ := filepath.Glob(filepath.Join(s.dir, "dbs", ".restore-*")); len(leftovers) > 0 {
		t.Fatalf("a failed restore left %v", leftovers)
	}
}

// pagesOneByOne gives pages one at a time, then nil, as RestoreDatabase's
// next.
func pagesOneByOne(pages []pagewire.Page) func() ([]pagewire.Page, error) {
	return func() ([]pagewire.Page, error) {
		if len(pages) == 0 {
			return nil, nil
		}
		p := pages[:1]
		pages = pages[1:]
		return p, nil
	}
}

// expectTxns makes the primary's transactions 2..n+1 on a one-page database:
// transaction i+1 writes page 2 filled with fills[i].
func expectTxns(fills ...byte) []pagewire.Txn {
	pages := map[uint32][]byte{1: newDatabasePage(defaultPageSize)}
	prev := checksumOf(pages, 1)
	var txns []pagewire.Txn
	for i, f := range fills {
		pages[2] = testPage(f)
		post := checksumOf(pages, 2)
		txns = append(txns, pagewire.Txn{TXID: pagewire.TXID(i + 2), PreChecksum: prev, PostChecksum: post, PageSize: defaultPageSize, PageCount: 2,
			Pages: []pagewire.Page{{Pgno: 2, Data: testPage(f)}}})
		prev = post
	}
	return txns
}

func TestStore_ExpectedCommitStandsForSeveralTransactions(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	s.Create("app.db", App)
	txns := expectTxns(3, 4, 5)
	done, err := s.ExpectCommit("app.db", txns)
	if err != nil {
		t.Fatal(err)
	}
	// One WAL commit holding the last version of page 2.
	w := newWALBuilder(t, s, "app.db", 1)
	if got := w.frame(2, testPage(5), 2); got != 4 {
		t.Fatalf("TXID after the commit = %d, want 4", got)
	}
	done()
	want := pagewire.Pos{TXID: 4, Checksum: txns[2].PostChecksum}
	if di, _ := s.Database("app.db"); di.Pos != want {
		t.Fatalf("pos=%v, want %v", di.Pos, want)
	}
	// Each transaction is in the log, as the primary logged it.
	r, err := s.dbs["app.db"].txlog.readFrom(2)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, tx := range txns {
		got, ok, err := r.Next()
		if err != nil || !ok || got.TXID != tx.TXID || got.PostChecksum != tx.PostChecksum || !bytes.Equal(got.Pages[0].Data, tx.Pages[0].Data) {
			t.Fatalf("logged %d %016x ok=%v err=%v, want transaction %d %016x", got.TXID, got.PostChecksum, ok, err, tx.TXID, tx.PostChecksum)
		}
	}
	// The next commit counts one again.
	if got := w.frame(2, testPage(6), 2); got != 5 {
		t.Fatalf("TXID after the next commit = %d, want 5", got)
	}
}

func TestStore_ExpectedCommitWithAnotherChecksumCountsOne(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	if _, err := s.ExpectCommit("app.db", expectTxns(3, 4)); err != nil {
		t.Fatal(err)
	}
	w := newWALBuilder(t, s, "app.db", 1)
	// Not what the primary's transactions made: the position shows it.
	if got := w.frame(2, testPage(9), 2); got != 2 {
		t.Fatalf("TXID = %d, want 2 (one commit, not the expected one)", got)
	}
}

func TestStore_ExpectCommitRefusesTransactionsThatDoNotFollow(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	txns := expectTxns(3, 4, 5)
	for name, bad := range map[string][]pagewire.Txn{
		"none":             nil,
		"not the next":     txns[1:],
		"gap":              {txns[0], txns[2]},
		"bad pre-checksum": {txns[0], {TXID: 3, PreChecksum: 1, PostChecksum: txns[1].PostChecksum}},
	} {
		if _, err := s.ExpectCommit("app.db", bad); !errors.Is(err, pagewire.ErrInvalidArgument) {
			t.Errorf("%s: err=%v, want ErrInvalidArgument", name, err)
		}
	}
	if _, err := s.ExpectCommit("nope.db", txns); !errors.Is(err, pagewire.ErrNotFound) {
		t.Errorf("unknown database: err=%v, want ErrNotFound", err)
	}
}

func TestStore_WithdrawnExpectationIsForgotten(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	s.Create("app.db", App)
	done, err := s.ExpectCommit("app.db", expectTxns(3, 4))
	if err != nil {
		t.Fatal(err)
	}
	done() // the apply failed before its commit
	w := newWALBuilder(t, s, "app.db", 1)
	if got := w.frame(2, testPage(4), 2); got != 2 {
		t.Fatalf("TXID = %d, want 2", got)
	}
	s.Close()
	if di, _ := openTestStore(t, dir).Database("app.db"); di.Pos.TXID != 2 || di.Err != nil {
		t.Fatalf("after restart pos=%v err=%v, want TXID 2", di.Pos, di.Err)
	}
}

// A crash after the commit reached the WAL but before the meta file
// recorded it: recovery counts the commit as the transactions it stood for.
func TestStore_RecoveryCountsAnExpectedCommit(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 1)
	w.frame(2, testPage(2), 2) // TXID 2
	pages := map[uint32][]byte{1: newDatabasePage(defaultPageSize), 2: testPage(2)}
	pre := checksumOf(pages, 2)
	pages[2] = testPage(3)
	mid := checksumOf(pages, 2)
	pages[3] = testPage(4)
	post := checksumOf(pages, 3)
	txns := []pagewire.Txn{
		{TXID: 3, PreChecksum: pre, PostChecksum: mid, PageSize: defaultPageSize, PageCount: 2, Pages: []pagewire.Page{{Pgno: 2, Data: testPage(3)}}},
		{TXID: 4, PreChecksum: mid, PostChecksum: post, PageSize: defaultPageSize, PageCount: 3, Pages: []pagewire.Page{{Pgno: 3, Data: testPage(4)}}},
	}
	if _, err := s.ExpectCommit("app.db", txns); err != nil {
		t.Fatal(err)
	}
	metaPath := filepath.Join(dir, "dbs", "app.db", metaFileName)
	announced, err := os.ReadFile(metaPath)
	if err != nil {
		t.Fatal(err)
	}
	w.frame(2, testPage(3), 0)
	if got := w.frame(3, testPage(4), 3); got != 4 {
		t.Fatalf("TXID = %d, want 4", got)
	}
	w.frame(3, testPage(5), 3) // and one more, TXID 5
	s.Close()
	if err := os.WriteFile(metaPath, announced, 0o644); err != nil {
		t.Fatal(err)
	}
	pages[3] = testPage(5)
	want := pagewire.Pos{TXID: 5, Checksum: checksumOf(pages, 3)}
	if di, _ := openTestStore(t, dir).Database("app.db"); di.Pos != want || di.Err != nil {
		t.Fatalf("recovered pos=%v err=%v, want %v", di.Pos, di.Err, want)
	}
}

func TestMeta_ReadsVersion1(t *testing.T) {
	m := meta{Pos: pagewire.Pos{TXID: 9, Checksum: 1<<63 | 5}, Salt1: 1, Salt2: 2, CommitFrame: 3, Ck1: 4, Ck2: 5, PageSize: 4096}
	b := m.encode()[:metaSizeV1]
	copy(b, metaMagicV1)
	binary.BigEndian.PutUint32(b[48:], crc32.ChecksumIEEE(b[:48]))
	got, err := decodeMeta(b)
	if err != nil || got != m {
		t.Fatalf("got %+v, %v; want %+v", got, err, m)
	}
	m.Next = pagewire.Pos{TXID: 12, Checksum: 7}
	if got, err := decodeMeta(m.encode()); err != nil || got != m {
		t.Fatalf("version 2: got %+v, %v; want %+v", got, err, m)
	}
}

// A large transaction as SQLite writes it with a small page cache: pages
// spilled into the WAL before the commit, a spilled page overwritten in
// place when it changes again, the commit frame appended, and only then
// the checksums rewritten from the first overwritten frame. The commit
// counts when the last rewrite lands, with the overwritten page's content.
func TestStore_SpilledTransactionCountsAfterChecksumRewrite(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	s.Create("app.db", App)
	pages := map[uint32][]byte{1: newDatabasePage(defaultPageSize)}
	w := newWALBuilder(t, s, "app.db", 5)

	w.frame(2, testPage(2), 0)   // spilled
	w.frame(3, testPage(3), 0)   // spilled
	w.frame(4, testPage(4), 0)   // spilled
	w.overwrite(2, testPage(33)) // frame 2 holds page 3
	w.overwrite(1, testPage(22)) // frame 1 holds page 2
	if txid := w.frame(5, testPage(5), 5); txid != 1 {
		t.Fatalf("TXID once the commit frame is written with stale checksums = %d, want 1 (not yet whole)", txid)
	}
	txid, err := w.rewriteChecksums(1)
	if err != nil || txid != 2 {
		t.Fatalf("after the checksum rewrite: txid=%d err=%v, want 2", txid, err)
	}
	pages[2], pages[3], pages[4], pages[5] = testPage(22), testPage(33), testPage(4), testPage(5)
	want := pagewire.Pos{TXID: 2, Checksum: checksumOf(pages, 5)}
	if di, _ := s.Database("app.db"); di.Pos != want {
		t.Fatalf("pos=%v, want %v", di.Pos, want)
	}

	// The next transaction appends after it as usual.
	if txid := w.frame(2, testPage(7), 5); txid != 3 {
		t.Fatalf("TXID of the next commit = %d, want 3", txid)
	}
	pages[2] = testPage(7)
	want = pagewire.Pos{TXID: 3, Checksum: checksumOf(pages, 5)}
	s.Close()
	s2 := openTestStore(t, dir)
	if di, _ := s2.Database("app.db"); di.Pos != want || di.Err != nil {
		t.Fatalf("after restart pos=%v err=%v, want %v", di.Pos, di.Err, want)
	}
}

// A checksum rewrite that still does not validate fails its last write,
// and the refused transaction does not count, now or after a restart.
func TestStore_BadChecksumRewriteFailsTheCommit(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 5)
	w.frame(2, testPage(2), 0)
	w.frame(3, testPage(3), 0)
	w.overwrite(1, testPage(22))
	w.frame(4, testPage(4), 4)
	// Rewrite from frame 2 only: frame 1 keeps its stale checksum.
	if _, err := w.rewriteChecksums(2); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("last rewrite: err=%v, want ErrInvalidArgument", err)
	}
	di, _ := s.Database("app.db")
	if di.Pos.TXID != 1 {
		t.Fatalf("TXID=%d, want 1", di.Pos.TXID)
	}
	s.Close()
	s2 := openTestStore(t, dir)
	if di2, _ := s2.Database("app.db"); di2.Pos != di.Pos || di2.Err != nil {
		t.Fatalf("after restart pos=%v err=%v, want %v", di2.Pos, di2.Err, di.Pos)
	}
}

// A commit frame whose earlier frames are stale without any overwrite in
// place will not be rewritten by SQLite: its write fails at once.
func TestStore_StaleFrameWithoutOverwriteFailsTheCommit(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 5)
	w.frame(2, testPage(2), 0)
	// Change frame 1's page with its header in the same write: not how
	// SQLite overwrites, so no rewrite is awaited.
	whole := append(w.frameHeader(2, 0, testPage(9)), testPage(8)...)
	if _, _, err := s.WriteAt(w.id, whole, wal.FrameOffset(1, w.pageSize), App); err != nil {
		t.Fatal(err)
	}
	if _, err := w.tryFrame(3, testPage(3), 3); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("commit after a stale frame: err=%v, want ErrInvalidArgument", err)
	}
}

// A transaction that spilled, overwrote a frame and rolled back leaves no
// state behind: the next transaction reuses the frames and counts at its
// commit frame.
func TestStore_RolledBackSpillIsForgotten(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 5)
	w.frame(2, testPage(2), 0)
	w.frame(3, testPage(3), 0)
	w.overwrite(1, testPage(22))
	// Rolled back: the next transaction starts again at frame 1.
	w.next, w.enc.Checksum = 1, w.frames[0].ck
	w.frame(3, testPage(4), 0)
	if txid := w.frame(2, testPage(6), 3); txid != 2 {
		t.Fatalf("TXID=%d, want 2", txid)
	}
}

// A checkpoint may copy any committed version of a page into the database
// file, the newest or an older one (a reader pinned an older snapshot);
// anything else written there would change what readers see without a
// transaction, and is refused, as is a truncation that drops committed
// pages the WAL does not hold.
func TestStore_DatabaseFileTakesOnlyCommittedPages(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	db := mustLookup(t, s, "app.db")
	w := newWALBuilder(t, s, "app.db", 5)
	w.frame(2, testPage(2), 2)
	w.frame(2, testPage(3), 2)
	ps := int64(defaultPageSize)
	for _, fill := range []byte{2, 3} {
		if _, _, err := s.WriteAt(db.ID, testPage(fill), ps, App); err != nil {
			t.Fatalf("checkpoint copy of committed page version %d: %v", fill, err)
		}
	}
	for _, tc := range []struct {
		what string
		data []byte
		off  int64
	}{
		{"a page never committed", testPage(4), ps},
		{"half a page", testPage(2)[:100], ps},
		{"a page past the database", testPage(2), 5 * ps},
	} {
		if _, _, err := s.WriteAt(db.ID, tc.data, tc.off, App); !errors.Is(err, pagewire.ErrInvalidArgument) {
			t.Errorf("%s: err=%v, want ErrInvalidArgument", tc.what, err)
		}
	}
	// Page 2 is in the WAL: the file may lose it. Page 1 is not.
	if _, err := s.Truncate(db.ID, ps, App); err != nil {
		t.Fatalf("truncate to the pages the WAL does not hold: %v", err)
	}
	w.restart(6) // as after a full checkpoint: the WAL is empty
	if _, _, err := s.WriteAt(db.ID, testPage(3), ps, App); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Truncate(db.ID, ps, App); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("truncate that drops committed page 2: err=%v, want ErrInvalidArgument", err)
	}
	di, _ := s.Database("app.db")
	if want := checksumOf(map[uint32][]byte{1: newDatabasePage(defaultPageSize), 2: testPage(3)}, 2); di.Pos.Checksum != want || di.Pos.TXID != 3 {
		t.Fatalf("pos=%v, want 3/%016x", di.Pos, want)
	}
}

// A spilled page overwritten in place with the bytes it had leaves every
// checksum valid: the commit counts at its commit frame, and SQLite's
// checksum rewrite that follows writes the same headers again, which
// must not fail the commit SQLite is finishing.
func TestStore_SameBytesOverwriteCountsAtOnce(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 5)
	w.frame(2, testPage(2), 0)
	w.frame(3, testPage(3), 0)
	w.overwrite(1, testPage(2))
	if txid := w.frame(4, testPage(4), 4); txid != 2 {
		t.Fatalf("TXID at the commit frame = %d, want 2", txid)
	}
	if txid, err := w.rewriteChecksums(1); err != nil || txid != 2 {
		t.Fatalf("rewrite of unchanged checksums: txid=%d err=%v, want 2 and no error", txid, err)
	}
	// A header write over a committed frame that changes it is refused.
	bad := w.frameHeader(2, 9, testPage(2))
	if _, _, err := s.WriteAt(w.id, bad, wal.FrameOffset(1, w.pageSize), App); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("changing a committed frame header: err=%v, want ErrInvalidArgument", err)
	}
}

// The first frame SQLite overwrote in place may have come back with the
// bytes it had, and a later overwritten frame be the first whose checksum
// fails: the commit still waits for SQLite's checksum rewrite, which
// starts at the first overwritten frame.
func TestStore_FirstOverwriteUnchangedStillAwaitsRewrite(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 5)
	w.frame(2, testPage(2), 0)
	w.frame(3, testPage(3), 0)
	w.frame(4, testPage(4), 0)
	w.overwrite(1, testPage(2))  // same bytes
	w.overwrite(2, testPage(33)) // changed
	if txid := w.frame(5, testPage(5), 5); txid != 1 {
		t.Fatalf("TXID at the commit frame = %d, want 1 (checksums are stale)", txid)
	}
	if txid, err := w.rewriteChecksums(1); err != nil || txid != 2 {
		t.Fatalf("after the rewrite: txid=%d err=%v, want 2", txid, err)
	}
}

// The kernel may send one write() to the mount as two writes split at a
// page boundary: appends, overwrites in place and the commit are followed
// all the same.
func TestStore_SplitWritesAreFollowed(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 5)
	w.split = true
	w.frame(2, testPage(2), 0)
	w.frame(3, testPage(3), 0)
	w.frame(4, testPage(4), 0)
	w.overwrite(2, testPage(33))
	if txid := w.frame(5, testPage(5), 5); txid != 1 {
		t.Fatalf("TXID at the commit frame = %d, want 1 (checksums are stale)", txid)
	}
	if txid, err := w.rewriteChecksums(2); err != nil || txid != 2 {
		t.Fatalf("after the rewrite: txid=%d err=%v, want 2", txid, err)
	}
	if txid := w.frame(2, testPage(6), 5); txid != 3 {
		t.Fatalf("TXID of the next commit = %d, want 3", txid)
	}
	want := checksumOf(map[uint32][]byte{1: newDatabasePage(defaultPageSize), 2: testPage(6), 3: testPage(33), 4: testPage(4), 5: testPage(5)}, 5)
	if di, _ := s.Database("app.db"); di.Pos.Checksum != want {
		t.Fatalf("checksum %016x, want %016x", di.Pos.Checksum, want)
	}
}

// A refused commit stays refused when SQLite writes the rest of a write
// the kernel split (unixWrite retries after a short write): the retry
// must fail too, or SQLite would take the commit as done.
func TestStore_RefusedCommitStaysRefusedOnRetry(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 5)
	w.frame(2, testPage(2), 0)
	// A commit frame whose checksum is wrong, its page written in two.
	ck := w.enc.Checksum
	fh := w.frameHeader(3, 3, testPage(3))
	fh[20] ^= 1
	off := wal.FrameOffset(w.next, w.pageSize)
	if _, _, err := s.WriteAt(w.id, fh, off, App); err != nil {
		t.Fatal(err)
	}
	page := testPage(3)
	cut := (off+walFrameHeaderSize)/4096*4096 + 4096 - (off + walFrameHeaderSize)
	if _, _, err := s.WriteAt(w.id, page[:cut], off+walFrameHeaderSize, App); err != nil {
		t.Fatal(err)
	}
	for try := range 2 {
		if _, _, err := s.WriteAt(w.id, page[cut:], off+walFrameHeaderSize+cut, App); !errors.Is(err, pagewire.ErrInvalidArgument) {
			t.Fatalf("write %d of the rest of the commit frame: err=%v, want ErrInvalidArgument", try+1, err)
		}
	}
	// SQLite rolls back and the next transaction reuses the frame.
	w.enc.Checksum = ck
	if txid := w.frame(3, testPage(7), 3); txid != 2 {
		t.Fatalf("TXID of the next commit = %d, want 2", txid)
	}
}

// storeConfig is the default config for a store in dir.
func storeConfig(dir string) StoreConfig {
	cfg := DefaultStoreConfig()
	cfg.Dir = dir
	return cfg
}

func TestStoreConfig_ValidateNamesWhatIsWrong(t *testing.T) {
	if err := storeConfig(t.TempDir()).Validate(); err != nil {
		t.Fatalf("the default config with a dir: %v", err)
	}
	if _, err := OpenStore(DefaultStoreConfig()); err == nil || !strings.Contains(err.Error(), "data.dir") {
		t.Fatalf("no dir: %v, want an error naming data.dir", err)
	}
	cfg := storeConfig(t.TempDir())
	cfg.Retention = 0
	if _, err := OpenStore(cfg); err == nil || !strings.Contains(err.Error(), "data.retention") {
		t.Fatalf("no retention: %v, want an error naming data.retention", err)
	}
}

// A -shm write or truncate far past any real wal-index, or at an offset
// whose end overflows, is refused, allocates nothing, and leaves the file
// as it was.
func TestStore_SHMSizesAreBounded(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	if _, err := s.Create("app.db", App); err != nil {
		t.Fatal(err)
	}
	shm, err := s.Create("app.db-shm", App)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.WriteAt(shm.ID, []byte("hello"), 0, App); err != nil {
		t.Fatal(err)
	}
	for name, off := range map[string]int64{"1 TiB": 1 << 40, "just past the cap": maxSHMSize - 2, "near MaxInt64": math.MaxInt64 - 1} {
		if _, _, err := s.WriteAt(shm.ID, []byte("abc"), off, App); !errors.Is(err, pagewire.ErrInvalidArgument) {
			t.Errorf("write at %s: %v, want ErrInvalidArgument", name, err)
		}
	}
	if _, err := s.Truncate(shm.ID, 1<<40, App); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Errorf("truncate to 1 TiB: %v, want ErrInvalidArgument", err)
	}
	buf := make([]byte, 16)
	n, err := s.ReadAt(shm.ID, buf, 0)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("after the refused calls the -shm holds %q (%v), want %q", buf[:n], err, "hello")
	}
}

// The temporary files of a snapshot, import or restore that a crash left
// behind are removed when the store opens; databases are kept.
func TestStore_RemovesLeftoversAtOpen(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	if _, err := s.Create("app.db", App); err != nil {
		t.Fatal(err)
	}
	s.Close()
	dbs := filepath.Join(dir, "dbs")
	for _, name := range []string{".snapshot-123", ".import-456"} {
		if err := os.WriteFile(filepath.Join(dbs, name), make([]byte, 4096), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dbs, ".restore-789", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	s2 := openTestStore(t, dir)
	entries, err := os.ReadDir(dbs)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"app.db"}) {
		t.Fatalf("data.dir/dbs holds %v after open, want only app.db", names)
	}
	if _, err := s2.Database("app.db"); err != nil {
		t.Fatal(err)
	}
}

func TestStore_NamePrimary(t *testing.T) {
	const url = "http://10.0.0.1:20202"
	for _, tc := range []struct {
		name    string
		role    pagewire.Role
		told    string // the primary's name the node was told
		epoch   pagewire.Epoch
		heardAt pagewire.Epoch // the epoch the name was heard at
		heard   string
		want    string
		changed bool
	}{
		{"static replica told its own name", pagewire.RoleReplica, "replica1", 1, 1, "node1", "node1", true},
		{"static replica told the primary's name", pagewire.RoleReplica, "node1", 1, 1, "node1", "node1", false},
		{"newer primary", pagewire.RoleReplica, "node1", 3, 4, "node2", "node2", true},
		{"older primary", pagewire.RoleReplica, "node2", 4, 3, "node1", "node2", false},
		{"no primary known", pagewire.RoleReplica, "", 4, 4, "node1", "", false},
		{"primary", pagewire.RolePrimary, "", 4, 4, "node1", "", false},
		{"empty name", pagewire.RoleReplica, "replica1", 1, 1, "", "replica1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestStore(t, t.TempDir())
			s.SetRole(tc.role, pagewire.ReadOnlyError{Primary: tc.told, AdvertiseURL: url}, tc.epoch)
			changed := s.RoleChanged()
			if got := s.NamePrimary(tc.heardAt, tc.heard); got != tc.changed {
				t.Errorf("NamePrimary(%d, %q)=%v, want %v", tc.heardAt, tc.heard, got, tc.changed)
			}
			role, ro, epoch := s.RoleEpoch()
			if role != tc.role || ro.Primary != tc.want || epoch != tc.epoch {
				t.Errorf("role %v primary %q epoch %d, want %v %q %d", role, ro.Primary, epoch, tc.role, tc.want, tc.epoch)
			}
			if tc.told != "" && ro.AdvertiseURL != url {
				t.Errorf("advertise URL %q, want %q kept", ro.AdvertiseURL, url)
			}
			select {
			case <-changed:
				if !tc.changed {
					t.Error("the role changed")
				}
			default:
				if tc.changed {
					t.Error("no role change was signalled (.primary's cached entry stays)")
				}
			}
		})
	}
}

// TestStore_RoleChanges counts changes of role, not every SetRole: the
// metrics' failover count.
func TestStore_RoleChanges(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	ro := pagewire.ReadOnlyError{Primary: "node1"}
	s.SetRole(pagewire.RolePrimary, pagewire.ReadOnlyError{}, 1) // opened as the primary: no change
	s.SetRole(pagewire.RoleReplica, ro, 2)
	s.SetRole(pagewire.RoleReplica, ro, 3) // a new primary, still a replica
	s.SetPrimaryUntil(4, nil)
	s.SetRole(pagewire.RoleReplica, ro, 5)
	s.SetRole(pagewire.RolePrimary, pagewire.ReadOnlyError{}, 6)
	if p, r := s.RoleChanges(); p != 2 || r != 2 {
		t.Fatalf("RoleChanges() = %d to primary, %d to replica; want 2 and 2", p, r)
	}
}

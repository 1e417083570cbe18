package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire"
)

// liveDB drives a database through the Store as SQLite does: commits in
// the WAL, checkpoints that copy committed pages into the database file
// and truncate it, new WAL generations over old frames, WAL truncations.
// It knows every committed page.
type liveDB struct {
	t     testing.TB
	s     *Store
	name  string
	dbID  uint64
	w     *walBuilder
	salt  uint32
	pages map[uint32][]byte // the committed content
	n     uint32            // pages in the database
	txns  uint32
}

func newLiveDB(t testing.TB, s *Store, name string) *liveDB {
	t.Helper()
	if _, err := s.Create(name, App); err != nil {
		t.Fatal(err)
	}
	l := &liveDB{t: t, s: s, name: name, dbID: mustLookup(t, s, name).ID, salt: 1,
		pages: map[uint32][]byte{1: newDatabasePage(defaultPageSize)}, n: 1}
	l.w = newWALBuilder(t, s, name, l.salt)
	return l
}

// commit commits, in one transaction, page pgno filled with fills[pgno]
// for each pgno in fills, page 1's header, and every page it adds; the
// database is then n pages long.
func (l *liveDB) commit(n uint32, fills map[uint32]byte) {
	l.t.Helper()
	l.txns++
	p1 := newDatabasePage(defaultPageSize)
	binary.BigEndian.PutUint32(p1[24:], l.txns) // change counter
	binary.BigEndian.PutUint32(p1[28:], n)
	binary.BigEndian.PutUint32(p1[92:], l.txns)
	p1[3000] = byte(l.txns)
	changed := map[uint32][]byte{1: p1}
	fills = maps.Clone(fills)
	for pgno := l.n + 1; pgno <= n; pgno++ {
		if _, ok := fills[pgno]; !ok {
			fills[pgno] = 0xee // SQLite writes every page it adds
		}
	}
	for pgno, fill := range fills {
		if pgno > 1 && pgno <= n {
			page := bytes.Repeat([]byte{fill}, defaultPageSize)
			binary.BigEndian.PutUint32(page, pgno)
			changed[pgno] = page
		}
	}
	pgnos := slices.Sorted(maps.Keys(changed))
	for i, pgno := range pgnos {
		var commit uint32
		if i == len(pgnos)-1 {
			commit = n
		}
		l.w.frame(pgno, changed[pgno], commit)
		l.pages[pgno] = changed[pgno]
	}
	for pgno := n + 1; pgno <= l.n; pgno++ {
		delete(l.pages, pgno)
	}
	l.n = n
}

// fillRange is fills for pages from..to, each filled with fill.
func fillRange(from, to uint32, fill byte) map[uint32]byte {
	m := map[uint32]byte{}
	for pgno := from; pgno <= to; pgno++ {
		m[pgno] = fill
	}
	return m
}

// checkpoint copies every committed page into the database file and
// truncates it to the database's size, as a full checkpoint does; then
// SQLite starts a new WAL generation over the old frames, after
// truncating the WAL first if truncateWAL is set.
func (l *liveDB) checkpoint(truncateWAL bool) {
	l.t.Helper()
	ps := int64(defaultPageSize)
	for pgno := uint32(1); pgno <= l.n; pgno++ {
		page := l.pages[pgno]
		if page == nil {
			page = make([]byte, defaultPageSize)
		}
		if _, _, err := l.s.WriteAt(l.dbID, page, int64(pgno-1)*ps, App); err != nil {
			l.t.Fatalf("checkpoint page %d: %v", pgno, err)
		}
	}
	if _, err := l.s.Truncate(l.dbID, int64(l.n)*ps, App); err != nil {
		l.t.Fatalf("checkpoint: truncate the database file: %v", err)
	}
	if truncateWAL {
		if _, err := l.s.Truncate(l.w.id, 0, App); err != nil {
			l.t.Fatalf("truncate the WAL: %v", err)
		}
	}
	l.salt++
	l.w.restart(l.salt)
}

// content is the database as an export at this point holds it.
func (l *liveDB) content() []byte {
	out := make([]byte, 0, int(l.n)*defaultPageSize)
	for pgno := uint32(1); pgno <= l.n; pgno++ {
		page := l.pages[pgno]
		if page == nil {
			page = make([]byte, defaultPageSize)
		}
		out = append(out, page...)
	}
	out[18], out[19] = 1, 1
	return out
}

// pausingWriter collects what it is given; its first Write blocks until
// resume is closed, after saying so on paused.
type pausingWriter struct {
	buf     bytes.Buffer
	paused  chan struct{}
	resume  chan struct{}
	writes  int
	failing error // returned by every Write after the first, if set
}

func (w *pausingWriter) Write(p []byte) (int, error) {
	w.writes++
	if w.writes == 1 {
		close(w.paused)
		<-w.resume
	} else if w.failing != nil {
		return 0, w.failing
	}
	return w.buf.Write(p)
}

// pausedExport is an export stopped in its first write to the client.
type pausedExport struct {
	w    *pausingWriter
	done chan struct{}
	pos  pagewire.Pos
	err  error
}

// startExport starts exporting name and returns once the export is
// blocked in its first write, as it is when its client stops reading.
func startExport(t testing.TB, ctx context.Context, s *Store, name string) *pausedExport {
	t.Helper()
	e := &pausedExport{w: &pausingWriter{paused: make(chan struct{}), resume: make(chan struct{})}, done: make(chan struct{})}
	go func() {
		defer close(e.done)
		e.pos, e.err = s.Export(ctx, name, e.w)
	}()
	select {
	case <-e.w.paused:
	case <-e.done:
		t.Fatalf("export ended before its first write: %v", e.err)
	}
	t.Cleanup(e.finish)
	return e
}

// finish lets the export go on and waits for its end.
func (e *pausedExport) finish() {
	select {
	case <-e.w.resume:
	default:
		close(e.w.resume)
	}
	<-e.done
}

// noStall runs f, failing the test if it has not returned within a minute:
// f's writes would then be waiting for a paused export.
func noStall(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("%s did not return within a minute: a paused export blocks the database's writers", what)
	}
}

// spillFiles lists the .snapshot-* files in the store's data.dir/dbs.
func spillFiles(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "dbs"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".snapshot-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// openViews counts a database's open views.
func openViews(t testing.TB, s *Store, name string) int {
	t.Helper()
	d, err := s.db(name)
	if err != nil {
		t.Fatal(err)
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.views)
}

// Two exports wait for clients that stopped reading, each after its
// first chunk, while commits, checkpoints (which overwrite pages in the
// database file and truncate it), new WAL generations written over the
// frames the exports still need, a WAL truncation and a shrinking commit
// go on. None of it waits for them, and once they go on each holds
// exactly the database at the position it started at.
func TestStore_ExportPausedMidStreamIsTheDatabaseAtItsPosition(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	l := newLiveDB(t, s, "app.db")

	// 600 pages (more than one chunk), in the database file, with some
	// newer in the WAL: before and after the first chunk's end (256).
	l.commit(600, fillRange(2, 600, 1))
	l.checkpoint(false)
	l.commit(600, map[uint32]byte{3: 2, 300: 2, 500: 2})
	wantA, posA := l.content(), s.mustPos(t, "app.db")

	// Export A stops after its first chunk.
	ctx := context.Background()
	a := startExport(t, ctx, s, "app.db")

	// Meanwhile: commits over pages on both sides of A's place, growing
	// the database; a checkpoint that copies them into the file; a new
	// WAL generation whose frames overwrite those A reads pages 300 and
	// 500 from.
	noStall(t, "commits and a checkpoint while export A waits", func() {
		l.commit(650, map[uint32]byte{2: 3, 10: 3, 257: 3, 300: 3, 400: 3, 600: 3, 650: 3})
		l.checkpoint(false)
		l.commit(650, fillRange(1, 40, 4))
	})
	if len(spillFiles(t, dir)) == 0 {
		t.Fatal("a checkpoint overwrote pages export A still needs, and no .snapshot-* file keeps them")
	}
	wantB, posB := l.content(), s.mustPos(t, "app.db")

	// Export B starts here and stops after its first chunk too.
	b := startExport(t, ctx, s, "app.db")

	// Then: the database shrinks below both exports' sizes, is
	// checkpointed (the file truncated), the WAL truncated and restarted;
	// every page is rewritten, and checkpointed again.
	noStall(t, "shrinking, truncations and rewrites while two exports wait", func() {
		l.commit(400, map[uint32]byte{300: 5, 399: 5})
		l.checkpoint(true)
		l.commit(400, fillRange(2, 400, 6))
		l.checkpoint(false)
		l.commit(700, fillRange(2, 700, 7))
	})

	// Both go on; each is its position's database.
	for _, tc := range []struct {
		what string
		e    *pausedExport
		want []byte
		pos  pagewire.Pos
	}{{"A", a, wantA, posA}, {"B", b, wantB, posB}} {
		tc.e.finish()
		if tc.e.err != nil {
			t.Fatalf("export %s: %v", tc.what, tc.e.err)
		}
		if tc.e.pos != tc.pos {
			t.Errorf("export %s is at %v, want %v", tc.what, tc.e.pos, tc.pos)
		}
		if got := tc.e.w.buf.Bytes(); !bytes.Equal(got, tc.want) {
			t.Errorf("export %s differs from the database at %v: %d bytes, want %d; first differing page %d",
				tc.what, tc.pos, len(got), len(tc.want), firstDiff(got, tc.want))
		}
	}

	// Nothing is left behind; the database is the live one.
	if n := openViews(t, s, "app.db"); n != 0 {
		t.Errorf("%d views open after the exports ended", n)
	}
	if f := spillFiles(t, dir); len(f) != 0 {
		t.Errorf("spill files left after the exports ended: %v", f)
	}
	var buf bytes.Buffer
	if _, err := s.Export(ctx, "app.db", &buf); err != nil || !bytes.Equal(buf.Bytes(), l.content()) {
		t.Errorf("an export now differs from the live database (err %v)", err)
	}
}

func (s *Store) mustPos(t testing.TB, name string) pagewire.Pos {
	t.Helper()
	di, err := s.Database(name)
	if err != nil {
		t.Fatal(err)
	}
	return di.Pos
}

// firstDiff is the first page (from 1) where a and b differ, or 0.
func firstDiff(a, b []byte) int {
	for i := 0; i < max(len(a), len(b)); i += defaultPageSize {
		ea, eb := min(i+defaultPageSize, len(a)), min(i+defaultPageSize, len(b))
		if i >= len(a) || i >= len(b) || !bytes.Equal(a[i:ea], b[i:eb]) {
			return i/defaultPageSize + 1
		}
	}
	return 0
}

// An import that replaces the database's file, or the database's
// deletion, while an export waits for its client, does not change what
// the export holds: its own handles keep the files it reads.
func TestStore_ExportKeepsItsFilesThroughImportAndDelete(t *testing.T) {
	for _, replace := range []string{"import", "delete"} {
		t.Run(replace, func(t *testing.T) {
			dir := t.TempDir()
			s := openTestStore(t, dir)
			l := newLiveDB(t, s, "app.db")
			l.commit(400, fillRange(2, 400, 1))
			l.checkpoint(false)
			l.commit(400, map[uint32]byte{3: 2, 390: 2})
			want, pos := l.content(), s.mustPos(t, "app.db")

			e := startExport(t, context.Background(), s, "app.db")
			noStall(t, replace, func() {
				var err error
				if replace == "import" {
					_, err = s.Import("app.db", bytes.NewReader(newDatabasePage(defaultPageSize)))
				} else {
					err = s.Delete("app.db")
				}
				if err != nil {
					t.Errorf("%s: %v", replace, err)
				}
			})
			e.finish()
			if e.err != nil || e.pos != pos {
				t.Fatalf("export: pos %v, err %v; want %v", e.pos, e.err, pos)
			}
			if got := e.w.buf.Bytes(); !bytes.Equal(got, want) {
				t.Errorf("export after the %s differs from the database it started from at page %d", replace, firstDiff(got, want))
			}
			if f := spillFiles(t, dir); len(f) != 0 {
				t.Errorf("spill files left: %v", f)
			}
		})
	}
}

// A replica's snapshot is read from a view too: a checkpoint and new WAL
// generations while it is half sent leave it the database at its
// position, in WAL mode.
func TestFeed_SnapshotIsTheDatabaseAtItsPositionWhileWritesGoOn(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	l := newLiveDB(t, s, "app.db")
	l.commit(300, fillRange(2, 300, 1))
	l.checkpoint(false)
	l.commit(300, map[uint32]byte{5: 2, 250: 2})
	want, pos := l.content(), s.mustPos(t, "app.db")
	want[18], want[19] = 2, 2

	f, err := s.Feed("app.db", pagewire.Pos{}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	item, err := f.Next(context.Background())
	if err != nil || item.Snapshot == nil {
		t.Fatalf("Next: %+v, %v; want a snapshot", item, err)
	}
	snap := item.Snapshot
	defer snap.Close()
	if snap.Pos != pos || snap.PageCount != 300 || snap.PageSize != defaultPageSize {
		t.Fatalf("snapshot at %v of %d pages of %d, want %v, 300, %d", snap.Pos, snap.PageCount, snap.PageSize, pos, defaultPageSize)
	}

	// Half of it is read; writes go on; then the rest.
	var got []byte
	buf := make([]byte, 100*defaultPageSize)
	n, err := snap.Read(buf)
	if err != nil || n != len(buf) {
		t.Fatalf("first read: %d bytes, %v", n, err)
	}
	got = append(got, buf[:n]...)
	noStall(t, "writes during a snapshot", func() {
		l.commit(320, fillRange(2, 320, 3))
		l.checkpoint(true)
		l.commit(100, fillRange(2, 100, 4))
		l.checkpoint(false)
	})
	for {
		n, err := snap.Read(buf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("snapshot differs from the database at %v at page %d (%d bytes, want %d)", pos, firstDiff(got, want), len(got), len(want))
	}
	snap.Close()
	if f := spillFiles(t, dir); len(f) != 0 {
		t.Errorf("spill files left after the snapshot was closed: %v", f)
	}
}

// A node runs at most maxExports exports at once: one more is refused
// with ErrTooMany and changes nothing; an export that ends, because it is
// done, its ctx is cancelled or its client fails, gives its slot back and
// releases its view.
func TestStore_ExportsAreBoundedAndReleasedWhenTheyEnd(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	l := newLiveDB(t, s, "app.db")
	l.commit(600, fillRange(2, 600, 1))

	// maxExports exports, each waiting for its client; one of them with
	// a ctx to cancel, one whose client fails.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var exports []*pausedExport
	for i := range maxExports {
		c := context.Background()
		if i == 0 {
			c = ctx
		}
		exports = append(exports, startExport(t, c, s, "app.db"))
	}
	exports[1].w.failing = errors.New("client gone")

	// One more is refused.
	var buf bytes.Buffer
	if _, err := s.Export(context.Background(), "app.db", &buf); !errors.Is(err, pagewire.ErrTooMany) || buf.Len() != 0 {
		t.Fatalf("export %d: err %v, %d bytes written; want ErrTooMany and nothing", maxExports+1, err, buf.Len())
	}
	if n := openViews(t, s, "app.db"); n != maxExports {
		t.Fatalf("%d views open, want %d", n, maxExports)
	}

	// The cancelled one stops; the failing one stops with its client's
	// error; the others finish.
	cancel()
	for _, e := range exports {
		e.finish()
	}
	if !errors.Is(exports[0].err, context.Canceled) {
		t.Errorf("cancelled export: %v, want context.Canceled", exports[0].err)
	}
	if exports[1].err == nil || !strings.Contains(exports[1].err.Error(), "client gone") {
		t.Errorf("export whose client failed: %v, want its error", exports[1].err)
	}
	for i, e := range exports[2:] {
		if e.err != nil {
			t.Errorf("export %d: %v", i+2, e.err)
		}
	}

	// Every slot and view is free again.
	if n := openViews(t, s, "app.db"); n != 0 {
		t.Errorf("%d views open after every export ended", n)
	}
	for i := range maxExports + 1 {
		if _, err := s.Export(context.Background(), "app.db", io.Discard); err != nil {
			t.Fatalf("export %d after the others ended: %v", i, err)
		}
	}
}

// A node sends at most maxSnapshots snapshots at once; one more waits
// for a slot, and gives up when its ctx is done.
func TestFeed_SnapshotsWaitForASlot(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	newLiveDB(t, s, "app.db").commit(3, fillRange(2, 3, 1))
	next := func(ctx context.Context) (FeedItem, error) {
		f, err := s.Feed("app.db", pagewire.Pos{}, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(f.Close)
		return f.Next(ctx)
	}
	var snaps []*Snapshot
	for range maxSnapshots {
		item, err := next(context.Background())
		if err != nil || item.Snapshot == nil {
			t.Fatalf("Next: %+v, %v", item, err)
		}
		snaps = append(snaps, item.Snapshot)
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := next(done); !errors.Is(err, context.Canceled) {
		t.Fatalf("a snapshot past the limit with its ctx done: %v, want context.Canceled", err)
	}
	snaps[0].Close()
	snaps[0].Close() // twice: the slot is given back once
	item, err := next(context.Background())
	if err != nil || item.Snapshot == nil {
		t.Fatalf("Next once a slot is free: %+v, %v", item, err)
	}
	item.Snapshot.Close()
	for _, snap := range snaps[1:] {
		snap.Close()
	}
	if n := openViews(t, s, "app.db"); n != 0 {
		t.Errorf("%d views open after every snapshot was closed", n)
	}
}

// A page a view cannot keep (its spill file cannot be made) breaks that
// view, which says so, and not the write that overwrote the page.
func TestView_APageThatCannotBeKeptFailsTheCopyNotTheWrite(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	l := newLiveDB(t, s, "app.db")
	l.commit(300, fillRange(2, 300, 1))
	l.checkpoint(false)
	d, err := s.db("app.db")
	if err != nil {
		t.Fatal(err)
	}
	v, err := d.openView(filepath.Join(t.TempDir(), "gone"))
	if err != nil {
		t.Fatal(err)
	}
	defer v.close()
	buf := make([]byte, 10*defaultPageSize)
	if _, err := v.read(buf); err != nil {
		t.Fatal(err)
	}
	noStall(t, "a commit and checkpoint", func() {
		l.commit(300, map[uint32]byte{200: 2})
		l.checkpoint(false) // overwrites page 200 in the database file
	})
	if _, err := v.read(buf); err == nil || !strings.Contains(err.Error(), "could not keep page") {
		t.Fatalf("read after a page could not be kept: %v, want an error saying so", err)
	}
	if n := openViews(t, s, "app.db"); n != 0 {
		t.Errorf("the broken view is still registered (%d views)", n)
	}
}

// A view read one page at a time, with a rewrite of every page and a WAL
// truncation after its fourth, is the database where it was opened; a
// buffer shorter than a page is refused, and the end is io.EOF.
func TestView_ReadsPageByPage(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	l := newLiveDB(t, s, "app.db")
	l.commit(20, fillRange(2, 20, 1))
	l.checkpoint(false)
	l.commit(25, map[uint32]byte{2: 2, 7: 2, 25: 2})
	want := l.content()
	want[18], want[19] = 2, 2 // a view leaves page 1 as it is
	d, err := s.db("app.db")
	if err != nil {
		t.Fatal(err)
	}
	v, err := d.openView(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer v.close()
	if _, err := v.read(make([]byte, 100)); !errors.Is(err, io.ErrShortBuffer) {
		t.Fatalf("read into 100 bytes: %v, want io.ErrShortBuffer", err)
	}
	var got []byte
	page := make([]byte, defaultPageSize+100) // whole pages only
	for i := 0; ; i++ {
		n, err := v.read(page)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil || n != defaultPageSize {
			t.Fatalf("read %d: %d bytes, %v", i, n, err)
		}
		got = append(got, page[:n]...)
		if i == 3 {
			l.commit(25, fillRange(2, 25, 3))
			l.checkpoint(true)
			l.commit(25, fillRange(2, 25, 4))
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("page by page the view differs from the database where it was opened at page %d", firstDiff(got, want))
	}
	if _, err := v.read(page); !errors.Is(err, io.EOF) {
		t.Errorf("read past the end: %v, want io.EOF", err)
	}
}

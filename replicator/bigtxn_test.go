package replicator

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc64"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pagewire/pagewire"
)

// Big transactions through a replica, a part at a time: real transactions
// from a SQLite source, a real WALWriter on a copy, real SQLite readers of
// the copy, and at the seam a Local that counts commits and checksums as
// the storage server does.

// testPartPages is how many pages a part carries in these tests.
const testPartPages = 16

var crcTable = crc64.MakeTable(crc64.ISO)

// pageSum is a page's checksum as the storage server computes it.
func pageSum(pgno uint32, data []byte) uint64 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], pgno)
	return crc64.Update(crc64.Checksum(b[:], crcTable), crcTable, data) | 1<<63
}

// sums are a database's page checksums, as the storage server keeps them.
type sums struct {
	pages []uint64 // index pgno-1
}

// sumsOfFile reads a database file's pages.
func sumsOfFile(t testing.TB, path string, pageSize int) *sums {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := &sums{}
	for off := 0; off+pageSize <= len(b); off += pageSize {
		s.pages = append(s.pages, pageSum(uint32(off/pageSize)+1, b[off:off+pageSize]))
	}
	return s
}

func (s *sums) checksum() uint64 {
	var sum uint64
	for _, c := range s.pages {
		sum ^= c
	}
	return sum | 1<<63
}

// commit applies a transaction's pages (pgno, checksum) and size.
func (s *sums) commit(pageCount uint32, pages map[uint32]uint64) {
	for len(s.pages) < int(pageCount) {
		s.pages = append(s.pages, 0)
	}
	for pgno, c := range pages {
		if pgno <= pageCount {
			s.pages[pgno-1] = c
		}
	}
	s.pages = s.pages[:pageCount]
}

// pageLocal is a Local whose position follows the commits a countingWriter
// makes, with checksums as the storage server's.
type pageLocal struct {
	*fakeLocal
	db string
	s  *sums
}

func (l *pageLocal) ChecksumPages(db string, at pagewire.Pos, sum uint64, pages []pagewire.Page, truncate uint32) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pos[db] != at {
		return 0, pagewire.ErrBusy
	}
	old := func(pgno uint32) uint64 {
		if int(pgno) <= len(l.s.pages) {
			return l.s.pages[pgno-1]
		}
		return 0
	}
	sum &^= 1 << 63
	for _, p := range pages {
		sum ^= old(p.Pgno) ^ pageSum(p.Pgno, p.Data)
	}
	if truncate > 0 {
		for pgno := truncate + 1; int(pgno) <= len(l.s.pages); pgno++ {
			sum ^= l.s.pages[pgno-1]
		}
	}
	return sum | 1<<63, nil
}

// Rebase sets the TXID after a snapshot, as the storage server does: only
// if the checksum is the snapshot's.
func (l *pageLocal) Rebase(db string, pos pagewire.Pos) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pos[db].Checksum != pos.Checksum {
		return pagewire.ErrCorrupt
	}
	l.rebased = append(l.rebased, pos)
	l.pos[db] = pos
	return nil
}

// countingWriter is a real WALWriter whose commits the pageLocal counts, as
// the storage server counts what the apply worker writes through the mount.
type countingWriter struct {
	*WALWriter
	l       *pageLocal
	pending map[uint32]uint64
}

func (w *countingWriter) counted(pageCount uint32, pages map[uint32]uint64) {
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	w.l.s.commit(pageCount, pages)
	p := w.l.pos[w.l.db]
	w.l.pos[w.l.db] = pagewire.Pos{TXID: p.TXID + 1, Checksum: w.l.s.checksum()}
}

func (w *countingWriter) Apply(ctx context.Context, pageCount uint32, pages []pagewire.Page, sync bool) error {
	if err := w.WALWriter.Apply(ctx, pageCount, pages, sync); err != nil {
		return err
	}
	m := map[uint32]uint64{}
	for _, p := range pages {
		m[p.Pgno] = pageSum(p.Pgno, p.Data)
	}
	w.counted(pageCount, m)
	return nil
}

func (w *countingWriter) ApplyPart(ctx context.Context, p TxnPart, sync bool) error {
	if p.First {
		w.pending = map[uint32]uint64{}
	}
	if err := w.WALWriter.ApplyPart(ctx, p, sync); err != nil {
		return err
	}
	for _, pg := range p.Pages {
		w.pending[pg.Pgno] = pageSum(pg.Pgno, pg.Data)
	}
	if p.Last {
		w.counted(p.PageCount, w.pending)
	}
	return nil
}

// bigTxnRig is a source database, a replica file followed by a Replica
// with a real WALWriter, and a reader of the replica in another process.
type bigTxnRig struct {
	t       *testing.T
	src     *sourceDB
	primary *sums // the source's checksums, transaction by transaction
	path    string
	local   *pageLocal
	w       *countingWriter
	r       *Replica
	a       *applier
	reader  *pyConn
}

func newBigTxnRig(t *testing.T) *bigTxnRig {
	t.Helper()
	dir := t.TempDir()
	src := newSourceDB(t, dir, 1024, "CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB)")
	path := src.newReplicaFile(dir, "app.db")
	start := sumsOfFile(t, path, 1024)
	local := &pageLocal{fakeLocal: newFakeLocal(), db: "app.db", s: &sums{pages: append([]uint64(nil), start.pages...)}}
	local.pos["app.db"] = pagewire.Pos{TXID: 1, Checksum: start.checksum()}
	g := &bigTxnRig{t: t, src: src, primary: start, path: path, local: local}
	g.w = &countingWriter{WALWriter: openWriter(t, path), l: local}

	cfg := DefaultReplicaConfig()
	cfg.Upstream, cfg.Local, cfg.MountDir, cfg.Hostname = upstreamFunc(nil), local, dir, "replica1"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.OpenWriter = func(context.Context, string) (Writer, error) { return g.w, nil }
	var err error
	if g.r, err = NewReplica(cfg); err != nil {
		t.Fatal(err)
	}
	g.a = &applier{r: g.r, name: "app.db", path: path, log: g.r.log}
	g.reader = startPy(t)
	g.reader.open("r", path)
	return g
}

// bigTxn commits a transaction of about 300 pages on the source and
// returns it as the primary sends it: parts of testPartPages pages.
func (g *bigTxnRig) bigTxn(txid pagewire.TXID, firstID int) []TxnEvent {
	g.t.Helper()
	txn := g.src.exec(fmt.Sprintf(`WITH RECURSIVE c(x) AS (SELECT %d UNION ALL SELECT x+1 FROM c WHERE x<%d)
INSERT INTO big SELECT x, randomblob(900) FROM c`, firstID, firstID+299))
	pre := g.primary.checksum()
	m := map[uint32]uint64{}
	for _, p := range txn.pages {
		m[p.Pgno] = pageSum(p.Pgno, p.Data)
	}
	g.primary.commit(txn.pageCount, m)
	var evs []TxnEvent
	for i := 0; i < len(txn.pages); i += testPartPages {
		part := txn.pages[i:min(len(txn.pages), i+testPartPages)]
		evs = append(evs, TxnEvent{Txn: &pagewire.Txn{TXID: txid, PreChecksum: pre, PostChecksum: g.primary.checksum(), PageSize: 1024,
			PageCount: txn.pageCount, CommitTime: time.Now(), Pages: part}, More: i+testPartPages < len(txn.pages)})
	}
	if len(evs) < 10 {
		g.t.Fatalf("the transaction has %d parts, want many", len(evs))
	}
	return evs
}

// stream runs one stream of the given events and returns how it ended.
func (g *bigTxnRig) stream(evs []TxnEvent) error {
	g.t.Helper()
	g.r.cfg.Upstream = upstreamFunc(evs)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return g.a.stream(ctx)
}

// at checks the replica's position and what its reader sees.
func (g *bigTxnRig) at(txid pagewire.TXID, rows int64) {
	g.t.Helper()
	if pos, _ := g.local.Position("app.db"); pos.TXID != txid {
		g.t.Fatalf("replica at TXID %d, want %d", pos.TXID, txid)
	}
	if got := g.reader.queryInt("r", "SELECT count(*) FROM big"); got != rows {
		g.t.Fatalf("the replica's reader sees %d rows, want %d", got, rows)
	}
	g.reader.integrity("r")
}

// writeLockFree checks that no transaction holds the replica's WAL write
// lock: a SQLite writer in another process can take it.
func (g *bigTxnRig) writeLockFree() {
	g.t.Helper()
	p := startPy(g.t)
	p.open("w", g.path)
	p.exec("w", "BEGIN IMMEDIATE")
	p.exec("w", "ROLLBACK")
	p.close("w")
}

// A transaction of many parts is applied as it arrives and the replica
// ends up with the source's content, at its TXID; a reader sees nothing of
// it before the last part.
func TestReplica_ManyPartTransactionEqualsThePrimary(t *testing.T) {
	needPython(t)
	g := newBigTxnRig(t)
	evs := g.bigTxn(2, 1)
	parts := 0
	g.w.testHookBeforePublish = func() {
		if got := g.reader.queryInt("r", "SELECT count(*) FROM big"); got != 0 {
			t.Errorf("before the commit's publish the reader sees %d rows", got)
		}
		parts++
	}
	if err := g.stream(evs); !errors.Is(err, io.EOF) {
		t.Fatalf("stream: %v", err)
	}
	g.w.testHookBeforePublish = nil
	if parts != 1 {
		t.Fatalf("published %d times, want once, at the last part", parts)
	}
	g.at(2, 300)
	if pos, _ := g.local.Position("app.db"); pos.Checksum != evs[0].Txn.PostChecksum {
		t.Fatalf("replica checksum %016x, the primary's %016x", pos.Checksum, evs[0].Txn.PostChecksum)
	}
	g.src.checkSame(t, g.reader, "r")
	checkIndexIsFresh(t, g.w.WALWriter)
	g.writeLockFree()

	// Small transactions go on after it, on the whole-transaction path.
	small := g.src.exec("INSERT INTO big VALUES(1000, x'00')")
	pre := g.primary.checksum()
	m := map[uint32]uint64{}
	for _, p := range small.pages {
		m[p.Pgno] = pageSum(p.Pgno, p.Data)
	}
	g.primary.commit(small.pageCount, m)
	if err := g.stream([]TxnEvent{{Txn: &pagewire.Txn{TXID: 3, PreChecksum: pre, PostChecksum: g.primary.checksum(), PageSize: 1024,
		PageCount: small.pageCount, Pages: small.pages}}}); !errors.Is(err, io.EOF) {
		t.Fatalf("stream: %v", err)
	}
	g.at(3, 301)
	g.src.checkSame(t, g.reader, "r")
}

// A stream cut in the middle of a transaction leaves the replica where it
// was, readable, with the write lock free; the next stream brings the
// whole transaction.
func TestReplica_StreamCutMidTransactionResumes(t *testing.T) {
	needPython(t)
	g := newBigTxnRig(t)
	evs := g.bigTxn(2, 1)
	frames := g.w.Frames()
	if err := g.stream(evs[:len(evs)/2]); !errors.Is(err, io.EOF) {
		t.Fatalf("stream: %v", err)
	}
	g.at(1, 0)
	if hdr, _ := readIndex(t, g.w.WALWriter); hdr.MxFrame != frames {
		t.Fatalf("mxFrame %d after a cut transaction, want %d", hdr.MxFrame, frames)
	}
	g.writeLockFree()

	if err := g.stream(evs); !errors.Is(err, io.EOF) {
		t.Fatalf("stream: %v", err)
	}
	g.at(2, 300)
	g.src.checkSame(t, g.reader, "r")
	checkIndexIsFresh(t, g.w.WALWriter)
}

// A transaction whose pages do not lead to its post-checksum (one byte of
// its last part differs) is refused before anything of it becomes
// visible; the right one applies after.
func TestReplica_BadChecksumInLastPartIsRefused(t *testing.T) {
	needPython(t)
	g := newBigTxnRig(t)
	evs := g.bigTxn(2, 1)
	frames := g.w.Frames()

	bad := append([]TxnEvent(nil), evs...)
	last := *bad[len(bad)-1].Txn
	last.Pages = append([]pagewire.Page(nil), last.Pages...)
	data := bytes.Clone(last.Pages[0].Data)
	data[100] ^= 1
	last.Pages[0].Data = data
	bad[len(bad)-1].Txn = &last
	if err := g.stream(bad); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("stream: err=%v, want ErrInvalidArgument", err)
	}
	g.at(1, 0)
	if hdr, _ := readIndex(t, g.w.WALWriter); hdr.MxFrame != frames || g.w.Frames() != frames {
		t.Fatalf("mxFrame %d after a refused transaction, want %d", hdr.MxFrame, frames)
	}
	g.writeLockFree()

	if err := g.stream(evs); !errors.Is(err, io.EOF) {
		t.Fatalf("stream: %v", err)
	}
	g.at(2, 300)
	g.src.checkSame(t, g.reader, "r")
}

// A hostile or broken primary's parts are refused with ErrInvalidArgument,
// one part in, and nothing becomes visible.
func TestReplica_RefusesHostileParts(t *testing.T) {
	needPython(t)
	g := newBigTxnRig(t)
	evs := g.bigTxn(2, 1)
	other := *evs[1].Txn
	other.TXID = 3
	otherSum := *evs[1].Txn
	otherSum.PostChecksum ^= 1
	for _, tc := range []struct {
		name string
		next TxnEvent
	}{
		{"another transaction", TxnEvent{Txn: &other, More: true}},
		{"another post-checksum", TxnEvent{Txn: &otherSum, More: true}},
		{"the same pages again", evs[0]},
		{"a heartbeat", TxnEvent{Heartbeat: true}},
		{"a snapshot", TxnEvent{Snapshot: &Snapshot{PageSize: 1024, PageCount: 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := g.stream([]TxnEvent{evs[0], tc.next}); !errors.Is(err, pagewire.ErrInvalidArgument) {
				t.Fatalf("err=%v, want ErrInvalidArgument", err)
			}
			g.at(1, 0)
		})
	}
	g.writeLockFree()
	if err := g.stream(evs); !errors.Is(err, io.EOF) {
		t.Fatalf("stream: %v", err)
	}
	g.at(2, 300)
}

// A snapshot goes to the replica's WAL as its pages arrive and commits
// once they prove its checksum; one cut off, or whose pages do not match
// its checksum, leaves the replica as it was.
func TestReplica_SnapshotIsAppliedAsItArrives(t *testing.T) {
	needPython(t)
	g := newBigTxnRig(t)
	g.bigTxn(2, 1)
	g.bigTxn(3, 1000)

	// The source's state, as a WAL-mode database file, is the snapshot.
	copyPath := filepath.Join(t.TempDir(), "copy.db")
	g.src.py.exec("s", fmt.Sprintf("VACUUM INTO '%s'", copyPath))
	b, err := os.ReadFile(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	b[18], b[19] = 2, 2
	n := uint32(len(b) / 1024)
	var pages []pagewire.Page
	for pgno := uint32(1); pgno <= n; pgno++ {
		pages = append(pages, pagewire.Page{Pgno: pgno, Data: b[(pgno-1)*1024 : pgno*1024]})
	}
	snapSums := sumsOfFile(t, copyPath, 1024)
	snapSums.pages[0] = pageSum(1, pages[0].Data)
	pos := pagewire.Pos{TXID: 3, Checksum: snapSums.checksum()}
	snapshot := func(pos pagewire.Pos, upto uint32) []TxnEvent {
		evs := []TxnEvent{{Snapshot: &Snapshot{Pos: pos, PageSize: 1024, PageCount: n, Reason: "test"}}}
		for i := uint32(0); i < upto; i += testPartPages {
			evs = append(evs, TxnEvent{SnapshotPages: pages[i:min(upto, i+testPartPages)]})
		}
		if upto == n {
			evs = append(evs, TxnEvent{SnapshotEnd: true})
		}
		return evs
	}
	frames := g.w.Frames()

	// Cut off, then with the wrong checksum: nothing changes.
	if err := g.stream(snapshot(pos, n/2)); !errors.Is(err, io.EOF) {
		t.Fatalf("cut snapshot: %v", err)
	}
	g.at(1, 0)
	wrong := pos
	wrong.Checksum ^= 2
	if err := g.stream(snapshot(wrong, n)); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("snapshot with a wrong checksum: err=%v, want ErrInvalidArgument", err)
	}
	g.at(1, 0)
	if hdr, _ := readIndex(t, g.w.WALWriter); hdr.MxFrame != frames {
		t.Fatalf("mxFrame %d after refused snapshots, want %d", hdr.MxFrame, frames)
	}
	g.writeLockFree()

	// The whole one.
	if err := g.stream(snapshot(pos, n)); !errors.Is(err, io.EOF) {
		t.Fatalf("snapshot: %v", err)
	}
	g.at(3, 600)
	g.src.checkSame(t, g.reader, "r")
	if got := g.local.rebased; len(got) == 0 || got[len(got)-1] != pos {
		t.Fatalf("rebased %v, want %v last", got, pos)
	}
}

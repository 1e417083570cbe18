package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/wal"
)

// These tests build the files a power cut can leave: each file at one of
// its durable states (a write, truncation or unlink not yet fsync'd may or
// may not have reached the disk), in every combination the engine's fsync
// order allows, and open the database from them.

// diskState is the content of a database's files after a simulated power
// cut: nil means the file does not exist.
type diskState struct {
	db, wal, meta []byte
}

// readState reads a database's files as they are now.
func readState(t *testing.T, dir, db string) diskState {
	t.Helper()
	var st diskState
	for name, p := range map[string]*[]byte{databaseFileName: &st.db, walFileName: &st.wal, metaFileName: &st.meta} {
		b, err := os.ReadFile(filepath.Join(dir, "dbs", db, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if b == nil {
			b = []byte{}
		}
		*p = b
	}
	return st
}

// openCut copies data.dir src (the transaction log and all) to a new
// folder, sets the database's files to st, opens a store there and returns
// the database.
func openCut(t *testing.T, src, db string, st diskState) DatabaseInfo {
	t.Helper()
	s := openCutStore(t, src, db, st)
	di, err := s.Database(db)
	if err != nil {
		t.Fatal(err)
	}
	return di
}

// openCutStore is openCut, returning the store.
func openCutStore(t *testing.T, src, db string, st diskState) *Store {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if e.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{databaseFileName: st.db, walFileName: st.wal, metaFileName: st.meta} {
		p := filepath.Join(dst, "dbs", db, name)
		if b == nil {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return openTestStore(t, dst)
}

// metaEnd decodes a meta file's record of its generation's end.
func metaEnd(t *testing.T, b []byte) walMark {
	t.Helper()
	m, err := decodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	return m.end()
}

// durableEnd is the generation's end the meta file durably records.
func durableEnd(s *Store, db string) walMark {
	d, _ := s.db(db)
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.metaSynced
}

// checkpointTo copies pages into the database file, as a checkpoint does.
func checkpointTo(t *testing.T, s *Store, db string, pages map[uint32][]byte) {
	t.Helper()
	id := mustLookup(t, s, db).ID
	for pgno, p := range pages {
		if _, _, err := s.WriteAt(id, p, int64(pgno-1)*defaultPageSize, App); err != nil {
			t.Fatal(err)
		}
	}
}

// threeCommits makes app.db at TXID 4 in a WAL of salt 1, its meta file
// durable only at the generation's start, as a store with commits and no
// checkpoint leaves it, and returns the position and the pages.
func threeCommits(t *testing.T, s *Store) (*walBuilder, pagewire.Pos, map[uint32][]byte) {
	t.Helper()
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 1)
	w.frame(1, page1(2), 0)
	w.frame(2, testPage(2), 2)
	w.frame(2, testPage(3), 2)
	w.frame(1, page1(3), 0)
	if got := w.frame(3, testPage(4), 3); got != 4 {
		t.Fatalf("TXID=%d, want 4", got)
	}
	pages := map[uint32][]byte{1: page1(3), 2: testPage(3), 3: testPage(4)}
	return w, pagewire.Pos{TXID: 4, Checksum: checksumOf(pages, 3)}, pages
}

// page1 is a database's first page, its header counting n pages, as
// SQLite writes it in a transaction that sizes the database.
func page1(n uint32) []byte {
	p := newDatabasePage(defaultPageSize)
	binary.BigEndian.PutUint32(p[28:], n)
	return p
}

func wantPos(t *testing.T, what string, di DatabaseInfo, want pagewire.Pos) {
	t.Helper()
	if di.Pos != want || di.Err != nil {
		t.Errorf("%s: pos=%v err=%v, want %v and no error", what, di.Pos, di.Err, want)
	}
}

// wal_checkpoint(TRUNCATE): the meta records the generation's end durably
// before the WAL is cut, so that whether or not the cut reached the disk
// the database opens at its position.
func TestPowerCut_WALTruncate(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	w, pos4, pages := threeCommits(t, s)
	before := readState(t, dir, "app.db")
	checkpointTo(t, s, "app.db", pages)
	checkpointed := readState(t, dir, "app.db")
	if _, err := s.Truncate(w.id, 0, App); err != nil {
		t.Fatal(err)
	}
	after := readState(t, dir, "app.db")
	end := walMark{Salt1: 1, Salt2: 7, Frame: 5, Pos: pos4}
	if got := durableEnd(s, "app.db"); got != end {
		t.Fatalf("durable meta records %+v before the truncation, want %+v", got, end)
	}
	if got := metaEnd(t, after.meta); got != end {
		t.Fatalf("meta file records %+v, want %+v", got, end)
	}

	// The database file was fsync'd by the checkpoint before the cut.
	wantPos(t, "cut durable", openCut(t, dir, "app.db", diskState{db: checkpointed.db, wal: []byte{}, meta: after.meta}), pos4)
	wantPos(t, "cut undone", openCut(t, dir, "app.db", diskState{db: checkpointed.db, wal: before.wal, meta: after.meta}), pos4)
	wantPos(t, "cut undone, checkpoint not durable", openCut(t, dir, "app.db", diskState{db: before.db, wal: before.wal, meta: after.meta}), pos4)
	wantPos(t, "cut undone, old meta", openCut(t, dir, "app.db", diskState{db: checkpointed.db, wal: before.wal, meta: before.meta}), pos4)
}

// The last connection's close deletes the WAL: the same, for an unlink.
func TestPowerCut_WALUnlink(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	_, pos4, pages := threeCommits(t, s)
	before := readState(t, dir, "app.db")
	checkpointTo(t, s, "app.db", pages)
	checkpointed := readState(t, dir, "app.db")
	if err := s.Delete("app.db-wal"); err != nil {
		t.Fatal(err)
	}
	after := readState(t, dir, "app.db")
	if after.wal != nil {
		t.Fatal("the -wal is still there")
	}
	end := walMark{Salt1: 1, Salt2: 7, Frame: 5, Pos: pos4}
	if got := durableEnd(s, "app.db"); got != end {
		t.Fatalf("durable meta records %+v before the unlink, want %+v", got, end)
	}
	wantPos(t, "unlink durable", openCut(t, dir, "app.db", diskState{db: checkpointed.db, meta: after.meta}), pos4)
	wantPos(t, "unlink undone", openCut(t, dir, "app.db", diskState{db: checkpointed.db, wal: before.wal, meta: after.meta}), pos4)

	// A new WAL after the unlink starts from there; a power cut that
	// undoes the unlink and loses the new WAL's header leaves the old one.
	w := newWALBuilder(t, s, "app.db", 5)
	if got := w.frame(2, testPage(9), 3); got != 5 {
		t.Fatalf("TXID=%d, want 5", got)
	}
	pages[2] = testPage(9)
	pos5 := pagewire.Pos{TXID: 5, Checksum: checksumOf(pages, 3)}
	now := readState(t, dir, "app.db")
	wantPos(t, "new WAL", openCut(t, dir, "app.db", diskState{db: checkpointed.db, wal: now.wal, meta: now.meta}), pos5)
	wantPos(t, "new WAL, meta at the unlink", openCut(t, dir, "app.db", diskState{db: checkpointed.db, wal: now.wal, meta: after.meta}), pos5)
	wantPos(t, "old WAL back, new meta", openCut(t, dir, "app.db", diskState{db: checkpointed.db, wal: before.wal, meta: now.meta}), pos4)
	wantPos(t, "no WAL, new meta", openCut(t, dir, "app.db", diskState{db: checkpointed.db, meta: now.meta}), pos4)

	// A kill -9 after the unlink, a restart that finds no WAL and records
	// its position, then a power cut that undoes the unlink: the old WAL
	// is still recognised.
	s2 := openCutStore(t, dir, "app.db", diskState{db: checkpointed.db, meta: after.meta})
	restarted := readState(t, s2.dir, "app.db")
	wantPos(t, "unlink undone after a restart", openCut(t, s2.dir, "app.db", diskState{db: checkpointed.db, wal: before.wal, meta: restarted.meta}), pos4)
}

// SQLite restarts the WAL after a checkpoint: a new header with new salts
// over the old frames. The meta records the old generation's end durably
// before the header is written, and names that generation as the new
// one's start, so that either header may be on disk.
func TestPowerCut_WALRestart(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	w, pos4, pages := threeCommits(t, s)
	before := readState(t, dir, "app.db")
	checkpointTo(t, s, "app.db", pages)
	checkpointed := readState(t, dir, "app.db")
	endMeta := checkpointed.meta // what syncMetaEnd writes: the generation's end
	w.restart(2)
	end := walMark{Salt1: 1, Salt2: 7, Frame: 5, Pos: pos4}
	if got := durableEnd(s, "app.db"); got != end {
		t.Fatalf("durable meta records %+v before the new header, want %+v", got, end)
	}
	if got := metaEnd(t, endMeta); got != end {
		t.Fatalf("meta file recorded %+v, want %+v", got, end)
	}
	headerOnly := readState(t, dir, "app.db")
	w.frame(2, testPage(5), 3)
	oneCommit := readState(t, dir, "app.db")
	w.frame(3, testPage(6), 3)
	twoCommits := readState(t, dir, "app.db")
	pages[2] = testPage(5)
	pos5 := pagewire.Pos{TXID: 5, Checksum: checksumOf(pages, 3)}
	pages[3] = testPage(6)
	pos6 := pagewire.Pos{TXID: 6, Checksum: checksumOf(pages, 3)}

	db := checkpointed.db
	wantPos(t, "new header lost", openCut(t, dir, "app.db", diskState{db: db, wal: before.wal, meta: endMeta}), pos4)
	wantPos(t, "new header durable, no frames", openCut(t, dir, "app.db", diskState{db: db, wal: headerOnly.wal, meta: endMeta}), pos4)
	wantPos(t, "new generation, meta at the old end", openCut(t, dir, "app.db", diskState{db: db, wal: twoCommits.wal, meta: endMeta}), pos6)
	wantPos(t, "new generation, its own meta", openCut(t, dir, "app.db", diskState{db: db, wal: twoCommits.wal, meta: twoCommits.meta}), pos6)
	// The meta's later writes may reach the disk before the WAL's (the
	// kernel writes pages back in any order): then the WAL holds the old
	// generation, or ends before the meta's frame.
	wantPos(t, "meta of the new generation, old WAL", openCut(t, dir, "app.db", diskState{db: db, wal: before.wal, meta: twoCommits.meta}), pos4)
	wantPos(t, "meta ahead of the WAL", openCut(t, dir, "app.db", diskState{db: db, wal: oneCommit.wal, meta: twoCommits.meta}), pos5)
}

// A damaged or missing meta file leaves the TXID unknown: the database
// opens refusing writes, with an error that names the fix, and the damaged
// file is not overwritten with a guess.
func TestStore_DamagedMetaRefusesWrites(t *testing.T) {
	for name, damage := range map[string]func(b []byte) []byte{
		"flipped byte": func(b []byte) []byte { b[10] ^= 1; return b },
		"truncated":    func(b []byte) []byte { return b[:20] },
		"empty":        func(b []byte) []byte { return b[:0] },
		"missing":      func([]byte) []byte { return nil },
		"garbage":      func(b []byte) []byte { return []byte(strings.Repeat("x", len(b))) },
		"TXID 0": func(b []byte) []byte {
			m, _ := decodeMeta(b)
			m.Pos.TXID = 0
			return m.encode()
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTestStore(t, dir)
			_, pos4, _ := threeCommits(t, s)
			s.Close()
			st := readState(t, dir, "app.db")
			st.meta = damage(st.meta)
			s2 := openCutStore(t, dir, "app.db", st)
			di, _ := s2.Database("app.db")
			if !errors.Is(di.Err, pagewire.ErrCorrupt) || !strings.Contains(di.Err.Error(), "pagewire import -name app.db") {
				t.Fatalf("Err=%v, want ErrCorrupt naming the fix", di.Err)
			}
			// The TXID goes on from the transaction log's, not from 1.
			if di.Pos.TXID != pos4.TXID {
				t.Errorf("TXID=%d, want %d (from the transaction log)", di.Pos.TXID, pos4.TXID)
			}
			if _, _, err := s2.WriteAt(mustLookup(t, s2, "app.db-wal").ID, testPage(1)[:24], 32+3*(24+defaultPageSize), App); !errors.Is(err, pagewire.ErrCorrupt) {
				t.Fatalf("write err=%v, want ErrCorrupt", err)
			}
			// Closing does not record the guess: it is damaged next time too.
			dst := s2.dir
			s2.Close()
			s3 := openTestStore(t, dst)
			if di, _ := s3.Database("app.db"); !errors.Is(di.Err, pagewire.ErrCorrupt) {
				t.Fatalf("after a restart Err=%v, want ErrCorrupt", di.Err)
			}
		})
	}
}

// A database whose creation a crash cut off (its first page written, its
// meta not) opens at TXID 1.
func TestStore_CreationCutOffOpensAtTXID1(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	s.Create("app.db", App)
	s.Close()
	st := readState(t, dir, "app.db")
	st.meta = nil
	di := openCut(t, dir, "app.db", st)
	if di.Pos.TXID != 1 || di.Err != nil {
		t.Fatalf("pos=%v err=%v, want TXID 1 and no error", di.Pos, di.Err)
	}
}

// A -wal created on the mount has its directory entry made durable by its
// first fsync.
func TestStore_WALFsyncSyncsItsFolderOnce(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	fi, err := s.Create("app.db-wal", App)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := s.db("app.db")
	unsynced := func() bool { d.mu.Lock(); defer d.mu.Unlock(); return d.walDirUnsynced }
	if !unsynced() {
		t.Fatal("a new -wal's entry is taken as durable")
	}
	if err := s.Sync(fi.ID, App); err != nil {
		t.Fatal(err)
	}
	if unsynced() {
		t.Fatal("the -wal's fsync did not sync its folder")
	}
}

// The apply worker's commit that does not end at the checksum it announced
// is refused: nothing counts, readers see nothing new, its commit frame is
// zeroed so that SQLite's recovery cannot bring it back, and the copy is
// marked for a re-seed.
func TestStore_AppliedCommitWithAnotherChecksumIsRefused(t *testing.T) {
	for _, single := range []bool{true, false} {
		dir := t.TempDir()
		s := openTestStore(t, dir)
		s.Create("app.db", App)
		before, _ := s.Position("app.db")
		txns := expectTxns(3, 4)
		if single {
			txns = txns[:1]
		}
		done, err := s.ExpectCommit("app.db", txns)
		if err != nil {
			t.Fatal(err)
		}
		w := newWALBuilder(t, s, "app.db", 1)
		w.by = Applier
		// Page 2 as none of the transactions left it.
		if _, err := w.tryFrame(2, testPage(9), 2); !errors.Is(err, pagewire.ErrCorrupt) {
			t.Fatalf("single=%v: commit err=%v, want ErrCorrupt", single, err)
		}
		done()
		if pos, _ := s.Position("app.db"); pos != before {
			t.Fatalf("single=%v: pos=%v after a refused commit, want %v", single, pos, before)
		}
		if vis, _ := s.Visible("app.db"); vis != before {
			t.Fatalf("single=%v: visible=%v, want %v", single, vis, before)
		}
		if err := s.Damaged("app.db"); !errors.Is(err, pagewire.ErrCorrupt) {
			t.Fatalf("single=%v: Damaged=%v, want ErrCorrupt", single, err)
		}
		// The frame header on disk is zeroed.
		st := readState(t, dir, "app.db")
		if hdr := st.wal[32 : 32+24]; !bytes.Equal(hdr, make([]byte, 24)) {
			t.Fatalf("single=%v: refused commit frame header is %x, want zeros", single, hdr)
		}
		// A restart does not count it either.
		if di := openCut(t, dir, "app.db", st); di.Pos != before {
			t.Fatalf("single=%v: after a restart pos=%v, want %v", single, di.Pos, before)
		}
		// The apply worker writes the right frames again over it: they
		// count, as the primary's transactions.
		w.next, w.enc = 1, w.enc0()
		done, err = s.ExpectCommit("app.db", txns)
		if err != nil {
			t.Fatal(err)
		}
		last := txns[len(txns)-1]
		if got := w.frame(2, last.Pages[0].Data, 2); got != last.TXID {
			t.Fatalf("single=%v: TXID=%d after the right frames, want %d", single, got, last.TXID)
		}
		done()
		if pos, _ := s.Position("app.db"); pos.Checksum != last.PostChecksum {
			t.Fatalf("single=%v: pos=%v, want checksum %016x", single, pos, last.PostChecksum)
		}
	}
}

// A commit written a part at a time announces its position alone
// (ExpectPosition): it counts as one transaction, logged from its frames,
// if it ends there, and is refused otherwise.
func TestStore_ExpectPositionChecksAPartWiseCommit(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	txns := expectTxns(3)
	want := pagewire.Pos{TXID: 2, Checksum: txns[0].PostChecksum}
	done, err := s.ExpectPosition("app.db", want)
	if err != nil {
		t.Fatal(err)
	}
	w := newWALBuilder(t, s, "app.db", 1)
	w.by = Applier
	if _, err := w.tryFrame(2, testPage(4), 2); !errors.Is(err, pagewire.ErrCorrupt) {
		t.Fatalf("wrong pages: err=%v, want ErrCorrupt", err)
	}
	done()
	w.next, w.enc = 1, w.enc0()
	if done, err = s.ExpectPosition("app.db", want); err != nil {
		t.Fatal(err)
	}
	if got := w.frame(2, testPage(3), 2); got != 2 {
		t.Fatalf("TXID=%d, want 2", got)
	}
	done()
	if pos, _ := s.Position("app.db"); pos != want {
		t.Fatalf("pos=%v, want %v", pos, want)
	}
	r, err := s.dbs["app.db"].txlog.readFrom(2)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got, ok, err := r.Next(); err != nil || !ok || got.PostChecksum != want.Checksum || !bytes.Equal(got.Pages[0].Data, testPage(3)) {
		t.Fatalf("logged %+v ok=%v err=%v, want the transaction from its frames", got.TXID, ok, err)
	}
	if _, err := s.ExpectPosition("app.db", pagewire.Pos{}); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("TXID 0: err=%v, want ErrInvalidArgument", err)
	}
}

// A replica whose position the transaction log cannot prove to be the
// primary's history (the records after it are gone) gets a snapshot
// marked diverged: it keeps its copy aside, since it may hold transactions
// the primary never had.
func TestFeed_UnprovenReplicaIsDiverged(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 1)
	var at []pagewire.Pos
	for i := range 4 {
		w.frame(2, testPage(byte(10+i)), 2)
		pos, _ := s.Position("app.db")
		at = append(at, pos) // TXIDs 2..5
	}
	d, _ := s.db("app.db")
	if next, reason, diverged := d.streamStart(at[1]); next != 4 || reason != "" || diverged {
		t.Fatalf("replica at TXID 3 with the log: next=%d reason=%q diverged=%v, want 4 and no snapshot", next, reason, diverged)
	}
	// Another history at TXID 3: diverged, as before.
	other := pagewire.Pos{TXID: 3, Checksum: at[1].Checksum ^ 2}
	if _, reason, diverged := d.streamStart(other); reason == "" || !diverged {
		t.Fatalf("other history: reason=%q diverged=%v, want a diverged snapshot", reason, diverged)
	}

	// The log loses its records (an import, retention): the replica's
	// copy can no longer be proven, whichever it is.
	if err := d.txlog.reset(); err != nil {
		t.Fatal(err)
	}
	for _, have := range []pagewire.Pos{at[1], other, {TXID: 4, Checksum: 1<<63 | 77}} {
		if _, reason, diverged := d.streamStart(have); !diverged || !strings.Contains(reason, "cannot be proven") {
			t.Fatalf("replica at %v without the log: reason=%q diverged=%v, want a diverged snapshot", have, reason, diverged)
		}
	}
	// A replica at the primary's position needs nothing.
	if next, reason, diverged := d.streamStart(at[3]); next != 6 || reason != "" || diverged {
		t.Fatalf("replica at the primary's position: next=%d reason=%q diverged=%v", next, reason, diverged)
	}
}

// The kernel may split the apply worker's write of a frame in two and the
// writer then writes the rest again: a refused commit stays refused for
// the rest, and counts once its frames are written again from the start.
func TestStore_RefusedAppliedCommitStaysRefusedForTheRestOfASplitWrite(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	txns := expectTxns(3)
	w := newWALBuilder(t, s, "app.db", 1)
	w.by = Applier
	start := w.enc
	write := func(page []byte) (pagewire.TXID, error) {
		enc := start
		frame := enc.AppendFrame(nil, 2, 2, page)
		off := wal.FrameOffset(1, defaultPageSize)
		cut := 4096 - off // at the file's first 4 KiB boundary
		if _, _, err := s.WriteAt(w.id, frame[:cut], off, Applier); err != nil {
			return 0, err
		}
		_, txid, err := s.WriteAt(w.id, frame[cut:], off+cut, Applier)
		if err != nil {
			// The writer writes the rest again.
			_, txid, err = s.WriteAt(w.id, frame[cut:], off+cut, Applier)
		}
		return txid, err
	}
	done, err := s.ExpectCommit("app.db", txns)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := write(testPage(9)); !errors.Is(err, pagewire.ErrCorrupt) {
		t.Fatalf("the rest of a refused write: err=%v, want ErrCorrupt", err)
	}
	done()
	if done, err = s.ExpectCommit("app.db", txns); err != nil {
		t.Fatal(err)
	}
	if txid, err := write(testPage(3)); err != nil || txid != 2 {
		t.Fatalf("the right frame written again: TXID=%d err=%v, want 2", txid, err)
	}
	done()
}

// A replica's apply worker commits several of the primary's transactions
// at once; a power cut that keeps its WAL (a checkpoint fsynced it) but
// loses the meta file's later records still counts each such commit as
// the transactions it stood for, by the transaction log's checksums,
// which every WAL fsync makes durable with it. Counted as one transaction
// each, the copy would sit at TXIDs of the primary's with other checksums.
func TestPowerCut_ReplicaGroupedCommitsCountedByTheLog(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 1)
	w.by = Applier
	atStart := readState(t, dir, "app.db") // the meta durable at the generation's start
	txns := expectTxns(3, 4, 5, 6, 7)
	for _, group := range [][]pagewire.Txn{txns[:3], txns[3:]} {
		done, err := s.ExpectCommit("app.db", group)
		if err != nil {
			t.Fatal(err)
		}
		last := group[len(group)-1]
		if got := w.frame(2, last.Pages[0].Data, 2); got != last.TXID {
			t.Fatalf("TXID=%d, want %d", got, last.TXID)
		}
		done()
	}
	want := pagewire.Pos{TXID: txns[4].TXID, Checksum: txns[4].PostChecksum}
	if pos, _ := s.Position("app.db"); pos != want {
		t.Fatalf("pos=%v, want %v", pos, want)
	}
	// The WAL as written, the meta file as at the generation's start.
	st := readState(t, dir, "app.db")
	st.meta = atStart.meta
	wantPos(t, "grouped commits after a cut", openCut(t, dir, "app.db", st), want)

	// Without the log's records (a log that lost them) each commit is
	// one transaction, as before: the copy is found diverged later.
	if err := os.RemoveAll(filepath.Join(dir, "dbs", "app.db", txlogDirName)); err != nil {
		t.Fatal(err)
	}
	if di := openCut(t, dir, "app.db", st); di.Pos.TXID != 3 || di.Pos.Checksum != want.Checksum {
		t.Fatalf("without the log: pos=%v, want TXID 3 (one per commit) at checksum %016x", di.Pos, want.Checksum)
	}
}

// A power cut can keep transaction log records whose WAL frames it lost
// (the two fsyncs run side by side): the restarted node drops them, so
// that no replica is ever sent a transaction that is not in its history,
// and logs the next commit of that TXID in their place.
func TestPowerCut_LogTailAheadOfTheWALIsDropped(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 1)
	w.frame(2, testPage(10), 2)
	atTwo, _ := s.Position("app.db")
	st := readState(t, dir, "app.db") // WAL and meta with TXID 2
	w.frame(2, testPage(11), 2)       // TXID 3: its frames are lost, its record kept
	w.frame(2, testPage(12), 2)       // TXID 4 likewise

	s2 := openCutStore(t, dir, "app.db", st)
	if di, _ := s2.Database("app.db"); di.Pos != atTwo {
		t.Fatalf("pos=%v, want %v", di.Pos, atTwo)
	}
	d, _ := s2.db("app.db")
	if last := d.txlog.lastTXID(); last != 2 {
		t.Fatalf("log ends at TXID %d after the cut, want 2", last)
	}

	// A new TXID 3 is logged and streamed, not the lost one.
	w2 := newWALBuilder(t, s2, "app.db", 2)
	w2.frame(2, testPage(20), 2)
	if err := s2.Sync(w2.id, App); err != nil { // SQLite's fsync under FULL: streamable
		t.Fatal(err)
	}
	f, err := s2.Feed("app.db", pagewire.Pos{TXID: 1, Checksum: checksumOf(map[uint32][]byte{1: newDatabasePage(defaultPageSize)}, 1)}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	item, err := f.Next(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(item.Txns) != 2 || !bytes.Equal(item.Txns[1].Pages[0].Data, testPage(20)) {
		t.Fatalf("streamed %d transactions, want TXIDs 2 and the new 3", len(item.Txns))
	}
}

// A WAL fsync makes the transaction log durable with it, and a roll to a
// new segment syncs the one it leaves and, at the next sync, the folder.
func TestTxlog_SyncCoversRolls(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "txlog")
	l, err := openTxlog(dir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	l.segmentMax = 1 // every record rolls
	for _, txn := range expectTxns(3, 4, 5) {
		if err := l.append(txn); err != nil {
			t.Fatal(err)
		}
	}
	if l.dirRolls == l.dirSynced {
		t.Fatalf("rolls=%d synced=%d: new segments' names are not marked for the folder's sync", l.dirRolls, l.dirSynced)
	}
	if err := l.sync(); err != nil {
		t.Fatal(err)
	}
	if l.dirRolls != l.dirSynced {
		t.Fatalf("after sync: rolls=%d synced=%d", l.dirRolls, l.dirSynced)
	}
	// Headers chain across segments.
	if hs := l.headersAfter(2, 10); len(hs) != 2 || hs[0].TXID != 3 || hs[1].TXID != 4 || hs[0].PostChecksum != hs[1].PreChecksum {
		t.Fatalf("headers after 2: %+v", hs)
	}
	// Truncation across segments.
	if n, err := l.truncateAfter(2); err != nil || n != 2 || l.lastTXID() != 2 {
		t.Fatalf("truncateAfter(2): dropped %d, err %v, last %d; want 2, nil, 2", n, err, l.lastTXID())
	}
}

// A replica's apply worker announces every commit. One whose announcement
// was withdrawn before its write landed (the apply was cancelled when the
// stream broke) is refused: counted as one transaction it would put the
// primary's later pages under an earlier TXID. On the primary, the commits
// the worker writes for a halt lock's holder are not announced, and count.
func TestStore_UnannouncedAppliedCommitIsRefusedOnAReplica(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 1)
	w.by = Applier
	s.SetRole(pagewire.RoleReplica, pagewire.ReadOnlyError{Primary: "node1"}, 2)
	before, _ := s.Position("app.db")
	txns := expectTxns(3, 4, 5)

	// Announced, then withdrawn before the frames land.
	done, err := s.ExpectCommit("app.db", txns)
	if err != nil {
		t.Fatal(err)
	}
	done()
	last := txns[len(txns)-1]
	if _, err := w.tryFrame(2, last.Pages[0].Data, 2); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("unannounced commit: err=%v, want ErrInvalidArgument", err)
	}
	if pos, _ := s.Position("app.db"); pos != before {
		t.Fatalf("pos=%v after a refused commit, want %v", pos, before)
	}
	st := readState(t, dir, "app.db")
	if hdr := st.wal[32 : 32+24]; !bytes.Equal(hdr, make([]byte, 24)) {
		t.Fatalf("refused commit frame header is %x, want zeros", hdr)
	}
	if err := s.Damaged("app.db"); err != nil {
		t.Fatalf("Damaged=%v: a refused unannounced commit leaves the copy as it was", err)
	}

	// Announced again, the same frames count as the three transactions.
	w.next, w.enc = 1, w.enc0()
	if done, err = s.ExpectCommit("app.db", txns); err != nil {
		t.Fatal(err)
	}
	if got := w.frame(2, last.Pages[0].Data, 2); got != last.TXID {
		t.Fatalf("TXID=%d after the announced frames, want %d", got, last.TXID)
	}
	done()

	// On the primary an unannounced commit of the worker counts, as one.
	s.SetRole(pagewire.RolePrimary, pagewire.ReadOnlyError{}, 3)
	if got := w.frame(2, testPage(6), 3); got != last.TXID+1 {
		t.Fatalf("TXID=%d after the primary's worker commit, want %d", got, last.TXID+1)
	}
}

// A checkpoint copies pages of later commits into the database file, so
// that replaying a WAL from an older meta record goes through checksums
// the primary never had: a replica's grouped commits could then not be
// matched with the log's records and were counted as one transaction each,
// leaving the copy at a TXID whose checksum is not the primary's (kept
// aside as diverged, the log's later records dropped). The meta file is
// made durable at the WAL's counted end before a checkpoint's first write
// to the database file, so that recovery only replays commits after the
// pages the file holds.
func TestPowerCut_ReplicaGroupedCommitsAfterACheckpoint(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 1)
	w.by = Applier

	// TXID 2 makes a database of 3 pages, checkpointed; the WAL restarts.
	pages := map[uint32][]byte{1: page1(3), 2: testPage(1), 3: testPage(2)}
	first := pagewire.Txn{TXID: 2, PreChecksum: checksumOf(map[uint32][]byte{1: newDatabasePage(defaultPageSize)}, 1), PostChecksum: checksumOf(pages, 3),
		PageSize: defaultPageSize, PageCount: 3, Pages: []pagewire.Page{{Pgno: 1, Data: page1(3)}, {Pgno: 2, Data: testPage(1)}, {Pgno: 3, Data: testPage(2)}}}
	done, err := s.ExpectCommit("app.db", []pagewire.Txn{first})
	if err != nil {
		t.Fatal(err)
	}
	w.frame(1, page1(3), 0)
	w.frame(2, testPage(1), 0)
	if got := w.frame(3, testPage(2), 3); got != 2 {
		t.Fatalf("TXID=%d, want 2", got)
	}
	done()
	checkpointTo(t, s, "app.db", pages)
	w.restart(2)
	atRestart := readState(t, dir, "app.db") // the meta durable there

	// Two grouped commits: TXIDs 3-5 set page 2, 6-7 page 3.
	txns := append(pageTxns(pages, 3, 2, 3, 4, 5), pageTxns(pages, 6, 3, 6, 7)...)
	for _, group := range [][]pagewire.Txn{txns[:3], txns[3:]} {
		done, err := s.ExpectCommit("app.db", group)
		if err != nil {
			t.Fatal(err)
		}
		last := group[len(group)-1]
		if got := w.frame(last.Pages[0].Pgno, last.Pages[0].Data, 3); got != last.TXID {
			t.Fatalf("TXID=%d, want %d", got, last.TXID)
		}
		done()
	}
	want := pagewire.Pos{TXID: 7, Checksum: txns[4].PostChecksum}

	// Before a checkpoint, the meta of the restart counts them by the log.
	st := readState(t, dir, "app.db")
	st.meta = atRestart.meta
	wantPos(t, "grouped commits, meta at the restart", openCut(t, dir, "app.db", st), want)

	// A checkpoint copies page 3 of TXID 7 into the database file (from
	// the restart's record, the first group would be replayed through a
	// checksum the primary never had, and counted as one): the meta file
	// is durable at TXID 7 before it does.
	if got := durableEnd(s, "app.db"); got.Pos.TXID != 2 {
		t.Fatalf("durable meta at %v before the checkpoint, want TXID 2", got.Pos)
	}
	checkpointTo(t, s, "app.db", map[uint32][]byte{3: testPage(7)})
	if got := durableEnd(s, "app.db"); got.Pos != want {
		t.Fatalf("durable meta at %v after the checkpoint's first write, want %v", got.Pos, want)
	}
	st = readState(t, dir, "app.db")
	wantPos(t, "grouped commits after a checkpoint", openCut(t, dir, "app.db", st), want)
}

// pageTxns are transactions of a 3-page database, from TXID first on, each
// setting page pgno to testPage(fill), from the state pages, which they
// update.
func pageTxns(pages map[uint32][]byte, first pagewire.TXID, pgno uint32, fills ...byte) []pagewire.Txn {
	prev := checksumOf(pages, 3)
	var txns []pagewire.Txn
	for i, f := range fills {
		pages[pgno] = testPage(f)
		post := checksumOf(pages, 3)
		txns = append(txns, pagewire.Txn{TXID: first + pagewire.TXID(i), PreChecksum: prev, PostChecksum: post, PageSize: defaultPageSize, PageCount: 3,
			Pages: []pagewire.Page{{Pgno: pgno, Data: testPage(f)}}})
		prev = post
	}
	return txns
}

// A replica whose recovery miscounted its TXID (several of the primary's
// transactions counted as one) asks at a TXID whose checksum is not the
// primary's, but its copy is the primary's as of another TXID: it holds
// nothing the primary lacks, so it is re-seeded without being kept aside.
// A checksum the log never ended at is still diverged.
func TestFeed_MiscountedReplicaIsNotDiverged(t *testing.T) {
	s := openTestStore(t, t.TempDir())
	s.Create("app.db", App)
	w := newWALBuilder(t, s, "app.db", 1)
	var at []pagewire.Pos
	for i := range 4 {
		w.frame(2, testPage(byte(10+i)), 2)
		pos, _ := s.Position("app.db")
		at = append(at, pos) // TXIDs 2..5
	}
	d, _ := s.db("app.db")
	for _, c := range []struct {
		what string
		have pagewire.Pos
		at   pagewire.TXID
	}{
		{"undercounted", pagewire.Pos{TXID: 3, Checksum: at[3].Checksum}, 5},
		{"undercounted, at the primary's TXID", pagewire.Pos{TXID: 5, Checksum: at[1].Checksum}, 3},
		{"overcounted, ahead", pagewire.Pos{TXID: 9, Checksum: at[2].Checksum}, 4},
	} {
		next, reason, diverged := d.streamStart(c.have)
		if next != 0 || diverged || !strings.Contains(reason, fmt.Sprintf("is the primary's at TXID %d", c.at)) {
			t.Errorf("%s: next=%d reason=%q diverged=%v, want a snapshot, not diverged, naming TXID %d", c.what, next, reason, diverged, c.at)
		}
	}
	for _, have := range []pagewire.Pos{{TXID: 3, Checksum: at[1].Checksum ^ 2}, {TXID: 9, Checksum: 1<<63 | 77}} {
		if _, reason, diverged := d.streamStart(have); !diverged {
			t.Errorf("replica at %v: reason=%q diverged=%v, want diverged", have, reason, diverged)
		}
	}
}

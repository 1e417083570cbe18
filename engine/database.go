package engine

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/wal"
)

// Names of a database's files inside its folder under data.dir/dbs.
const (
	databaseFileName = "database"
	walFileName      = "wal"
	metaFileName     = "meta"
	txlogDirName     = "txlog"
)

// database is one SQLite database: its files under data.dir, the -shm in
// memory, and its position.
type database struct {
	name string
	dir  string
	log  *slog.Logger

	// mu guards every field below. Reads of file data take it shared;
	// writes, truncations and deletions take it exclusive.
	mu       sync.RWMutex
	db       *os.File
	wal      *os.File // nil while there is no -wal
	metaFile *os.File
	shm      *shmBuf // nil while there is no -shm
	ids      fileIDs
	modTime  [pagewire.FilePrimary + 1]time.Time
	pageSize uint32
	pos      pagewire.Pos
	pages    []uint64 // per-page checksums, index pgno-1; len = pages in the database
	w        walState
	// gen0 is where the current WAL generation began (the meta's Prev);
	// lastGen, while there is no WAL generation (w.ok unset), is the end
	// of the last one, which the meta goes on recording: a WAL whose
	// deletion did not become durable comes back with it after a power
	// cut. metaSynced is the generation's end the meta file durably
	// records (syncMetaEnd).
	gen0, lastGen, metaSynced walMark
	// walDirUnsynced is set when the -wal was created and its directory
	// entry is not durable yet: the WAL's next fsync syncs the folder too.
	walDirUnsynced bool
	handles        int    // open file handles on the mount
	commits        uint64 // commits counted by writes since the node started
	frameBuf       []byte // scratch for one WAL frame, used under mu
	startupErr     error  // a checksum mismatch found when the database was opened
	metaLost       bool   // the meta file was missing or damaged at startup: the TXID is a guess
	txlog          *txlog
	logTxns        bool // log commits to txlog; off during startup recovery and snapshots
	// ckptMarked is set once a checkpoint's first database write made the
	// meta durable at the WAL's counted end (markCheckpoint), until the
	// database file's fsync.
	ckptMarked bool
	// replayLog, during startup recovery, holds the logged headers of the
	// transactions after replayFrom: a commit that ends at one of their
	// checksums stands for every transaction up to it (an apply worker's
	// commit of several of the primary's), not for one.
	replayLog  []pagewire.Txn
	replayFrom pagewire.TXID
	expect     *expectedCommit // what the apply worker announced its next commit stands for (ExpectCommit)
	// halt is the halt lock a client holds through this node while it is
	// a replica; read without mu.
	halt atomic.Pointer[localHalt]
	// hidden is set while the apply worker's last commit is not visible
	// to readers yet (commitRule.hidden); visible is then the position
	// readers see.
	hidden  bool
	visible pagewire.Pos
	changed chan struct{} // closed and replaced on each commit
	deleted bool          // set once the database is deleted; its files are closed
	// durable decides what replicas may be sent (durable.go).
	durable durableState
	// acks are the replicas' acknowledgements (syncrep.go); it has its
	// own lock, never taken before mu.
	acks replicaAcks
	// views are the open read views (view.go): a write to the database
	// file or the -wal first saves what it overwrites of them.
	views []*view
	// streamTxnBytes: a commit of more bytes of pages than this is not
	// read into memory for the log but streamed from the WAL (logFrames).
	streamTxnBytes int
}

// commitRule says what the commits a write completes stand for. The
// write's caller decides it (Store.WriteAt for the mount's writes,
// recoverWAL and Verify for replays) and it is passed down to applyCommit.
type commitRule struct {
	// forwardTo, if set, commits each transaction on the primary before it
	// counts here: the write of a client holding the halt lock through
	// this replica. The database's mu is held, exclusively, for the round
	// trip, so that no other write lands meanwhile.
	forwardTo *localHalt
	// hidden: the node's own apply worker wrote it. Its commits are not
	// visible to readers until the worker publishes the wal-index header
	// after the write returns, which the replicator reports (markVisible).
	hidden bool
	// announced is what the apply worker announced that the next commit
	// stands for: several of the primary's transactions at once
	// (ExpectCommit). Nil: a commit is one new transaction.
	announced *expectedCommit
	// mustAnnounce: a commit without an announcement is refused (a
	// replica's apply worker announces each of its commits).
	mustAnnounce bool
}

// fileIDs are the ids of a database's files; 0 means the file does not exist.
type fileIDs struct {
	db, wal, shm, pos uint64
}

// walState follows the current WAL generation.
type walState struct {
	hdr         wal.Header
	ok          bool   // a valid header has been written; frames may follow
	commitFrame uint32 // last frame of the last counted commit
	ck1, ck2    uint32 // running checksum at commitFrame
	// index is the newest committed frame of each page in the WAL, by
	// page number (index[pgno-1]; 0: not in the WAL). Slices indexed by
	// page take 12 bytes a page where maps took about 56: a VACUUM puts
	// every page of the database in the WAL.
	index []uint32
	// versions holds, per page in the WAL, the checksums of its committed
	// frames: a checkpoint may copy any of them into the database file.
	// The first is versions[pgno-1] (0: none), any later ones are in
	// moreVersions.
	versions     []uint64
	moreVersions map[uint32][]uint64
	pending      []pendingFrame // frames scanned past commitFrame, not yet committed

	// SQLite spills the pages of a large transaction into the WAL before
	// its commit. If such a page changes again, its frame's page is
	// overwritten in place, the commit frame is appended, and only then
	// are the checksums rewritten (24-byte header writes) from the first
	// overwritten frame to the commit frame (wal.c walRewriteChecksums).
	// The commit validates only once that last header lands.
	appended     uint32 // last frame appended (header, then page) since commitFrame
	overwritten  uint32 // first frame whose page was overwritten in place since commitFrame; 0 if none
	awaitRewrite uint32 // a commit frame written while checksums before it were stale; 0 if none
	// refused is a commit frame whose write failed, and refusedErr why: a
	// write that completes it again (SQLite writes the rest of a write
	// the kernel split) fails the same way.
	refused       uint32
	refusedErr    error
	refusedHeader bool // refused at the checksum rewrite of its header
	// zeroed is the frame whose header the refusal of refused zeroed, or
	// 0: the rest of the refused write may write that header again (the
	// kernel split the write, and the writer retries its rest), so it is
	// zeroed again each time.
	zeroed uint32
}

// expectedCommit is a replica's announcement that the next commit applies
// several of the primary's transactions at once.
type expectedCommit struct {
	pos  pagewire.Pos   // the position after them
	txns []pagewire.Txn // them, for the transaction log; nil in recovery
}

// localHalt is a halt lock a client holds through this node while it is a
// replica.
type localHalt struct {
	lock pagewire.HaltLock
	// forward commits a transaction on the primary; an error means it did
	// not commit there.
	forward func(pagewire.Txn) error
}

// active reports whether h is held and not expired.
func (h *localHalt) active() bool { return h != nil && time.Now().Before(h.lock.Expires) }

// halted reports whether a client holds the halt lock through this node.
func (d *database) halted() bool { return d.halt.Load().active() }

// maxKeptPending bounds the pending frames' slice kept for reuse after a
// commit: a big transaction's is let go.
const maxKeptPending = 1 << 16

// grow makes room in index and versions for pages 1..n.
func (w *walState) grow(n int) {
	if n > len(w.index) {
		w.index = append(w.index, make([]uint32, n-len(w.index))...)
	}
	if n > len(w.versions) {
		w.versions = append(w.versions, make([]uint64, n-len(w.versions))...)
	}
}

// clearIndex empties index and versions, keeping their room: a new WAL
// generation starts with no page in the WAL.
func (w *walState) clearIndex() {
	clear(w.index)
	clear(w.versions)
}

// frameOf returns the newest committed frame of page pgno, if the WAL has
// one.
func (w *walState) frameOf(pgno uint32) (uint32, bool) {
	if pgno == 0 || int(pgno) > len(w.index) || w.index[pgno-1] == 0 {
		return 0, false
	}
	return w.index[pgno-1], true
}

// addVersion records that a committed frame of page pgno (within grow's
// room) has checksum ck.
func (w *walState) addVersion(pgno uint32, ck uint64) {
	switch v := &w.versions[pgno-1]; {
	case *v == 0:
		*v = ck
	case *v != ck:
		if w.moreVersions == nil {
			w.moreVersions = map[uint32][]uint64{}
		}
		w.moreVersions[pgno] = append(w.moreVersions[pgno], ck)
	}
}

// hasVersion reports whether a committed frame of page pgno has checksum
// ck.
func (w *walState) hasVersion(pgno uint32, ck uint64) bool {
	if pgno == 0 || int(pgno) > len(w.versions) || w.versions[pgno-1] == 0 {
		return false
	}
	return w.versions[pgno-1] == ck || slices.Contains(w.moreVersions[pgno], ck)
}

type pendingFrame struct {
	pgno     uint32
	checksum uint64
	frame    uint32
}

// createDatabase makes a new database in dir: an empty one-page database in
// WAL mode, at TXID 1.
func createDatabase(dir, name string, pageSize uint32, o dbOptions) (*database, error) {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create database folder: %w", err)
	}
	page := newDatabasePage(pageSize)
	if err := writeFileSync(filepath.Join(dir, databaseFileName), page); err != nil {
		return nil, err
	}
	m := meta{Pos: pagewire.Pos{TXID: 1, Checksum: pageChecksum(1, page) | checksumFlag}, PageSize: pageSize}
	if err := writeFileSync(filepath.Join(dir, metaFileName), m.encode()); err != nil {
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		return nil, err
	}
	return openDatabase(dir, name, o)
}

// dbOptions are what every database of a store shares.
type dbOptions struct {
	log       *slog.Logger
	newID     func() uint64
	retention time.Duration // how long the transaction log keeps records
	// streamTxnBytes: a commit of more bytes of pages than this is
	// streamed from the WAL to the transaction log (StoreConfig).
	streamTxnBytes int
}

// openDatabase opens a database folder, recomputes its checksum from its
// pages and WAL, counts commits the meta file has not recorded, and reports a
// checksum that disagrees with the recorded one.
func openDatabase(dir, name string, o dbOptions) (*database, error) {
	log, newID := o.log, o.newID
	d := &database{name: name, dir: dir, log: log.With(logkey.DB, name), changed: make(chan struct{}), streamTxnBytes: o.streamTxnBytes}
	var err error
	if d.db, err = os.OpenFile(filepath.Join(dir, databaseFileName), os.O_RDWR, 0); err != nil {
		return nil, fmt.Errorf("open database %q: %w", name, err)
	}
	if d.txlog, err = openTxlog(filepath.Join(dir, txlogDirName), o.retention); err != nil {
		d.closeFiles()
		return nil, fmt.Errorf("open database %q: %w", name, err)
	}
	if err := d.load(); err != nil {
		d.closeFiles()
		return nil, fmt.Errorf("open database %q: %w", name, err)
	}
	if d.metaLost {
		// A guess that keeps TXIDs going forward: the newest one logged.
		d.pos.TXID = max(d.pos.TXID, d.txlog.lastTXID())
	} else if d.startupErr == nil {
		if err := d.dropUnrecoveredLog(); err != nil {
			d.closeFiles()
			return nil, fmt.Errorf("open database %q: %w", name, err)
		}
	}
	d.logTxns = true
	d.ids = fileIDs{db: newID(), pos: newID()}
	if d.wal != nil {
		d.ids.wal = newID()
	}
	now := time.Now()
	for i := range d.modTime {
		d.modTime[i] = now
	}
	return d, nil
}

func (d *database) load() error {
	// The database file's pages. A header that cannot be right (a file
	// damaged or written outside pagewire) leaves the pages the file
	// holds, and the database refusing writes until it is replaced: the
	// node still starts.
	var walSize int64
	if fi, err := os.Stat(filepath.Join(d.dir, walFileName)); err == nil {
		walSize = fi.Size()
	}
	damaged, err := d.loadFile(walSize)
	if err != nil {
		return err
	}
	if damaged != nil {
		d.startupErr = fmt.Errorf("%w: the database file under %s is not one SQLite could have written: %v; it takes no writes until replaced (a replica re-seeds it itself; on a primary, import a good copy over it, or delete it)",
			pagewire.ErrCorrupt, d.dir, damaged)
		d.log.Error("database file damaged at startup", logkey.Error, d.startupErr)
	}

	f, err := os.OpenFile(filepath.Join(d.dir, metaFileName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	d.metaFile = f
	buf := make([]byte, metaSize)
	n, _ := f.ReadAt(buf, 0)
	m, merr := decodeMeta(buf[:n])

	if d.wal, err = os.OpenFile(filepath.Join(d.dir, walFileName), os.O_RDWR, 0); errors.Is(err, fs.ErrNotExist) {
		d.wal = nil
	} else if err != nil {
		return err
	}

	// Without a meta record the position is unknown. The one exception is
	// a database whose creation was cut off: its fresh first page alone.
	if merr != nil {
		if n == 0 && d.wal == nil && d.freshlyCreated() {
			d.log.Info("database meta file is missing but the database was just created; it starts at TXID 1")
		} else {
			d.metaLost = true
			d.startupErr = fmt.Errorf("%w: the meta file under %s is missing or damaged (%v), so the database's TXID is unknown; it takes no writes until replaced (a replica re-seeds it itself; on a primary, export it, then import the copy over it: pagewire export -name %s COPY && pagewire import -name %s COPY)",
				pagewire.ErrCorrupt, d.dir, merr, d.name, d.name)
			d.log.Error("database meta file damaged at startup", logkey.Error, d.startupErr)
		}
		m = meta{Pos: pagewire.Pos{TXID: 1, Checksum: d.pos.Checksum}}
	}
	d.pos.TXID = m.Pos.TXID

	// Apply the WAL's committed transactions to the checksums and the TXID.
	recovered, want, err := d.recoverWAL(m)
	if err != nil {
		return err
	}
	if recovered > 0 {
		d.log.Info("counted transactions the meta file had not recorded", "transactions", recovered, logkey.TXID, d.pos.TXID)
	}

	// Files changed outside pagewire leave a checksum other than the recorded one.
	if want != nil && merr == nil && d.pos.Checksum != want.Checksum && d.startupErr == nil {
		d.startupErr = fmt.Errorf("%w: checksum at TXID %d is %016x but %016x was recorded%s: the files under %s were changed outside pagewire; it takes no writes until re-seeded (a replica does so itself; on a primary, export it, delete it and import the copy)",
			pagewire.ErrCorrupt, d.pos.TXID, d.pos.Checksum, want.Checksum, d.changedPages(*want), d.dir)
		d.log.Error("database checksum mismatch at startup", logkey.Error, d.startupErr)
	}

	// The folder's entries (a -wal made before a crash) and the record
	// become durable before anything new is written.
	if err := syncDir(d.dir); err != nil {
		return err
	}
	return d.saveMeta(true)
}

// dropUnrecoveredLog cuts the transaction log back to the recovered
// position: records after it are of commits a power cut took from the WAL
// (the log's fsync ran alongside the WAL's, and may have won), which are
// not the database's history and must never be streamed. A record at the
// position itself that does not end at its checksum goes too.
func (d *database) dropUnrecoveredLog() error {
	n, err := d.txlog.truncateAfter(d.pos.TXID)
	if err != nil {
		return err
	}
	if own := d.txlog.headersAfter(d.pos.TXID-1, 1); d.pos.TXID > 1 && len(own) == 1 && own[0].PostChecksum != d.pos.Checksum {
		m, err := d.txlog.truncateAfter(d.pos.TXID - 1)
		if err != nil {
			return err
		}
		n += m
	}
	if n > 0 {
		d.log.Warn("dropped transaction log records after the recovered position (their commits were lost from the WAL in a crash)", "records", n, logkey.TXID, d.pos.TXID)
	}
	return nil
}

// replayTXID is the TXID a commit replayed at startup, from d.pos with
// pre-checksum pre to checksum post, ends at: the logged transaction that
// ends there, when the records after d.pos chain from pre to it (the
// apply worker's commit of several of the primary's transactions), else
// the next one.
func (d *database) replayTXID(pre, post uint64) pagewire.TXID {
	next := d.pos.TXID + 1
	if next <= d.replayFrom {
		return next
	}
	i := uint64(next - d.replayFrom - 1)
	if i >= uint64(len(d.replayLog)) || d.replayLog[i].PreChecksum != pre {
		return next
	}
	for ; i < uint64(len(d.replayLog)); i++ {
		if d.replayLog[i].PostChecksum == post {
			return d.replayLog[i].TXID
		}
	}
	return next
}

// freshlyCreated reports whether the database is what createDatabase
// writes before its meta file: one empty page.
func (d *database) freshlyCreated() bool {
	return len(d.pages) == 1 && d.pos.Checksum == pageChecksum(1, newDatabasePage(d.pageSize))|checksumFlag
}

// changedPages names the pages that differ from the page checksums saved
// when the node last stopped cleanly at pos, or "" without such a record.
func (d *database) changedPages(pos pagewire.Pos) string {
	b, err := os.ReadFile(filepath.Join(d.dir, pageSumsFileName))
	if err != nil {
		return ""
	}
	saved, err := decodePageSums(b)
	if err != nil || saved.Pos != pos {
		return ""
	}
	list, n := differingPages(saved.Pages, d.pages, maxReportedPages)
	s := fmt.Sprintf(" (%d pages differ from when the node last stopped: %v", n, list)
	if n > len(list) {
		s += " ..."
	}
	return s + ")"
}

// savePageSums records every page's checksum at the current position, for
// changedPages at the next start.
func (d *database) savePageSums() error {
	return writeFileSync(filepath.Join(d.dir, pageSumsFileName), pageSums{Pos: d.pos, Pages: d.pages}.encode())
}

// loadFile takes the page size from the database file's header, and the
// checksum of its pages: as many as the header says, else as the file
// holds (SQLite's rule, dbFilePages). The header may count pages past the
// file's end that a WAL of walSize bytes holds (and the lock page), as a
// database whose WAL is not all checkpointed does; never more, so that a
// header claiming 2^32 pages costs nothing.
//
// A header that cannot be right is returned as damaged, with the pages the
// file holds loaded (the page size 4096 if the header's is not valid); err
// is an I/O error.
func (d *database) loadFile(walSize int64) (damaged, err error) {
	hdr := make([]byte, 100)
	n, err := d.db.ReadAt(hdr, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read header: %w", err)
	}
	hdr = hdr[:n]
	fi, err := d.db.Stat()
	if err != nil {
		return nil, err
	}

	// The page size, and how many pages past the file's end a WAL of
	// walSize bytes can hold.
	d.pageSize = defaultPageSize
	if n >= 18 && pagewire.ValidPageSize(dbHeaderPageSize(hdr)) {
		d.pageSize = dbHeaderPageSize(hdr)
	}
	d.frameBuf = make([]byte, walFrameHeaderSize+int(d.pageSize))
	beyond := int64(1) // the lock page, never written
	if walSize > walHeaderSize {
		beyond += (walSize - walHeaderSize) / (walFrameHeaderSize + int64(d.pageSize))
	}

	// The pages as SQLite would count them, or as the file holds them.
	nPage, damaged := dbFilePages(hdr, fi.Size(), beyond)
	if damaged != nil {
		nPage = 1 // a file larger than any database (sparse, say): its first page only
		if held := (fi.Size() + int64(d.pageSize) - 1) / int64(d.pageSize); held <= pagewire.MaxPageCount {
			nPage = uint32(held)
		}
	}
	return damaged, d.loadPages(nPage)
}

// loadPages computes the checksum of every page in the database file.
func (d *database) loadPages(nPage uint32) error {
	d.pages = make([]uint64, nPage)
	r := bufio.NewReaderSize(io.NewSectionReader(d.db, 0, int64(nPage)*int64(d.pageSize)), 1<<20)
	page := make([]byte, d.pageSize)
	var sum uint64
	for i := range d.pages {
		if _, err := io.ReadFull(r, page); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				clear(page) // a short file reads as zero pages, as SQLite does
			} else {
				return fmt.Errorf("read page %d: %w", i+1, err)
			}
		}
		d.pages[i] = pageChecksum(uint32(i+1), page)
		sum ^= d.pages[i]
	}
	d.pos.Checksum = sum | checksumFlag
	return nil
}

// recoverWAL scans the -wal (if any) for committed transactions, applies
// them to the page checksums, and works out the TXID from the meta record.
// It reports how many commits the meta had not recorded and, when the
// recomputed checksum can be compared with a recorded one, that position.
//
// The WAL on disk may hold the meta's generation, the one before it (a
// new header that never became durable), a later one (the meta was made
// durable at its generation's end before the new header was written), or
// nothing (emptied or deleted: every frame is in the database file, and
// the meta was made durable at the generation's end first). Each is
// counted from the mark where it starts or ends.
func (d *database) recoverWAL(m meta) (recovered int, want *pagewire.Pos, err error) {
	d.w = walState{}
	d.gen0, d.lastGen = m.Prev, m.end()
	end := m.end()

	// Without a WAL the database file holds every commit: those of the
	// meta's generation, or, if that generation never reached the disk,
	// those up to where it began.
	noWAL := func() (int, *pagewire.Pos, error) {
		if m.Prev.known() && d.pos.Checksum != m.Pos.Checksum && d.pos.Checksum == m.Prev.Pos.Checksum {
			d.gen0, d.lastGen, d.pos.TXID = walMark{}, m.Prev, m.Prev.Pos.TXID
			d.log.Warn("the database file is where the WAL generation the meta file recorded began (a new WAL was lost in a crash)", logkey.Position, m.Prev.Pos.String())
			return 0, &m.Prev.Pos, nil
		}
		return 0, &end.Pos, nil
	}
	if d.wal == nil {
		return noWAL()
	}

	// A WAL without a valid header for this page size holds nothing.
	hdr := make([]byte, walHeaderSize)
	if n, _ := d.wal.ReadAt(hdr, 0); n < walHeaderSize {
		return noWAL()
	}
	h, herr := wal.DecodeHeader(hdr)
	if herr != nil || h.PageSize != d.pageSize {
		return noWAL() // SQLite treats such a WAL as empty
	}
	d.w.hdr, d.w.ok, d.w.ck1, d.w.ck2 = h, true, h.Checksum[0], h.Checksum[1]

	// Which generation the WAL holds, and from which mark it is counted:
	// the commit counted last in it, or, for a later generation, its start.
	mark, next := end, m.Next
	var sameGen bool
	switch salt := h.Salt; {
	case salt == wal.Salt{m.Salt1, m.Salt2}:
		sameGen = true
	case m.Prev.known() && (m.Prev.Salt1 != 0 || m.Prev.Salt2 != 0) && salt == wal.Salt{m.Prev.Salt1, m.Prev.Salt2}:
		// The meta's generation never reached the disk: the WAL is still
		// the one before it, which ended at Prev. Next was for the lost one.
		mark, next, sameGen = m.Prev, pagewire.Pos{}, true
		d.gen0 = walMark{}
		d.log.Warn("the WAL holds the generation before the one the meta file recorded (a new WAL header was lost in a crash)", logkey.Position, m.Prev.Pos.String())
	default:
		// A generation that began after the meta's.
		mark.Frame = 0
		d.gen0 = end
	}
	commits := 0

	// From the mark's frame on, commits advance the mark's TXID: by one
	// each, but the first by what the meta's Next announced, if its
	// checksum matches.
	atMark := mark.Frame == 0
	replay := &commitRule{}
	fromMark := func() {
		d.pos.TXID, commits, replay.announced = mark.Pos.TXID, 0, nil
		if next.TXID > mark.Pos.TXID {
			replay.announced = &expectedCommit{pos: next}
		}
	}
	fromMark()

	// Replay the commits, starting the count over at the mark's frame,
	// each counted against the transaction log's records from the earliest
	// position the count may start from.
	d.replayFrom = mark.Pos.TXID
	if d.gen0.known() {
		d.replayFrom = min(d.replayFrom, d.gen0.Pos.TXID)
	}
	if d.txlog != nil {
		d.replayLog = d.txlog.headersAfter(d.replayFrom, maxReplayHeaders)
	}
	if d.replayLog == nil {
		d.replayLog = []pagewire.Txn{}
	}
	defer func() { d.replayLog = nil }()
	_, _, err = d.scanFrames(0, replay, func(frame uint32) {
		commits++
		if sameGen && frame == mark.Frame {
			atMark = true
			fromMark()
		}
	})
	if errors.Is(err, pagewire.ErrInvalidArgument) {
		// A commit no SQLite writes (its size claims pages its transaction
		// does not hold): nothing from it on is counted, and the database
		// takes no writes until it is replaced.
		d.w.pending, d.expect = nil, nil
		d.startupErr = fmt.Errorf("%w: the WAL under %s holds a commit SQLite could not have written: %v; it takes no writes until replaced (a replica re-seeds it itself; on a primary, export it, delete it and import the copy)",
			pagewire.ErrCorrupt, d.dir, err)
		d.log.Error("database WAL damaged at startup", logkey.Error, d.startupErr)
		return commits, nil, nil
	}
	if err != nil {
		return 0, nil, err
	}

	// A WAL that ends before the mark's frame has lost commits: counted
	// from where the generation began, if the meta knows it.
	d.w.pending, d.expect = nil, nil
	if !atMark {
		if d.gen0.known() && mark == end {
			d.pos.TXID = d.gen0.Pos.TXID + pagewire.TXID(commits)
		}
		d.log.Error("the WAL ends before the last commit the meta file recorded; transactions were lost (power failure with synchronous=OFF or NORMAL?)",
			"recorded_frame", mark.Frame, "wal_commit_frame", d.w.commitFrame, logkey.TXID, d.pos.TXID)
		return 0, nil, nil
	}
	// The checksum can be compared only when nothing after the mark was
	// committed: checkpoints may have copied later pages into the file.
	if commits > 0 {
		return commits, nil, nil
	}
	return 0, &mark.Pos, nil
}

// maxReplayHeaders bounds the transaction log headers recovery holds to
// count a WAL's commits against (about 100 bytes each).
const maxReplayHeaders = 1 << 16

// commitError is a commit frame that applyCommit refused during a scan.
type commitError struct {
	frame uint32
	err   error
}

func (e *commitError) Error() string { return e.err.Error() }
func (e *commitError) Unwrap() error { return e.err }

// scanStop says why a scan of the WAL ended before the frame it was asked
// to reach: SQLite's recovery would stop at the same frame.
type scanStop struct {
	frame  uint32 // the first frame not accepted
	reason string // "short", "salt", "pgno" or "checksum"
}

func (s scanStop) String() string { return fmt.Sprintf("%s at frame %d", s.reason, s.frame) }

// scanFrames reads the WAL frames after the last counted commit, up to
// frame `upto` (0: to the end of the file), stopping at the first invalid
// frame. Each commit frame applies its transaction and calls onCommit. It
// returns how many valid frames it read and, when it stopped before upto,
// where and why. how says what the commits stand for.
func (d *database) scanFrames(upto uint32, how *commitRule, onCommit func(frame uint32)) (int, *scanStop, error) {
	d.w.pending = d.w.pending[:0]
	next := d.w.commitFrame + 1
	ck := wal.Checksum{d.w.ck1, d.w.ck2}
	read := 0
	for f := next; upto == 0 || f <= upto; f++ {
		buf := d.frameBuf
		if n, err := d.wal.ReadAt(buf, wal.FrameOffset(f, d.pageSize)); n < len(buf) {
			if err != nil && !errors.Is(err, io.EOF) {
				return read, nil, fmt.Errorf("read wal frame %d: %w", f, err)
			}
			return read, &scanStop{f, "short"}, nil
		}
		fh, next, fault := d.w.hdr.CheckFrame(ck, buf)
		if fault != wal.FaultNone {
			return read, &scanStop{f, fault.String()}, nil
		}
		ck = next
		read++
		d.w.pending = append(d.w.pending, pendingFrame{pgno: fh.Pgno, checksum: pageChecksum(fh.Pgno, buf[walFrameHeaderSize:]), frame: f})
		if fh.Commit != 0 {
			if err := d.applyCommit(fh.Commit, f, ck[0], ck[1], how); err != nil {
				return read, nil, &commitError{frame: f, err: err}
			}
			if onCommit != nil {
				onCommit(f)
			}
		}
	}
	return read, nil, nil
}

// applyCommit folds the pending frames, ending in commit frame `frame`, into
// the page checksums and the WAL index, as how says.
func (d *database) applyCommit(nPage, frame, ck1, ck2 uint32, how *commitRule) error {
	// The size must be one the transaction's frames can account for:
	// checked before anything changes or is allocated for it.
	if err := d.checkCommitSize(nPage, how.announced); err != nil {
		return fmt.Errorf("the commit in frame %d of %s-wal: %w", frame, d.name, err)
	}
	prevPos := d.pos
	pre := prevPos.Checksum
	// An announcement stands for the next commit only.
	expect := how.announced
	how.announced, d.expect = nil, nil

	// The apply worker's commit must end where it announced (the
	// primary's checksum): one that does not is refused, before readers
	// can see it, and the copy is marked for a re-seed.
	if expect == nil && how.mustAnnounce {
		// Unannounced: the replicator withdrew its announcement (its apply
		// was cancelled) before this write of the worker's landed. Counted
		// as one transaction it would put the primary's later pages under
		// an earlier TXID; refused, the replica applies it again.
		return fmt.Errorf("%w: the apply worker's commit in frame %d of %s-wal was not announced (its apply was cancelled): refused before readers could see it",
			pagewire.ErrInvalidArgument, frame, d.name)
	}
	if expect != nil && how.hidden {
		if got := d.commitChecksum(nPage); got != expect.pos.Checksum {
			if d.startupErr == nil {
				d.startupErr = fmt.Errorf("%w: applying the primary's transactions up to TXID %d to %q led to checksum %016x, not the primary's %016x; this copy takes no writes until re-seeded from the primary, which the replica does itself",
					pagewire.ErrCorrupt, expect.pos.TXID, d.name, got, expect.pos.Checksum)
			}
			return fmt.Errorf("%w: the commit in frame %d of %s-wal leads to checksum %016x, not the announced %016x at TXID %d: refused before readers could see it",
				pagewire.ErrCorrupt, frame, d.name, got, expect.pos.Checksum, expect.pos.TXID)
		}
	}
	// single: the commit is one transaction, logged from its frames; an
	// announcement without transactions of the next TXID only checks it.
	single := expect == nil || (expect.txns == nil && expect.pos.TXID == prevPos.TXID+1)

	// The transaction's pages, for the log and for the primary: read now,
	// or, when there are too many to hold, streamed from the WAL to the
	// log once the transaction counts (logFrames).
	var txn pagewire.Txn
	var big []pendingFrame // sorted, with bigPages newest pages to log
	var bigPages int
	if (d.logTxns || how.forwardTo != nil) && single {
		n := d.sortPending(nPage)
		if how.forwardTo == nil && int64(n)*int64(d.pageSize) > int64(d.streamTxnBytes) {
			big, bigPages = d.w.pending, n
		} else {
			var err error
			if txn, err = d.readPending(nPage, n); err != nil {
				return err
			}
		}
	}
	if how.forwardTo != nil && single {
		txn.TXID, txn.PreChecksum, txn.PostChecksum = d.pos.TXID+1, pre, d.commitChecksum(nPage)
		if err := how.forwardTo.forward(txn); err != nil {
			return err
		}
	}

	// The new page checksums, and the position.
	sum := d.pos.Checksum &^ checksumFlag
	if need := int(nPage); need > len(d.pages) {
		d.pages = append(d.pages, make([]uint64, need-len(d.pages))...)
	}
	d.w.grow(len(d.pages))
	for _, p := range d.w.pending {
		if int(p.pgno) > len(d.pages) {
			continue // above the commit size: SQLite drops it
		}
		sum ^= d.pages[p.pgno-1] ^ p.checksum
		d.pages[p.pgno-1] = p.checksum
		d.w.index[p.pgno-1] = p.frame
		d.w.addVersion(p.pgno, p.checksum)
	}
	for i := int(nPage); i < len(d.pages); i++ {
		sum ^= d.pages[i]
		d.w.index[i] = 0
	}
	d.pages = d.pages[:nPage]

	// The WAL's counted end, and the TXID.
	d.pos.Checksum = sum | checksumFlag
	d.w.commitFrame, d.w.ck1, d.w.ck2 = frame, ck1, ck2
	d.w.pending = d.w.pending[:0]
	if cap(d.w.pending) > maxKeptPending {
		d.w.pending = nil // a big transaction's: let it go
	}
	d.w.appended, d.w.overwritten, d.w.awaitRewrite = frame, 0, 0
	switch {
	case single && d.replayLog != nil:
		d.pos.TXID = d.replayTXID(pre, d.pos.Checksum)
	case single:
		d.pos.TXID++
		if d.logTxns && big != nil {
			d.logFrames(pagewire.Txn{TXID: d.pos.TXID, PreChecksum: pre, PostChecksum: d.pos.Checksum, PageSize: d.pageSize, PageCount: nPage, CommitTime: time.Now()}, big, bigPages)
		} else if d.logTxns {
			txn.TXID, txn.PreChecksum, txn.PostChecksum = d.pos.TXID, pre, d.pos.Checksum
			d.logTxn(txn)
		}
	case d.pos.Checksum == expect.pos.Checksum:
		d.pos.TXID = expect.pos.TXID
		if d.logTxns {
			if err := d.txlog.appendAll(expect.txns); err != nil {
				d.log.Error("could not log transactions for replicas", logkey.TXID, d.pos.TXID, logkey.Error, err)
			}
		}
	default:
		// The replicator sees the position differ from the primary's and
		// has the database re-seeded.
		d.pos.TXID++
		d.log.Error("a commit that applies the primary's transactions does not end at the primary's checksum",
			"want", expect.pos.String(), "got_checksum", fmt.Sprintf("%016x", d.pos.Checksum))
	}

	// What readers see, and who waits for a change.
	switch {
	case !how.hidden:
		d.hidden = false // SQLite's own writer publishes as it returns
	case !d.hidden:
		d.visible, d.hidden = prevPos, true
	}

	// Wake whoever waits for a change.
	if d.changed != nil {
		close(d.changed)
	}
	d.changed = make(chan struct{})
	return nil
}

// checkCommitSize refuses a commit frame's database size nPage that the
// pending frames (the transaction's) cannot account for: a transaction
// adds only pages it writes (pagewire.CheckGrowth), so a larger size,
// 0xFFFFFFFF say, claims pages that exist nowhere and would cost an
// allocation each. SQLite never writes such a commit. A commit announced
// as several transactions (ExpectCommit) may add as many pages as they
// wrote between them.
func (d *database) checkCommitSize(nPage uint32, announced *expectedCommit) error {
	cur := uint32(len(d.pages))
	if nPage <= cur {
		return nil // no growth: nothing to allocate
	}
	written := 0
	if announced != nil {
		for _, t := range announced.txns {
			written += len(t.Pages)
		}
	}
	if nPage <= pagewire.MaxPagesAfter(cur, written, d.pageSize) {
		return nil
	}

	// The distinct pages of the frames; their number bounds it, and
	// decides alone when it is too small.
	if frames := len(d.w.pending); nPage > pagewire.MaxPagesAfter(cur, max(written, frames), d.pageSize) {
		return pagewire.CheckGrowth(cur, nPage, max(written, frames), d.pageSize)
	}
	pgnos := make([]uint32, len(d.w.pending))
	for i, p := range d.w.pending {
		pgnos[i] = p.pgno
	}
	slices.Sort(pgnos)
	return pagewire.CheckGrowth(cur, nPage, max(written, len(slices.Compact(pgnos))), d.pageSize)
}

// size returns the page size and the committed size in pages.
func (d *database) size() (pageSize, pages uint32) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.pageSize, uint32(len(d.pages))
}

// visiblePos is the position readers see. mu must be held.
func (d *database) visiblePos() pagewire.Pos {
	if d.hidden {
		return d.visible
	}
	return d.pos
}

// markVisible records that readers see the database at pos or later.
func (d *database) markVisible(pos pagewire.Pos) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.hidden {
		return
	}
	switch {
	case pos.TXID >= d.pos.TXID:
		d.hidden = false
	case pos.TXID > d.visible.TXID:
		d.visible = pos
	default:
		return
	}
	if d.changed != nil {
		close(d.changed)
	}
	d.changed = make(chan struct{})
}

// commitChecksum is the checksum the pending frames, ending in a commit
// to nPage pages, lead to; applyCommit's sum, without changing anything.
func (d *database) commitChecksum(nPage uint32) uint64 {
	sum := d.pos.Checksum &^ checksumFlag
	limit := max(int(nPage), len(d.pages))
	cur := make(map[uint32]uint64, len(d.w.pending))
	get := func(pgno uint32) uint64 {
		if c, ok := cur[pgno]; ok {
			return c
		}
		if int(pgno) <= len(d.pages) {
			return d.pages[pgno-1]
		}
		return 0
	}
	for _, p := range d.w.pending {
		if int(p.pgno) > limit {
			continue
		}
		sum ^= get(p.pgno) ^ p.checksum
		cur[p.pgno] = p.checksum
	}
	for pgno := nPage + 1; int(pgno) <= limit; pgno++ {
		sum ^= get(pgno)
	}
	return sum | checksumFlag
}

// logTxn appends a transaction to the log for replicas.
func (d *database) logTxn(t pagewire.Txn) {
	if err := d.txlog.append(t); err != nil {
		// Replicas that need this transaction get a snapshot instead.
		d.log.Error("could not log a transaction for replicas", logkey.TXID, t.TXID, logkey.Error, err)
	}
}

// sortPending sorts the pending frames by page, then frame, and returns
// how many pages within nPage they hold: the newest frame of each of them
// is what the transaction log records (newestAt). Folding the pending
// frames in this order leaves what frame order did: a page's frames keep
// their order.
func (d *database) sortPending(nPage uint32) int {
	p := d.w.pending
	slices.SortFunc(p, func(a, b pendingFrame) int {
		return cmp.Or(cmp.Compare(a.pgno, b.pgno), cmp.Compare(a.frame, b.frame))
	})
	n := 0
	for i := range p {
		if newestAt(p, i, nPage) {
			n++
		}
	}
	return n
}

// newestAt reports whether p[i], of frames sorted by sortPending, is the
// newest frame of a page within nPage.
func newestAt(p []pendingFrame, i int, nPage uint32) bool {
	return p[i].pgno <= nPage && (i+1 == len(p) || p[i+1].pgno != p[i].pgno)
}

// readPending reads the n newest pages of the sorted pending frames, for
// the transaction log.
func (d *database) readPending(nPage uint32, n int) (pagewire.Txn, error) {
	txn := pagewire.Txn{PageSize: d.pageSize, PageCount: nPage, CommitTime: time.Now(), Pages: make([]pagewire.Page, 0, n)}
	buf := make([]byte, n*int(d.pageSize))
	p := d.w.pending
	for i := range p {
		if !newestAt(p, i, nPage) {
			continue
		}
		data := buf[:d.pageSize:d.pageSize]
		buf = buf[d.pageSize:]
		if _, err := d.wal.ReadAt(data, wal.FrameOffset(p[i].frame, d.pageSize)+walFrameHeaderSize); err != nil {
			return txn, fmt.Errorf("read page %d of the commit for the transaction log: %w", p[i].pgno, err)
		}
		txn.Pages = append(txn.Pages, pagewire.Page{Pgno: p[i].pgno, Data: data})
	}
	return txn, nil
}

// logFrames appends a transaction whose pages are too many to hold to the
// log: the n newest pages of frames, sorted by sortPending, read from the
// WAL a run of consecutive frames at a time, through a buffer of
// txlogWriteBuf bytes.
func (d *database) logFrames(t pagewire.Txn, frames []pendingFrame, n int) {
	frameSize := walFrameHeaderSize + int(d.pageSize)
	perRead := max(1, txlogWriteBuf/frameSize)
	buf := make([]byte, perRead*frameSize)
	run := make([]pendingFrame, 0, perRead)
	err := d.txlog.appendPages(t, n, func(emit func(pgno uint32, data []byte) error) error {
		// A run of pages in consecutive frames is one read.
		flush := func() error {
			if len(run) == 0 {
				return nil
			}
			b := buf[:len(run)*frameSize]
			if _, err := d.wal.ReadAt(b, wal.FrameOffset(run[0].frame, d.pageSize)); err != nil {
				return fmt.Errorf("read page %d of the commit for the transaction log: %w", run[0].pgno, err)
			}
			for k, f := range run {
				if err := emit(f.pgno, b[k*frameSize+walFrameHeaderSize:(k+1)*frameSize]); err != nil {
					return err
				}
			}
			run = run[:0]
			return nil
		}
		for i, f := range frames {
			if !newestAt(frames, i, t.PageCount) {
				continue
			}
			if len(run) == perRead || (len(run) > 0 && f.frame != run[len(run)-1].frame+1) {
				if err := flush(); err != nil {
					return err
				}
			}
			run = append(run, f)
		}
		return flush()
	})
	if err != nil {
		// Replicas that need this transaction get a snapshot instead.
		d.log.Error("could not log a transaction for replicas", logkey.TXID, t.TXID, logkey.Error, err)
	}
}

// watchPos returns the position, a channel closed at the next commit, and
// whether the database was deleted: what a waiter for a position needs.
func (d *database) watchPos() (pagewire.Pos, <-chan struct{}, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.pos, d.changed, d.deleted
}

// watchVisible is watchPos for the position readers see.
func (d *database) watchVisible() (pagewire.Pos, <-chan struct{}, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.visiblePos(), d.changed, d.deleted
}

// metaRecord is what the meta file records now.
func (d *database) metaRecord() meta {
	m := meta{Pos: d.pos, PageSize: d.pageSize, Prev: d.gen0}
	if d.w.ok {
		m.Salt1, m.Salt2 = d.w.hdr.Salt[0], d.w.hdr.Salt[1]
		m.CommitFrame, m.Ck1, m.Ck2 = d.w.commitFrame, d.w.ck1, d.w.ck2
	} else {
		m.Salt1, m.Salt2, m.CommitFrame = d.lastGen.Salt1, d.lastGen.Salt2, d.lastGen.Frame
	}
	if d.expect != nil {
		m.Next = d.expect.pos
	}
	return m
}

// saveMeta records the position and WAL state; fsync makes it durable now.
// Otherwise it may never be: recovery counts the WAL's commits from the
// last durable record, which syncMetaEnd keeps from falling behind the
// WAL's generations.
func (d *database) saveMeta(fsync bool) error {
	if d.metaLost {
		// A damaged meta file is not overwritten with a guessed position:
		// it stays damaged, and the database refusing writes, until the
		// database is replaced (an import, a replica's snapshot).
		return nil
	}
	m := d.metaRecord()
	if _, err := d.metaFile.WriteAt(m.encode(), 0); err != nil {
		return fmt.Errorf("write meta: %w", err)
	}
	if fsync {
		if err := d.metaFile.Sync(); err != nil {
			return fmt.Errorf("sync meta: %w", err)
		}
		d.metaSynced = m.end()
	}
	return nil
}

// syncMetaEnd makes the meta file durably record the current WAL
// generation's last counted commit, unless it does already. It is called
// before anything that can take the generation off the disk (a new WAL
// header, a truncation below its counted commit, an unlink), so that
// recovery never counts from an older record against a WAL that no longer
// holds what came after it. It costs one fsync of the meta file per WAL
// generation (a checkpoint that restarts the WAL), none per commit.
//
// The transaction log is synced first: the records of the generation's
// commits must outlive the WAL frames they came from.
func (d *database) syncMetaEnd() error {
	if d.txlog != nil {
		if err := d.txlog.sync(); err != nil {
			return err
		}
	}
	if d.metaRecord().end() == d.metaSynced {
		return nil
	}
	return d.saveMeta(true)
}

// markCheckpoint follows a checkpoint's write to the database file: before
// the first one (until the file's fsync ends the checkpoint), the meta file
// durably records the WAL's counted end, as syncMetaEnd does. A checkpoint
// copies pages of the newest commits into the file; recovery from an older
// record would replay the commits after it over those pages, through
// checksums the primary never had, and could not match a replica's
// grouped commits with the log's records: counted as one transaction
// each, the copy would sit at a TXID whose checksum is not the primary's.
// Counted from the checkpoint's mark, every commit replayed comes after
// the pages the file holds. The WAL is synced first (a checkpointer syncs
// it before its first database write, but a writer may have committed
// since): the record must not name a commit the WAL could lose. It costs
// fsyncs of the WAL, the log and the meta file once per checkpoint. mu
// must be held.
func (d *database) markCheckpoint() error {
	if d.ckptMarked {
		return nil
	}
	if d.wal != nil && d.w.ok && d.metaRecord().end() != d.metaSynced {
		if err := d.wal.Sync(); err != nil {
			return fmt.Errorf("sync the WAL before a checkpoint's first write: %w", err)
		}
	}
	if err := d.syncMetaEnd(); err != nil {
		return err
	}
	d.ckptMarked = true
	return nil
}

// resetWAL forgets the WAL generation: the WAL was emptied or deleted,
// which SQLite does only once every frame is in the database file. The
// caller made the meta durable at the generation's end first
// (syncMetaEnd); the meta goes on recording that end, so that a WAL whose
// truncation or deletion a power cut undoes still counts right.
func (d *database) resetWAL() {
	if d.w.ok {
		d.lastGen = walMark{Salt1: d.w.hdr.Salt[0], Salt2: d.w.hdr.Salt[1], Frame: d.w.commitFrame, Pos: d.pos}
	}
	d.w = walState{pending: d.w.pending[:0], index: d.w.index, versions: d.w.versions}
	d.w.clearIndex()
}

// startGeneration follows a new WAL header, which writeWAL wrote after
// syncMetaEnd. SQLite writes one only when its WAL is logically empty,
// every frame of the last generation being in the database file, so
// counting restarts at frame 1, from where the last generation ended.
func (d *database) startGeneration(h wal.Header) error {
	if d.w.ok {
		d.gen0 = walMark{Salt1: d.w.hdr.Salt[0], Salt2: d.w.hdr.Salt[1], Frame: d.w.commitFrame, Pos: d.pos}
	} else {
		d.gen0 = d.lastGen
		d.gen0.Pos = d.pos
	}
	d.w = walState{hdr: h, ok: true, ck1: h.Checksum[0], ck2: h.Checksum[1], pending: d.w.pending[:0], index: d.w.index, versions: d.w.versions}
	d.w.clearIndex()
	d.ckptMarked = false
	return d.saveMeta(false)
}

// writeDB writes to the database file. In WAL mode only checkpoints write
// it, copying committed pages: a write that would take page 1 out of WAL
// mode, or put into a page anything but a committed version of it, is
// refused, since it would change what readers see without a transaction.
func (d *database) writeDB(off int64, data []byte) error {
	if off < 100 {
		if err := d.checkPage1Write(off, data); err != nil {
			return err
		}
	}
	if err := d.checkCommittedPages(off, data); err != nil {
		return err
	}
	d.keepForViews(d.db, off, len(data))
	_, err := d.db.WriteAt(data, off)
	return err
}

// checkCommittedPages checks that a write to the database file holds whole
// pages, each a committed version of itself.
func (d *database) checkCommittedPages(off int64, data []byte) error {
	ps := int64(d.pageSize)
	if off%ps != 0 || int64(len(data))%ps != 0 {
		return fmt.Errorf("%w: refusing a write of %d bytes at offset %d of %q: the database file takes whole pages only (only SQLite's checkpoints write it)",
			pagewire.ErrInvalidArgument, len(data), off, d.name)
	}
	for i := int64(0); i < int64(len(data)); i += ps {
		pgno := uint32((off+i)/ps) + 1
		if !d.committedVersion(pgno, pageChecksum(pgno, data[i:i+ps])) {
			return fmt.Errorf("%w: refusing a write to page %d of %q: it is not a committed version of the page (only SQLite's checkpoints write the database file)",
				pagewire.ErrInvalidArgument, pgno, d.name)
		}
	}
	return nil
}

// committedVersion reports whether a page with checksum ck may stand in the
// database file: the page as committed, or one of its committed frames in
// the WAL, which a checkpoint copies.
func (d *database) committedVersion(pgno uint32, ck uint64) bool {
	if int(pgno) <= len(d.pages) && d.pages[pgno-1] == ck {
		return true
	}
	return d.w.hasVersion(pgno, ck)
}

// checkDBTruncate refuses to cut committed pages from the database file
// unless the WAL holds them, and to grow the file past its committed pages
// (and its size): a checkpoint truncates only to the committed size, and
// its size hint grows the file to it at most.
func (d *database) checkDBTruncate(size int64) error {
	ps := int64(d.pageSize)
	if committed := int64(len(d.pages)) * ps; size > committed {
		st, err := d.db.Stat()
		if err != nil {
			return err
		}
		if size > st.Size() {
			return fmt.Errorf("%w: refusing to grow %q to %d bytes: it has %d committed pages (%d bytes), and only SQLite's checkpoints size the database file",
				pagewire.ErrInvalidArgument, d.name, size, len(d.pages), committed)
		}
	}
	for pgno := uint32(size/ps) + 1; int(pgno) <= len(d.pages); pgno++ {
		if _, ok := d.w.frameOf(pgno); !ok {
			return fmt.Errorf("%w: refusing to truncate %q to %d bytes: page %d is committed and only in the database file",
				pagewire.ErrInvalidArgument, d.name, size, pgno)
		}
	}
	return nil
}

func (d *database) checkPage1Write(off int64, data []byte) error {
	hdr := make([]byte, 100)
	if _, err := d.db.ReadAt(hdr, 0); err != nil {
		return fmt.Errorf("read header: %w", err)
	}
	copy(hdr[off:], data)
	if err := validateDBHeader(hdr); err != nil {
		return fmt.Errorf("%w: refusing a write to %q: %v", pagewire.ErrInvalidArgument, d.name, err)
	}
	if hdr[18] != 2 || hdr[19] != 2 {
		return fmt.Errorf("%w: refusing to change %q out of WAL mode (PRAGMA journal_mode must stay WAL)", pagewire.ErrNotWAL, d.name)
	}
	if dbHeaderPageSize(hdr) != d.pageSize {
		return fmt.Errorf("%w: refusing to change the page size of %q", pagewire.ErrInvalidArgument, d.name)
	}
	return nil
}

// writeWAL writes to the -wal and counts the transactions whose commit
// frames the write completes, as how says.
func (d *database) writeWAL(off int64, data []byte, how *commitRule) error {
	var hdr wal.Header
	isHeader := off == 0 && len(data) >= walHeaderSize
	if isHeader {
		var err error
		if hdr, err = wal.DecodeHeader(data); err != nil {
			return fmt.Errorf("%w: bad WAL header for %q: %v", pagewire.ErrInvalidArgument, d.name, err)
		}
		if hdr.PageSize != d.pageSize {
			return fmt.Errorf("%w: WAL page size %d differs from the database's %d", pagewire.ErrInvalidArgument, hdr.PageSize, d.pageSize)
		}
	}

	// SQLite never writes into the header except whole, nor over committed
	// frames of the current generation: such a write would destroy
	// committed transactions. One write there leaves them as they are: a
	// checksum rewrite (see walState) of a commit that validated at once,
	// because the page overwritten in place came back with the same bytes.
	if !isHeader {
		protected := int64(walHeaderSize)
		if d.w.ok {
			protected = wal.FrameOffset(d.w.commitFrame+1, d.pageSize)
		}
		if off < protected {
			if d.unchanged(off, data) {
				return nil
			}
			return fmt.Errorf("%w: refusing a write at offset %d of %s-wal: it would overwrite committed transactions (only SQLite may write the WAL)", pagewire.ErrInvalidArgument, off, d.name)
		}
	}

	// A new header takes the current generation off the disk: the meta
	// must record its end durably first.
	if isHeader {
		if err := d.syncMetaEnd(); err != nil {
			return err
		}
	}

	// Write the data as SQLite gave it.
	d.keepForViews(d.wal, off, len(data))
	if _, err := d.wal.WriteAt(data, off); err != nil {
		return err
	}

	// A header starts a new WAL generation.
	if isHeader {
		if err := d.startGeneration(hdr); err != nil || len(data) == walHeaderSize {
			return err
		}
		// The header came with frames in one write: count their commits.
	}

	// Count the commit this write completes, if any.
	if !d.w.ok {
		return nil
	}
	k, ok := d.commitCandidate(off, len(data))
	if !ok {
		return nil
	}
	return d.countCommit(k, how)
}

// unchanged reports whether the WAL already holds data at off.
func (d *database) unchanged(off int64, data []byte) bool {
	if len(data) > walFrameHeaderSize {
		return false // only a frame header is ever written again
	}
	have := make([]byte, len(data))
	n, _ := d.wal.ReadAt(have, off)
	return n == len(data) && bytes.Equal(have, data)
}

// commitCandidate follows where a WAL write lands in the current
// transaction and reports the frame whose commit it may complete: the
// last frame of a write that ends a frame, or the awaited commit frame
// whose checksum rewrite it ends.
func (d *database) commitCandidate(off int64, n int) (uint32, bool) {
	frameSize := int64(walFrameHeaderSize) + int64(d.pageSize)
	end := off + int64(n)

	// A write of whole frames from frame j's start (the apply worker;
	// SQLite writes a frame's header and page apart) appends from frame j:
	// a commit refused at or after j is being written again, not the rest
	// of the refused write.
	if rel := off - walHeaderSize; rel >= 0 && rel%frameSize == 0 && int64(n) > walFrameHeaderSize {
		if j := uint32(rel/frameSize) + 1; j > d.w.commitFrame {
			d.w.appended, d.w.awaitRewrite = min(d.w.appended, j-1), 0
			if d.w.overwritten >= j {
				d.w.overwritten = 0
			}
			if d.w.refused >= j {
				d.w.refused = 0
			}
		}
	}
	if end <= walHeaderSize {
		return 0, false
	}

	// Where the write ends: at the end of frame k, or in the header of frame k+1.
	k := uint32((end - walHeaderSize) / frameSize)
	switch (end - walHeaderSize) % frameSize {
	case 0: // the write ends frame k
		if k <= d.w.commitFrame {
			return 0, false
		}

		// The kernel may split one write() in two at a page boundary, so
		// a write of page data alone is told by where it starts: past
		// the frame's header.
		pageOnly := off >= wal.FrameOffset(k, d.pageSize)+walFrameHeaderSize
		if pageOnly && k <= d.w.appended && k != d.w.refused {
			// A spilled page changed again: SQLite will rewrite the
			// checksums from here once its commit frame is written.
			if d.w.overwritten == 0 || k < d.w.overwritten {
				d.w.overwritten = k
			}
			return 0, false
		}

		// The write extends the transaction: its last frame may be a commit.
		d.w.appended = max(d.w.appended, k)
		return k, true
	case walFrameHeaderSize: // the write ends frame k+1's header
		k++
		if k == d.w.awaitRewrite {
			return k, true // the last checksum rewrite: the commit is whole
		}
		if k == d.w.refused && d.w.refusedHeader && off > wal.FrameOffset(k, d.pageSize) {
			return k, true // the rest of a refused rewrite
		}
		if d.w.awaitRewrite != 0 && k >= d.w.overwritten && k < d.w.awaitRewrite {
			return 0, false // a checksum rewrite on the way to the commit frame
		}

		// A frame is being appended: the transaction's frames end before it.
		d.w.appended, d.w.awaitRewrite = k-1, 0
		if d.w.overwritten >= k {
			d.w.overwritten = 0
		}
		if d.w.refused >= k {
			d.w.refused = 0
		}
	}
	return 0, false
}

// countCommit counts the transactions that end at frame k, if k is a commit
// frame. A commit frame that does not validate fails the write that
// completed it, so that SQLite reports an error to the app instead of a
// commit that no replica would get; the one exception is a commit whose
// checksums SQLite is about to rewrite.
func (d *database) countCommit(k uint32, how *commitRule) error {
	if k == d.w.refused {
		// SQLite writes the rest of a write the kernel split, and the
		// rest of a refused commit is refused too. If that rest wrote
		// the zeroed header again, it is zeroed again: else a scan of the
		// WAL (SQLite's recovery, the apply worker's) finds the refused
		// commit valid.
		if d.w.zeroed != 0 {
			d.zeroFrameHeader(d.w.zeroed)
		}
		return d.w.refusedErr
	}

	// Only a commit frame ends transactions.
	var fh [walFrameHeaderSize]byte
	if _, err := d.wal.ReadAt(fh[:], wal.FrameOffset(k, d.pageSize)); err != nil {
		return fmt.Errorf("read wal frame header: %w", err)
	}
	if wal.DecodeFrameHeader(fh[:]).Commit == 0 {
		return nil
	}

	// Count the transactions up to frame k.
	rewritten := k == d.w.awaitRewrite
	before, beforeFrame := d.pos.TXID, d.w.commitFrame
	_, stop, err := d.scanFrames(k, how, nil)
	d.w.pending = d.w.pending[:0]
	if err == nil && d.w.commitFrame != beforeFrame && stop == nil {
		// (A snapshot's commit may set the TXID back: a replica that was
		// ahead of the primary.)
		if d.pos.TXID > before {
			d.commits += uint64(d.pos.TXID - before)
		}
		return d.saveMeta(false)
	}

	// SQLite rewrites the checksums from the first frame it overwrote;
	// the first one that fails may come later, if that frame's page came
	// back with the bytes it had.
	if err == nil && !rewritten && stop != nil && stop.reason == "checksum" && d.w.overwritten != 0 && stop.frame >= d.w.overwritten {
		d.w.awaitRewrite = k
		return nil
	}

	// Otherwise the commit is refused.
	d.log.Warn("refusing a WAL commit that does not validate", "frame", k, "stop", fmt.Sprint(stop), logkey.Error, err,
		"rewritten", rewritten, "first_overwritten", d.w.overwritten, "counted_frame", d.w.commitFrame)
	d.w.awaitRewrite, d.w.overwritten = 0, 0
	if d.w.commitFrame != beforeFrame && d.pos.TXID > before {
		// Earlier commits in the write counted; the last did not.
		d.commits += uint64(d.pos.TXID - before)
		if serr := d.saveMeta(false); serr != nil {
			d.log.Error("could not record the position", logkey.Error, serr)
		}
	}
	if err == nil {
		err = fmt.Errorf("%w: the commit in frame %d of %s-wal does not validate (%s), so it is refused: a WAL must be written by SQLite",
			pagewire.ErrInvalidArgument, k, d.name, stop)
	}

	// Later writes of the same commit fail the same way: SQLite, or the
	// apply worker, writes the rest of a write the kernel split (a write
	// that starts at a frame up to it is a new attempt: commitCandidate).
	d.w.refused, d.w.refusedErr, d.w.refusedHeader, d.w.zeroed = k, err, rewritten, 0
	if stop == nil {
		// Valid frames refused (a halt lock's forward the primary
		// refused, a size the frames cannot account for): make sure
		// SQLite's recovery cannot bring them back after a crash. The
		// refused commit may come before k, in a write of several.
		bad := k
		var ce *commitError
		if errors.As(err, &ce) {
			bad = ce.frame
		}
		d.zeroFrameHeader(bad)
		d.w.zeroed = bad
	}
	return err
}

// zeroFrameHeader zeroes the header of WAL frame f: no scan of the WAL
// (SQLite's recovery) goes past it.
func (d *database) zeroFrameHeader(f uint32) {
	var zero [walFrameHeaderSize]byte
	d.keepForViews(d.wal, wal.FrameOffset(f, d.pageSize), len(zero))
	if _, werr := d.wal.WriteAt(zero[:], wal.FrameOffset(f, d.pageSize)); werr != nil {
		d.log.Error("could not undo a refused commit", logkey.Error, werr)
	}
}

// readPage reads page pgno of the committed database: from its newest WAL
// frame, else from the database file. mu must be held.
func (d *database) readPage(pgno uint32, buf []byte) error {
	if f, ok := d.w.frameOf(pgno); ok {
		_, err := d.wal.ReadAt(buf, wal.FrameOffset(f, d.pageSize)+walFrameHeaderSize)
		return err
	}
	n, err := d.db.ReadAt(buf, int64(pgno-1)*int64(d.pageSize))
	if errors.Is(err, io.EOF) {
		clear(buf[n:])
		return nil
	}
	return err
}

// replace swaps in a new database file (an import): the -wal and -shm are
// dropped, the TXID grows by one and the checksum is recomputed. It returns
// the file ids from before.
func (d *database) replace(path string, newID func() uint64) (before fileIDs, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	before = d.ids
	return before, d.replaceLocked(path, newID)
}

func (d *database) replaceLocked(path string, newID func() uint64) error {
	if d.handles > 0 {
		return fmt.Errorf("%w: %q has %d open file handles; stop the apps using it, then import again", pagewire.ErrBusy, d.name, d.handles)
	}

	// Check that the imported file is a whole SQLite database, before
	// anything changes.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := checkImportFile(f); err != nil {
		f.Close()
		return err
	}

	// Mark it as a WAL-mode database, durably.
	if _, err := f.WriteAt([]byte{2, 2}, 18); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	f.Close()

	// The old WAL belongs to the old file: it goes first, durably, so that
	// a power cut never leaves it beside the new file; the meta records
	// the old file's position without it first.
	if d.wal != nil {
		if err := d.syncMetaEnd(); err != nil {
			return err
		}
		d.wal.Close()
		d.wal = nil
		if err := os.Remove(filepath.Join(d.dir, walFileName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := syncDir(d.dir); err != nil {
			return err
		}
	}

	// Move the file into place.
	if err := os.Rename(path, filepath.Join(d.dir, databaseFileName)); err != nil {
		return err
	}
	if err := syncDir(d.dir); err != nil {
		return err
	}

	// Reopen it, and start from it: the import counts as one transaction.
	d.db.Close()
	if d.db, err = os.OpenFile(filepath.Join(d.dir, databaseFileName), os.O_RDWR, 0); err != nil {
		return err
	}
	txid := d.pos.TXID
	d.shm = nil
	d.ids = fileIDs{db: newID(), pos: d.ids.pos}
	damaged, err := d.loadFile(0)
	if err != nil {
		return err
	}
	d.pos.TXID = txid + 1
	d.resetDurable()
	d.w = walState{}
	d.gen0, d.lastGen = walMark{}, walMark{} // no earlier WAL belongs to this file
	d.startupErr = damaged                   // nil: checkImportFile passed it
	d.metaLost = false
	d.modTime[pagewire.FileDatabase] = time.Now()
	return d.saveMeta(true)
}

// checkImportFile checks a file received for an import (checkImport) by
// its first 100 bytes and its length.
func checkImportFile(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	hdr := make([]byte, 100)
	if n, err := f.ReadAt(hdr, 0); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read the imported file: %w", err)
	} else if n < len(hdr) {
		return fmt.Errorf("%w: the imported file is %d bytes, too short for a SQLite database header: import a whole copy of the database", pagewire.ErrInvalidArgument, fi.Size())
	}
	_, err = checkImport(hdr, fi.Size())
	return err
}

func (d *database) closeFiles() {
	if d.txlog != nil {
		d.txlog.close()
	}
	for _, f := range []*os.File{d.db, d.wal, d.metaFile} {
		if f != nil {
			f.Close()
		}
	}
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

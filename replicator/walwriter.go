package replicator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/backoff"
	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/wal"
	"golang.org/x/sys/unix"
)

const (
	// maxWrite bounds one write of frames; each write ends on a frame.
	maxWrite = 1 << 20
	// lockMinWait and lockMaxWait bound the jittered wait for a lock another
	// process holds.
	lockMinWait = 50 * time.Microsecond
	lockMaxWait = 100 * time.Millisecond
)

// errWALWriterClosed: the WALWriter was closed.
var errWALWriterClosed = fmt.Errorf("the WAL writer is closed: open a new one: %w", os.ErrClosed)

// WALWriter appends transactions to one SQLite database in WAL mode as a
// SQLite writer would. It is not safe for concurrent use: one goroutine per
// database.
//
// SQLite readers in other processes keep their snapshot while it appends and
// see each transaction at their next read transaction. It holds a SHARED lock
// on the database file (so no client's last close checkpoints and deletes the
// WAL) and the -shm's DMS lock (so no client wipes the wal-index) while open;
// each Apply holds WAL_WRITE_LOCK, so SQLite writers and it take turns. It
// reads the -shm with pread and writes it through a shared mapping (see
// indexFile).
//
// Its locks are POSIX fcntl locks, which belong to the process: the process
// must not open the database, -wal or -shm through other descriptors while a
// WALWriter is open, because closing any descriptor of a file drops all of
// the process's locks on it, and must have at most one WALWriter per
// database.
type WALWriter struct {
	path     string
	log      *slog.Logger
	db       *os.File
	wal      *os.File
	shm      *indexFile
	pageSize uint32
	frames   uint32 // mxFrame after the last Apply or Checkpoint
	// walCreated: this writer created the -wal, so its first fsync also
	// fsyncs the directory, as SQLite's does.
	walCreated bool
	buf        []byte // frames being written, reused
	// published is the wal-index header this writer last published after
	// appending. Found unchanged at the next write, the wal-index still
	// describes the WAL (only this writer writes it; its SHARED lock on the
	// database keeps any other connection from deleting it), and the check
	// against the file, a stat and a read through the mount, is skipped.
	published    wal.IndexHeader
	hasPublished bool
	// rescan is set when a write failed after it may have reached the
	// WAL (the storage refuses a commit that does not validate, zeroing
	// its frame header, or any I/O error): the next write rebuilds the
	// wal-index from the WAL first, as SQLite's recovery does, so that
	// it appends at the last commit the WAL holds (where the storage
	// counted to), not past frames no reader may ever see.
	rescan    bool
	indexSize int64 // the -shm is at least this big

	// held is set between Hold and Release: this writer keeps
	// WAL_WRITE_LOCK, and Apply neither takes nor releases it.
	held bool
	// part is the transaction being appended a part at a time (ApplyPart),
	// or nil; WAL_WRITE_LOCK is kept from its first part to its last.
	part *walPart

	// testHookBusy, if set, runs each time Apply finds a lock it needs held
	// by another process, before it waits.
	testHookBusy func()
	// testHookBeforePublish, if set, runs when Apply has written and indexed
	// the frames, before it publishes them.
	testHookBeforePublish func()
}

// OpenWALWriter opens path, path+"-wal" and path+"-shm", creating the last
// two if needed with the database file's permissions. The database file must
// exist and be in WAL mode. It takes a SHARED lock on the database file and
// the DMS lock on the -shm, and wipes the -shm first, as SQLite does, if no
// other process has it open. log may be nil: slog.Default().
//
// Errors: pagewire.ErrNotWAL if the file is not a database in WAL mode;
// pagewire.ErrCorrupt if its header is damaged; pagewire.ErrBusy if another
// process is taking the database out of WAL mode, closing it last, or
// initialising the -shm (try again); file errors as from os.OpenFile.
func OpenWALWriter(path string, log *slog.Logger) (*WALWriter, error) {
	if log == nil {
		log = slog.Default()
	}
	w := &WALWriter{path: path, log: log.With(logkey.Path, path)}
	if err := w.open(); err != nil {
		_ = w.closeFiles()
		return nil, fmt.Errorf("open WAL writer for %s: %w", path, err)
	}
	return w, nil
}

func (w *WALWriter) open() error {
	// Open the database, shared-locked, and read its page size.
	db, err := os.OpenFile(w.path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	w.db = db
	if err := lockDBShared(db); err != nil {
		if errors.Is(err, errLockBusy) {
			return fmt.Errorf("another process is taking the database out of WAL mode or closing it: try again: %w", pagewire.ErrBusy)
		}
		return fmt.Errorf("lock the database: %w", err)
	}
	if w.pageSize, err = readDBHeader(db); err != nil {
		return err
	}

	// The -wal and -shm take the database file's permissions.
	fi, err := db.Stat()
	if err != nil {
		return err
	}
	perm := fi.Mode().Perm()

	// Note whether this writer creates the -wal.
	walPath := w.path + "-wal"
	if _, err := os.Lstat(walPath); errors.Is(err, fs.ErrNotExist) {
		w.walCreated = true
	}
	if w.wal, err = os.OpenFile(walPath, os.O_RDWR|os.O_CREATE, perm); err != nil {
		return err
	}
	shm, err := os.OpenFile(w.path+"-shm", os.O_RDWR|os.O_CREATE, perm)
	if err != nil {
		return err
	}
	w.shm = &indexFile{f: shm}

	// Take the -shm's DMS lock, then the frame count from a valid index.
	if err := w.lockDMS(); err != nil {
		return err
	}
	if hdr, _, ok, err := w.shm.readHeader(); err != nil {
		return fmt.Errorf("read the wal-index header: %w", err)
	} else if ok {
		w.frames = hdr.MxFrame
	}
	return nil
}

// readDBHeader checks that db is a database in WAL mode and returns its page
// size.
func readDBHeader(db *os.File) (uint32, error) {
	var b [100]byte
	n, err := db.ReadAt(b[:], 0)
	if err != nil && err != io.EOF {
		return 0, fmt.Errorf("read the database header: %w", err)
	}
	switch {
	case n == 0:
		return 0, fmt.Errorf("%w: the database file is empty: create the database in WAL mode first", pagewire.ErrNotWAL)
	case n < len(b) || string(b[:16]) != "SQLite format 3\x00":
		return 0, fmt.Errorf("%w: not a SQLite database (bad header)", pagewire.ErrCorrupt)
	case b[18] != 2 || b[19] != 2:
		return 0, fmt.Errorf("%w: the database is not in WAL mode (header bytes 18/19 are %d/%d): run PRAGMA journal_mode=WAL on it", pagewire.ErrNotWAL, b[18], b[19])
	}
	pageSize := uint32(b[16])<<8 | uint32(b[17])<<16
	if !pagewire.ValidPageSize(pageSize) {
		return 0, fmt.Errorf("%w: the database header gives page size %d", pagewire.ErrCorrupt, pageSize)
	}
	return pageSize, nil
}

// lockDMS takes the DMS lock shared as SQLite's unixOpenSharedMemory does:
// if no other process holds it, the -shm is stale, so take it exclusive,
// truncate the -shm (the next writer or reader rebuilds it) and downgrade.
func (w *WALWriter) lockDMS() error {
	holder, err := lockHolder(w.shm.f, syscall.F_WRLCK, wal.LockDMS, 1)
	if err != nil {
		return fmt.Errorf("check who has the -shm open: %w", err)
	}
	busy := fmt.Errorf("another process is initialising the -shm: try again: %w", pagewire.ErrBusy)
	switch holder {
	case syscall.F_WRLCK:
		return busy
	case syscall.F_UNLCK:
		if err := lockShm(w.shm.f, wal.LockDMS, 1, true); err != nil {
			if errors.Is(err, errLockBusy) {
				return busy
			}
			return fmt.Errorf("lock the -shm: %w", err)
		}
		if err := w.shm.f.Truncate(3); err != nil {
			return fmt.Errorf("reset the -shm: %w", err)
		}
	}
	if err := lockShm(w.shm.f, wal.LockDMS, 1, false); err != nil {
		if errors.Is(err, errLockBusy) {
			return busy
		}
		return fmt.Errorf("lock the -shm: %w", err)
	}
	return nil
}

// Frames is the WAL's mxFrame after the last Apply or Checkpoint (so the
// caller can checkpoint every N frames).
func (w *WALWriter) Frames() uint32 { return w.frames }

// PageSize is the database's page size.
func (w *WALWriter) PageSize() uint32 { return w.pageSize }

// Close releases the locks and closes the files. It does not checkpoint or
// delete the -wal or -shm. Closing twice returns nil.
func (w *WALWriter) Close() error {
	if w.db == nil {
		return nil
	}
	w.held, w.part = false, nil // closing the files releases every lock
	var errs []error
	if err := unlockShm(w.shm.f, wal.LockDMS, 1); err != nil {
		errs = append(errs, fmt.Errorf("unlock the -shm: %w", err))
	}
	if err := lockRange(w.db, syscall.F_UNLCK, 0, 0); err != nil {
		errs = append(errs, fmt.Errorf("unlock the database: %w", err))
	}
	errs = append(errs, w.closeFiles())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close WAL writer for %s: %w", w.path, err)
	}
	return nil
}

func (w *WALWriter) closeFiles() error {
	var errs []error
	files := []*os.File{w.wal, w.db}
	if w.shm != nil {
		errs = append(errs, w.shm.unmap())
		files = append(files, w.shm.f)
		w.shm = nil
	}
	for _, f := range files {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	w.wal, w.db = nil, nil
	return errors.Join(errs...)
}

// Apply appends one transaction: pages, ascending by page number, each once
// and PageSize bytes, and pageCount, the database size in pages after it.
//
// It waits, with bounded backoff until ctx is done, while another process
// holds WAL_WRITE_LOCK (or, when the wal-index must be rebuilt, the
// checkpoint or recovery lock). It rebuilds the wal-index from the WAL if it
// is invalid or does not describe the WAL, starts the WAL over when every
// frame is in the database file and no reader uses the WAL, appends the
// frames, indexes them and publishes the new wal-index header. With sync it
// fsyncs the WAL after writing, before publishing.
//
// Errors: pagewire.ErrInvalidArgument for a bad transaction, or a
// pageCount its pages cannot account for (pagewire.CheckGrowth) (nothing
// is written); ctx's error if ctx ends while waiting (nothing is written);
// pagewire.ErrCorrupt if the WAL cannot belong to this database (its page
// size or format differs); I/O errors. After an I/O error the transaction
// may or may not have become visible (a reader's recovery can find frames
// whose publish failed); applying it again is safe, as it sets the same
// pages.
func (w *WALWriter) Apply(ctx context.Context, pageCount uint32, pages []pagewire.Page, sync bool) error {
	return w.ApplyBatch(ctx, []pagewire.Txn{{PageCount: pageCount, Pages: pages}}, sync)
}

// ApplyBatch appends several transactions in order (only their PageCount
// and Pages are used), each with its own commit frame, under one write
// lock and with one header publish: readers see all of them at once. It
// is how a replica that is behind catches up without a FUSE round trip per
// transaction. Errors are as Apply's; nothing is written if any
// transaction is malformed.
func (w *WALWriter) ApplyBatch(ctx context.Context, txns []pagewire.Txn, sync bool) error {
	if w.db == nil {
		return fmt.Errorf("apply: %w", errWALWriterClosed)
	}
	if len(txns) == 0 {
		return fmt.Errorf("apply to %s: %w: no transactions", w.path, pagewire.ErrInvalidArgument)
	}
	if w.part != nil {
		return fmt.Errorf("apply to %s: %w", w.path, errPartOpen)
	}
	for _, t := range txns {
		if err := w.checkTxn(t.PageCount, t.Pages); err != nil {
			return fmt.Errorf("apply to %s: %w", w.path, err)
		}
	}

	// Take the write lock unless it is held already, and a valid index header.
	var hdr wal.IndexHeader
	var ckpt wal.CkptInfo
	var err error
	if w.held {
		var recovered bool
		if hdr, ckpt, recovered, err = w.validIndex(); err == nil && recovered {
			w.logRecovered(hdr)
		}
	} else {
		hdr, ckpt, err = w.beginWrite(ctx)
	}
	if err != nil {
		return fmt.Errorf("apply to %s: %w", w.path, err)
	}

	// Append the transactions, if their sizes hold, then release the lock
	// unless it is held.
	err = w.checkGrowth(hdr, txns)
	if err == nil {
		if err = w.appendTxns(hdr, ckpt, txns, sync); err != nil {
			w.failedWrite()
		}
	}
	if !w.held {
		if uerr := unlockShm(w.shm.f, wal.LockWrite, 1); uerr != nil && err == nil {
			err = fmt.Errorf("release the WAL write lock: %w", uerr)
		}
	}
	if err != nil {
		return fmt.Errorf("apply to %s: %w", w.path, err)
	}
	return nil
}

// Hold takes WAL_WRITE_LOCK and keeps it until Release: SQLite's writers
// in other processes wait (and get SQLITE_BUSY past their busy timeout)
// while Apply goes on appending. It is how the primary keeps its own
// writers out while a halt lock's holder writes through it. It waits
// while another process writes, until ctx is done.
func (w *WALWriter) Hold(ctx context.Context) error {
	if w.db == nil {
		return fmt.Errorf("hold: %w", errWALWriterClosed)
	}
	if w.held {
		return nil
	}
	if w.part != nil {
		return fmt.Errorf("hold the WAL write lock of %s: %w", w.path, errPartOpen)
	}
	if _, _, err := w.beginWrite(ctx); err != nil {
		return fmt.Errorf("hold the WAL write lock of %s: %w", w.path, err)
	}
	w.held = true
	return nil
}

// Release gives up the lock Hold took.
func (w *WALWriter) Release() error {
	if !w.held || w.db == nil {
		return nil
	}
	w.held = false
	if err := unlockShm(w.shm.f, wal.LockWrite, 1); err != nil {
		return fmt.Errorf("release the WAL write lock of %s: %w", w.path, err)
	}
	return nil
}

// checkTxn validates a transaction before anything is written.
func (w *WALWriter) checkTxn(pageCount uint32, pages []pagewire.Page) error {
	if len(pages) == 0 {
		return fmt.Errorf("%w: empty transaction: a transaction changes at least one page", pagewire.ErrInvalidArgument)
	}
	if pageCount == 0 {
		return fmt.Errorf("%w: database size of 0 pages: a database has at least one page", pagewire.ErrInvalidArgument)
	}
	lockPage := uint32(lockDBPending/w.pageSize + 1)
	var prev uint32
	for _, p := range pages {
		switch {
		case p.Pgno == 0:
			return fmt.Errorf("%w: page number 0: pages count from 1", pagewire.ErrInvalidArgument)
		case p.Pgno <= prev:
			return fmt.Errorf("%w: page %d follows page %d: pages must be ascending, each once", pagewire.ErrInvalidArgument, p.Pgno, prev)
		case p.Pgno > pageCount:
			return fmt.Errorf("%w: page %d is beyond the database size of %d pages", pagewire.ErrInvalidArgument, p.Pgno, pageCount)
		case p.Pgno == lockPage:
			return fmt.Errorf("%w: page %d is SQLite's lock page, which holds no data", pagewire.ErrInvalidArgument, p.Pgno)
		case len(p.Data) != int(w.pageSize):
			return fmt.Errorf("%w: page %d is %d bytes; the database's page size is %d", pagewire.ErrInvalidArgument, p.Pgno, len(p.Data), w.pageSize)
		}
		prev = p.Pgno
	}
	return nil
}

// checkGrowth refuses transactions whose database sizes their pages
// cannot account for (pagewire.CheckGrowth: a transaction adds only pages
// it writes), each from the size before it, the first from the database's
// size: the wal-index header's, or the database file's when the header has
// none, as SQLite reads it. A page count of 0xFFFFFFFF with one page is
// refused here, before a frame is written. The caller holds WAL_WRITE_LOCK
// and hdr is the current header.
func (w *WALWriter) checkGrowth(hdr wal.IndexHeader, txns []pagewire.Txn) error {
	cur := hdr.NPage
	if cur == 0 {
		fi, err := w.db.Stat()
		if err != nil {
			return fmt.Errorf("stat the database: %w", err)
		}
		ps := int64(w.pageSize)
		cur = uint32(min((fi.Size()+ps-1)/ps, pagewire.MaxPageCount))
	}
	for _, t := range txns {
		if err := pagewire.CheckGrowth(cur, t.PageCount, len(t.Pages), w.pageSize); err != nil {
			return err
		}
		cur = t.PageCount
	}
	return nil
}

// beginWrite takes WAL_WRITE_LOCK and returns a valid wal-index header,
// rebuilding the index if needed. It waits while other processes hold the
// locks it needs, until ctx is done.
func (w *WALWriter) beginWrite(ctx context.Context) (wal.IndexHeader, wal.CkptInfo, error) {
	b := backoff.New(lockMinWait, lockMaxWait)
	waited := false
	for {
		if err := ctx.Err(); err != nil {
			return wal.IndexHeader{}, wal.CkptInfo{}, fmt.Errorf("wait for the WAL write lock: %w", err)
		}
		hdr, ckpt, recovered, err := w.tryBeginWrite()
		if err == nil {
			if recovered {
				w.logRecovered(hdr)
			}
			return hdr, ckpt, nil
		}
		if !errors.Is(err, errLockBusy) {
			return wal.IndexHeader{}, wal.CkptInfo{}, err
		}
		if w.testHookBusy != nil {
			w.testHookBusy()
		}
		if !waited {
			w.log.Debug("waiting for another process's WAL write lock")
		}
		if err := b.Wait(ctx); err != nil {
			return wal.IndexHeader{}, wal.CkptInfo{}, fmt.Errorf("wait for the WAL write lock: %w", err)
		}
		waited = true
	}
}

// logRecovered notes a recovery, as SQLite's SQLITE_NOTICE_RECOVER_WAL
// does when it finds frames; an empty WAL is the normal first open.
func (w *WALWriter) logRecovered(hdr wal.IndexHeader) {
	if hdr.MxFrame > 0 {
		w.log.Info("rebuilt the wal-index from the WAL", logkey.Frames, hdr.MxFrame)
	} else {
		w.log.Debug("initialised the wal-index")
	}
}

// tryBeginWrite takes WAL_WRITE_LOCK without waiting, then validates the
// wal-index, rebuilding it if needed. It holds the lock when it returns no
// error, and errLockBusy if another process holds a lock it needs.
func (w *WALWriter) tryBeginWrite() (hdr wal.IndexHeader, ckpt wal.CkptInfo, recovered bool, err error) {
	if err := lockShm(w.shm.f, wal.LockWrite, 1, true); err != nil {
		if !errors.Is(err, errLockBusy) {
			err = fmt.Errorf("take the WAL write lock: %w", err)
		}
		return hdr, ckpt, false, err
	}
	defer func() {
		if err != nil {
			_ = unlockShm(w.shm.f, wal.LockWrite, 1)
		}
	}()
	return w.validIndex()
}

// failedWrite follows a write that failed after it may have written
// frames: see rescan.
func (w *WALWriter) failedWrite() {
	w.rescan, w.hasPublished = true, false
}

// validIndex returns a valid wal-index header, rebuilding the index if it
// does not describe the WAL, or if a write failed since the last rebuild
// (rescan). The caller holds WAL_WRITE_LOCK.
func (w *WALWriter) validIndex() (hdr wal.IndexHeader, ckpt wal.CkptInfo, recovered bool, err error) {
	hdr, ckpt, ok, err := w.shm.readHeader()
	if err != nil {
		return hdr, ckpt, false, fmt.Errorf("read the wal-index header: %w", err)
	}
	if w.rescan && ok {
		w.log.Info("a write to the WAL failed; rebuilding the wal-index from the WAL before the next", logkey.Frames, hdr.MxFrame)
		ok = false
	}
	if ok {
		if hdr.Version != wal.IndexVersion {
			return hdr, ckpt, false, fmt.Errorf("%w: the wal-index has format version %d, not %d", pagewire.ErrCorrupt, hdr.Version, wal.IndexVersion)
		}
		if ok, err = w.indexMatchesWAL(hdr, ckpt); err != nil {
			return hdr, ckpt, false, err
		}
	}
	if ok {
		return hdr, ckpt, false, nil
	}
	// Recovery also holds WAL_CKPT_LOCK and WAL_RECOVER_LOCK.
	if err := lockShm(w.shm.f, wal.LockCkpt, 2, true); err != nil {
		if !errors.Is(err, errLockBusy) {
			err = fmt.Errorf("take the wal-index recovery locks: %w", err)
		}
		return hdr, ckpt, false, err
	}
	hdr, ckpt, err = w.recover()
	if uerr := unlockShm(w.shm.f, wal.LockCkpt, 2); uerr != nil && err == nil {
		err = fmt.Errorf("release the wal-index recovery locks: %w", uerr)
	}
	if err == nil {
		w.rescan = false
	}
	return hdr, ckpt, true, err
}

// indexMatchesWAL reports whether a valid wal-index header describes the WAL
// file: its frames exist and carry the header's salts. The caller holds
// WAL_WRITE_LOCK, so no writer is between states.
func (w *WALWriter) indexMatchesWAL(hdr wal.IndexHeader, ckpt wal.CkptInfo) (bool, error) {
	if ckpt.NBackfill > hdr.MxFrame {
		return false, nil
	}
	if hdr.MxFrame == 0 {
		return true, nil
	}
	if hdr.PageSize != w.pageSize {
		return false, nil
	}
	if w.hasPublished && hdr == w.published {
		return true, nil // see published
	}
	fi, err := w.wal.Stat()
	if err != nil {
		return false, fmt.Errorf("stat the WAL: %w", err)
	}
	if fi.Size() < wal.FrameOffset(hdr.MxFrame+1, w.pageSize) {
		return false, nil
	}
	var b [wal.HeaderSize]byte
	if _, err := w.wal.ReadAt(b[:], 0); err != nil {
		return false, fmt.Errorf("read the WAL header: %w", err)
	}
	wh, err := wal.DecodeHeader(b[:])
	if err != nil {
		return false, nil
	}
	return wh.Salt == hdr.Salt && wh.BigEndianChecksum == hdr.BigEndianChecksum && wh.PageSize == w.pageSize, nil
}

// recover rebuilds the wal-index from the WAL, as SQLite's walIndexRecover
// does: every valid frame up to the last commit frame is indexed, then
// nBackfill = 0, nBackfillAttempted = mxFrame, aReadMark[1] = mxFrame (unused
// if 0) and [2..4] unused (each only if its READ_LOCK is free), then the
// header is published. The caller holds WAL_WRITE_LOCK, WAL_CKPT_LOCK and
// WAL_RECOVER_LOCK.
//
// Blocks are built in memory and written whole, so entries a reader may be
// using are rewritten with the values they had, never zeroed meanwhile.
func (w *WALWriter) recover() (wal.IndexHeader, wal.CkptInfo, error) {
	// Scan the WAL, under a header that differs from any a reader has.
	hdr := wal.IndexHeader{PageSize: w.pageSize}
	var raw [12]byte
	if n, _ := w.shm.f.ReadAt(raw[:], 0); n == len(raw) {
		hdr.Change = wal.IndexOrder.Uint32(raw[8:]) + 1
	}
	w.dropCachedWAL()
	pgnos, err := w.scanWAL(&hdr)
	if err != nil {
		return hdr, wal.CkptInfo{}, err
	}

	// Index the frames, block by block.
	if err := w.shm.grow(int64(wal.BlockOf(max(hdr.MxFrame, 1))+1) * wal.BlockSize); err != nil {
		return hdr, wal.CkptInfo{}, fmt.Errorf("grow the -shm: %w", err)
	}
	if hdr.MxFrame > 0 {
		for k := uint32(0); k <= wal.BlockOf(hdr.MxFrame); k++ {
			b := wal.NewBlock(k, make([]byte, wal.BlockSize))
			b.Reset()
			zero := wal.BlockZero(k)
			for n := zero + 1; n <= min(hdr.MxFrame, zero+uint32(b.Entries())); n++ {
				if err := b.Add(int(n-zero), pgnos[n-1]); err != nil {
					return hdr, wal.CkptInfo{}, err
				}
			}
			if err := w.shm.storeBlock(b); err != nil {
				return hdr, wal.CkptInfo{}, fmt.Errorf("write the wal-index: %w", err)
			}
		}
	}

	// Reset the checkpoint info, then publish.
	if err := w.shm.writeNBackfill(0); err != nil {
		return hdr, wal.CkptInfo{}, fmt.Errorf("write the wal-index: %w", err)
	}
	if err := w.shm.writeNBackfillAttempted(hdr.MxFrame); err != nil {
		return hdr, wal.CkptInfo{}, fmt.Errorf("write the wal-index: %w", err)
	}
	if err := w.recoverReadMarks(hdr.MxFrame); err != nil {
		return hdr, wal.CkptInfo{}, err
	}
	if err := w.shm.publish(&hdr); err != nil {
		return hdr, wal.CkptInfo{}, fmt.Errorf("write the wal-index header: %w", err)
	}

	// Read back the checkpoint info just written.
	_, ckpt, _, err := w.shm.readHeader()
	if err != nil {
		return hdr, wal.CkptInfo{}, fmt.Errorf("read the wal-index header: %w", err)
	}
	return hdr, ckpt, nil
}

// dropCachedWAL drops what the kernel cached of the WAL, so that a scan
// reads what the file holds. On a pagewire mount the kernel keeps the
// frames this process wrote, and the storage may since have zeroed the
// header of a commit it refused: read from the cache, that commit would
// be found valid, indexed and appended after, though the storage counted
// none of it. Errors are ignored: a file system without a page cache
// has nothing to drop.
func (w *WALWriter) dropCachedWAL() {
	_ = unix.Fadvise(int(w.wal.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// recoverReadMarks sets aReadMark[1] to mxFrame (unused if 0) and [2..4]
// unused, each only if its READ_LOCK is free, as recovery does.
func (w *WALWriter) recoverReadMarks(mxFrame uint32) error {
	for i := 1; i < wal.Readers; i++ {
		err := lockShm(w.shm.f, wal.LockRead0+int64(i), 1, true)
		if errors.Is(err, errLockBusy) {
			continue // a reader uses it: leave it
		}
		if err != nil {
			return fmt.Errorf("lock read mark %d: %w", i, err)
		}
		mark := uint32(wal.ReadMarkUnused)
		if i == 1 && mxFrame > 0 {
			mark = mxFrame
		}
		err = w.shm.writeReadMark(i, mark)
		if uerr := unlockShm(w.shm.f, wal.LockRead0+int64(i), 1); err == nil {
			err = uerr
		}
		if err != nil {
			return fmt.Errorf("write read mark %d: %w", i, err)
		}
	}
	return nil
}

// scanWAL reads the WAL as SQLite's recovery does and fills in hdr's WAL
// fields: it returns the page of every frame up to the last valid commit
// frame. A WAL without a valid header is empty.
func (w *WALWriter) scanWAL(hdr *wal.IndexHeader) ([]uint32, error) {
	r, err := wal.NewReader(w.wal)
	switch {
	case errors.Is(err, wal.ErrNoHeader):
		return nil, nil
	case errors.Is(err, wal.ErrBadVersion):
		return nil, fmt.Errorf("%w: %v: this SQLite WAL is of a format pagewire does not know", pagewire.ErrCorrupt, err)
	case err != nil:
		return nil, fmt.Errorf("read the WAL header: %w", err)
	}
	wh := r.Header()
	if wh.PageSize != w.pageSize {
		return nil, fmt.Errorf("%w: the WAL's page size is %d but the database's is %d", pagewire.ErrCorrupt, wh.PageSize, w.pageSize)
	}
	hdr.BigEndianChecksum, hdr.Salt, hdr.FrameChecksum = wh.BigEndianChecksum, wh.Salt, wh.Checksum
	var pgnos []uint32
	for {
		fh, err := r.Next()
		if errors.Is(err, io.EOF) {
			return pgnos[:hdr.MxFrame], nil
		}
		if err != nil {
			return nil, fmt.Errorf("read the WAL: %w", err)
		}
		pgnos = append(pgnos, fh.Pgno)
		if fh.Commit != 0 {
			hdr.MxFrame, hdr.NPage, hdr.FrameChecksum = r.Frame(), fh.Commit, r.Checksum()
		}
	}
}

// appendTxns writes checked transactions. The caller holds WAL_WRITE_LOCK
// and hdr is the current header.
func (w *WALWriter) appendTxns(hdr wal.IndexHeader, ckpt wal.CkptInfo, txns []pagewire.Txn, sync bool) error {
	// The frames of every transaction, in order; commit marks each
	// transaction's last frame with its database size.
	var pages []pagewire.Page
	commits := map[int]uint32{}
	for _, t := range txns {
		pages = append(pages, t.Pages...)
		commits[len(pages)-1] = t.PageCount
	}
	pageCount := txns[len(txns)-1].PageCount

	// Start a new WAL generation first if the WAL is empty or may restart.
	hdr, err := w.startGeneration(hdr, ckpt, sync)
	if err != nil {
		return err
	}

	// Write and index the frames, then publish them.
	enc := wal.Encoder{BigEndianChecksum: hdr.BigEndianChecksum, Salt: hdr.Salt, Checksum: hdr.FrameChecksum}
	if err := w.writeFrames(&enc, hdr.MxFrame+1, pages, commits, sync); err != nil {
		return err
	}
	if err := w.indexFrames(hdr.MxFrame, pages); err != nil {
		return err
	}
	return w.publishCommit(hdr, uint32(len(pages)), pageCount, enc.Checksum)
}

// publishCommit publishes hdr moved on by frames new frames, the last a
// commit of a database of pageCount pages with running checksum sum: what
// makes a transaction visible to readers.
func (w *WALWriter) publishCommit(hdr wal.IndexHeader, frames, pageCount uint32, sum wal.Checksum) error {
	hdr.MxFrame += frames
	hdr.NPage = pageCount
	hdr.FrameChecksum = sum
	hdr.PageSize = w.pageSize
	hdr.Change++
	if w.testHookBeforePublish != nil {
		w.testHookBeforePublish()
	}
	w.hasPublished = false
	if err := w.shm.publish(&hdr); err != nil {
		return fmt.Errorf("publish the wal-index header: %w", err)
	}
	w.published, w.hasPublished = hdr, true
	w.frames = hdr.MxFrame
	return nil
}

// startGeneration writes a new WAL header, if the WAL restarts (see
// restart) or has no frames, and returns the wal-index header to append
// under.
func (w *WALWriter) startGeneration(hdr wal.IndexHeader, ckpt wal.CkptInfo, sync bool) (wal.IndexHeader, error) {
	var newHdr []byte // a new WAL header to write first

	// A WAL whose frames are all in the database file may start over.
	if hdr.MxFrame > 0 && ckpt.NBackfill == hdr.MxFrame {
		h, wh, ok, err := w.restart(hdr)
		if err != nil {
			return hdr, fmt.Errorf("restart the WAL: %w", err)
		}
		if ok {
			hdr = h
			b := wh.Encode()
			newHdr = b[:]
		}
	}

	// An empty WAL gets a new header.
	if hdr.MxFrame == 0 && newHdr == nil {
		wh, err := w.nextWALHeader()
		if err != nil {
			return hdr, err
		}
		b := wh.Encode()
		newHdr = b[:]
		hdr.BigEndianChecksum, hdr.Salt, hdr.FrameChecksum = wh.BigEndianChecksum, wh.Salt, wh.Checksum
	}

	// Write the new header, durably if sync.
	if newHdr == nil {
		return hdr, nil
	}
	if _, err := w.wal.WriteAt(newHdr, 0); err != nil {
		return hdr, fmt.Errorf("write the WAL header: %w", err)
	}
	if sync {
		if err := w.syncWAL(); err != nil {
			return hdr, err
		}
	}
	return hdr, nil
}

// writeFrames writes pages as frames first, first+1..., chaining the
// checksum with enc, with commits[i] on the i'th frame (0 if absent), up
// to maxWrite bytes at a time, and fsyncs them if sync. enc holds the
// running checksum after the last frame written.
func (w *WALWriter) writeFrames(enc *wal.Encoder, first uint32, pages []pagewire.Page, commits map[int]uint32, sync bool) error {
	fsz := wal.FrameHeaderSize + int(w.pageSize)
	per := max(1, maxWrite/fsz)
	for i := 0; i < len(pages); i += per {
		batch := pages[i:min(len(pages), i+per)]
		buf := w.frameBuf(len(batch) * fsz)
		for j, p := range batch {
			commit := commits[i+j] // 0 but on a transaction's last frame
			enc.EncodeFrame(buf[j*fsz:(j+1)*fsz], p.Pgno, commit, p.Data)
		}
		if _, err := w.wal.WriteAt(buf, wal.FrameOffset(first+uint32(i), w.pageSize)); err != nil {
			return fmt.Errorf("write frames to the WAL: %w", err)
		}
	}
	if sync {
		return w.syncWAL()
	}
	return nil
}

// frameBuf returns a reused buffer of n bytes.
func (w *WALWriter) frameBuf(n int) []byte {
	if cap(w.buf) < n {
		w.buf = make([]byte, n)
	}
	return w.buf[:n]
}

// syncWAL fsyncs the WAL, and the directory after the writer created the
// WAL (ignoring errors there, as SQLite does).
func (w *WALWriter) syncWAL() error {
	if err := w.wal.Sync(); err != nil {
		return fmt.Errorf("fsync the WAL: %w", err)
	}
	if w.walCreated {
		w.walCreated = false
		if d, err := os.Open(filepath.Dir(w.path)); err == nil {
			_ = d.Sync()
			_ = d.Close()
		}
	}
	return nil
}

// restart starts the WAL over, as SQLite's walRestartLog does before a
// writer's first frame, if every frame is in the database file (the caller
// checked nBackfill == mxFrame > 0) and no reader uses a read mark: it takes
// READ_LOCK(1..4) exclusive, publishes mxFrame = 0 with the new salts, and
// resets nBackfill, nBackfillAttempted and the read marks. ok is false if a
// reader holds a read mark. It returns the new header and the WAL header to
// write.
func (w *WALWriter) restart(hdr wal.IndexHeader) (wal.IndexHeader, wal.Header, bool, error) {
	err := lockShm(w.shm.f, wal.LockRead0+1, wal.Readers-1, true)
	if errors.Is(err, errLockBusy) {
		return hdr, wal.Header{}, false, nil // a reader uses the WAL: keep appending
	}
	if err != nil {
		return hdr, wal.Header{}, false, fmt.Errorf("lock the read marks: %w", err)
	}
	hdr, wh, err := w.restartLocked(hdr)
	if uerr := unlockShm(w.shm.f, wal.LockRead0+1, wal.Readers-1); uerr != nil && err == nil {
		err = fmt.Errorf("unlock the read marks: %w", uerr)
	}
	return hdr, wh, err == nil, err
}

func (w *WALWriter) restartLocked(hdr wal.IndexHeader) (wal.IndexHeader, wal.Header, error) {
	wh, err := w.nextWALHeader()
	if err != nil {
		return hdr, wh, err
	}
	// The WAL header matched the index (indexMatchesWAL), so salt-1 is the
	// index's plus one, as in SQLite's walRestartHdr.
	hdr.MxFrame = 0
	hdr.BigEndianChecksum, hdr.Salt, hdr.FrameChecksum = wh.BigEndianChecksum, wh.Salt, wh.Checksum
	if err := w.shm.publish(&hdr); err != nil {
		return hdr, wh, fmt.Errorf("publish the wal-index header: %w", err)
	}
	if err := w.shm.writeNBackfill(0); err != nil {
		return hdr, wh, err
	}
	if err := w.shm.writeNBackfillAttempted(0); err != nil {
		return hdr, wh, err
	}
	var marks [16]byte // aReadMark[1..4], one aligned write: we hold all four locks
	wal.IndexOrder.PutUint32(marks[0:], 0)
	for i := 4; i < len(marks); i += 4 {
		wal.IndexOrder.PutUint32(marks[i:], wal.ReadMarkUnused)
	}
	if err := w.shm.writeAt(marks[:], wal.ReadMarkOffset+4); err != nil {
		return hdr, wh, err
	}
	return hdr, wh, nil
}

// nextWALHeader returns the header of a new WAL generation, with salts that
// no frame in the file carries. If the file has a valid header, it keeps its
// checksum byte order, and takes checkpoint sequence + 1, salt-1 + 1 and a
// random salt-2, as SQLite's restart does; otherwise little-endian checksum
// words (what SQLite writes on x86 and arm64), sequence 0 and random salts.
func (w *WALWriter) nextWALHeader() (wal.Header, error) {
	wh := wal.Header{PageSize: w.pageSize}
	var b [wal.HeaderSize]byte
	n, err := w.wal.ReadAt(b[:], 0)
	if err != nil && err != io.EOF {
		return wh, fmt.Errorf("read the WAL header: %w", err)
	}
	wh.Salt[1] = rand.Uint32()
	if old, err := wal.DecodeHeader(b[:n]); err == nil {
		wh.BigEndianChecksum = old.BigEndianChecksum
		wh.CheckpointSeq = old.CheckpointSeq + 1
		wh.Salt[0] = old.Salt[0] + 1
	} else {
		wh.Salt[0] = rand.Uint32()
	}
	wh.Encode()
	return wh, nil
}

// indexFrames adds the wal-index entries of pages, frames mxFrame+1...,
// growing the -shm as needed. As SQLite's walIndexAppend does, a block's
// first frame zeroes it, and entries above mxFrame (left by a writer that
// crashed or rolled back) are removed first.
func (w *WALWriter) indexFrames(mxFrame uint32, pages []pagewire.Page) error {
	last := mxFrame + uint32(len(pages))

	// The -shm only grows while this writer holds it open (its DMS lock
	// keeps any connection from truncating it): once it was big enough,
	// it needs no stat through the mount.
	if need := int64(wal.BlockOf(last)+1) * wal.BlockSize; need > w.indexSize {
		if err := w.shm.grow(need); err != nil {
			return fmt.Errorf("grow the -shm: %w", err)
		}
		w.indexSize = need
	}

	// Add each page to its block, loading a block that already has frames.
	var b *wal.Block
	for i, p := range pages {
		n := mxFrame + 1 + uint32(i)
		k := wal.BlockOf(n)
		idx := int(n - wal.BlockZero(k))
		if b == nil || b.K() != k {
			if b != nil {
				if err := w.shm.storeBlock(b); err != nil {
					return fmt.Errorf("write the wal-index: %w", err)
				}
			}
			if idx == 1 {
				b = wal.NewBlock(k, make([]byte, wal.BlockSize))
				b.Reset()
			} else {
				var err error
				if b, err = w.shm.loadBlock(k); err != nil {
					return fmt.Errorf("read the wal-index: %w", err)
				}
				b.Truncate(idx - 1)
			}
		}
		if err := b.Add(idx, p.Pgno); err != nil {
			return err
		}
	}

	// Store the last block.
	if err := w.shm.storeBlock(b); err != nil {
		return fmt.Errorf("write the wal-index: %w", err)
	}
	return nil
}

package replicator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/backoff"
	"github.com/pagewire/pagewire/wal"
)

// Checkpoint copies committed frames into the database file as SQLite's
// PASSIVE checkpoint does, without blocking readers or writers: it copies
// the newest version of each page up to the oldest frame a reader still
// needs, and reports whether the whole WAL is now in the database file
// (then the next Apply starts the WAL over, unless a reader is pinned to it).
// It copies nothing while a reader reads the database file alone (one that
// began when the WAL was fully copied); complete is false then.
//
// Errors: pagewire.ErrBusy if another process is checkpointing (nothing was
// copied; try later); ctx's error if ctx ends (what was copied stays valid,
// but is not yet counted); pagewire.ErrCorrupt if the WAL's frames are not
// those the wal-index names; I/O errors.
func (w *WALWriter) Checkpoint(ctx context.Context) (complete bool, err error) {
	if w.held {
		// Its WAL restart would take and then drop the write lock held.
		return false, fmt.Errorf("checkpoint %s: %w: the WAL write lock is held (Hold); Release first", w.path, pagewire.ErrBusy)
	}
	if w.db == nil {
		return false, fmt.Errorf("checkpoint: %w", errWALWriterClosed)
	}
	if w.part != nil {
		return false, fmt.Errorf("checkpoint %s: %w", w.path, errPartOpen)
	}
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("checkpoint %s: %w", w.path, err)
	}
	if err := lockShm(w.shm.f, wal.LockCkpt, 1, true); err != nil {
		if errors.Is(err, errLockBusy) {
			return false, fmt.Errorf("checkpoint %s: another process is checkpointing; try again later: %w", w.path, pagewire.ErrBusy)
		}
		return false, fmt.Errorf("checkpoint %s: take the checkpoint lock: %w", w.path, err)
	}
	complete, err = w.checkpoint(ctx)
	if uerr := unlockShm(w.shm.f, wal.LockCkpt, 1); uerr != nil && err == nil {
		err = fmt.Errorf("release the checkpoint lock: %w", uerr)
	}
	if err != nil {
		return false, fmt.Errorf("checkpoint %s: %w", w.path, err)
	}
	return complete, nil
}

// checkpoint runs SQLite's walCheckpoint in PASSIVE mode. The caller holds
// WAL_CKPT_LOCK.
func (w *WALWriter) checkpoint(ctx context.Context) (bool, error) {
	hdr, ckpt, err := w.ckptHeader(ctx)
	if err != nil {
		return false, err
	}
	w.frames = hdr.MxFrame
	if ckpt.NBackfill >= hdr.MxFrame {
		return true, nil
	}

	// Frames above a reader's mark may be what it reads instead of the
	// database file: stop below the oldest mark in use.
	mxSafe, err := w.safeFrame(hdr.MxFrame)
	if err != nil {
		return false, err
	}
	if ckpt.NBackfill >= mxSafe {
		return false, nil
	}

	// READ_LOCK(0) exclusive: no reader is reading the database file alone,
	// whose snapshot the copy would change.
	err = lockShm(w.shm.f, wal.LockRead0, 1, true)
	if errors.Is(err, errLockBusy) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("lock read mark 0: %w", err)
	}
	complete, err := w.backfill(ctx, hdr, mxSafe)
	if uerr := unlockShm(w.shm.f, wal.LockRead0, 1); uerr != nil && err == nil {
		err = fmt.Errorf("unlock read mark 0: %w", uerr)
	}
	return complete, err
}

// safeFrame returns the last frame up to mxFrame that no reader's mark
// keeps out of the database file. Free marks below mxFrame are moved up (1)
// or retired (2..4).
func (w *WALWriter) safeFrame(mxFrame uint32) (uint32, error) {
	mxSafe := mxFrame
	for i := 1; i < wal.Readers; i++ {
		_, c, _, err := w.shm.readHeader()
		if err != nil {
			return 0, fmt.Errorf("read the wal-index: %w", err)
		}
		y := c.ReadMark[i]
		if mxSafe <= y {
			continue
		}
		err = lockShm(w.shm.f, wal.LockRead0+int64(i), 1, true)
		if errors.Is(err, errLockBusy) {
			mxSafe = y
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("lock read mark %d: %w", i, err)
		}
		mark := uint32(wal.ReadMarkUnused)
		if i == 1 {
			mark = mxSafe
		}
		err = w.shm.writeReadMark(i, mark)
		if uerr := unlockShm(w.shm.f, wal.LockRead0+int64(i), 1); err == nil {
			err = uerr
		}
		if err != nil {
			return 0, fmt.Errorf("write read mark %d: %w", i, err)
		}
	}
	return mxSafe, nil
}

// backfill copies frames nBackfill+1..mxSafe into the database file and
// advances nBackfill. The caller holds WAL_CKPT_LOCK and READ_LOCK(0).
func (w *WALWriter) backfill(ctx context.Context, hdr wal.IndexHeader, mxSafe uint32) (bool, error) {
	_, ckpt, _, err := w.shm.readHeader()
	if err != nil {
		return false, fmt.Errorf("read the wal-index: %w", err)
	}
	from := ckpt.NBackfill
	if from >= mxSafe {
		return false, nil
	}

	// Record the attempt and make the WAL durable before copying from it.
	if err := w.shm.writeNBackfillAttempted(mxSafe); err != nil {
		return false, fmt.Errorf("write the wal-index: %w", err)
	}
	if err := w.wal.Sync(); err != nil {
		return false, fmt.Errorf("fsync the WAL: %w", err)
	}

	// Copy the newest frame of each page in from+1..mxSafe.
	newest, err := w.newestFrames(from, mxSafe, hdr.NPage)
	if err != nil {
		return false, err
	}
	if err := w.copyFrames(ctx, newest, hdr.Salt); err != nil {
		return false, err
	}

	// All frames copied: the database file is the newest snapshot; make it
	// that size and durable before saying so (a restart then overwrites the
	// frames).
	live, _, _, err := w.shm.readHeader()
	if err != nil {
		return false, fmt.Errorf("read the wal-index: %w", err)
	}
	complete := live.MxFrame == mxSafe
	if complete {
		if hdr.NPage > 0 {
			if err := w.db.Truncate(int64(hdr.NPage) * int64(w.pageSize)); err != nil {
				return false, fmt.Errorf("truncate the database: %w", err)
			}
		}
		if err := w.db.Sync(); err != nil {
			return false, fmt.Errorf("fsync the database: %w", err)
		}
	}

	// Then record how far the database file is backfilled.
	if err := w.shm.writeNBackfill(mxSafe); err != nil {
		return false, fmt.Errorf("write the wal-index: %w", err)
	}
	return complete, nil
}

// frameOfPage is the frame that holds a page's newest version.
type frameOfPage struct{ pgno, frame uint32 }

// newestFrames returns the newest frame of each page in from+1..to, within
// the database's nPage pages (all if 0), by page number.
func (w *WALWriter) newestFrames(from, to, nPage uint32) ([]frameOfPage, error) {
	pgnos, err := w.shm.readPgnos(from, to)
	if err != nil {
		return nil, fmt.Errorf("read the wal-index: %w", err)
	}
	newest := make(map[uint32]uint32, len(pgnos))
	for i, p := range pgnos {
		if p == 0 {
			return nil, fmt.Errorf("%w: no page for frame %d", wal.ErrIndexCorrupt, from+1+uint32(i))
		}
		if nPage == 0 || p <= nPage {
			newest[p] = from + 1 + uint32(i)
		}
	}
	order := make([]frameOfPage, 0, len(newest))
	for p, n := range newest {
		order = append(order, frameOfPage{p, n})
	}
	slices.SortFunc(order, func(a, b frameOfPage) int { return cmp.Compare(a.pgno, b.pgno) })
	return order, nil
}

// copyFrames copies the pages of frames, in page order, into the database
// file: one write per run of consecutive pages. Each frame must hold its
// page and carry salt.
func (w *WALWriter) copyFrames(ctx context.Context, frames []frameOfPage, salt wal.Salt) error {
	ps := int64(w.pageSize)
	frame := make([]byte, wal.FrameHeaderSize+ps)
	run := w.frameBuf(0)
	var runStart uint32

	// flush writes the run of consecutive pages gathered so far.
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		if _, err := w.db.WriteAt(run, int64(runStart-1)*ps); err != nil {
			return fmt.Errorf("write the database: %w", err)
		}
		run = run[:0]
		return nil
	}

	// Read each frame, check it, and add its page to the run.
	for _, f := range frames {
		if err := ctx.Err(); err != nil {
			return err
		}
		p, n := f.pgno, f.frame
		if _, err := w.wal.ReadAt(frame, wal.FrameOffset(n, w.pageSize)); err != nil {
			return fmt.Errorf("read frame %d of the WAL: %w", n, err)
		}
		if fh := wal.DecodeFrameHeader(frame); fh.Pgno != p || fh.Salt != salt {
			return fmt.Errorf("%w: WAL frame %d holds page %d, salts %08x; the wal-index says page %d, salts %08x", pagewire.ErrCorrupt, n, fh.Pgno, fh.Salt, p, salt)
		}
		if len(run) > 0 && (p != runStart+uint32(int64(len(run))/ps) || len(run)+int(ps) > maxWrite) {
			if err := flush(); err != nil {
				return err
			}
		}
		if len(run) == 0 {
			runStart = p
		}
		run = append(run, frame[wal.FrameHeaderSize:]...)
	}

	// Write the last run, and keep its buffer for next time.
	if err := flush(); err != nil {
		return err
	}
	w.buf = run[:0]
	return nil
}

// ckptHeader returns a valid wal-index header, rebuilding the index if it is
// invalid. The caller holds WAL_CKPT_LOCK. An invalid header while another
// process holds WAL_WRITE_LOCK is a writer publishing or recovering: it
// waits, until ctx is done.
func (w *WALWriter) ckptHeader(ctx context.Context) (wal.IndexHeader, wal.CkptInfo, error) {
	b := backoff.New(lockMinWait, lockMaxWait)
	waited := false
	for {
		hdr, ckpt, ok, err := w.shm.readHeader()
		if err != nil {
			return hdr, ckpt, fmt.Errorf("read the wal-index header: %w", err)
		}
		if ok {
			switch {
			case hdr.Version != wal.IndexVersion:
				return hdr, ckpt, fmt.Errorf("%w: the wal-index has format version %d, not %d", pagewire.ErrCorrupt, hdr.Version, wal.IndexVersion)
			case hdr.MxFrame > 0 && hdr.PageSize != w.pageSize:
				return hdr, ckpt, fmt.Errorf("%w: the WAL's page size is %d but the database's is %d", pagewire.ErrCorrupt, hdr.PageSize, w.pageSize)
			}
			return hdr, ckpt, nil
		}

		// An invalid header: rebuild the index unless another process is writing it.
		hdr, ckpt, recovered, err := w.tryRecoverForCkpt()
		if err == nil {
			if recovered {
				w.logRecovered(hdr)
			}
			continue // read it again, and check it
		}

		// Another process holds the lock: wait, then read again.
		if !errors.Is(err, errLockBusy) {
			return hdr, ckpt, err
		}
		if !waited {
			w.log.Debug("waiting for another process to finish writing the wal-index")
		}
		if err := b.Wait(ctx); err != nil {
			return hdr, ckpt, fmt.Errorf("wait for the wal-index: %w", err)
		}
		waited = true
	}
}

// tryRecoverForCkpt rebuilds an invalid wal-index under WAL_WRITE_LOCK and
// WAL_RECOVER_LOCK (the caller holds WAL_CKPT_LOCK). It returns errLockBusy
// if another process holds either.
func (w *WALWriter) tryRecoverForCkpt() (hdr wal.IndexHeader, ckpt wal.CkptInfo, recovered bool, err error) {
	if err := lockShm(w.shm.f, wal.LockWrite, 1, true); err != nil {
		return hdr, ckpt, false, err
	}
	defer func() {
		if uerr := unlockShm(w.shm.f, wal.LockWrite, 1); uerr != nil && err == nil {
			err = fmt.Errorf("release the WAL write lock: %w", uerr)
		}
	}()
	hdr, ckpt, ok, err := w.shm.readHeader()
	if err != nil || ok {
		return hdr, ckpt, false, err
	}
	if err := lockShm(w.shm.f, wal.LockRecover, 1, true); err != nil {
		return hdr, ckpt, false, err
	}
	hdr, ckpt, err = w.recover()
	if uerr := unlockShm(w.shm.f, wal.LockRecover, 1); uerr != nil && err == nil {
		err = fmt.Errorf("release the recovery lock: %w", uerr)
	}
	return hdr, ckpt, err == nil, err
}

package replicator

import (
	"context"
	"fmt"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/wal"
)

// A transaction too big to hold in memory (a VACUUM, a migration, a
// snapshot) is appended a part at a time, as SQLite's own writer spills a
// big transaction into the WAL before its commit: each part's frames are
// written and indexed past the wal-index's mxFrame, where no reader looks,
// and only the last part writes the commit frame and publishes the
// wal-index header. Until then readers see the database as before, and the
// storage server counts nothing (it counts a transaction at its commit
// frame). A transaction given up (AbortPart) leaves its frames past mxFrame,
// where the next write overwrites them.

// TxnPart is one part of a transaction appended a part at a time.
type TxnPart struct {
	// PageCount is the database's size in pages after the transaction:
	// the same in every part.
	PageCount uint32
	// Pages are the part's pages, ascending, each after the last page of
	// the part before.
	Pages []pagewire.Page
	// First begins a transaction (a transaction begun before and not
	// finished is given up); Last finishes it.
	First, Last bool
}

// errPartOpen: a transaction is being appended a part at a time.
var errPartOpen = fmt.Errorf("%w: a transaction is being applied a part at a time: finish it (its last part) or give it up (AbortPart) first", pagewire.ErrBusy)

// walPart is a transaction being appended a part at a time.
type walPart struct {
	hdr       wal.IndexHeader // the wal-index header it appends to; published at its last part
	enc       wal.Encoder     // the running checksum after its frames so far
	frames    uint32          // frames written so far
	last      uint32          // its last page so far
	pageCount uint32
}

// ApplyPart appends one part of a transaction (see TxnPart). The first
// part waits for WAL_WRITE_LOCK as Apply does, until ctx is done, and keeps
// it until the last part or AbortPart: SQLite's writers in other processes
// wait meanwhile, its readers do not. The last part writes the commit
// frame, fsyncs the WAL if sync, and publishes the transaction: readers
// see all of it at once, or none of it.
//
// Errors: pagewire.ErrInvalidArgument for a bad part, one that does not
// follow the part before, or one without a transaction begun (nothing of
// the part is written); otherwise as Apply's. Any error gives the
// transaction up.
func (w *WALWriter) ApplyPart(ctx context.Context, p TxnPart, sync bool) error {
	if w.db == nil {
		return fmt.Errorf("apply part: %w", errWALWriterClosed)
	}
	if err := w.applyPart(ctx, p, sync); err != nil {
		_ = w.AbortPart()
		return fmt.Errorf("apply to %s: %w", w.path, err)
	}
	return nil
}

func (w *WALWriter) applyPart(ctx context.Context, p TxnPart, sync bool) error {
	// A first part gives up any transaction before it; a later one must
	// follow it.
	if p.First {
		if err := w.AbortPart(); err != nil {
			return err
		}
	}
	switch {
	case !p.First && w.part == nil:
		return fmt.Errorf("%w: a part of a transaction that was not begun (or was given up)", pagewire.ErrInvalidArgument)
	case w.part != nil && p.PageCount != w.part.pageCount:
		return fmt.Errorf("%w: a part gives the database size %d pages, the transaction's first %d", pagewire.ErrInvalidArgument, p.PageCount, w.part.pageCount)
	case w.part != nil && len(p.Pages) > 0 && p.Pages[0].Pgno <= w.part.last:
		return fmt.Errorf("%w: a part starts at page %d, not after page %d", pagewire.ErrInvalidArgument, p.Pages[0].Pgno, w.part.last)
	}
	if err := w.checkTxn(p.PageCount, p.Pages); err != nil {
		return err
	}

	// The first part takes the write lock and a valid index, and starts a
	// new WAL generation if the WAL is empty or may restart.
	if p.First {
		hdr, ckpt, err := w.beginPart(ctx)
		if err != nil {
			return err
		}
		w.part = &walPart{hdr: hdr, pageCount: p.PageCount}
		if w.part.hdr, err = w.startGeneration(hdr, ckpt, false); err != nil {
			w.failedWrite()
			return err
		}
		h := w.part.hdr
		w.part.enc = wal.Encoder{BigEndianChecksum: h.BigEndianChecksum, Salt: h.Salt, Checksum: h.FrameChecksum}
	}

	// Write and index the part's frames past mxFrame; the last one of the
	// last part is the commit frame.
	part := w.part
	first := part.hdr.MxFrame + part.frames + 1
	var commits map[int]uint32
	if p.Last {
		commits = map[int]uint32{len(p.Pages) - 1: p.PageCount}
	}
	if err := w.writeFrames(&part.enc, first, p.Pages, commits, sync && p.Last); err != nil {
		w.failedWrite()
		return err
	}
	if err := w.indexFrames(first-1, p.Pages); err != nil {
		w.failedWrite()
		return err
	}
	part.frames += uint32(len(p.Pages))
	part.last = p.Pages[len(p.Pages)-1].Pgno
	if !p.Last {
		return nil
	}

	// The last part publishes the whole transaction, and lets the lock go.
	if err := w.publishCommit(part.hdr, part.frames, p.PageCount, part.enc.Checksum); err != nil {
		w.failedWrite()
		return err
	}
	w.part = nil
	if !w.held {
		if err := unlockShm(w.shm.f, wal.LockWrite, 1); err != nil {
			return fmt.Errorf("release the WAL write lock: %w", err)
		}
	}
	return nil
}

// beginPart takes WAL_WRITE_LOCK, unless Hold holds it, and returns a
// valid wal-index header.
func (w *WALWriter) beginPart(ctx context.Context) (wal.IndexHeader, wal.CkptInfo, error) {
	if !w.held {
		return w.beginWrite(ctx)
	}
	hdr, ckpt, recovered, err := w.validIndex()
	if err == nil && recovered {
		w.logRecovered(hdr)
	}
	return hdr, ckpt, err
}

// AbortPart gives up the transaction being appended a part at a time, if
// any: its frames stay past mxFrame, seen by no reader, and the next write
// overwrites them. It releases WAL_WRITE_LOCK unless Hold holds it.
func (w *WALWriter) AbortPart() error {
	if w.part == nil {
		return nil
	}
	w.part = nil
	if w.held || w.db == nil {
		return nil
	}
	if err := unlockShm(w.shm.f, wal.LockWrite, 1); err != nil {
		return fmt.Errorf("release the WAL write lock of %s: %w", w.path, err)
	}
	return nil
}

package replicator

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/internal/safego"
)

// A transaction too big for one message (a VACUUM, a migration) and a
// snapshot go through a replica a part at a time: each part is checked,
// added to a running checksum and written to the WAL past what readers
// see (WALWriter.ApplyPart) as it arrives; only the last part, once the
// checksum proves the whole, commits and becomes visible. Nothing holds
// more than a part, and what was read ahead of the apply is bounded in
// bytes: a replica's memory does not grow with the transaction, whatever
// the primary sends.

// readAheadBytes bounds the bytes of pages received from the primary and
// not yet taken by the apply (one event may exceed it alone): four of the
// primary's 2 MiB messages.
const readAheadBytes = 8 << 20

// eventQueue is a stream's events read ahead of the apply: at most
// maxBatchTxns of them and readAheadBytes of pages.
type eventQueue struct {
	ch   chan TxnEvent
	errc chan error // why ch was closed
	room *semaphore.Weighted
}

// eventWeight is what ev counts against readAheadBytes.
func eventWeight(ev TxnEvent) int64 {
	n := len(ev.SnapshotPages)
	if ev.Txn != nil {
		n = len(ev.Txn.Pages)
		if n > 0 {
			return min(readAheadBytes, int64(n)*int64(len(ev.Txn.Pages[0].Data)))
		}
	}
	if n > 0 {
		return min(readAheadBytes, int64(n)*int64(len(ev.SnapshotPages[0].Data)))
	}
	return 0
}

// readAhead receives the stream's events into a queue, so that
// transactions that arrive while one is applied go to the WAL together.
// Each event received postpones idle. The queue's channel is closed when
// Recv fails, or ctx ends; errc then holds why.
func (a *applier) readAhead(ctx context.Context, s TxnStream, idle *time.Timer) *eventQueue {
	q := &eventQueue{ch: make(chan TxnEvent, maxBatchTxns), errc: make(chan error, 1), room: semaphore.NewWeighted(readAheadBytes)}
	go func() {
		defer close(q.ch)
		// A panic receiving ends the stream like an error: the applier
		// returns it (safego logs it with its stack).
		q.errc <- safego.Call(a.log, "read the primary's transactions", func() error {
			for {
				ev, err := s.Recv()
				if err != nil {
					if ctx.Err() != nil && !idle.Stop() {
						err = fmt.Errorf("the primary sent nothing for %s", a.r.cfg.IdleTimeout)
					}
					return err
				}
				idle.Reset(a.r.cfg.IdleTimeout)

				// Wait for room, then queue it.
				if err := q.room.Acquire(ctx, eventWeight(ev)); err != nil {
					return err
				}
				select {
				case q.ch <- ev:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		})
	}()
	return q
}

// recv takes the next event; ok is false once the queue is closed.
func (q *eventQueue) recv() (ev TxnEvent, ok bool) {
	ev, ok = <-q.ch
	q.took(ev, ok)
	return ev, ok
}

// recvWithin takes the next event if one is queued, else waits for one
// until timeout fires (timedOut); a nil timeout does not wait.
func (q *eventQueue) recvWithin(timeout <-chan time.Time) (ev TxnEvent, ok, timedOut bool) {
	select {
	case ev, ok = <-q.ch:
	default:
		if timeout == nil {
			return ev, false, false
		}
		select {
		case ev, ok = <-q.ch:
		case <-timeout:
			return ev, false, true
		}
	}
	q.took(ev, ok)
	return ev, ok, false
}

// took gives back the room an event taken off the queue had.
func (q *eventQueue) took(ev TxnEvent, ok bool) {
	if ok {
		if w := eventWeight(ev); w > 0 {
			q.room.Release(w)
		}
	}
}

// partTxn is a transaction being applied a part at a time.
type partTxn struct {
	txn   pagewire.Txn // its header, from its first part
	have  pagewire.Pos // the local position it follows
	sum   uint64       // the checksum its parts so far lead to
	last  uint32       // its last page so far
	parts int          // parts applied
	// skip: this node has the transaction already (a halt lock's
	// holder's own, sent back), so its parts are only checked.
	skip bool
}

// applyPart applies one part of a big transaction; more is set on every
// part but the last. The first part must follow the local position, the
// others the part before; the last is refused, and nothing becomes
// visible, unless the whole transaction leads to its post-checksum.
func (a *applier) applyPart(ctx context.Context, t pagewire.Txn, more bool) error {
	// The first part begins the transaction; the others must be of it.
	if a.part == nil {
		p, err := a.beginPart(t)
		if err != nil {
			return err
		}
		a.part = p
		a.noteReceived([]pagewire.Txn{t})
	}
	p := a.part
	switch {
	case t.TXID != p.txn.TXID || t.PreChecksum != p.txn.PreChecksum || t.PostChecksum != p.txn.PostChecksum ||
		t.PageCount != p.txn.PageCount || t.PageSize != p.txn.PageSize:
		return fmt.Errorf("%w: transaction %d was cut off by a part of another (transaction %d)", pagewire.ErrInvalidArgument, p.txn.TXID, t.TXID)
	case len(t.Pages) == 0 || t.Pages[0].Pgno <= p.last:
		return fmt.Errorf("%w: a part of transaction %d does not carry pages after page %d", pagewire.ErrInvalidArgument, t.TXID, p.last)
	}
	p.last = t.Pages[len(t.Pages)-1].Pgno

	// A transaction this node has is only checked.
	if p.skip {
		if !more {
			a.part = nil
			if have, _ := a.r.cfg.Local.Position(a.name); t.TXID == have.TXID && t.PostChecksum != have.Checksum {
				a.log.Error("this node has a transaction the primary committed differently", logkey.TXID, have.TXID)
				return errProgress
			}
		}
		return nil
	}

	// The running checksum, whole at the last part: a transaction whose
	// pages do not lead to its post-checksum never commits.
	var truncate uint32
	if !more {
		truncate = t.PageCount
	}
	sum, err := a.r.cfg.Local.ChecksumPages(a.name, p.have, p.sum, t.Pages, truncate)
	if err != nil {
		return fmt.Errorf("transaction %d: %w", t.TXID, err)
	}
	p.sum = sum
	if !more && sum != t.PostChecksum {
		return fmt.Errorf("%w: transaction %d's pages lead to checksum %016x, not its post-checksum %016x: refused before it became visible",
			pagewire.ErrInvalidArgument, t.TXID, sum, t.PostChecksum)
	}

	// Write the part; the last commits the transaction.
	w, err := a.writer(ctx)
	if err != nil {
		return err
	}
	if w.PageSize() != t.PageSize {
		return fmt.Errorf("%w: transaction page size %d, database's %d", pagewire.ErrInvalidArgument, t.PageSize, w.PageSize())
	}
	a.pageCount = 0 // unknown until the commit
	if !more {
		// The storage checks the commit's checksum too, before readers
		// see it.
		done, err := a.r.cfg.Local.ExpectPosition(a.name, pagewire.Pos{TXID: t.TXID, Checksum: t.PostChecksum})
		if err != nil {
			return err
		}
		defer done()
	}
	part := TxnPart{PageCount: t.PageCount, Pages: t.Pages, First: p.parts == 0, Last: !more}
	if err := a.writerCall(ctx, w, func(ctx context.Context) error { return w.ApplyPart(ctx, part, a.sync && !more) }); err != nil {
		return fmt.Errorf("apply transaction %d: %w", t.TXID, err)
	}
	p.parts++
	if more {
		return nil
	}
	a.part = nil
	a.pageCount = t.PageCount
	hdr := t
	hdr.Pages = nil
	if err := a.finishApply([]pagewire.Txn{hdr}, pagewire.Pos{TXID: t.TXID, Checksum: t.PostChecksum}); err != nil {
		return err
	}
	a.noteApplied([]pagewire.Txn{hdr})
	return nil
}

// beginPart checks a big transaction's first part against the local
// position.
func (a *applier) beginPart(t pagewire.Txn) (*partTxn, error) {
	have, ok := a.r.cfg.Local.Position(a.name)
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: transaction %d for a database this node does not have", pagewire.ErrInvalidArgument, t.TXID)
	case t.TXID <= have.TXID:
		return &partTxn{txn: t, skip: true}, nil // its own, sent back (see applyTxns)
	case t.TXID != have.TXID+1 || t.PreChecksum != have.Checksum:
		return nil, fmt.Errorf("%w: transaction %d (pre-checksum %016x) does not follow position %s", pagewire.ErrInvalidArgument, t.TXID, t.PreChecksum, have)
	}
	t.Pages = nil
	return &partTxn{txn: t, have: have, sum: have.Checksum}, nil
}

// abortPart gives up the transaction being applied a part at a time, if
// any: its frames were never published, and the local position is where
// it was before it.
func (a *applier) abortPart() {
	if a.part == nil {
		return
	}
	skip := a.part.skip
	a.part = nil
	if skip || a.w == nil {
		return
	}
	if err := a.w.AbortPart(); err != nil {
		a.log.Warn("could not give up a transaction cut off mid-way", logkey.Error, err)
	}
}

// snapshotPages returns the pages of the snapshot begun by snap as they
// come from q, checking each (consecutive from 1, each page_size bytes)
// and the events between them: nil at its end, once exactly
// snap.PageCount pages came.
func (a *applier) snapshotPages(snap Snapshot, q *eventQueue) func() ([]pagewire.Page, error) {
	var n uint32 // pages so far
	return func() ([]pagewire.Page, error) {
		ev, ok := q.recv()
		if !ok {
			return nil, <-q.errc
		}
		if err := a.r.checkEpoch(ev.Primary); err != nil {
			return nil, err
		}
		switch {
		case ev.SnapshotEnd:
			if n != snap.PageCount {
				return nil, fmt.Errorf("%w: snapshot ended after %d of its %d pages", pagewire.ErrInvalidArgument, n, snap.PageCount)
			}
			return nil, nil
		case len(ev.SnapshotPages) == 0:
			return nil, fmt.Errorf("%w: snapshot cut off by another message", pagewire.ErrInvalidArgument)
		}
		for _, p := range ev.SnapshotPages {
			if n++; p.Pgno != n || n > snap.PageCount || uint32(len(p.Data)) != snap.PageSize {
				return nil, fmt.Errorf("%w: snapshot page %d out of order, beyond its %d pages or of the wrong size", pagewire.ErrInvalidArgument, p.Pgno, snap.PageCount)
			}
		}
		return ev.SnapshotPages, nil
	}
}

// applySnapshot replaces the local copy with a snapshot whose pages next
// gives as they arrive: through the WAL as one transaction, so that local
// readers keep reading, then it sets the TXID; or, without a copy here (or
// with one of another page size), into a new database file.
func (a *applier) applySnapshot(ctx context.Context, snap Snapshot, next func() ([]pagewire.Page, error)) error {
	have, exists := a.r.cfg.Local.Position(a.name)
	if exists && a.w != nil && a.w.PageSize() != snap.PageSize {
		a.close()
	}
	viaWAL := false
	if exists {
		w, err := a.writer(ctx)
		if err != nil {
			return err
		}
		viaWAL = w.PageSize() == snap.PageSize
	}

	// A diverged copy is kept aside before it changes.
	damaged := exists && a.r.cfg.Local.Damaged(a.name) != nil
	keepAside := func() error {
		if !exists || !snap.Diverged || (have.TXID <= 1 && !damaged) {
			return nil
		}
		if a.hasKept && a.keptAt == have {
			a.log.Warn("not keeping this node's diverged copy aside again: a copy at this position was kept aside already (a snapshot after it failed)",
				logkey.Position, have.String(), logkey.Reason, snap.Reason)
			return nil
		}
		if _, err := a.r.cfg.Local.KeepAside(a.name, snap.Reason); err != nil {
			return fmt.Errorf("keep the diverged copy of %q aside: %w", a.name, err)
		}
		a.keptAt, a.hasKept = have, true
		return nil
	}
	if viaWAL {
		return a.snapshotViaWAL(ctx, snap, have, next, keepAside)
	}

	// Otherwise no reader reads a copy of this page size: write a new file.
	// A copy of another page size goes once every page has come and
	// proved the snapshot's checksum.
	if exists {
		a.close()
	}
	var replace func() error
	if exists {
		replace = func() error {
			if err := keepAside(); err != nil {
				return err
			}
			return a.r.cfg.Local.DeleteDatabase(a.name)
		}
	}
	err := a.r.cfg.Local.RestoreDatabase(a.name, snap.PageSize, snap.Pos, next, replace)
	if err != nil {
		return fmt.Errorf("restore %q from a snapshot: %w", a.name, err)
	}
	a.log.Info("applied snapshot", logkey.Position, snap.Pos.String(), logkey.Pages, snap.PageCount, logkey.Reason, snap.Reason)
	return nil
}

// snapshotViaWAL applies a snapshot to the local copy, at have, as one
// transaction written a part at a time: every page but the last as it
// comes, the last with the commit once the pages proved the snapshot's
// checksum.
func (a *applier) snapshotViaWAL(ctx context.Context, snap Snapshot, have pagewire.Pos, next func() ([]pagewire.Page, error), keepAside func() error) (err error) {
	w := a.w
	if err := a.r.cfg.Local.BeginSnapshot(a.name); err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			if aerr := w.AbortPart(); aerr != nil {
				a.log.Warn("could not give up a snapshot cut off mid-way", logkey.Error, aerr)
			}
			_ = a.r.cfg.Local.Rebase(a.name, pagewire.Pos{}) // resume logging; the checksum error is expected
		}
	}()

	// Each page as it comes, the last one held back for the commit.
	sum, parts := have.Checksum, 0
	var held []pagewire.Page
	for {
		pages, err := next()
		if err != nil {
			return err
		}
		if pages == nil {
			break
		}
		if sum, err = a.r.cfg.Local.ChecksumPages(a.name, have, sum, pages, 0); err != nil {
			return err
		}
		batch := append(held, pages[:len(pages)-1]...)
		held = []pagewire.Page{pages[len(pages)-1]}
		if len(batch) == 0 {
			continue
		}
		if err := w.ApplyPart(ctx, TxnPart{PageCount: snap.PageCount, Pages: batch, First: parts == 0}, false); err != nil {
			return fmt.Errorf("apply snapshot: %w", err)
		}
		parts++
	}

	// The checksum of the whole, then the commit.
	if sum, err = a.r.cfg.Local.ChecksumPages(a.name, have, sum, nil, snap.PageCount); err != nil {
		return err
	}
	if sum != snap.Pos.Checksum {
		return fmt.Errorf("%w: the snapshot's pages lead to checksum %016x, not its %016x: refused before it became visible", pagewire.ErrInvalidArgument, sum, snap.Pos.Checksum)
	}
	if err := keepAside(); err != nil {
		return err
	}
	done, err := a.r.cfg.Local.ExpectPosition(a.name, snap.Pos)
	if err != nil {
		return err
	}
	defer done()
	last := TxnPart{PageCount: snap.PageCount, Pages: held, First: parts == 0, Last: true}
	if err := a.writerCall(ctx, w, func(ctx context.Context) error { return w.ApplyPart(ctx, last, true) }); err != nil {
		return fmt.Errorf("apply snapshot: %w", err)
	}
	committed = true
	if err := a.r.cfg.Local.Rebase(a.name, snap.Pos); err != nil {
		return err
	}
	a.log.Info("applied snapshot", logkey.Position, snap.Pos.String(), logkey.Pages, snap.PageCount, logkey.Reason, snap.Reason)
	a.checkpoint(ctx, w)
	return nil
}

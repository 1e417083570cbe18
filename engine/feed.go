package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/ewma"
	"github.com/pagewire/pagewire/internal/logkey"
)

// sendInterval is the least time between two batches of transactions on a
// busy feed (ewma.Busy): the transactions committed meanwhile go in one
// batch, which costs the primary and the replica one send and one receive
// instead of one each.
const sendInterval = 20 * time.Millisecond

// maxSendBatch bounds how many transactions one batch carries.
const maxSendBatch = 256

// A Feed is what the primary sends one replica of one database: the
// transactions after the replica's position, read from the transaction
// log, or a snapshot when the log cannot bring the replica up to date.
// It is not safe for concurrent use.
type Feed struct {
	d        *database
	snapDir  string        // where a snapshot's spill file goes
	slots    chan struct{} // the node's snapshot slots (Store.snapshots)
	maxBytes int           // page bytes a batch may carry

	next     pagewire.TXID // the transaction to send next
	reason   string        // why a snapshot must be sent first; "" if not
	diverged bool          // the replica's copy left the primary's history
	rd       *txlogReader  // open at next, or nil
	held     *pagewire.Txn // read from rd past the last batch, not sent yet
	part     *feedPart     // a large transaction being sent a part at a time, or nil
	lastSend time.Time
	busy     *ewma.Busy
	// syncReplicas is StoreConfig.SyncReplicas: while commits wait for
	// replicas, the feed never holds a send back to batch.
	syncReplicas int
}

// feedPart is a transaction of more page bytes than a batch may carry, sent
// as parts of at most that many.
type feedPart struct {
	txn  pagewire.Txn // its header; with its Pages if it was whole in memory
	rec  *recordPages // else where its pages are read from, in the log
	sent int          // of txn.Pages, how many went in earlier parts
}

// FeedItem is one step of a Feed: exactly one of Snapshot, Txns or Idle.
type FeedItem struct {
	// Snapshot is the whole database to send; the caller closes it.
	Snapshot *Snapshot
	// Txns are consecutive transactions to send together. Large is set
	// when Txns is one part of a transaction of more page bytes than a
	// batch may carry: its header with the next of its pages, ascending, at
	// most a batch's bytes of them; More is set on every part but the
	// last. A part's pages are valid until the next call to Next.
	Txns  []pagewire.Txn
	Large bool
	More  bool
	// Idle is set when the replica has every transaction; Changed is
	// closed on the next commit.
	Idle    bool
	Changed <-chan struct{}
	// Pos is the database's position when the item was made.
	Pos pagewire.Pos
}

// Feed starts a feed of database name to a replica at position have.
// Batches carry at most maxBytes of pages, but for one larger transaction.
func (s *Store) Feed(name string, have pagewire.Pos, maxBytes int) (*Feed, error) {
	d, err := s.db(name)
	if err != nil {
		return nil, err
	}
	f := &Feed{d: d, snapDir: filepath.Join(s.dir, "dbs"), slots: s.snapshots, maxBytes: maxBytes, busy: ewma.NewBusy(), syncReplicas: s.syncReplicas}
	f.next, f.reason, f.diverged = d.streamStart(have)
	return f, nil
}

// Name is the database's name.
func (f *Feed) Name() string { return f.d.name }

// Close releases the feed's transaction log reader.
func (f *Feed) Close() {
	f.closeReader()
	f.endPart()
}

// endPart forgets the large transaction being sent.
func (f *Feed) endPart() {
	if f.part != nil && f.part.rec != nil {
		f.part.rec.close()
	}
	f.part = nil
}

func (f *Feed) closeReader() {
	if f.rd != nil {
		f.rd.Close()
		f.rd = nil
	}
}

// Next returns what to send next: transactions up to the database's
// streamable position (durable.go), never past it. On a busy feed it first
// waits until sendInterval after the last batch, or until ctx is done,
// unless commits wait for replicas (SyncReplicas); a snapshot waits until
// fewer than maxSnapshots are being sent, or until ctx is done.
func (f *Feed) Next(ctx context.Context) (FeedItem, error) {
	for {
		// A snapshot first, if one is due.
		if f.reason != "" {
			f.closeReader()
			f.held = nil
			snap, err := f.d.snapshot(ctx, f.slots, f.snapDir, f.reason, f.diverged)
			if err != nil {
				return FeedItem{}, fmt.Errorf("snapshot of %q: %w", f.d.name, err)
			}
			f.next, f.reason, f.diverged = snap.Pos.TXID+1, "", false
			return FeedItem{Snapshot: snap, Pos: snap.Pos}, nil
		}

		// A large transaction goes on a part at a time.
		if f.part != nil {
			return f.nextPart()
		}

		// Busy: let more transactions gather for one batch, unless
		// commits wait for this send.
		if wait := sendInterval - time.Since(f.lastSend); f.busy.Is() && wait > 0 && !f.commitsWait() {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return FeedItem{}, ctx.Err()
			case <-t.C:
			}
		}

		// Nothing new: the replica waits for the next commit that may be
		// streamed.
		pos, changed, deleted := f.d.watchStreamable()
		if deleted {
			return FeedItem{}, fmt.Errorf("%w: database %q was deleted", pagewire.ErrNotFound, f.d.name)
		}
		if pos.TXID < f.next {
			return FeedItem{Idle: true, Changed: changed, Pos: pos}, nil
		}

		// Transactions from the log; a gap in it calls for a snapshot.
		item, err := f.batch(pos)
		if err != nil {
			return FeedItem{}, err
		}
		if item.Txns != nil {
			return item, nil
		}
	}
}

// batch reads the transactions from f.next on, up to pos: the first part of
// a large one, else as many as a batch carries. It returns an empty item,
// with a snapshot due, when the log does not have them.
func (f *Feed) batch(pos pagewire.Pos) (FeedItem, error) {
	if f.rd == nil {
		rd, err := f.d.txlog.readFrom(f.next)
		if err != nil {
			f.reason, f.diverged = fmt.Sprintf("transaction %d is no longer in the transaction log", f.next), false
			return FeedItem{}, nil
		}
		f.rd = rd
	}

	// Take the held transaction, or the next one from the log: whole, or
	// its header and where to read its pages, if there are too many.
	var txn pagewire.Txn
	var rec *recordPages
	var ok bool
	var err error
	if f.held != nil {
		txn, ok, f.held = *f.held, true, nil
	} else {
		txn, rec, ok, err = f.rd.nextRecord(f.maxBytes)
	}
	switch {
	case errors.Is(err, errTxlogGap) || (err == nil && !ok):
		f.reason, f.diverged = fmt.Sprintf("the transaction log has no transaction %d", f.next), false
		return FeedItem{}, nil
	case err != nil:
		return FeedItem{}, err
	}

	// A transaction too large for a batch goes alone, a part at a time.
	if rec != nil || txnBytes(txn) > f.maxBytes {
		f.part = &feedPart{txn: txn, rec: rec}
		return f.nextPart()
	}

	// Small transactions already committed go together: a replica that is
	// behind, or a primary committing faster than the feed sends, costs
	// one send per batch.
	batch, size := []pagewire.Txn{txn}, txnBytes(txn)
	for f.next+pagewire.TXID(len(batch)) <= pos.TXID && len(batch) < maxSendBatch {
		t, rec, ok, err := f.rd.nextRecord(f.maxBytes)
		if err != nil || !ok || rec != nil {
			// Reopened at the next TXID, the log reports it again.
			if rec != nil {
				rec.close()
			}
			f.closeReader()
			break
		}
		if size+txnBytes(t) > f.maxBytes {
			f.held = &t // sent next
			break
		}
		batch, size = append(batch, t), size+txnBytes(t)
	}
	return FeedItem{Txns: batch, Pos: pos}, nil
}

// nextPart returns the next part of the large transaction being sent.
func (f *Feed) nextPart() (FeedItem, error) {
	p := f.part
	t := p.txn
	var last bool
	if p.rec != nil {
		var err error
		if t.Pages, last, err = p.rec.next(f.maxBytes); err != nil {
			f.endPart()
			return FeedItem{}, fmt.Errorf("transaction %d of %q: %w", t.TXID, f.d.name, err)
		}
	} else {
		end := min(len(p.txn.Pages), p.sent+max(1, f.maxBytes/int(t.PageSize)))
		t.Pages, p.sent = p.txn.Pages[p.sent:end], end
		last = end == len(p.txn.Pages)
	}
	if last {
		f.endPart()
	}
	pos, _, _ := f.d.watchStreamable()
	return FeedItem{Txns: []pagewire.Txn{t}, Large: true, More: !last, Pos: pos}, nil
}

// commitsWait reports whether the database's commits wait for replicas'
// acknowledgements.
func (f *Feed) commitsWait() bool {
	return f.syncReplicas > 0 && !f.d.acks.isDegraded()
}

// Sent records that item went to the replica, and returns the replica's
// TXID once it has it and whether that is the primary's position.
func (f *Feed) Sent(item FeedItem) (pagewire.TXID, bool) {
	switch {
	case item.Snapshot != nil:
		return item.Pos.TXID, false
	case item.Idle:
		return item.Pos.TXID, true
	case item.More:
		return f.next - 1, false // the transaction is not whole there yet
	}
	f.next += pagewire.TXID(len(item.Txns))
	if !item.Large {
		f.lastSend = time.Now()
		f.busy.Add(len(item.Txns), f.lastSend)
	}
	return f.next - 1, f.next > item.Pos.TXID
}

// txnBytes is how many page bytes a transaction carries.
func txnBytes(t pagewire.Txn) int { return len(t.Pages) * int(t.PageSize) }

// streamStart decides where a replica at `have` starts: the TXID to send
// next, or a reason to send a snapshot first, and whether the replica's
// copy has diverged from the primary's history (it then keeps it aside).
func (d *database) streamStart(have pagewire.Pos) (next pagewire.TXID, snapshotReason string, diverged bool) {
	next, snapshotReason, diverged = d.streamStartByTXID(have)
	if diverged && have.TXID > 0 {
		// A copy that is the primary's as of another TXID holds nothing
		// the primary lacks: re-seeded, not kept aside.
		if at, ok := d.loggedStateAt(have); ok {
			d.log.Warn("a replica's copy is the primary's under another TXID (its recovery miscounted); sending it a snapshot", logkey.Position, have.String(), logkey.TXID, at)
			return 0, fmt.Sprintf("the replica's copy at TXID %d is the primary's at TXID %d (checksum %016x): its TXID was miscounted; re-seeded, nothing to keep aside", have.TXID, at, have.Checksum), false
		}
	}
	return next, snapshotReason, diverged
}

// streamStartByTXID is streamStart by the replica's TXID alone.
func (d *database) streamStartByTXID(have pagewire.Pos) (next pagewire.TXID, snapshotReason string, diverged bool) {
	d.mu.RLock()
	pos := d.pos
	d.mu.RUnlock()
	switch {
	case have.TXID == 0:
		return 0, "the replica has no copy", false
	case have.TXID > pos.TXID:
		return 0, fmt.Sprintf("the replica is ahead of the primary (TXID %d > %d): diverged", have.TXID, pos.TXID), true
	case have.TXID == pos.TXID && have.Checksum != pos.Checksum:
		return 0, fmt.Sprintf("the replica's checksum differs at TXID %d: diverged", have.TXID), true
	case have.TXID == pos.TXID:
		return have.TXID + 1, "", false
	}
	// The log proves the replica's copy is the primary's history if the
	// transaction after it starts at its checksum. Without that record the
	// replica may hold transactions the primary never had (a primary that
	// lost its last ones, a replica of an old primary): its copy is then
	// kept aside, unless the record of its own TXID proves it.
	txn, found := d.loggedHeader(have.TXID + 1)
	switch {
	case found && txn.PreChecksum == have.Checksum:
		return have.TXID + 1, "", false
	case found:
		return 0, fmt.Sprintf("the replica's checksum at TXID %d differs from the primary's: diverged", have.TXID), true
	}
	if own, ok := d.loggedHeader(have.TXID); ok && own.PostChecksum == have.Checksum {
		return 0, fmt.Sprintf("the transaction log has no transaction %d", have.TXID+1), false
	}
	return 0, fmt.Sprintf("the transaction log has no transaction %d, so the replica's copy at TXID %d cannot be proven to be the primary's history: kept aside", have.TXID+1, have.TXID), true
}

// loggedStateAt looks in the transaction log, around have's TXID, for a
// transaction that ends at have's checksum, and returns its TXID: a
// replica whose copy has that checksum under another TXID holds the
// primary's database as it was then, nothing the primary lacks, under a
// miscounted TXID (a recovery that counted several of the primary's
// transactions as one). It reads at most maxReplayHeaders headers.
func (d *database) loggedStateAt(have pagewire.Pos) (pagewire.TXID, bool) {
	first := d.txlog.firstTXID()
	if first == 0 {
		return 0, false
	}
	from := first - 1
	if have.TXID > from+maxReplayHeaders/2 {
		from = have.TXID - maxReplayHeaders/2
	}
	for _, h := range d.txlog.headersAfter(from, maxReplayHeaders) {
		if h.PostChecksum == have.Checksum && h.TXID != have.TXID {
			return h.TXID, true
		}
	}
	return 0, false
}

// loggedHeader returns the header of transaction txid from the log, if the
// log has it.
func (d *database) loggedHeader(txid pagewire.TXID) (pagewire.Txn, bool) {
	rd, err := d.txlog.readFrom(txid)
	if err != nil {
		return pagewire.Txn{}, false
	}
	defer rd.Close()
	txn, rec, ok, err := rd.nextRecord(0) // the header is enough
	if rec != nil {
		rec.close()
	}
	return txn, err == nil && ok && txn.TXID == txid
}

// Snapshot is a consistent copy of a database, for a replica that the
// transaction log cannot bring up to date. It reads from a view of the
// database (view.go): writers go on while it is sent, and nothing is held
// while it waits for the replica.
type Snapshot struct {
	Pos       pagewire.Pos
	PageSize  uint32
	PageCount uint32
	Reason    string // why the replica gets a snapshot
	Diverged  bool   // the replica's copy left the primary's history
	v         *view
	slots     chan struct{} // the slot it holds is given back at Close
}

// snapshot opens a view of the database for a replica once one of the
// node's snapshot slots is free, or fails when ctx is done first.
func (d *database) snapshot(ctx context.Context, slots chan struct{}, dir, reason string, diverged bool) (*Snapshot, error) {
	select {
	case slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	v, err := d.openView(dir)
	if err != nil {
		<-slots
		return nil, err
	}
	return &Snapshot{Pos: v.pos, PageSize: v.pageSize, PageCount: v.count, Reason: reason, Diverged: diverged, v: v, slots: slots}, nil
}

// Read reads the snapshot's next pages, from page 1 on, into p: as many
// whole pages as p holds. It returns io.EOF after the last page.
func (s *Snapshot) Read(p []byte) (int, error) { return s.v.read(p) }

// Close releases the snapshot. Calls after the first do nothing.
func (s *Snapshot) Close() error {
	if s.v != nil {
		s.v.close()
		s.v = nil
		<-s.slots
	}
	return nil
}

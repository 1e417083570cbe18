package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/internal/safego"
)

// Halt lock defaults and bounds (DESIGN §7): a lock lives 30 s unless
// released, and a request waits 10 s for it.
const (
	DefaultHaltTTL  = 30 * time.Second
	DefaultHaltWait = 10 * time.Second
	maxHaltTTL      = 10 * time.Minute
	maxHaltWait     = 5 * time.Minute
	// forwardTimeout bounds one transaction's trip to the primary.
	forwardTimeout = 30 * time.Second
)

// haltStopping is why a stopping node releases its grants.
const haltStopping = "the node is stopping"

// HeldWriter is the primary's hold on a database's WAL write lock while a
// replica's client holds the halt lock: SQLite's writers on the primary
// wait, and the holder's transactions are appended through it. The apply
// worker's RemoteWALWriter implements it.
type HeldWriter interface {
	// Apply appends one transaction, as one commit.
	Apply(ctx context.Context, pageCount uint32, pages []pagewire.Page, sync bool) error
	// Release gives the write lock up.
	Release(ctx context.Context) error
}

// grant is a halt lock this node granted as the primary. lock, w and timer
// are set, under halts.mu, once the grant is set up; lock.ID is "" while
// it is only reserved.
type grant struct {
	lock pagewire.HaltLock
	w    HeldWriter // nil when the holder is on this node
	// mu serializes the holder's transactions and the release.
	mu       sync.Mutex
	released bool
	timer    *time.Timer
}

// HoldFunc takes a database's WAL write lock on this node's mount,
// waiting at most wait (the apply worker does it).
type HoldFunc func(ctx context.Context, db string, wait time.Duration) (HeldWriter, error)

// HaltPrimary is the primary's side of the halt locks, as a replica reaches
// it at url (the server package implements it over gRPC). Its errors carry
// the pagewire sentinels the primary returned.
type HaltPrimary interface {
	// AcquireHalt takes req.DB's halt lock on the primary for req.Hostname.
	AcquireHalt(ctx context.Context, url string, req HaltRequest) (pagewire.HaltLock, error)
	// ReleaseHalt releases the lock id; ErrNotFound if it is not held.
	ReleaseHalt(ctx context.Context, url, db, id string) error
	// ForwardTransaction commits txn on the primary under the lock haltID
	// and returns the primary's position after it.
	ForwardTransaction(ctx context.Context, url, db, haltID string, epoch pagewire.Epoch, txn pagewire.Txn) (pagewire.Pos, error)
	// Close closes the connections to primaries.
	Close() error
}

// HaltRequest asks a primary for a halt lock.
type HaltRequest struct {
	DB       string
	Hostname string         // the node the lock is taken through
	Epoch    pagewire.Epoch // the lease epoch the replica follows
	TTL      time.Duration
	Wait     time.Duration
}

// Halts keeps the halt locks: those this node grants as the primary, and
// those its clients take through it as a replica (in each database's
// halt).
type Halts struct {
	store    *Store
	hostname string
	log      *slog.Logger
	// hold takes a database's WAL write lock on this node's mount; nil:
	// replicas' halt requests are refused.
	hold HoldFunc
	// primary reaches the primary for this node's clients, as a replica.
	primary HaltPrimary

	mu      sync.Mutex
	granted map[string]*grant        // db → lock granted, as the primary
	freed   map[string]chan struct{} // db → closed when its grant ends
}

// NewHalts returns the halt locks of store's databases on the node
// hostname. hold may be nil: replicas' requests are then refused.
func NewHalts(store *Store, hostname string, hold HoldFunc, primary HaltPrimary, log *slog.Logger) *Halts {
	return &Halts{store: store, hostname: hostname, hold: hold, primary: primary, log: log.With(logkey.Component, "halt"),
		granted: map[string]*grant{}, freed: map[string]chan struct{}{}}
}

// Close releases every lock granted and closes the connections to
// primaries.
func (h *Halts) Close() {
	h.ReleaseAll(haltStopping)
	_ = h.primary.Close()
}

func newHaltID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// HaltDurations applies the defaults and bounds to a request's ttl and
// wait (0: default).
func HaltDurations(ttl, wait time.Duration) (time.Duration, time.Duration, error) {
	if ttl == 0 {
		ttl = DefaultHaltTTL
	}
	if wait == 0 {
		wait = DefaultHaltWait
	}
	if ttl < 0 || ttl > maxHaltTTL {
		return 0, 0, fmt.Errorf("%w: halt lock ttl %s: it must be more than 0 and at most %s", pagewire.ErrInvalidArgument, ttl, maxHaltTTL)
	}
	if wait < 0 || wait > maxHaltWait {
		return 0, 0, fmt.Errorf("%w: halt lock wait %s: it must be 0 or more and at most %s", pagewire.ErrInvalidArgument, wait, maxHaltWait)
	}
	return ttl, wait, nil
}

// Acquire takes db's halt lock for a client of this node: on the primary
// directly; on a replica through the primary, after which this node has
// caught up with the primary and forwards the client's commits to it.
func (h *Halts) Acquire(ctx context.Context, db string, ttl, wait time.Duration) (pagewire.HaltLock, error) {
	ttl, wait, err := HaltDurations(ttl, wait)
	if err != nil {
		return pagewire.HaltLock{}, err
	}
	d, err := h.store.db(db)
	if err != nil {
		return pagewire.HaltLock{}, err
	}

	// On the primary, the lock is granted here.
	st := h.store.role.Load()
	if st.role == pagewire.RolePrimary {
		return h.grant(ctx, db, h.hostname, st.epoch, ttl, wait, onThisNode)
	}

	// On a replica, it is taken from the primary.
	if cur := d.halt.Load(); cur.active() {
		return pagewire.HaltLock{}, fmt.Errorf("%w: a client of this node holds the halt lock of %q until %s; wait for it to be released",
			pagewire.ErrBusy, db, cur.lock.Expires.Format(time.RFC3339))
	}
	if st.ro.AdvertiseURL == "" {
		ro := st.ro
		return pagewire.HaltLock{}, fmt.Errorf("no primary is known to take the halt lock from; try again once one is elected: %w", &ro)
	}
	url := st.ro.AdvertiseURL
	lock, err := h.primary.AcquireHalt(ctx, url, HaltRequest{DB: db, Hostname: h.hostname, Epoch: st.epoch, TTL: ttl, Wait: wait})
	if err != nil {
		return pagewire.HaltLock{}, fmt.Errorf("take the halt lock of %q from the primary %s: %w", db, url, err)
	}
	release := func() {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = h.primary.ReleaseHalt(rctx, url, db, lock.ID)
	}

	// The holder's writes must follow the primary's position.
	wctx, cancel := context.WithTimeout(ctx, wait)
	_, err = h.store.WaitForPosition(wctx, db, lock.TXID)
	cancel()
	if err != nil {
		release()
		return pagewire.HaltLock{}, fmt.Errorf("%w: this node did not catch up with the primary's TXID %s within %s: %v", pagewire.ErrBusy, lock.TXID, wait, err)
	}

	// Each of the holder's commits goes to the primary first.
	epoch := st.epoch
	lh := &localHalt{lock: lock}
	lh.forward = func(txn pagewire.Txn) error {
		fctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
		defer cancel()
		got, err := h.primary.ForwardTransaction(fctx, url, db, lock.ID, epoch, txn)
		if err != nil {
			h.log.Warn("the primary did not commit a transaction of the halt lock's holder; the app is told it failed", logkey.DB, db, logkey.TXID, txn.TXID, logkey.Error, err)
			return fmt.Errorf("commit on the primary: %w", err)
		}
		if got.TXID != txn.TXID || got.Checksum != txn.PostChecksum {
			return fmt.Errorf("%w: the primary committed the transaction at %s, this node at %s/%016x", pagewire.ErrCorrupt, got, txn.TXID, txn.PostChecksum)
		}
		return nil
	}
	d.halt.Store(lh)
	time.AfterFunc(time.Until(lock.Expires), func() {
		_ = safego.Call(h.log, "expire a halt lock", func() error {
			if d.halt.CompareAndSwap(lh, nil) {
				h.log.Info("halt lock expired", logkey.DB, db)
			}
			return nil
		})
	})
	h.log.Info("halt lock taken from the primary", logkey.DB, db, logkey.TXID, lock.TXID, "expires", lock.Expires)
	return lock, nil
}

// Release releases db's halt lock taken through this node.
func (h *Halts) Release(ctx context.Context, db, id string) error {
	if err := pagewire.ValidateDBName(db); err != nil {
		return err
	}
	if id == "" {
		return fmt.Errorf("%w: the halt lock's id is required", pagewire.ErrInvalidArgument)
	}
	d, err := h.store.db(db)
	if err != nil {
		return err
	}
	if lh := d.halt.Load(); lh != nil {
		if lh.lock.ID != id {
			return fmt.Errorf("%w: %q's halt lock was taken by another client", pagewire.ErrNotHolder, db)
		}
		d.halt.CompareAndSwap(lh, nil)
		url := h.store.role.Load().ro.AdvertiseURL
		if url == "" {
			return nil // the primary is gone; its lock goes with it
		}
		err := h.primary.ReleaseHalt(ctx, url, db, id)
		if err != nil && !errors.Is(err, pagewire.ErrNotFound) {
			return fmt.Errorf("release the halt lock on the primary: %w", err)
		}
		h.log.Info("halt lock released", logkey.DB, db)
		return nil
	}
	return h.release(db, id, "released")
}

// current returns db's grant and a copy of its lock (ID "" while it is
// only reserved), read under h.mu.
func (h *Halts) current(db string) (*grant, pagewire.HaltLock) {
	h.mu.Lock()
	defer h.mu.Unlock()
	g := h.granted[db]
	if g == nil {
		return nil, pagewire.HaltLock{}
	}
	return g, g.lock
}

// Held returns db's halt lock, as this node knows it: granted as the
// primary, or taken through it as a replica.
func (h *Halts) Held(db string) (pagewire.HaltLock, bool) {
	if _, lock := h.current(db); lock.ID != "" {
		return lock, true
	}
	if d, err := h.store.db(db); err == nil {
		if lh := d.halt.Load(); lh.active() {
			return lh.lock, true
		}
	}
	return pagewire.HaltLock{}, false
}

// holderAt says where a halt lock's holder writes from.
type holderAt int

const (
	// onThisNode: the holder is a client of the primary itself; its
	// writes come through the mount as any app's do.
	onThisNode holderAt = iota
	// onAReplica: the holder writes through a replica, which forwards
	// each commit; the primary holds the database's WAL write lock for it.
	onAReplica
)

// GrantToReplica gives db's halt lock, as the primary, to a client of the
// replica holder that follows lease epoch (0: any), waiting up to wait for
// the current holder to release it; ttl and wait are bounded as
// HaltDurations does.
func (h *Halts) GrantToReplica(ctx context.Context, db, holder string, epoch pagewire.Epoch, ttl, wait time.Duration) (pagewire.HaltLock, error) {
	if err := pagewire.ValidateDBName(db); err != nil {
		return pagewire.HaltLock{}, err
	}
	ttl, wait, err := HaltDurations(ttl, wait)
	if err != nil {
		return pagewire.HaltLock{}, err
	}
	if holder == "" {
		holder = "unnamed replica"
	}
	return h.grant(ctx, db, holder, epoch, ttl, wait, onAReplica)
}

// ReleaseGrant ends the lock id that this primary granted on db.
func (h *Halts) ReleaseGrant(db, id string) error {
	if err := pagewire.ValidateDBName(db); err != nil {
		return err
	}
	return h.release(db, id, "released")
}

// grant gives db's halt lock to holder, as the primary, waiting up to
// wait for the current holder to release it. A holder on a replica gets
// the database's WAL write lock held for it.
func (h *Halts) grant(ctx context.Context, db, holder string, epoch pagewire.Epoch, ttl, wait time.Duration, at holderAt) (pagewire.HaltLock, error) {
	if err := h.checkPrimary(epoch); err != nil {
		return pagewire.HaltLock{}, err
	}
	d, err := h.store.db(db)
	if err != nil {
		return pagewire.HaltLock{}, err
	}
	if at == onAReplica && h.hold == nil {
		return pagewire.HaltLock{}, fmt.Errorf("%w: this node cannot hold its databases' write locks for replicas", pagewire.ErrBusy)
	}

	// Reserve the lock, waiting until the current holder's is freed or the wait runs out.
	deadline := time.Now().Add(wait)
	g := &grant{}
	for {
		h.mu.Lock()
		cur := h.granted[db]
		var curLock pagewire.HaltLock
		if cur != nil {
			curLock = cur.lock
		}
		if cur == nil {
			h.granted[db] = g // reserved; set up below
			h.freed[db] = make(chan struct{})
			h.mu.Unlock()
			break
		}
		freed := h.freed[db]
		h.mu.Unlock()

		// Wait for the holder to free it, until the deadline or ctx is done.
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-freed:
			t.Stop()
		case <-t.C:
			return pagewire.HaltLock{}, fmt.Errorf("%w: the halt lock of %q is held by %s until %s; try again later", pagewire.ErrBusy, db, curLock.Holder, curLock.Expires.Format(time.RFC3339))
		case <-ctx.Done():
			t.Stop()
			return pagewire.HaltLock{}, ctx.Err()
		}
	}

	// A holder on a replica needs this node to hold the database's write lock.
	var w HeldWriter
	if at == onAReplica {
		if w, err = h.hold(ctx, db, max(time.Until(deadline), time.Millisecond)); err != nil {
			h.unreserve(db, g)
			return pagewire.HaltLock{}, fmt.Errorf("hold the write lock of %q for the halt lock (a writer on the primary kept it): %w", db, err)
		}
	}

	// Grant the lock at the current TXID; it expires after ttl.
	pos, _, _ := d.watchPos()
	lock := pagewire.HaltLock{ID: newHaltID(), TXID: pos.TXID, Expires: time.Now().Add(ttl), Holder: holder}
	h.mu.Lock()
	g.w, g.lock = w, lock
	g.timer = time.AfterFunc(ttl, func() {
		// A timer's goroutine is the runtime's: recover here, or a panic
		// takes the node down.
		_ = safego.Call(h.log, "expire a halt lock", func() error { return h.release(db, lock.ID, "expired") })
	})
	h.mu.Unlock()
	h.log.Info("halt lock granted", logkey.DB, db, "holder", holder, logkey.TXID, pos.TXID, "expires", lock.Expires)
	return lock, nil
}

// checkPrimary refuses halt requests unless this node is the primary of
// the epoch the request follows (0: any).
func (h *Halts) checkPrimary(epoch pagewire.Epoch) error {
	st := h.store.role.Load()
	if st.role != pagewire.RolePrimary {
		ro := st.ro
		return &ro
	}
	if epoch != 0 && epoch != st.epoch {
		return fmt.Errorf("the request follows lease epoch %d, this primary's is %d; retry through the current primary: %w", epoch, st.epoch, &pagewire.ReadOnlyError{})
	}
	return nil
}

// unreserve drops a reservation that was not set up.
func (h *Halts) unreserve(db string, g *grant) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.granted[db] == g {
		delete(h.granted, db)
		close(h.freed[db])
		delete(h.freed, db)
	}
}

// release ends a granted lock; why is "released" or "expired".
func (h *Halts) release(db, id, why string) error {
	g, lock := h.current(db)
	if lock.ID == "" {
		return fmt.Errorf("%w: no halt lock is held on %q (it may have expired)", pagewire.ErrNotFound, db)
	}
	if lock.ID != id {
		return fmt.Errorf("%w: %q's halt lock was taken by another client", pagewire.ErrNotHolder, db)
	}
	g.mu.Lock() // after the holder's transaction in flight, if any
	defer g.mu.Unlock()
	if g.released {
		return fmt.Errorf("%w: no halt lock is held on %q (it may have expired)", pagewire.ErrNotFound, db)
	}
	g.released = true
	g.timer.Stop()
	if g.w != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		// A stopping node's apply worker may be gone already, and its
		// locks with it. A panic releasing it must not leave the
		// database halted: the lock is ended whatever happens.
		err := safego.Call(h.log, "release the write lock held for a halt lock", func() error { return g.w.Release(ctx) })
		if err != nil && why != "released: "+haltStopping {
			h.log.Error("could not release the write lock held for a halt lock", logkey.DB, db, logkey.Error, err)
		}
		cancel()
	}
	h.unreserve(db, g)
	h.log.Info("halt lock "+why, logkey.DB, db, "holder", lock.Holder)
	return nil
}

// ReleaseAll ends every granted lock: the node stopped being the primary.
func (h *Halts) ReleaseAll(why string) {
	h.mu.Lock()
	var locks []struct{ db, id string }
	for db, g := range h.granted {
		if g.lock.ID != "" {
			locks = append(locks, struct{ db, id string }{db, g.lock.ID})
		}
	}
	h.mu.Unlock()
	for _, l := range locks {
		if err := h.release(l.db, l.id, "released: "+why); err == nil {
			continue
		}
	}
}

// Forward commits, as the primary, a transaction that the holder of db's
// halt lock id wrote through a replica following lease epoch (0: any). A
// transaction that does not follow the position, or that pagewire.Txn.Check
// refuses (its pages, or a size they cannot account for), is refused with
// ErrInvalidArgument before anything is applied.
func (h *Halts) Forward(ctx context.Context, db, id string, epoch pagewire.Epoch, txn pagewire.Txn) (pagewire.Pos, error) {
	if err := pagewire.ValidateDBName(db); err != nil {
		return pagewire.Pos{}, err
	}
	if err := h.checkPrimary(epoch); err != nil {
		return pagewire.Pos{}, err
	}

	// Only the current holder of the lock may forward.
	g, lock := h.current(db)
	if lock.ID == "" || lock.ID != id {
		return pagewire.Pos{}, fmt.Errorf("%w: the halt lock of %q is not held with this id (it expired or was released); take it again", pagewire.ErrReadOnly, db)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.released || g.w == nil {
		return pagewire.Pos{}, fmt.Errorf("%w: the halt lock of %q expired or was released; take it again", pagewire.ErrReadOnly, db)
	}

	// The applier's writes skip the lease check: make it here.
	if err := h.store.checkWritable(App); err != nil {
		return pagewire.Pos{}, err
	}
	d, err := h.store.db(db)
	if err != nil {
		return pagewire.Pos{}, err
	}

	// The transaction must follow the primary's position exactly.
	pos, _, _ := d.watchPos()
	if txn.TXID != pos.TXID+1 || txn.PreChecksum != pos.Checksum {
		return pos, fmt.Errorf("%w: transaction %d (pre-checksum %016x) does not follow the primary's position %s", pagewire.ErrInvalidArgument, txn.TXID, txn.PreChecksum, pos)
	}

	// Its pages must be this database's, and its size one they account
	// for: checked before anything is allocated for it or applied.
	pageSize, pages := d.size()
	if err := txn.Check(pageSize, pages); err != nil {
		return pos, err
	}

	// Commit it, and check that it ends where it did on the holder's node.
	if err := g.w.Apply(ctx, txn.PageCount, txn.Pages, false); err != nil {
		return pos, fmt.Errorf("commit the halt lock holder's transaction %d: %w", txn.TXID, err)
	}
	got, _, _ := d.watchPos()
	d.markVisible(got) // the worker published it before Apply returned
	if got.TXID != txn.TXID || got.Checksum != txn.PostChecksum {
		h.log.Error("a halt lock holder's transaction ended at another checksum on the primary", logkey.DB, db, "want", fmt.Sprintf("%s/%016x", txn.TXID, txn.PostChecksum), "got", got.String())
		return got, fmt.Errorf("%w: the transaction ended at %s on the primary, %s/%016x on the holder's node", pagewire.ErrCorrupt, got, txn.TXID, txn.PostChecksum)
	}
	return got, nil
}

package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/pagewire/pagewire"
	client "github.com/pagewire/pagewire/clients/go"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
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

// haltLock is a held halt lock.
type haltLock struct {
	ID      string
	TXID    pagewire.TXID // the database's TXID on the primary when taken
	Expires time.Time
	Holder  string // the hostname of the node it was taken through
}

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
	lock haltLock
	w    HeldWriter // nil when the holder is on this node
	// mu serializes the holder's transactions and the release.
	mu       sync.Mutex
	released bool
	timer    *time.Timer
}

// halts keeps the halt locks: those this node grants as the primary, and
// those its clients take through it as a replica (in each database's
// halt).
type halts struct {
	store *Store
	node  NodeInfo
	log   *slog.Logger
	// hold takes a database's WAL write lock on this node's mount; nil:
	// replicas' halt requests are refused.
	hold func(ctx context.Context, db string, wait time.Duration) (HeldWriter, error)

	mu      sync.Mutex
	granted map[string]*grant        // db → lock granted, as the primary
	freed   map[string]chan struct{} // db → closed when its grant ends
	conns   map[string]*grpc.ClientConn
}

func newHalts(store *Store, node NodeInfo, hold func(context.Context, string, time.Duration) (HeldWriter, error), log *slog.Logger) *halts {
	return &halts{store: store, node: node, hold: hold, log: log.With("component", "halt"),
		granted: map[string]*grant{}, freed: map[string]chan struct{}{}, conns: map[string]*grpc.ClientConn{}}
}

// close releases every lock granted and closes the connections to
// primaries.
func (h *halts) close() {
	h.releaseAll(haltStopping)
	h.mu.Lock()
	defer h.mu.Unlock()
	for url, c := range h.conns {
		_ = c.Close()
		delete(h.conns, url)
	}
}

func newHaltID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// haltDurations applies the defaults and bounds to a request's ttl and
// wait (0: default).
func haltDurations(ttl, wait time.Duration) (time.Duration, time.Duration, error) {
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
func (h *halts) Acquire(ctx context.Context, db string, ttl, wait time.Duration) (haltLock, error) {
	ttl, wait, err := haltDurations(ttl, wait)
	if err != nil {
		return haltLock{}, err
	}
	d, err := h.store.db(db)
	if err != nil {
		return haltLock{}, err
	}
	st := h.store.role.Load()
	if st.role == pagewire.RolePrimary {
		return h.grant(ctx, db, h.node.Hostname, st.epoch, ttl, wait, false)
	}
	if cur := d.halt.Load(); cur.active() {
		return haltLock{}, fmt.Errorf("%w: a client of this node holds the halt lock of %q until %s; wait for it to be released",
			pagewire.ErrBusy, db, cur.lock.Expires.Format(time.RFC3339))
	}
	if st.ro.AdvertiseURL == "" {
		ro := st.ro
		return haltLock{}, fmt.Errorf("no primary is known to take the halt lock from; try again once one is elected: %w", &ro)
	}
	conn, err := h.conn(st.ro.AdvertiseURL)
	if err != nil {
		return haltLock{}, err
	}
	rc := replicationv1.NewReplicationServiceClient(conn)
	actx, cancel := context.WithTimeout(ctx, wait+5*time.Second)
	resp, err := rc.AcquireHalt(actx, &replicationv1.AcquireHaltRequest{Name: db, Hostname: h.node.Hostname, Epoch: uint64(st.epoch),
		Ttl: durationpb.New(ttl), Wait: durationpb.New(wait)})
	cancel()
	if err != nil {
		return haltLock{}, fmt.Errorf("take the halt lock of %q from the primary %s: %w", db, st.ro.AdvertiseURL, client.Error(err))
	}
	lock := haltLockFromProto(resp.GetLock())
	release := func() {
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = rc.ReleaseHalt(rctx, &replicationv1.ReleaseHaltRequest{Name: db, Id: lock.ID})
	}
	// The holder's writes must follow the primary's position.
	wctx, cancel := context.WithTimeout(ctx, wait)
	_, err = h.store.WaitForPosition(wctx, db, lock.TXID)
	cancel()
	if err != nil {
		release()
		return haltLock{}, fmt.Errorf("%w: this node did not catch up with the primary's TXID %s within %s: %v", pagewire.ErrBusy, lock.TXID, wait, err)
	}
	epoch := st.epoch
	lh := &localHalt{lock: lock}
	lh.forward = func(txn pagewire.Txn) error {
		req, err := client.ForwardRequest(db, lock.ID, epoch, txn)
		if err != nil {
			return err
		}
		fctx, cancel := context.WithTimeout(context.Background(), forwardTimeout)
		defer cancel()
		resp, err := rc.ForwardTransaction(fctx, req)
		if err != nil {
			h.log.Warn("the primary did not commit a transaction of the halt lock's holder; the app is told it failed", logKeyDB, db, logKeyTXID, txn.TXID, logKeyError, err)
			return fmt.Errorf("commit on the primary: %w", client.Error(err))
		}
		if got := (pagewire.Pos{TXID: pagewire.TXID(resp.GetPosition().GetTxid()), Checksum: resp.GetPosition().GetChecksum()}); got.TXID != txn.TXID || got.Checksum != txn.PostChecksum {
			return fmt.Errorf("%w: the primary committed the transaction at %s, this node at %s/%016x", pagewire.ErrCorrupt, got, txn.TXID, txn.PostChecksum)
		}
		return nil
	}
	d.halt.Store(lh)
	time.AfterFunc(time.Until(lock.Expires), func() {
		if d.halt.CompareAndSwap(lh, nil) {
			h.log.Info("halt lock expired", logKeyDB, db)
		}
	})
	h.log.Info("halt lock taken from the primary", logKeyDB, db, logKeyTXID, lock.TXID, "expires", lock.Expires)
	return lock, nil
}

// Release releases db's halt lock taken through this node.
func (h *halts) Release(ctx context.Context, db, id string) error {
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
		conn, err := h.conn(url)
		if err != nil {
			return err
		}
		_, err = replicationv1.NewReplicationServiceClient(conn).ReleaseHalt(ctx, &replicationv1.ReleaseHaltRequest{Name: db, Id: id})
		if err = client.Error(err); err != nil && !errors.Is(err, pagewire.ErrNotFound) {
			return fmt.Errorf("release the halt lock on the primary: %w", err)
		}
		h.log.Info("halt lock released", logKeyDB, db)
		return nil
	}
	return h.release(db, id, "released")
}

// current returns db's grant and a copy of its lock (ID "" while it is
// only reserved), read under h.mu.
func (h *halts) current(db string) (*grant, haltLock) {
	h.mu.Lock()
	defer h.mu.Unlock()
	g := h.granted[db]
	if g == nil {
		return nil, haltLock{}
	}
	return g, g.lock
}

// Held returns db's halt lock, as this node knows it: granted as the
// primary, or taken through it as a replica.
func (h *halts) Held(db string) (haltLock, bool) {
	if _, lock := h.current(db); lock.ID != "" {
		return lock, true
	}
	if d, err := h.store.db(db); err == nil {
		if lh := d.halt.Load(); lh.active() {
			return lh.lock, true
		}
	}
	return haltLock{}, false
}

// grant gives db's halt lock to holder, as the primary, waiting up to
// wait for the current holder to release it. A holder on another node
// (remote) gets the database's WAL write lock held for it.
func (h *halts) grant(ctx context.Context, db, holder string, epoch pagewire.Epoch, ttl, wait time.Duration, remote bool) (haltLock, error) {
	if err := h.checkPrimary(epoch); err != nil {
		return haltLock{}, err
	}
	d, err := h.store.db(db)
	if err != nil {
		return haltLock{}, err
	}
	if remote && h.hold == nil {
		return haltLock{}, fmt.Errorf("%w: this node cannot hold its databases' write locks for replicas", pagewire.ErrBusy)
	}
	deadline := time.Now().Add(wait)
	g := &grant{}
	for {
		h.mu.Lock()
		cur := h.granted[db]
		var curLock haltLock
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
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-freed:
			t.Stop()
		case <-t.C:
			return haltLock{}, fmt.Errorf("%w: the halt lock of %q is held by %s until %s; try again later", pagewire.ErrBusy, db, curLock.Holder, curLock.Expires.Format(time.RFC3339))
		case <-ctx.Done():
			t.Stop()
			return haltLock{}, ctx.Err()
		}
	}
	var w HeldWriter
	if remote {
		if w, err = h.hold(ctx, db, max(time.Until(deadline), time.Millisecond)); err != nil {
			h.unreserve(db, g)
			return haltLock{}, fmt.Errorf("hold the write lock of %q for the halt lock (a writer on the primary kept it): %w", db, err)
		}
	}
	pos, _, _ := d.watchPos()
	lock := haltLock{ID: newHaltID(), TXID: pos.TXID, Expires: time.Now().Add(ttl), Holder: holder}
	h.mu.Lock()
	g.w, g.lock = w, lock
	g.timer = time.AfterFunc(ttl, func() { _ = h.release(db, lock.ID, "expired") })
	h.mu.Unlock()
	h.log.Info("halt lock granted", logKeyDB, db, "holder", holder, logKeyTXID, pos.TXID, "expires", lock.Expires)
	return lock, nil
}

// checkPrimary refuses halt requests unless this node is the primary of
// the epoch the request follows (0: any).
func (h *halts) checkPrimary(epoch pagewire.Epoch) error {
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
func (h *halts) unreserve(db string, g *grant) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.granted[db] == g {
		delete(h.granted, db)
		close(h.freed[db])
		delete(h.freed, db)
	}
}

// release ends a granted lock; why is "released" or "expired".
func (h *halts) release(db, id, why string) error {
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
		// locks with it.
		if err := g.w.Release(ctx); err != nil && why != "released: "+haltStopping {
			h.log.Error("could not release the write lock held for a halt lock", logKeyDB, db, logKeyError, err)
		}
		cancel()
	}
	h.unreserve(db, g)
	h.log.Info("halt lock "+why, logKeyDB, db, "holder", lock.Holder)
	return nil
}

// releaseAll ends every granted lock: the node stopped being the primary.
func (h *halts) releaseAll(why string) {
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

// forward commits a halt holder's transaction, as the primary.
func (h *halts) forward(ctx context.Context, db, id string, epoch pagewire.Epoch, txn pagewire.Txn) (pagewire.Pos, error) {
	if err := h.checkPrimary(epoch); err != nil {
		return pagewire.Pos{}, err
	}
	g, lock := h.current(db)
	if lock.ID == "" || lock.ID != id {
		return pagewire.Pos{}, fmt.Errorf("%w: the halt lock of %q is not held with this id (it expired or was released); take it again", pagewire.ErrReadOnly, db)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.released || g.w == nil {
		return pagewire.Pos{}, fmt.Errorf("%w: the halt lock of %q expired or was released; take it again", pagewire.ErrReadOnly, db)
	}
	// Internal writes skip the lease check: make it here.
	if err := h.store.checkWritable(false); err != nil {
		return pagewire.Pos{}, err
	}
	d, err := h.store.db(db)
	if err != nil {
		return pagewire.Pos{}, err
	}
	pos, _, _ := d.watchPos()
	if txn.TXID != pos.TXID+1 || txn.PreChecksum != pos.Checksum {
		return pos, fmt.Errorf("%w: transaction %d (pre-checksum %016x) does not follow the primary's position %s", pagewire.ErrInvalidArgument, txn.TXID, txn.PreChecksum, pos)
	}
	if txn.PageSize != d.pageSize {
		return pos, fmt.Errorf("%w: transaction page size %d, the database's is %d", pagewire.ErrInvalidArgument, txn.PageSize, d.pageSize)
	}
	if err := g.w.Apply(ctx, txn.PageCount, txn.Pages, false); err != nil {
		return pos, fmt.Errorf("commit the halt lock holder's transaction %d: %w", txn.TXID, err)
	}
	got, _, _ := d.watchPos()
	d.markVisible(got) // the worker published it before Apply returned
	if got.TXID != txn.TXID || got.Checksum != txn.PostChecksum {
		h.log.Error("a halt lock holder's transaction ended at another checksum on the primary", logKeyDB, db, "want", fmt.Sprintf("%s/%016x", txn.TXID, txn.PostChecksum), "got", got.String())
		return got, fmt.Errorf("%w: the transaction ended at %s on the primary, %s/%016x on the holder's node", pagewire.ErrCorrupt, got, txn.TXID, txn.PostChecksum)
	}
	return got, nil
}

// conn returns a connection to the node at url, made once.
func (h *halts) conn(url string) (*grpc.ClientConn, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c := h.conns[url]; c != nil {
		return c, nil
	}
	c, err := client.Dial(url)
	if err != nil {
		return nil, err
	}
	h.conns[url] = c
	return c, nil
}

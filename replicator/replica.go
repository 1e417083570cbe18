package replicator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/backoff"
	"github.com/pagewire/pagewire/internal/ewma"
	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/internal/safego"
)

// ReplicaConfig configures a Replica.
type ReplicaConfig struct {
	Upstream Upstream     // the primary; required
	Local    Local        // this node's storage; required
	MountDir string       // where this node's databases are mounted; required
	Hostname string       // this node's hostname, for the primary's logs; required
	Logger   *slog.Logger // nil: slog.Default()
	// CheckpointFrames is the WAL size, in frames, past which the replica
	// checkpoints after applying. A checkpoint holds up the transactions
	// behind it for two fsyncs, so a replica checkpoints less often than
	// SQLite's writers (1000 frames): the default is 10000.
	CheckpointFrames uint32
	// Applied, if set, is called with each transaction's lag: from its
	// commit on the primary to its being counted here, as its readers see
	// it (same clock only if the nodes share one).
	Applied func(lag time.Duration)
	// MinBackoff and MaxBackoff bound the jittered wait before reconnecting.
	MinBackoff, MaxBackoff time.Duration
	// IdleTimeout ends a stream that sent nothing, not even a heartbeat, for
	// this long.
	IdleTimeout time.Duration
	// MinEpoch is the least lease epoch accepted from the primary: the
	// epoch the lease had when this replica was told to follow it.
	MinEpoch pagewire.Epoch
	// ApplyInterval is the least time between two applies to a database
	// while it is busy (transactions arrive at ewma.BusyRate or faster):
	// transactions that arrive meanwhile are applied together, as one
	// commit, which costs the replica far less than one each. When the
	// replica keeps up, each transaction is applied as soon as it arrives.
	// 0 applies as soon as possible always.
	ApplyInterval time.Duration
	// OnPrimary, if set, is called with the primary as it names itself
	// each time a message brings a new name or lease epoch, e.g. to show
	// the primary's own hostname in .primary. It must not block.
	OnPrimary func(PrimaryInfo)
	// OpenWriter opens the writer that appends to a database; nil:
	// OpenWALWriter in this process. A node applying to its own mount must
	// use a worker process (ApplyClient).
	OpenWriter func(ctx context.Context, path string) (Writer, error)
}

// Writer appends transactions to a database: a WALWriter or a
// RemoteWALWriter.
type Writer interface {
	Apply(ctx context.Context, pageCount uint32, pages []pagewire.Page, sync bool) error
	// ApplyPart and AbortPart apply a transaction too big for one Apply a
	// part at a time (WALWriter.ApplyPart).
	ApplyPart(ctx context.Context, p TxnPart, sync bool) error
	AbortPart() error
	Checkpoint(ctx context.Context) (complete bool, err error)
	Frames() uint32
	PageSize() uint32
	Close() error
}

var (
	_ Writer = (*WALWriter)(nil)
	_ Writer = (*RemoteWALWriter)(nil)
)

// DefaultReplicaConfig returns a config with every optional value set.
func DefaultReplicaConfig() ReplicaConfig {
	return ReplicaConfig{CheckpointFrames: 10000, MinBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second, IdleTimeout: 10 * time.Second, ApplyInterval: 20 * time.Millisecond}
}

// Validate reports the first missing or bad value.
func (c ReplicaConfig) Validate() error {
	switch {
	case c.Upstream == nil || c.Local == nil:
		return errors.New("replicator: Upstream and Local are required")
	case c.MountDir == "":
		return errors.New("replicator: MountDir is required")
	case c.Hostname == "":
		return errors.New("replicator: Hostname is required")
	case c.CheckpointFrames == 0:
		return errors.New("replicator: CheckpointFrames must be > 0")
	case c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff:
		return errors.New("replicator: need 0 < MinBackoff <= MaxBackoff")
	case c.IdleTimeout <= 0:
		return errors.New("replicator: IdleTimeout must be > 0")
	}
	return nil
}

// Replica follows the primary: it keeps every database the primary has,
// applying each transaction as it arrives, and reconnects after any error.
type Replica struct {
	cfg ReplicaConfig
	log *slog.Logger

	// mu guards epoch, primary and named.
	mu      sync.Mutex
	epoch   pagewire.Epoch // the highest epoch seen; older ones are refused
	primary PrimaryInfo
	named   PrimaryInfo          // the last primary given to cfg.OnPrimary
	status  map[string]*dbStatus // per followed database
}

// NewReplica validates cfg.
func NewReplica(cfg ReplicaConfig) (*Replica, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.OpenWriter == nil {
		cfg.OpenWriter = func(_ context.Context, path string) (Writer, error) { return OpenWALWriter(path, log) }
	}
	return &Replica{cfg: cfg, log: log.With(logkey.Component, "replica"), epoch: cfg.MinEpoch}, nil
}

// Primary returns the primary the replica last heard from.
func (r *Replica) Primary() PrimaryInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.primary
}

// checkEpoch refuses a message from an older lease epoch than one seen,
// and tells cfg.OnPrimary of a primary that names itself anew.
func (r *Replica) checkEpoch(p PrimaryInfo) error {
	r.mu.Lock()
	if p.Epoch < r.epoch {
		r.mu.Unlock()
		return fmt.Errorf("%w: message from %s carries lease epoch %d, older than %d: refused", pagewire.ErrInvalidArgument, p.Hostname, p.Epoch, r.epoch)
	}
	r.epoch, r.primary = p.Epoch, p
	renamed := p.Hostname != "" && (p.Hostname != r.named.Hostname || p.Epoch != r.named.Epoch)
	if renamed {
		r.named = p
	}
	r.mu.Unlock()

	if renamed && r.cfg.OnPrimary != nil {
		r.cfg.OnPrimary(p)
	}
	return nil
}

// Run follows the primary until ctx is done; it returns nil then. It
// reconnects after any error but a panic, which it returns (a
// *safego.PanicError): a replica that stopped applying some database
// must not carry on as if it were following.
func (r *Replica) Run(ctx context.Context) error {
	b := r.newBackoff()
	for {
		err := r.follow(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if isPanic(err) {
			return err
		}
		d := b.Next()
		r.log.Warn("lost the primary's database list; reconnecting", logkey.Error, err, logkey.RetryIn, d)
		if !backoff.Sleep(ctx, d) {
			return nil
		}
	}
}

// follow runs one WatchDatabases stream and a goroutine per database.
func (r *Replica) follow(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Open the watch and read its events ahead.
	watch, err := r.cfg.Upstream.WatchDatabases(ctx, r.cfg.Hostname)
	if err != nil {
		return err
	}
	fs := &followers{ctx: ctx, r: r, m: map[string]*follower{}, failed: make(chan error, 1)}
	defer fs.stopAll()
	events, errc := readWatch(ctx, watch, r.log)

	// Follow the databases the primary lists or creates, stop following
	// those it deletes, until the watch fails or goes silent.
	idle := time.NewTimer(r.cfg.IdleTimeout)
	defer idle.Stop()
	for {
		var ev DatabaseEvent
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			return err
		case err := <-fs.failed:
			return err
		case <-idle.C:
			return fmt.Errorf("the primary sent nothing for %s", r.cfg.IdleTimeout)
		case ev = <-events:
		}

		// Any event restarts the idle timer.
		idle.Reset(r.cfg.IdleTimeout)
		if err := r.checkEpoch(ev.Primary); err != nil {
			return err
		}
		switch {
		case ev.IsList:
			r.log.Info("following the primary", logkey.Primary, ev.Primary.Hostname, "databases", len(ev.List))
			want := fs.followOnly(ev.List)
			// Databases the primary no longer has are deleted here too.
			r.deleteMissing(want)
		case ev.Created != nil:
			fs.start(ev.Created.Name)
		case ev.Deleted != "":
			fs.stop(ev.Deleted)
			if err := r.cfg.Local.DeleteDatabase(ev.Deleted); err != nil && !errors.Is(err, pagewire.ErrNotFound) {
				r.log.Error("could not delete a database the primary deleted", logkey.DB, ev.Deleted, logkey.Error, err)
			} else {
				r.log.Info("deleted a database the primary deleted", logkey.DB, ev.Deleted)
			}
		}
	}
}

// readWatch receives the watch's events into a channel until Recv fails
// or panics (errc then holds why) or ctx ends.
func readWatch(ctx context.Context, watch DatabaseWatch, log *slog.Logger) (<-chan DatabaseEvent, <-chan error) {
	events := make(chan DatabaseEvent)
	errc := make(chan error, 1)
	go func() {
		err := safego.Call(log, "read the primary's database list", func() error {
			for {
				ev, err := watch.Recv()
				if err != nil {
					return err
				}
				select {
				case events <- ev:
				case <-ctx.Done():
					return nil
				}
			}
		})
		if err != nil {
			errc <- err
		}
	}()
	return events, errc
}

// followers runs a followDB goroutine per database.
type followers struct {
	ctx context.Context // of the watch: followers end with it
	r   *Replica
	m   map[string]*follower
	// failed gets the first follower's panic: the watch then ends.
	failed chan error
}

type follower struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// start follows name, unless it is followed already.
func (fs *followers) start(name string) {
	if fs.m[name] != nil {
		return
	}
	fctx, fcancel := context.WithCancel(fs.ctx)
	f := &follower{cancel: fcancel, done: make(chan struct{})}
	fs.m[name] = f
	go func() {
		defer close(f.done)
		err := safego.Call(fs.r.log, "follow database "+name, func() error { return fs.r.followDB(fctx, name) })
		if err != nil {
			select {
			case fs.failed <- err:
			default: // another's is there
			}
		}
	}()
}

// stop stops following name and waits until its goroutine has returned.
func (fs *followers) stop(name string) {
	if f := fs.m[name]; f != nil {
		f.cancel()
		<-f.done
		delete(fs.m, name)
	}
}

func (fs *followers) stopAll() {
	for name := range fs.m {
		fs.stop(name)
	}
}

// followOnly follows the listed databases and stops following the others.
// It returns the set of names listed.
func (fs *followers) followOnly(list []DatabaseState) map[string]bool {
	want := map[string]bool{}
	for _, db := range list {
		want[db.Name] = true
		fs.start(db.Name)
	}
	for name := range fs.m {
		if !want[name] {
			fs.stop(name)
		}
	}
	return want
}

// Viewer is an optional capability of Local: the position local readers
// see of a database (what its -pos file says), which trails Position while
// an apply's commits are written but not yet reported with MarkVisible.
type Viewer interface {
	Visible(db string) (pos pagewire.Pos, ok bool)
}

// publishInterrupted reports as visible the commits of an apply whose wait
// ended (its stream broke, ctx was cancelled) after the storage server had
// counted them: the writer still finished it, publishing them to readers,
// but MarkVisible was never called. The next stream starts at the counted
// position, so without this no later apply would report them, and the
// -pos file and WaitForPosition would trail the primary until its next
// commit. The writer serves requests in order: closing it waits for the
// interrupted apply to end before the position is reported.
func (a *applier) publishInterrupted() {
	v, ok := a.r.cfg.Local.(Viewer)
	if !ok {
		return
	}
	pos, ok := a.r.cfg.Local.Position(a.name)
	if vis, vok := v.Visible(a.name); !ok || !vok || vis == pos {
		return
	}
	a.close()
	pos, _ = a.r.cfg.Local.Position(a.name)
	a.log.Info("reporting commits an interrupted apply made visible", logkey.Position, pos.String())
	a.r.cfg.Local.MarkVisible(a.name, pos)
}

// Lister is an optional capability of Local: listing its databases, so
// that a replica can delete the ones the primary deleted while it was away.
type Lister interface {
	DatabaseNames() []string
}

func (r *Replica) deleteMissing(want map[string]bool) {
	l, ok := r.cfg.Local.(Lister)
	if !ok {
		return
	}
	for _, name := range l.DatabaseNames() {
		if want[name] {
			continue
		}
		if err := r.cfg.Local.DeleteDatabase(name); err != nil {
			r.log.Error("could not delete a database the primary no longer has", logkey.DB, name, logkey.Error, err)
			continue
		}
		r.log.Info("deleted a database the primary no longer has", logkey.DB, name)
	}
}

// followDB keeps one database in step with the primary until ctx is done
// (nil), reconnecting after errors; a panic it returns.
func (r *Replica) followDB(ctx context.Context, name string) error {
	log := r.log.With(logkey.DB, name)
	b := r.newBackoff()
	a := &applier{r: r, name: name, path: filepath.Join(r.cfg.MountDir, name), log: log}
	defer a.close()
	defer r.forgetStatus(name)
	for {
		err := a.stream(ctx)
		a.noteStreamDown()
		switch {
		case ctx.Err() != nil:
			return nil
		case isPanic(err):
			return err
		case errors.Is(err, errProgress):
			b.Reset()
			continue
		}
		d := b.Next()
		log.Warn("replication stream ended; reconnecting", logkey.Error, err, logkey.RetryIn, d)
		if !backoff.Sleep(ctx, d) {
			return nil
		}
	}
}

// ctxDone reports whether err is a context's end: nothing to report.
func (r *Replica) ctxDone(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// isPanic reports whether err is a recovered panic.
func isPanic(err error) bool {
	var pe *safego.PanicError
	return errors.As(err, &pe)
}

// errProgress ends a stream that should be reopened at once.
var errProgress = errors.New("reopen the stream")

// applier applies one database's stream.
type applier struct {
	r    *Replica
	name string
	path string
	log  *slog.Logger
	w    Writer // open while the database exists locally
	// pageCount is the database's size after the last transaction this
	// stream applied; 0 when unknown (a new stream, after a snapshot).
	pageCount uint32
	// part is the transaction being applied a part at a time, or nil.
	part *partTxn
	// sync is set while the primary's commits wait for replicas
	// (PrimaryInfo.SyncCommits): applies are durable and acknowledged at
	// once, and never held back to batch. epoch is the stream's.
	sync  bool
	epoch pagewire.Epoch
	// acks is the stream's acknowledgement stream, opened at the first
	// acknowledgement; ackOff is set when the primary does not take them.
	acks   AckStream
	ackOff bool
	// keptAt is the position of the copy last kept aside (hasKept): a
	// snapshot that fails after it, retried, does not keep the same
	// copy again and again.
	keptAt  pagewire.Pos
	hasKept bool
}

// close checkpoints what it can, as SQLite's last connection does, so that
// the database file holds the data when the node is down, then closes.
func (a *applier) close() {
	if a.w != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := a.w.Checkpoint(ctx); err != nil {
			a.log.Warn("checkpoint at close failed", logkey.Error, err)
		}
		cancel()
		if err := a.w.Close(); err != nil {
			a.log.Warn("closing the WAL writer", logkey.Error, err)
		}
		a.w = nil
	}
}

func (a *applier) writer(ctx context.Context) (Writer, error) {
	if a.w == nil {
		w, err := a.r.cfg.OpenWriter(ctx, a.path)
		if err != nil {
			return nil, err
		}
		a.w = w
	}
	return a.w, nil
}

// stream opens a stream at the local position and applies what it brings.
func (a *applier) stream(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Commits an earlier stream's apply left unreported are made visible
	// first: this stream starts past them.
	a.publishInterrupted()

	// Open the stream at this node's position. A damaged copy asks at a
	// checksum no copy has: the primary sends a snapshot, marked diverged,
	// and the copy is kept aside before it is replaced.
	have, _ := a.r.cfg.Local.Position(a.name)
	if err := a.r.cfg.Local.Damaged(a.name); err != nil && have.TXID > 0 {
		a.log.Warn("this node's copy is damaged; asking the primary for a snapshot", logkey.Error, err)
		have.Checksum = 0
	}
	a.pageCount = 0
	s, err := a.r.cfg.Upstream.StreamTransactions(ctx, a.name, a.r.cfg.Hostname, have)
	if err != nil {
		return err
	}

	// A stream silent past IdleTimeout is dead; cancelling ends Recv.
	idle := time.AfterFunc(a.r.cfg.IdleTimeout, cancel)
	defer idle.Stop()
	q := a.readAhead(ctx, s, idle)

	// A transaction cut off mid-way is given up: this node stays at its
	// last whole transaction, where the next stream resumes.
	defer a.abortPart()
	defer a.closeAcks()

	// Apply each event in turn: a transaction together with those that
	// arrived meanwhile, a big one a part at a time, a snapshot as its
	// pages arrive.
	var held *TxnEvent // an event read while batching, handled next
	p := pacer{interval: a.r.cfg.ApplyInterval, busy: ewma.NewBusy()}
	for {
		var ev TxnEvent
		if held != nil {
			ev, held = *held, nil
		} else {
			var ok bool
			if ev, ok = q.recv(); !ok {
				return <-q.errc
			}
		}
		if err := a.r.checkEpoch(ev.Primary); err != nil {
			return err
		}
		a.sync, a.epoch = ev.Primary.SyncCommits, ev.Primary.Epoch
		switch {
		case a.part != nil && ev.Txn == nil:
			return fmt.Errorf("%w: transaction %d was cut off by another message", pagewire.ErrInvalidArgument, a.part.txn.TXID)
		case ev.Txn != nil && (ev.More || a.part != nil):
			if err := a.applyPart(ctx, *ev.Txn, ev.More); err != nil {
				return a.applyFailed(err)
			}
			if !ev.More {
				p.applying(1)
				a.afterApply(ctx)
			}
		case ev.Txn != nil:
			wait := p.wait()
			if a.sync {
				wait = 0 // a commit on the primary waits for this one
			}
			var batch []pagewire.Txn
			batch, held = a.gather(*ev.Txn, q, wait)
			p.applying(len(batch))
			a.noteReceived(batch)
			if err := a.applyTxns(ctx, batch); err != nil {
				return a.applyFailed(err)
			}
			a.noteApplied(batch)
			a.afterApply(ctx)
		case ev.Heartbeat:
			if pos, ok := a.r.cfg.Local.Position(a.name); ok {
				a.noteCurrent(pos, true)
			}
			a.ack(ctx, false)
		case ev.Snapshot != nil:
			a.pageCount = 0
			if err := a.applySnapshot(ctx, *ev.Snapshot, a.snapshotPages(*ev.Snapshot, q)); err != nil {
				return err
			}
			a.noteCurrent(ev.Snapshot.Pos, false)
			a.ack(ctx, true) // a snapshot's last write is fsynced
		default:
			return fmt.Errorf("%w: snapshot pages without a snapshot", pagewire.ErrInvalidArgument)
		}
	}
}

// applyFailed follows a failed apply: if the storage refused it because
// it did not lead to the primary's checksum, the copy is damaged and the
// stream reopens at once, asking for a snapshot.
func (a *applier) applyFailed(err error) error {
	if derr := a.r.cfg.Local.Damaged(a.name); derr != nil {
		a.log.Error("an apply did not lead to the primary's checksum and was refused before readers saw it; re-seeding from the primary", logkey.Error, err)
		return errProgress
	}
	return err
}

// gather batches first with the transactions already read from q, waiting
// up to wait for more, until the batch holds maxBatchTxns transactions,
// maxBatchPages pages or maxBatchBytes bytes of pages. An event that is not
// a whole transaction (or is from another epoch) ends the batch and is
// returned as held, to be handled next.
func (a *applier) gather(first pagewire.Txn, q *eventQueue, wait time.Duration) (batch []pagewire.Txn, held *TxnEvent) {
	batch, size, bytes := []pagewire.Txn{first}, len(first.Pages), txnBytes(first)
	var timeout <-chan time.Time
	if wait > 0 {
		timer := time.NewTimer(wait)
		defer timer.Stop()
		timeout = timer.C
	}
	for len(batch) < maxBatchTxns && size < maxBatchPages && bytes < maxBatchBytes {
		next, ok, timedOut := q.recvWithin(timeout)
		if timedOut {
			timeout = nil
			continue
		}
		if !ok {
			return batch, nil
		}
		if next.Txn == nil || next.More || a.r.checkEpoch(next.Primary) != nil {
			return batch, &next
		}
		batch, size, bytes = append(batch, *next.Txn), size+len(next.Txn.Pages), bytes+txnBytes(*next.Txn)
	}
	return batch, nil
}

// txnBytes is how many bytes of pages t carries.
func txnBytes(t pagewire.Txn) int { return len(t.Pages) * int(t.PageSize) }

// pacer spaces the applies to a busy database (see ApplyInterval).
type pacer struct {
	interval  time.Duration
	busy      *ewma.Busy // whether transactions come at ewma.BusyRate or faster
	lastApply time.Time
}

// wait is how long to wait for more transactions before applying: until
// interval has passed since the last apply, if busy; else 0.
func (p *pacer) wait() time.Duration {
	if d := p.interval - time.Since(p.lastApply); d > 0 && p.busy.Is() {
		return d
	}
	return 0
}

// applying counts an apply of n transactions, starting now.
func (p *pacer) applying(n int) {
	p.lastApply = time.Now()
	p.busy.Add(n, p.lastApply)
}

// A batch of transactions applied together holds at most this many
// transactions or pages.
const (
	maxBatchTxns  = 256
	maxBatchPages = 2048
	maxBatchBytes = 16 << 20
)

// applyTxns applies consecutive transactions and checks the result: each
// must follow the last, the first this node's position.
func (a *applier) applyTxns(ctx context.Context, txns []pagewire.Txn) error {
	have, ok := a.r.cfg.Local.Position(a.name)
	if !ok {
		return fmt.Errorf("%w: transaction %d for a database this node does not have", pagewire.ErrInvalidArgument, txns[0].TXID)
	}

	// Transactions this node has already are its own, sent back: a halt
	// lock's holder commits on the primary and here at once.
	for len(txns) > 0 && txns[0].TXID <= have.TXID {
		if txns[0].TXID == have.TXID && txns[0].PostChecksum != have.Checksum {
			a.log.Error("this node has a transaction the primary committed differently", logkey.TXID, have.TXID)
			return errProgress
		}
		a.pageCount = txns[0].PageCount
		txns = txns[1:]
	}
	if len(txns) == 0 {
		return nil
	}
	w, err := a.writer(ctx)
	if err != nil {
		return err
	}

	// Check that the rest follow on from the local position.
	prev := have
	for _, txn := range txns {
		if txn.TXID != prev.TXID+1 || txn.PreChecksum != prev.Checksum {
			return fmt.Errorf("%w: transaction %d (pre-checksum %016x) does not follow position %s", pagewire.ErrInvalidArgument, txn.TXID, txn.PreChecksum, prev)
		}
		if w.PageSize() != txn.PageSize {
			return fmt.Errorf("%w: transaction page size %d, database's %d", pagewire.ErrInvalidArgument, txn.PageSize, w.PageSize())
		}
		prev = pagewire.Pos{TXID: txn.TXID, Checksum: txn.PostChecksum}
	}

	// Apply them in groups, each as one WAL commit.
	for _, g := range coalesce(a.pageCount, txns) {
		a.pageCount = 0 // unknown if the apply fails
		if err := a.applyGroup(ctx, w, g); err != nil {
			return fmt.Errorf("apply transactions %d..%d: %w", g.txns[0].TXID, g.txns[len(g.txns)-1].TXID, err)
		}
		a.pageCount = g.pageCount
	}

	return a.finishApply(txns, prev)
}

// finishApply follows the apply of txns, which must have brought the local
// position to want: it makes them visible and reports their lag. The
// caller checkpoints if the WAL is long (afterApply), once it has
// acknowledged them: a commit on the primary may be waiting for that.
func (a *applier) finishApply(txns []pagewire.Txn, want pagewire.Pos) error {
	// The local position must now be the primary's.
	got, _ := a.r.cfg.Local.Position(a.name)
	a.r.cfg.Local.MarkVisible(a.name, got)
	if got != want {
		// Reconnecting at this position makes the primary see the
		// divergence and send a snapshot.
		a.log.Error("after applying transactions this node's position differs from the primary's", "got", got.String(), "want", want.String())
		return errProgress
	}

	// Report how long after its commit each transaction was applied.
	if f := a.r.cfg.Applied; f != nil {
		now := time.Now()
		for _, txn := range txns {
			if !txn.CommitTime.IsZero() {
				f(now.Sub(txn.CommitTime))
			}
		}
	}
	return nil
}

// applyGroup applies a group as one WAL commit; the storage server counts
// it as the group's transactions, and refuses it, before readers see it,
// unless it ends at the last one's checksum. While the primary waits for
// replicas, the WAL is fsynced before the apply returns.
func (a *applier) applyGroup(ctx context.Context, w Writer, g txnGroup) error {
	done, err := a.r.cfg.Local.ExpectCommit(a.name, g.txns)
	if err != nil {
		return err
	}
	defer done()
	return a.writerCall(ctx, w, func(ctx context.Context) error {
		return w.Apply(ctx, g.pageCount, g.pages, a.sync)
	})
}

// applyGrace bounds how long a write to the writer goes on once the
// stream that asked for it has ended.
const applyGrace = 5 * time.Second

// abandoner is a Writer whose writes may still be under way after its
// call returned (RemoteWALWriter: the apply worker goes on with a request
// its caller stopped waiting for).
type abandoner interface {
	// Abandon stops the writer for good, returning once nothing it was
	// asked to write can still land.
	Abandon()
}

// writerCall runs call, one write to w, and returns only once w has
// answered it: an announcement (ExpectCommit, ExpectPosition) is withdrawn
// after the call returns, and a write landing after that is refused as
// unannounced, or, under the next stream's announcement, taken for that
// one's and refused at a checksum that was never the copy's. So when ctx
// ends, call's own context lasts applyGrace longer; a writer still busy
// then is abandoned (the apply worker is killed) and the applier opens a
// new one.
func (a *applier) writerCall(ctx context.Context, w Writer, call func(context.Context) error) error {
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var mu sync.Mutex
	var grace *time.Timer
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		grace = time.AfterFunc(applyGrace, cancel)
	})
	defer func() {
		stop()
		mu.Lock()
		defer mu.Unlock()
		if grace != nil {
			grace.Stop()
		}
	}()

	err := call(cctx)
	if err == nil || cctx.Err() == nil || !errors.Is(err, cctx.Err()) {
		return err
	}
	// The grace ran out before the writer answered. (A WALWriter in this
	// process has returned: it wrote nothing, as it was waiting for a lock.)
	if ab, ok := w.(abandoner); ok {
		a.log.Error("the apply worker did not answer a write within the grace after its stream ended; stopping it so that the write cannot land unannounced",
			"grace", applyGrace.String())
		ab.Abandon()
		if a.w == w {
			a.w = nil
		}
	}
	return fmt.Errorf("%w (the writer did not answer within %s after the stream ended)", ctx.Err(), applyGrace)
}

// afterApply acknowledges what was applied, then checkpoints if the WAL is
// long: a checkpoint takes milliseconds, which a commit waiting on the
// primary does not wait for.
func (a *applier) afterApply(ctx context.Context) {
	a.ack(ctx, a.sync)
	if a.w != nil {
		a.checkpoint(ctx, a.w)
	}
}

// ack tells the primary this node's position of the database, durable if
// the apply that led to it fsynced. A primary that does not take
// acknowledgements (an older version, or it refused one) gets none until
// the next stream.
func (a *applier) ack(ctx context.Context, durable bool) {
	if a.ackOff {
		return
	}
	up, ok := a.r.cfg.Upstream.(Acknowledger)
	pos, have := a.r.cfg.Local.Position(a.name)
	if !ok || !have {
		return
	}
	if a.acks == nil {
		s, err := up.AcknowledgeTransactions(ctx, a.name, a.r.cfg.Hostname)
		if err != nil {
			a.ackFailed(err)
			return
		}
		a.acks = s
	}
	if err := a.acks.Send(a.epoch, pos, durable); err != nil {
		a.ackFailed(err)
	}
}

// ackFailed stops acknowledging until the next stream.
func (a *applier) ackFailed(err error) {
	if a.r.ctxDone(err) {
		return
	}
	a.log.Warn("the primary does not take this replica's acknowledgements; until the stream reconnects, commits that wait for replicas do not count this one",
		logkey.Error, err)
	a.closeAcks()
	a.ackOff = true
}

// closeAcks ends the acknowledgement stream, if open.
func (a *applier) closeAcks() {
	if a.acks != nil {
		_ = a.acks.Close()
		a.acks = nil
	}
	a.ackOff = false
}

// applyTxn applies one transaction.
func (a *applier) applyTxn(ctx context.Context, txn pagewire.Txn) error {
	return a.applyTxns(ctx, []pagewire.Txn{txn})
}

// checkpoint copies the WAL into the database file once it is long.
func (a *applier) checkpoint(ctx context.Context, w Writer) {
	if w.Frames() < a.r.cfg.CheckpointFrames {
		return
	}
	if _, err := w.Checkpoint(ctx); err != nil {
		a.log.Warn("checkpoint failed; will retry after the next transaction", logkey.Error, err)
	}
}

func (r *Replica) newBackoff() *backoff.Backoff {
	return backoff.New(r.cfg.MinBackoff, r.cfg.MaxBackoff)
}

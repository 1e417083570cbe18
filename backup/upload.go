package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/engine"
	"github.com/pagewire/pagewire/internal/backoff"
	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/internal/safego"
)

// Source is what the uploader backs up: the node's store.
type Source interface {
	// SendsAs reports the lease epoch this node sends transactions as,
	// or an error when it is not the primary.
	SendsAs() (pagewire.Epoch, error)
	RoleChanged() <-chan struct{}
	DatabaseNames() []string
	DatabasesChanged() <-chan struct{}
	Feed(name string, have pagewire.Pos, maxBytes int) (*engine.Feed, error)
}

// UploaderConfig configures an Uploader.
type UploaderConfig struct {
	Bucket *blob.Bucket
	Source Source
	Node   string // this node's hostname, recorded in each segment's begin.json
	Dir    string // where packs and snapshots are spooled before upload
	// Delay is the most time a commit waits before its upload starts.
	Delay time.Duration
	// SnapshotInterval is how often a segment gets a fresh snapshot.
	SnapshotInterval time.Duration
	// Maintain, if set, runs every MaintainInterval on each database
	// while this node uploads: compaction and retention.
	Maintain         func(ctx context.Context, db string) error
	MaintainInterval time.Duration
	Log              *slog.Logger
}

// Sizes of what the uploader reads and writes.
const (
	feedBatchBytes = 4 << 20  // page bytes a feed item carries
	maxPackBytes   = 64 << 20 // a pack is uploaded once it is this large
)

// Status is the backup of one database, as this node uploads it.
type Status struct {
	Segment string
	// Pos is the newest transaction in the backup, and Time its commit
	// time (a snapshot's: when it was taken).
	Pos  pagewire.Pos
	Time time.Time
	// Pending is the commit time of the oldest transaction not yet
	// uploaded; zero when the backup has every transaction.
	Pending time.Time
	// Err is the last upload's error, until an upload succeeds.
	Err           string
	UploadedBytes int64
	Errors        int64
}

// Lag is how far the backup is behind at now: the age of the oldest
// transaction not uploaded yet.
func (s Status) Lag(now time.Time) time.Duration {
	if s.Pending.IsZero() {
		return 0
	}
	return max(0, now.Sub(s.Pending))
}

// An Uploader backs up every database while this node is the primary:
// each database's transactions, in packs uploaded within Delay of their
// commit, and snapshots when a segment starts, when the transaction log
// cannot give what the backup lacks, and every SnapshotInterval. Each
// run as primary uploads a segment of its own, named by its lease epoch,
// and stops uploading the moment the node stops being the primary of that
// epoch.
type Uploader struct {
	cfg UploaderConfig
	log *slog.Logger

	mu     sync.Mutex
	status map[string]*Status
}

// NewUploader returns an uploader; Run starts it.
func NewUploader(cfg UploaderConfig) *Uploader {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Uploader{cfg: cfg, log: cfg.Log.With(logkey.Component, "backup"), status: map[string]*Status{}}
}

// Status returns the backup status of db, if this node uploads it.
func (u *Uploader) Status(db string) (Status, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	s, ok := u.status[db]
	if !ok {
		return Status{}, false
	}
	return *s, true
}

// Statuses returns every database's status, by name.
func (u *Uploader) Statuses() map[string]Status {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := make(map[string]Status, len(u.status))
	for name, s := range u.status {
		m[name] = *s
	}
	return m
}

func (u *Uploader) update(db string, f func(*Status)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.status[db]
	if s == nil {
		s = &Status{}
		u.status[db] = s
	}
	f(s)
}

// Run uploads until ctx is done, as each role change allows.
func (u *Uploader) Run(ctx context.Context) error {
	for {
		changed := u.cfg.Source.RoleChanged()
		if epoch, err := u.cfg.Source.SendsAs(); err == nil {
			u.runEpoch(ctx, epoch, changed)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

// runEpoch runs a worker per database until the role changes.
func (u *Uploader) runEpoch(ctx context.Context, epoch pagewire.Epoch, roleChanged <-chan struct{}) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		// What a former primary uploaded is no news of the backup.
		u.mu.Lock()
		clear(u.status)
		u.mu.Unlock()
	}()
	if u.cfg.Maintain != nil {
		wg.Go(func() { u.maintain(ctx) })
	}
	var mu sync.Mutex
	running := map[string]bool{}
	for {
		dbsChanged := u.cfg.Source.DatabasesChanged()
		for _, name := range u.cfg.Source.DatabaseNames() {
			mu.Lock()
			start := !running[name]
			running[name] = true
			mu.Unlock()
			if !start {
				continue
			}
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(running, name)
					mu.Unlock()
				}()
				_ = safego.Call(u.log, "the backup of "+name, func() error {
					u.runDB(ctx, epoch, name)
					return nil
				})
			})
		}
		select {
		case <-ctx.Done():
			return
		case <-roleChanged:
			return
		case <-dbsChanged:
		}
	}
}

// maintain runs Maintain on each database every MaintainInterval, apart
// from the uploads so that it never holds them up.
func (u *Uploader) maintain(ctx context.Context) {
	for backoff.Sleep(ctx, u.cfg.MaintainInterval) {
		for _, name := range u.cfg.Source.DatabaseNames() {
			if _, ok := u.Status(name); !ok {
				continue // not uploaded by this node yet
			}
			err := safego.Call(u.log, "backup maintenance of "+name, func() error { return u.cfg.Maintain(ctx, name) })
			if err != nil && ctx.Err() == nil {
				u.log.Warn("backup maintenance failed; the next run tries again", logkey.DB, name, logkey.Error, err)
			}
		}
	}
}

// errFenced: this node no longer uploads as the segment's primary.
var errFenced = errors.New("this node is no longer the primary the backup segment belongs to")

// errNotOurs: the backup belongs to a primary of a newer lease epoch.
var errNotOurs = errors.New("the backup is not this primary's to extend")

// runDB backs up one database until ctx is done, the database is deleted
// or the node stops being the primary of epoch.
func (u *Uploader) runDB(ctx context.Context, epoch pagewire.Epoch, name string) {
	w := &worker{u: u, db: name, epoch: epoch, log: u.log.With(logkey.DB, name, logkey.Epoch, epoch)}
	defer w.spoolClose()
	bo := backoff.New(200*time.Millisecond, 10*time.Second)
	for {
		err := w.run(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errFenced):
			w.log.Info("backup stopped: this node is no longer the primary", logkey.Error, err)
			return
		case errors.Is(err, errNotOurs):
			w.log.Error("backup stopped: nothing is uploaded until this node is primary again", logkey.Error, err)
			u.update(name, func(s *Status) { s.Err = err.Error() })
			return
		case errors.Is(err, pagewire.ErrNotFound):
			w.log.Info("backup stopped: the database was deleted")
			u.mu.Lock()
			delete(u.status, name)
			u.mu.Unlock()
			return
		}
		d := bo.Next()
		w.log.Warn("backup failed; retrying", logkey.Error, err, logkey.RetryIn, d)
		if !backoff.Sleep(ctx, d) {
			return
		}
	}
}

// worker uploads one database's segment.
type worker struct {
	u     *Uploader
	db    string
	epoch pagewire.Epoch
	log   *slog.Logger

	// Set when the segment is chosen, kept across retries.
	chosen   bool
	seg      segmentID
	prevHead pagewire.TXID // the backup's head when the segment was chosen
	begun    bool          // its begin.json is uploaded

	pos      pagewire.Pos // the newest transaction in the backup
	lastSnap time.Time    // when the segment's last snapshot was taken

	pack    *packWriter // transactions gathered for the next upload, or nil
	pending time.Time   // the first gathered transaction's commit time
}

// run chooses the segment, if not yet done, and uploads from the backup's
// position on until an error.
func (w *worker) run(ctx context.Context) error {
	if !w.chosen {
		if err := w.choose(ctx); err != nil {
			return err
		}
	}
	w.spoolClose()
	feed, err := w.u.cfg.Source.Feed(w.db, w.pos, feedBatchBytes)
	if err != nil {
		return err
	}
	defer feed.Close()
	for {
		item, err := feed.Next(ctx)
		if err != nil {
			return err
		}
		switch {
		case item.Snapshot != nil:
			w.log.Info("uploading a snapshot", logkey.Reason, item.Snapshot.Reason, logkey.Position, item.Snapshot.Pos.String())
			err = w.flush(ctx)
			if err == nil {
				err = w.uploadSnapshot(ctx, item.Snapshot)
			} else {
				_ = item.Snapshot.Close()
			}
			if err != nil {
				return err
			}
			feed.Sent(item)
		case item.Idle:
			feed.Sent(item)
			if err := w.idle(ctx, item.Changed); err != nil {
				return err
			}
		default:
			if err := w.gather(item); err != nil {
				return err
			}
			feed.Sent(item)
			// Due, a pack goes once the feed has given what was committed
			// meanwhile; a feed that never catches up still sends it
			// within twice the delay.
			waited := time.Since(w.pending)
			caughtUp := item.Txns[len(item.Txns)-1].TXID >= item.Pos.TXID
			due := w.pack.size >= maxPackBytes || (waited >= w.u.cfg.Delay && caughtUp) || waited >= 2*w.u.cfg.Delay
			if !item.More && due {
				if err := w.flush(ctx); err != nil {
					return err
				}
			}
		}
		if err := w.periodic(ctx); err != nil {
			return err
		}
	}
}

// choose lists the backup and picks this run's segment: the next of this
// epoch, continuing from the backup's head.
func (w *worker) choose(ctx context.Context) error {
	tl, err := loadTimeline(ctx, w.u.cfg.Bucket, w.db)
	if err != nil {
		return err
	}
	var seq uint32
	for _, s := range tl.Segments {
		if s.ID.Epoch > w.epoch {
			return fmt.Errorf("%w: the backup has segment %s of lease epoch %d, newer than this primary's %d: another primary uploads it (or the cluster's lease moved to a store with lower epochs; point backup.path elsewhere)", errNotOurs, s.ID, s.ID.Epoch, w.epoch)
		}
		if s.ID.Epoch == w.epoch {
			seq = max(seq, s.ID.Seq+1)
		}
	}
	w.seg, w.prevHead, w.pos = segmentID{Epoch: w.epoch, Seq: seq}, 0, pagewire.Pos{}
	if h, hs := tl.head(); h > 0 {
		w.prevHead = h
		pos, t, err := headPos(ctx, w.u.cfg.Bucket, hs, h)
		if err == nil {
			// Continued, the backup is only as good as its head's restore.
			_, err = tl.plan(h)
		}
		if err != nil {
			w.log.Warn("cannot continue the backup from where it ends (unreadable, or not restorable); the new segment starts with a snapshot", logkey.Error, err)
		} else {
			w.pos = pos
			w.u.update(w.db, func(s *Status) { s.Pos, s.Time = pos, t })
		}
	}
	w.chosen, w.begun = true, false
	w.u.update(w.db, func(s *Status) { s.Segment = w.seg.String() })
	w.log.Info("backup segment chosen", "segment", w.seg.String(), logkey.Position, w.pos.String())
	return nil
}

// gather adds a feed item's transactions to the pack.
func (w *worker) gather(item engine.FeedItem) error {
	if w.pack == nil {
		p, err := newPackWriter(w.u.cfg.Dir)
		if err != nil {
			return fmt.Errorf("spool a pack in %s: %w", w.u.cfg.Dir, err)
		}
		w.pack = p
	}
	for _, t := range item.Txns {
		if w.pending.IsZero() {
			w.pending = t.CommitTime
			w.u.update(w.db, func(s *Status) { s.Pending = t.CommitTime })
		}
		if err := w.pack.add(t, item.More); err != nil {
			return err
		}
	}
	return nil
}

// idle waits while the feed has nothing new. The feed is read once per
// half delay at most, not once per commit: a pack gathers a delay's
// commits in a few reads, which is what keeps the primary's write rate.
// A pack that is due is uploaded.
func (w *worker) idle(ctx context.Context, changed <-chan struct{}) error {
	if w.pack != nil {
		due := time.Until(w.pending.Add(w.u.cfg.Delay))
		if due <= 0 {
			return w.flush(ctx)
		}
		// Commits meanwhile are read when the pack is due, all at once.
		if !backoff.Sleep(ctx, min(due, w.nextPeriodic())) {
			return ctx.Err()
		}
		return nil
	}
	tick := time.NewTimer(w.nextPeriodic())
	defer tick.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-changed:
		// Let the commits that follow this one gather.
		if !backoff.Sleep(ctx, w.u.cfg.Delay/2) {
			return ctx.Err()
		}
		return nil
	case <-tick.C:
		return nil // run's periodic step
	}
}

// nextPeriodic is the time until the next snapshot is due.
func (w *worker) nextPeriodic() time.Duration {
	if w.u.cfg.SnapshotInterval <= 0 || w.lastSnap.IsZero() {
		return time.Hour
	}
	return max(time.Until(w.lastSnap.Add(w.u.cfg.SnapshotInterval)), time.Millisecond)
}

// periodic takes the segment's periodic snapshot when it is due.
func (w *worker) periodic(ctx context.Context) error {
	if !w.begun || w.lastSnap.IsZero() || w.u.cfg.SnapshotInterval <= 0 || time.Since(w.lastSnap) < w.u.cfg.SnapshotInterval {
		return nil
	}
	if err := w.flush(ctx); err != nil {
		return err
	}
	return w.freshSnapshot(ctx)
}

// freshSnapshot uploads a snapshot of the database as it is now.
func (w *worker) freshSnapshot(ctx context.Context) error {
	f, err := w.u.cfg.Source.Feed(w.db, pagewire.Pos{}, feedBatchBytes)
	if err != nil {
		return err
	}
	defer f.Close()
	item, err := f.Next(ctx)
	if err != nil {
		return err
	}
	if item.Snapshot == nil {
		return fmt.Errorf("a feed from nothing began without a snapshot")
	}
	w.log.Info("uploading the periodic snapshot", logkey.Position, item.Snapshot.Pos.String())
	return w.uploadSnapshot(ctx, item.Snapshot)
}

// uploadSnapshot spools the snapshot as an LTX file, closes it, and
// uploads the file. A snapshot older than the backup is not uploaded.
func (w *worker) uploadSnapshot(ctx context.Context, snap *engine.Snapshot) error {
	defer snap.Close()
	now := time.Now()
	f, err := spoolFile(w.u.cfg.Dir)
	if err != nil {
		return err
	}
	defer f.Close()
	cw := &countWriter{w: f}
	if err := encodeSnapshot(cw, snap, snap.Pos, snap.PageSize, snap.PageCount, now); err != nil {
		return fmt.Errorf("snapshot of %q at %s: %w", w.db, snap.Pos, err)
	}
	pos := snap.Pos
	_ = snap.Close() // the view and its slot are not needed for the upload
	if !w.begun {
		// The older history is served only up to where this one starts.
		w.prevHead = min(w.prevHead, pos.TXID)
	}
	key := objectKey(w.db, w.seg, levelSnap, 1, pos.TXID, now)
	if err := w.put(ctx, key, func() (io.Reader, int64) { return io.NewSectionReader(f, 0, cw.n), cw.n }); err != nil {
		return err
	}
	w.lastSnap = now
	w.advance(pos, now)
	return nil
}

// flush uploads the gathered pack, if any.
func (w *worker) flush(ctx context.Context) error {
	p := w.pack
	if p == nil || len(p.lengths) == 0 {
		return nil
	}
	if p.cur != nil {
		return fmt.Errorf("transaction %d is not whole in the pack", p.cur.txn.TXID)
	}
	key := objectKey(w.db, w.seg, 0, p.first.TXID, p.last.TXID, p.last.CommitTime)
	if err := w.put(ctx, key, p.reader); err != nil {
		return err
	}
	w.spoolClose()
	w.pending = time.Time{}
	w.advance(pagewire.Pos{TXID: p.last.TXID, Checksum: p.last.PostChecksum}, p.last.CommitTime)
	if w.lastSnap.IsZero() {
		w.lastSnap = time.Now() // a continued backup: the interval counts from here
	}
	return nil
}

// advance records that the backup holds pos (a snapshot may already
// have put it further).
func (w *worker) advance(pos pagewire.Pos, t time.Time) {
	if pos.TXID >= w.pos.TXID {
		w.pos = pos
	}
	w.u.update(w.db, func(s *Status) {
		if pos.TXID >= s.Pos.TXID {
			s.Pos, s.Time = pos, t
		}
		s.Pending, s.Err = w.pending, ""
	})
}

func (w *worker) spoolClose() {
	if w.pack != nil {
		w.pack.close()
		w.pack = nil
	}
}

// put uploads an object of the segment, its begin.json first, retrying
// until it is uploaded, ctx is done or the node is no longer the
// segment's primary. body gives the object's bytes afresh for each try.
func (w *worker) put(ctx context.Context, key string, body func() (io.Reader, int64)) error {
	bo := backoff.New(200*time.Millisecond, 10*time.Second)
	for attempt := 0; ; attempt++ {
		err := w.putOnce(ctx, key, body)
		if err == nil {
			return nil
		}
		if errors.Is(err, errFenced) || ctx.Err() != nil {
			return err
		}
		w.u.update(w.db, func(s *Status) { s.Err = err.Error(); s.Errors++ })
		d := bo.Next()
		if attempt == 0 || attempt%10 == 0 {
			w.log.Warn("backup upload failed; writes go on, and the upload is retried until it succeeds", "key", key, logkey.Error, err, logkey.RetryIn, d, "attempt", attempt+1)
		}
		if !backoff.Sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

func (w *worker) putOnce(ctx context.Context, key string, body func() (io.Reader, int64)) error {
	if !w.begun {
		b := Begin{PrevHead: w.prevHead, Node: w.u.cfg.Node, Time: time.Now().UTC()}
		data, err := json.Marshal(b)
		if err != nil {
			return err
		}
		err = w.write(ctx, beginKey(w.db, w.seg), func() (io.Reader, int64) { return bytes.NewReader(data), int64(len(data)) })
		if gcerrors.Code(err) == gcerrors.FailedPrecondition {
			// Another uploader of this epoch took the segment: choose again.
			w.chosen = false
			return fmt.Errorf("segment %s of %q was begun by another uploader: %w", w.seg, w.db, err)
		}
		if err != nil {
			return err
		}
		w.begun = true
		w.log.Info("backup segment begun", "segment", w.seg.String(), "prev_head", w.prevHead)
	}
	err := w.write(ctx, key, body)
	if gcerrors.Code(err) == gcerrors.FailedPrecondition {
		return nil // an earlier try that seemed to fail did upload it
	}
	return err
}

// write uploads one object unless it exists, if this node is still the
// segment's primary.
func (w *worker) write(ctx context.Context, key string, body func() (io.Reader, int64)) error {
	if epoch, err := w.u.cfg.Source.SendsAs(); err != nil || epoch != w.epoch {
		return fmt.Errorf("%w (epoch %d)", errFenced, w.epoch)
	}
	r, size := body()
	ctx, cancel := context.WithTimeout(ctx, uploadTimeout(size))
	defer cancel()
	bw, err := w.u.cfg.Bucket.NewWriter(ctx, key, &blob.WriterOptions{IfNotExist: true, ContentType: "application/octet-stream"})
	if err != nil {
		return err
	}
	if _, err := io.Copy(bw, r); err != nil {
		cancel() // aborts the upload
		_ = bw.Close()
		return fmt.Errorf("upload %s: %w", key, err)
	}
	if err := bw.Close(); err != nil {
		return fmt.Errorf("upload %s: %w", key, err)
	}
	w.u.update(w.db, func(s *Status) { s.UploadedBytes += size })
	return nil
}

// uploadTimeout bounds one upload: a minute, plus a second per MiB.
func uploadTimeout(size int64) time.Duration {
	return time.Minute + time.Duration(size>>20)*time.Second
}

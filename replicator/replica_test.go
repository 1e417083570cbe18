package replicator

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pagewire/pagewire"
)

// fakeLocal is a Local at the seam: positions in a map.
type fakeLocal struct {
	mu      sync.Mutex
	pos     map[string]pagewire.Pos
	kept    []string
	rebased []pagewire.Pos
	created map[string]uint32
	expect  map[string]pagewire.TXID // the TXID the next apply reaches
	grouped [][]pagewire.TXID        // transactions announced together
	nextSum uint64                   // what ChecksumPages answers
}

func newFakeLocal() *fakeLocal {
	return &fakeLocal{pos: map[string]pagewire.Pos{}, created: map[string]uint32{}, expect: map[string]pagewire.TXID{}}
}

func (l *fakeLocal) Position(db string) (pagewire.Pos, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.pos[db]
	return p, ok
}

func (l *fakeLocal) CreateDatabase(db string, pageSize uint32) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pos[db] = pagewire.Pos{TXID: 1, Checksum: 1}
	l.created[db] = pageSize
	return nil
}

func (l *fakeLocal) DeleteDatabase(db string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.pos, db)
	return nil
}

func (l *fakeLocal) KeepAside(db, _ string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.kept = append(l.kept, db)
	return "/kept/" + db, nil
}

func (l *fakeLocal) BeginSnapshot(string) error { return nil }

func (l *fakeLocal) ExpectCommit(db string, txns []pagewire.Txn) (func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []pagewire.TXID
	for _, t := range txns {
		ids = append(ids, t.TXID)
	}
	l.grouped = append(l.grouped, ids)
	l.expect[db] = txns[len(txns)-1].TXID
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.expect, db)
	}, nil
}

func (l *fakeLocal) RestoreDatabase(db string, pageSize uint32, pos pagewire.Pos, next func() ([]pagewire.Page, error), replace func() error) error {
	for {
		pages, err := next()
		if err != nil {
			return err
		}
		if pages == nil {
			break
		}
	}
	if replace != nil {
		if err := replace(); err != nil {
			return err
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.created[db] = pageSize
	l.pos[db] = pos
	return nil
}

// ChecksumPages: the fake's checksum after a transaction is whatever its
// writer's next says (fakeWriter.next), known before the commit too.
func (l *fakeLocal) ChecksumPages(db string, at pagewire.Pos, _ uint64, _ []pagewire.Page, _ uint32) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pos[db] != at {
		return 0, pagewire.ErrBusy
	}
	return l.nextSum, nil
}

func (l *fakeLocal) ExpectPosition(string, pagewire.Pos) (func(), error) { return func() {}, nil }

func (l *fakeLocal) Damaged(string) error { return nil }

func (l *fakeLocal) MarkVisible(string, pagewire.Pos) {}

func (l *fakeLocal) Rebase(db string, pos pagewire.Pos) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rebased = append(l.rebased, pos)
	l.pos[db] = pos
	return nil
}

// fakeWriter records applies and moves the fake local position the way the
// storage server would: TXID+1 and the checksum the test says.
type fakeWriter struct {
	l       *fakeLocal
	db      string
	applied int
	next    uint64 // checksum after the next apply
}

func (w *fakeWriter) Apply(_ context.Context, _ uint32, _ []pagewire.Page, _ bool) error {
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	w.applied++
	p := w.l.pos[w.db]
	txid := p.TXID + 1
	if e, ok := w.l.expect[w.db]; ok {
		txid = e
		delete(w.l.expect, w.db)
	}
	w.l.pos[w.db] = pagewire.Pos{TXID: txid, Checksum: w.next}
	return nil
}
func (w *fakeWriter) ApplyPart(ctx context.Context, p TxnPart, sync bool) error {
	if p.Last {
		return w.Apply(ctx, p.PageCount, p.Pages, sync)
	}
	return nil
}
func (w *fakeWriter) AbortPart() error                         { return nil }
func (w *fakeWriter) Checkpoint(context.Context) (bool, error) { return true, nil }
func (w *fakeWriter) Frames() uint32                           { return 0 }
func (w *fakeWriter) PageSize() uint32                         { return 4096 }
func (w *fakeWriter) Close() error                             { return nil }

func newTestReplica(t *testing.T, l *fakeLocal, w *fakeWriter) *Replica {
	t.Helper()
	cfg := DefaultReplicaConfig()
	cfg.Upstream, cfg.Local, cfg.MountDir, cfg.Hostname = upstreamFunc(nil), l, "/mnt", "replica1"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.OpenWriter = func(context.Context, string) (Writer, error) { return w, nil }
	r, err := NewReplica(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// upstreamFunc is an Upstream whose streams replay fixed events.
type upstreamFunc []TxnEvent

func (u upstreamFunc) WatchDatabases(context.Context, string) (DatabaseWatch, error) {
	return nil, errors.New("not used")
}

func (u upstreamFunc) StreamTransactions(context.Context, string, string, pagewire.Pos) (TxnStream, error) {
	return &replay{events: u}, nil
}

type replay struct{ events []TxnEvent }

func (r *replay) Recv() (TxnEvent, error) {
	if len(r.events) == 0 {
		return TxnEvent{}, io.EOF
	}
	ev := r.events[0]
	r.events = r.events[1:]
	return ev, nil
}

func page(pgno uint32) pagewire.Page { return pagewire.Page{Pgno: pgno, Data: make([]byte, 4096)} }

func TestReplica_RefusesOlderEpoch(t *testing.T) {
	r := newTestReplica(t, newFakeLocal(), nil)
	if err := r.checkEpoch(PrimaryInfo{Hostname: "a", Epoch: 5}); err != nil {
		t.Fatal(err)
	}
	if err := r.checkEpoch(PrimaryInfo{Hostname: "b", Epoch: 4}); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("older epoch: err=%v, want ErrInvalidArgument", err)
	}
	if got := r.Primary().Hostname; got != "a" {
		t.Fatalf("primary=%q, want a (the refused message must not change it)", got)
	}
}

func TestReplica_OnPrimary(t *testing.T) {
	var got []PrimaryInfo
	cfg := DefaultReplicaConfig()
	cfg.Upstream, cfg.Local, cfg.MountDir, cfg.Hostname = upstreamFunc(nil), newFakeLocal(), "/mnt", "replica1"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.OnPrimary = func(p PrimaryInfo) { got = append(got, p) }
	r, err := NewReplica(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []PrimaryInfo{
		{Hostname: "node1", Epoch: 1}, // first: named
		{Hostname: "node1", Epoch: 1}, // the same again: not
		{Epoch: 1},                    // no name: not
		{Hostname: "node1", Epoch: 2}, // a new epoch: named
		{Hostname: "node2", Epoch: 2}, // a new name: named
		{Hostname: "old", Epoch: 1},   // refused: not
	} {
		_ = r.checkEpoch(p)
	}
	want := []PrimaryInfo{{Hostname: "node1", Epoch: 1}, {Hostname: "node1", Epoch: 2}, {Hostname: "node2", Epoch: 2}}
	if !slices.Equal(got, want) {
		t.Fatalf("OnPrimary got %v, want %v", got, want)
	}
}

func TestReplica_AppliesInOrderAndRefusesGaps(t *testing.T) {
	l := newFakeLocal()
	l.pos["app.db"] = pagewire.Pos{TXID: 7, Checksum: 70}
	w := &fakeWriter{l: l, db: "app.db", next: 80}
	r := newTestReplica(t, l, w)
	a := &applier{r: r, name: "app.db", path: "/mnt/app.db", log: r.log}
	ctx := context.Background()

	// A transaction that does not follow the local position is refused
	// before anything is written: a gap, and a wrong pre-checksum.
	for _, txn := range []pagewire.Txn{
		{TXID: 9, PreChecksum: 70, PostChecksum: 80, PageSize: 4096, PageCount: 1, Pages: []pagewire.Page{page(1)}},
		{TXID: 8, PreChecksum: 71, PostChecksum: 80, PageSize: 4096, PageCount: 1, Pages: []pagewire.Page{page(1)}},
	} {
		if err := a.applyTxn(ctx, txn); !errors.Is(err, pagewire.ErrInvalidArgument) {
			t.Fatalf("txn %d/%d: err=%v, want ErrInvalidArgument", txn.TXID, txn.PreChecksum, err)
		}
	}
	if w.applied != 0 {
		t.Fatalf("applied %d transactions that should have been refused", w.applied)
	}
	good := pagewire.Txn{TXID: 8, PreChecksum: 70, PostChecksum: 80, PageSize: 4096, PageCount: 1, Pages: []pagewire.Page{page(1)}}
	if err := a.applyTxn(ctx, good); err != nil {
		t.Fatal(err)
	}
	// The primary says 90 after the next one, the local store computes 81:
	// diverged; the stream is reopened at once so the primary re-seeds it.
	w.next = 81
	bad := pagewire.Txn{TXID: 9, PreChecksum: 80, PostChecksum: 90, PageSize: 4096, PageCount: 1, Pages: []pagewire.Page{page(1)}}
	if err := a.applyTxn(ctx, bad); !errors.Is(err, errProgress) {
		t.Fatalf("err=%v, want errProgress", err)
	}
}

func TestReplica_DivergedSnapshotKeepsCopyAside(t *testing.T) {
	l := newFakeLocal()
	l.pos["app.db"] = pagewire.Pos{TXID: 12, Checksum: 5}
	w := &fakeWriter{l: l, db: "app.db", next: 99}
	l.nextSum = 99
	r := newTestReplica(t, l, w)
	snapPos := pagewire.Pos{TXID: 10, Checksum: 99}
	r.cfg.Upstream = upstreamFunc{
		{Snapshot: &Snapshot{Pos: snapPos, PageSize: 4096, PageCount: 2, Reason: "ahead: diverged", Diverged: true}},
		{SnapshotPages: []pagewire.Page{page(1), page(2)}},
		{SnapshotEnd: true},
	}
	a := &applier{r: r, name: "app.db", path: "/mnt/app.db", log: r.log}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.stream(ctx); !errors.Is(err, io.EOF) {
		t.Fatalf("stream: %v", err)
	}
	if len(l.kept) != 1 || len(l.rebased) != 1 || l.rebased[0] != snapPos {
		t.Fatalf("kept=%v rebased=%v, want one copy kept and a rebase to %v", l.kept, l.rebased, snapPos)
	}
}

func TestReplica_RefusesMalformedSnapshot(t *testing.T) {
	l := newFakeLocal()
	w := &fakeWriter{l: l, db: "app.db"}
	r := newTestReplica(t, l, w)
	r.cfg.Upstream = upstreamFunc{
		{Snapshot: &Snapshot{Pos: pagewire.Pos{TXID: 3}, PageSize: 4096, PageCount: 3}},
		{SnapshotPages: []pagewire.Page{page(1), page(3)}}, // page 2 missing
	}
	a := &applier{r: r, name: "app.db", path: "/mnt/app.db", log: r.log}
	if err := a.stream(context.Background()); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("err=%v, want ErrInvalidArgument", err)
	}
	if w.applied != 0 || len(l.rebased) != 0 {
		t.Fatal("a malformed snapshot was applied")
	}
}

// chain makes transactions first.. of one page each, checksums chained from
// pre, with the database sizes given.
func chain(first pagewire.TXID, pre uint64, sizes ...uint32) []pagewire.Txn {
	var txns []pagewire.Txn
	for i, n := range sizes {
		txns = append(txns, pagewire.Txn{TXID: first + pagewire.TXID(i), PreChecksum: pre + uint64(i), PostChecksum: pre + uint64(i) + 1,
			PageSize: 4096, PageCount: n, Pages: []pagewire.Page{page(1)}})
	}
	return txns
}

func TestReplica_TransactionsAppliedTogetherAreOneCommit(t *testing.T) {
	l := newFakeLocal()
	l.pos["app.db"] = pagewire.Pos{TXID: 7, Checksum: 70}
	txns := chain(8, 70, 2, 2, 3, 3, 3)
	w := &fakeWriter{l: l, db: "app.db", next: txns[4].PostChecksum}
	r := newTestReplica(t, l, w)
	a := &applier{r: r, name: "app.db", path: "/mnt/app.db", log: r.log, pageCount: 2}
	if err := a.applyTxns(context.Background(), txns); err != nil {
		t.Fatal(err)
	}
	if w.applied != 1 || len(l.grouped) != 1 || len(l.grouped[0]) != 5 {
		t.Fatalf("%d commits, announced %v; want one commit standing for transactions 8..12", w.applied, l.grouped)
	}
	if got, want := l.pos["app.db"], (pagewire.Pos{TXID: 12, Checksum: txns[4].PostChecksum}); got != want {
		t.Fatalf("position %v, want %v", got, want)
	}
}

func TestReplica_ShrinkingTransactionEndsItsGroup(t *testing.T) {
	l := newFakeLocal()
	l.pos["app.db"] = pagewire.Pos{TXID: 7, Checksum: 70}
	txns := chain(8, 70, 3, 4, 2, 2, 5) // 10 shrinks the database
	w := &fakeWriter{l: l, db: "app.db", next: txns[4].PostChecksum}
	r := newTestReplica(t, l, w)
	a := &applier{r: r, name: "app.db", path: "/mnt/app.db", log: r.log, pageCount: 3}
	if err := a.applyTxns(context.Background(), txns); err != nil {
		t.Fatal(err)
	}
	want := [][]pagewire.TXID{{8, 9, 10}, {11, 12}}
	if w.applied != 2 || len(l.grouped) != 2 || len(l.grouped[0]) != 3 || len(l.grouped[1]) != 2 {
		t.Fatalf("%d commits, announced %v; want %v", w.applied, l.grouped, want)
	}
	if a.pageCount != 5 {
		t.Fatalf("size after the groups %d, want 5", a.pageCount)
	}
}

func TestReplica_MinEpochRefusesAnOlderPrimary(t *testing.T) {
	l := newFakeLocal()
	cfg := DefaultReplicaConfig()
	cfg.Upstream, cfg.Local, cfg.MountDir, cfg.Hostname = upstreamFunc(nil), l, "/mnt", "replica1"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.MinEpoch = 40
	r, err := NewReplica(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.checkEpoch(PrimaryInfo{Hostname: "old", Epoch: 39}); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("epoch 39 after MinEpoch 40: err=%v, want refused", err)
	}
	if err := r.checkEpoch(PrimaryInfo{Hostname: "new", Epoch: 40}); err != nil {
		t.Fatal(err)
	}
}

// viewLocal is a fakeLocal that tracks what readers see, as the Store
// does: MarkVisible moves it, applies do not.
type viewLocal struct {
	*fakeLocal
	vis    map[string]pagewire.Pos
	events *[]string
}

func (l *viewLocal) Visible(db string) (pagewire.Pos, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.vis[db]
	return p, ok
}

func (l *viewLocal) MarkVisible(db string, pos pagewire.Pos) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.vis[db] = pos
	*l.events = append(*l.events, "visible "+pos.String())
}

// closeWriter is a fakeWriter that records its Close.
type closeWriter struct {
	*fakeWriter
	events *[]string
}

func (w *closeWriter) Close() error {
	*w.events = append(*w.events, "close")
	return nil
}

// An apply whose wait was cancelled after the storage server counted its
// commit (the worker went on and published it) left readers' position
// behind: the next stream, which starts at the counted position and may
// bring nothing, reports it, after the writer (which serves requests in
// order) has finished the apply.
func TestReplica_StreamReportsAnInterruptedApplyAsVisible(t *testing.T) {
	var events []string
	fl := newFakeLocal()
	start := pagewire.Pos{TXID: 7, Checksum: 70}
	fl.pos["app.db"] = start
	l := &viewLocal{fakeLocal: fl, vis: map[string]pagewire.Pos{"app.db": start}, events: &events}
	w := &closeWriter{fakeWriter: &fakeWriter{l: fl, db: "app.db", next: 80}, events: &events}
	r := newTestReplica(t, fl, nil)
	r.cfg.Local = l
	r.cfg.OpenWriter = func(context.Context, string) (Writer, error) { return w, nil }
	a := &applier{r: r, name: "app.db", path: "/mnt/app.db", log: r.log}
	ctx := context.Background()

	// The commit counts; the replicator stops waiting before it reports it.
	if _, err := a.writer(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Apply(ctx, 1, []pagewire.Page{page(1)}, false); err != nil {
		t.Fatal(err)
	}
	counted := pagewire.Pos{TXID: 8, Checksum: 80}
	if vis, _ := l.Visible("app.db"); vis != start {
		t.Fatalf("visible=%v before the next stream, want %v", vis, start)
	}

	// The next stream (the primary has nothing more) reports it.
	if err := a.stream(ctx); err == nil {
		t.Fatal("a stream that ends at once returned nil")
	}
	if vis, _ := l.Visible("app.db"); vis != counted {
		t.Fatalf("visible=%v after the next stream began, want %v", vis, counted)
	}
	if want := []string{"close", "visible " + counted.String()}; len(events) != 2 || events[0] != want[0] || events[1] != want[1] {
		t.Fatalf("events %q, want %q", events, want)
	}

	// With nothing unreported, a stream touches nothing.
	events = events[:0]
	if err := a.stream(ctx); err == nil {
		t.Fatal("a stream that ends at once returned nil")
	}
	if len(events) != 0 {
		t.Fatalf("events %q with nothing unreported, want none", events)
	}
}

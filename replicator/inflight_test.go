package replicator

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pagewire/pagewire"
)

// inflightWriter is a fakeWriter reached the way the apply worker is: a
// write, once sent, lands when the worker gets to it (release), whether
// or not its caller still waits; the caller stops waiting when its ctx
// ends. announced records, for each write that landed, whether the
// storage still expected it then.
type inflightWriter struct {
	*fakeWriter
	entered   chan struct{}
	release   chan struct{}
	announced chan bool
}

func (w *inflightWriter) Apply(ctx context.Context, pageCount uint32, pages []pagewire.Page, sync bool) error {
	landed := make(chan error, 1)
	go func() {
		<-w.release
		w.l.mu.Lock()
		_, ok := w.l.expect[w.db]
		w.l.mu.Unlock()
		w.announced <- ok
		landed <- w.fakeWriter.Apply(ctx, pageCount, pages, sync)
	}()
	close(w.entered)
	select {
	case err := <-landed:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// A stream that ends while its apply is with the worker waits for the
// worker's answer before it withdraws the announcement: the write lands
// announced and counts, instead of being refused as unannounced (or
// taken for the next stream's announcement).
func TestReplica_EndedStreamWaitsForTheWorkersAnswer(t *testing.T) {
	l := newFakeLocal()
	l.pos["app.db"] = pagewire.Pos{TXID: 1, Checksum: 1}
	w := &inflightWriter{
		fakeWriter: &fakeWriter{l: l, db: "app.db", next: 2},
		entered:    make(chan struct{}), release: make(chan struct{}), announced: make(chan bool, 1),
	}
	r := newTestReplica(t, l, nil)
	r.cfg.OpenWriter = func(context.Context, string) (Writer, error) { return w, nil }
	a := &applier{r: r, name: "app.db", path: "/mnt/app.db", log: r.log}

	ctx, cancel := context.WithCancel(context.Background())
	applied := make(chan error, 1)
	go func() { applied <- a.applyTxns(ctx, chain(2, 1, 1)) }()
	<-w.entered
	cancel() // the stream broke
	close(w.release)
	if !<-w.announced {
		t.Fatal("the worker's write landed after the announcement was withdrawn")
	}
	if err := <-applied; err != nil && !errors.Is(err, errProgress) {
		t.Fatalf("apply: %v", err)
	}
	if got, _ := l.Position("app.db"); got.TXID != 2 {
		t.Fatalf("position %v, want TXID 2", got)
	}
}

// abandonWriter is an inflightWriter that never answers until abandoned.
type abandonWriter struct {
	*inflightWriter
	abandoned chan struct{}
}

func (w *abandonWriter) Abandon() { close(w.abandoned) }

// A worker that does not answer within the grace is abandoned (killed)
// before the announcement is withdrawn, and the applier opens a new
// writer next time.
func TestReplica_UnansweredWriteAbandonsTheWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the grace")
	}
	l := newFakeLocal()
	l.pos["app.db"] = pagewire.Pos{TXID: 1, Checksum: 1}
	w := &abandonWriter{
		inflightWriter: &inflightWriter{
			fakeWriter: &fakeWriter{l: l, db: "app.db", next: 2},
			entered:    make(chan struct{}), release: make(chan struct{}), announced: make(chan bool, 1),
		},
		abandoned: make(chan struct{}),
	}
	r := newTestReplica(t, l, nil)
	r.cfg.OpenWriter = func(context.Context, string) (Writer, error) { return w, nil }
	a := &applier{r: r, name: "app.db", path: "/mnt/app.db", log: r.log}

	ctx, cancel := context.WithCancel(context.Background())
	applied := make(chan error, 1)
	go func() { applied <- a.applyTxns(ctx, chain(2, 1, 1)) }()
	<-w.entered
	cancel()
	err := <-applied
	select {
	case <-w.abandoned:
	default:
		t.Fatal("the unanswered worker was not abandoned")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("apply: %v, want the stream's end", err)
	}
	if a.w != nil {
		t.Fatal("the abandoned writer is kept for the next stream")
	}
	close(w.release) // the fake's goroutine ends
	<-w.announced
}

// partFailWriter is a fakeWriter whose last part of a transaction fails,
// as a commit the storage refuses does.
type partFailWriter struct{ *fakeWriter }

func (w *partFailWriter) ApplyPart(_ context.Context, p TxnPart, _ bool) error {
	if p.Last {
		return errors.New("the commit was refused")
	}
	return nil
}

// A diverged copy whose snapshot fails again and again is kept aside
// once, not at every retry.
func TestReplica_RetriedSnapshotKeepsOneCopyAside(t *testing.T) {
	l := newFakeLocal()
	l.pos["app.db"] = pagewire.Pos{TXID: 12, Checksum: 5}
	l.nextSum = 99
	w := &partFailWriter{&fakeWriter{l: l, db: "app.db", next: 99}}
	r := newTestReplica(t, l, nil)
	r.cfg.OpenWriter = func(context.Context, string) (Writer, error) { return w, nil }
	snapPos := pagewire.Pos{TXID: 10, Checksum: 99}
	a := &applier{r: r, name: "app.db", path: "/mnt/app.db", log: r.log}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 {
		r.cfg.Upstream = upstreamFunc{
			{Snapshot: &Snapshot{Pos: snapPos, PageSize: 4096, PageCount: 2, Reason: "diverged", Diverged: true}},
			{SnapshotPages: []pagewire.Page{page(1), page(2)}},
			{SnapshotEnd: true},
		}
		if err := a.stream(ctx); err == nil {
			t.Fatal("a stream whose snapshot failed returned nil")
		}
	}
	if len(l.kept) != 1 {
		t.Fatalf("kept %d copies aside over 3 failed snapshots of the same copy, want 1", len(l.kept))
	}

	// A copy at another position is kept aside again.
	l.pos["app.db"] = pagewire.Pos{TXID: 13, Checksum: 6}
	r.cfg.Upstream = upstreamFunc{
		{Snapshot: &Snapshot{Pos: snapPos, PageSize: 4096, PageCount: 2, Reason: "diverged", Diverged: true}},
		{SnapshotPages: []pagewire.Page{page(1), page(2)}},
		{SnapshotEnd: true},
	}
	_ = a.stream(ctx)
	if len(l.kept) != 2 {
		t.Fatalf("kept %d copies aside, want 2 once the copy moved", len(l.kept))
	}
}

package replicator

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/safego"
	"github.com/pagewire/pagewire/internal/safego/safegotest"
)

// panicUpstream lists app.db, then serves a stream; recv is each stream's
// Recv (n counts from 0), watchRecv the watch's after its first event.
// Both get the stream's ctx.
type panicUpstream struct {
	watchRecv func(ctx context.Context) (DatabaseEvent, error)
	recv      func(ctx context.Context, n int) (TxnEvent, error)
}

func (u panicUpstream) WatchDatabases(ctx context.Context, _ string) (DatabaseWatch, error) {
	return &panicWatch{ctx: ctx, u: u}, nil
}

func (u panicUpstream) StreamTransactions(ctx context.Context, _, _ string, _ pagewire.Pos) (TxnStream, error) {
	return &panicStream{ctx: ctx, u: u}, nil
}

type panicWatch struct {
	ctx  context.Context
	u    panicUpstream
	sent bool
}

func (w *panicWatch) Recv() (DatabaseEvent, error) {
	if !w.sent {
		w.sent = true
		return DatabaseEvent{IsList: true, List: []DatabaseState{{Name: "app.db"}}}, nil
	}
	return w.u.watchRecv(w.ctx)
}

type panicStream struct {
	ctx context.Context
	u   panicUpstream
	n   int
}

func (s *panicStream) Recv() (TxnEvent, error) {
	s.n++
	return s.u.recv(s.ctx, s.n-1)
}

// panickyWriter's Apply panics.
type panickyWriter struct{ fakeWriter }

func (*panickyWriter) Apply(context.Context, uint32, []pagewire.Page, bool) error {
	panic("apply exploded")
}

// A panic anywhere in a replica's goroutines (receiving the database list,
// receiving a database's stream, applying) ends Run with it, instead of
// leaving a replica that silently applies nothing more.
func TestReplica_PanicEndsRun(t *testing.T) {
	block := func(ctx context.Context) (DatabaseEvent, error) { <-ctx.Done(); return DatabaseEvent{}, ctx.Err() }
	oneTxn := func(ctx context.Context, n int) (TxnEvent, error) {
		if n == 0 {
			return TxnEvent{Txn: &pagewire.Txn{TXID: 2, PreChecksum: 1, PostChecksum: 2, PageSize: 4096, PageCount: 1, Pages: []pagewire.Page{page(1)}}}, nil
		}
		<-ctx.Done()
		return TxnEvent{}, ctx.Err()
	}
	for _, tc := range []struct {
		name    string
		up      panicUpstream
		writer  Writer
		wantWhy string
	}{
		{"receiving the list", panicUpstream{
			watchRecv: func(context.Context) (DatabaseEvent, error) { panic("watch exploded") },
			recv:      func(ctx context.Context, _ int) (TxnEvent, error) { <-ctx.Done(); return TxnEvent{}, ctx.Err() },
		}, nil, "watch exploded"},
		{"receiving a stream", panicUpstream{
			watchRecv: block,
			recv:      func(context.Context, int) (TxnEvent, error) { panic("recv exploded") },
		}, nil, "recv exploded"},
		{"applying", panicUpstream{watchRecv: block, recv: oneTxn}, &panickyWriter{}, "apply exploded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newFakeLocal()
			l.pos["app.db"] = pagewire.Pos{TXID: 1, Checksum: 1}
			rec := safegotest.NewRecorder()
			cfg := DefaultReplicaConfig()
			cfg.Upstream, cfg.Local, cfg.MountDir, cfg.Hostname, cfg.Logger = tc.up, l, "/mnt", "replica1", rec.Logger()
			w := tc.writer
			if w == nil {
				w = &fakeWriter{l: l, db: "app.db"}
			}
			cfg.OpenWriter = func(context.Context, string) (Writer, error) { return w, nil }
			r, err := NewReplica(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err = r.Run(ctx) // returns on its own: ctx is only a safety net
			var pe *safego.PanicError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), tc.wantWhy) {
				t.Fatalf("Run: %v, want the panic", err)
			}
			if ctx.Err() != nil {
				t.Fatal("Run returned only when ctx ended")
			}
			if got := rec.Panics(); len(got) == 0 || got[0].Value != tc.wantWhy {
				t.Fatalf("logged %+v, want the panic", got)
			}
		})
	}
}

package upstream

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/wire"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
	"github.com/pagewire/pagewire/replicator"
)

// Upstream is a replicator.Upstream over gRPC: the primary's
// ReplicationService.
type Upstream struct {
	c replicationv1.ReplicationServiceClient
}

var (
	_ replicator.Upstream     = (*Upstream)(nil)
	_ replicator.Acknowledger = (*Upstream)(nil)
)

// New follows the primary at the other end of conn.
func New(conn grpc.ClientConnInterface) *Upstream {
	return &Upstream{c: replicationv1.NewReplicationServiceClient(conn)}
}

// WatchDatabases opens the database watch.
func (u *Upstream) WatchDatabases(ctx context.Context, hostname string) (replicator.DatabaseWatch, error) {
	s, err := u.c.WatchDatabases(ctx, &replicationv1.WatchDatabasesRequest{Hostname: hostname})
	if err != nil {
		return nil, wire.FromStatus(err)
	}
	return &databaseWatch{s: s}, nil
}

// StreamTransactions opens one database's stream.
func (u *Upstream) StreamTransactions(ctx context.Context, db, hostname string, have pagewire.Pos) (replicator.TxnStream, error) {
	s, err := u.c.StreamTransactions(ctx, &replicationv1.StreamTransactionsRequest{
		Name: db, Hostname: hostname, Position: wire.PosToProto(have)})
	if err != nil {
		return nil, wire.FromStatus(err)
	}
	return &txnStream{s: s}, nil
}

// AcknowledgeTransactions opens one database's acknowledgement stream.
func (u *Upstream) AcknowledgeTransactions(ctx context.Context, db, hostname string) (replicator.AckStream, error) {
	s, err := u.c.AcknowledgeTransactions(ctx)
	if err != nil {
		return nil, wire.FromStatus(err)
	}
	return &ackStream{s: s, db: db, hostname: hostname}, nil
}

type ackStream struct {
	s            grpc.ClientStreamingClient[replicationv1.AcknowledgeTransactionsRequest, replicationv1.AcknowledgeTransactionsResponse]
	db, hostname string
}

// Send sends one acknowledgement; a stream the primary ended reports the
// primary's error.
func (a *ackStream) Send(epoch pagewire.Epoch, pos pagewire.Pos, durable bool) error {
	err := a.s.Send(&replicationv1.AcknowledgeTransactionsRequest{Name: a.db, Hostname: a.hostname, Epoch: uint64(epoch),
		Position: wire.PosToProto(pos), Durable: durable})
	if errors.Is(err, io.EOF) {
		_, err = a.s.CloseAndRecv() // the primary's status
	}
	if err != nil {
		return wire.FromStatus(err)
	}
	return nil
}

// Close half-closes the stream; its context ends it.
func (a *ackStream) Close() error { return a.s.CloseSend() }

type databaseWatch struct {
	s grpc.ServerStreamingClient[replicationv1.WatchDatabasesResponse]
}

func (w *databaseWatch) Recv() (replicator.DatabaseEvent, error) {
	msg, err := w.s.Recv()
	if err != nil {
		return replicator.DatabaseEvent{}, wire.FromStatus(err)
	}
	return databaseEventFromProto(msg), nil
}

type txnStream struct {
	s      grpc.ServerStreamingClient[replicationv1.StreamTransactionsResponse]
	queued []replicator.TxnEvent // the rest of a transactions message
	// split is the header of the transaction whose parts are coming (the
	// last part had more set), or nil; last is its last page so far.
	split *replicationv1.Transaction
	last  uint32
}

// Recv returns the next event. A transaction split over several messages
// (more set) comes one part at a time, each checked against the first:
// same header, pages ascending across parts, so that a transaction holds at
// most page_count pages however many parts it has. A message of several
// transactions is returned one transaction at a time.
func (t *txnStream) Recv() (replicator.TxnEvent, error) {
	if len(t.queued) > 0 {
		ev := t.queued[0]
		t.queued = t.queued[1:]
		return ev, nil
	}
	msg, err := t.s.Recv()
	if err != nil {
		return replicator.TxnEvent{}, wire.FromStatus(err)
	}

	// Between the parts of a transaction only its next part may come.
	part := msg.GetTransaction()
	if t.split != nil {
		if err := checkPart(t.split, t.last, part); err != nil {
			return replicator.TxnEvent{}, err
		}
	}
	if ts := msg.GetTransactions(); ts != nil {
		evs, err := txnsFromProto(msg, ts)
		if err != nil {
			return replicator.TxnEvent{}, err
		}
		t.queued = evs[1:]
		return evs[0], nil
	}
	ev, err := txnEventFromProto(msg)
	if err != nil || ev.Txn == nil {
		return ev, err
	}

	// Note where a split transaction is.
	ev.More = part.GetMore()
	t.split, t.last = nil, 0
	if ev.More {
		t.split, t.last = part, ev.Txn.Pages[len(ev.Txn.Pages)-1].Pgno
	}
	return ev, nil
}

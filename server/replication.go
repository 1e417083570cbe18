package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/engine"
	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/internal/wire"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
)

// snapshotChunkPages is how many pages one SnapshotPages message carries.
const snapshotChunkPages = 256

// feedBytes bounds the bytes of pages in one transactions message, or in
// one part of a transaction too big for one: half of MaxMessageBytes, less
// room for each page's framing, so that a message fits a 2 MiB buffer of
// the pool both ends encode and decode in (a message a little over would
// take a 4 MiB one).
const feedBytes = wire.MaxMessageBytes/2 - 64<<10

// replicationService streams the primary's databases to replicas.
type replicationService struct {
	replicationv1.UnimplementedReplicationServiceServer
	store     *engine.Store
	node      NodeInfo
	heartbeat time.Duration
	log       *slog.Logger
	stopping  <-chan struct{} // closed when the node stops
	subs      *subscribers
	halts     *engine.Halts
}

// errStopping ends streams when the node stops.
var errStopping = status.Error(codes.Unavailable, "the node is shutting down; reconnect to the primary")

var _ replicationv1.ReplicationServiceServer = (*replicationService)(nil)

// primary describes this node as the stream's sender, or refuses when it is
// not the primary.
func (r *replicationService) primary() (*replicationv1.Primary, error) {
	epoch, err := r.store.SendsAs()
	if err != nil {
		return nil, wire.ToStatus(err)
	}
	return &replicationv1.Primary{Hostname: r.node.Hostname, AdvertiseUrl: r.node.AdvertiseURL, Epoch: uint64(epoch),
		SyncCommits: r.store.SyncReplicas() > 0}, nil
}

// AcknowledgeTransactions records what a replica says it has applied of
// one database, message by message, until the replica ends the stream.
func (r *replicationService) AcknowledgeTransactions(stream replicationv1.ReplicationService_AcknowledgeTransactionsServer) error {
	var name, host string
	started := false
	var done func() // ends the replica's count as a subscriber
	defer func() {
		if done != nil {
			done()
		}
	}()
	for {
		msg, err := stream.Recv()
		switch {
		case errors.Is(err, io.EOF):
			return stream.SendAndClose(&replicationv1.AcknowledgeTransactionsResponse{})
		case err != nil:
			return err
		case started && (msg.GetName() != name || msg.GetHostname() != host):
			return status.Errorf(codes.InvalidArgument, "every message of an acknowledgement stream names the same database and replica (%q of %q): open a stream per database", name, host)
		}

		// The store checks it: epoch, database, a position sent.
		pos := wire.PosFromProto(msg.GetPosition())
		if err := r.store.Acknowledge(msg.GetName(), msg.GetHostname(), pagewire.Epoch(msg.GetEpoch()), pos, msg.GetDurable()); err != nil {
			return wire.ToStatus(err)
		}

		// The replica counts as streaming the database while it acknowledges.
		if !started {
			name, host, started = msg.GetName(), msg.GetHostname(), true
			done = r.subs.stream(name, host, pos.TXID)
		}
		if cur, ok := r.store.Position(name); ok {
			r.subs.applied(name, host, pos.TXID, cur.TXID)
		}
	}
}

func (r *replicationService) WatchDatabases(req *replicationv1.WatchDatabasesRequest, stream replicationv1.ReplicationService_WatchDatabasesServer) error {
	ctx := stream.Context()
	primary, err := r.primary()
	if err != nil {
		return err
	}

	// The replica counts as a subscriber while it watches.
	log := r.log.With("replica", req.GetHostname())
	var addr netip.Addr
	if p, ok := peer.FromContext(ctx); ok {
		addr = ipOf(p.Addr)
	}
	defer r.subs.watch(req.GetHostname(), addr)()
	log.Info("replica watching databases")
	defer log.Info("replica stopped watching databases")

	// Heartbeats fill the time between changes.
	hb := time.NewTicker(r.heartbeat)
	defer hb.Stop()
	known := map[string]bool{}
	first := true
	for {
		// The list first, then each database created or deleted since.
		changed := r.store.DatabasesChanged()
		dbs := r.store.Databases()
		if first {
			list := &replicationv1.DatabaseList{}
			for _, di := range dbs {
				list.Databases = append(list.Databases, &replicationv1.DatabaseState{Name: di.Name, Position: wire.PosToProto(di.Pos)})
				known[di.Name] = true
			}
			if err := stream.Send(&replicationv1.WatchDatabasesResponse{Primary: primary, Event: &replicationv1.WatchDatabasesResponse_List{List: list}}); err != nil {
				return err
			}
			first = false
		} else {
			now := map[string]bool{}
			for _, di := range dbs {
				now[di.Name] = true
				if !known[di.Name] {
					known[di.Name] = true
					if err := stream.Send(&replicationv1.WatchDatabasesResponse{Primary: primary, Event: &replicationv1.WatchDatabasesResponse_Created{
						Created: &replicationv1.DatabaseState{Name: di.Name, Position: wire.PosToProto(di.Pos)}}}); err != nil {
						return err
					}
				}
			}

			for name := range known {
				if !now[name] {
					delete(known, name)
					if err := stream.Send(&replicationv1.WatchDatabasesResponse{Primary: primary, Event: &replicationv1.WatchDatabasesResponse_Deleted{Deleted: name}}); err != nil {
						return err
					}
				}
			}
		}

		// Wait for a change, with heartbeats meanwhile.
		select {
		case <-ctx.Done():
			return nil
		case <-r.stopping:
			return errStopping
		case <-changed:
		case <-hb.C:
			if primary, err = r.primary(); err != nil {
				return err // demoted: the replica must find the new primary
			}
			if err := stream.Send(&replicationv1.WatchDatabasesResponse{Primary: primary, Event: &replicationv1.WatchDatabasesResponse_Heartbeat{
				Heartbeat: &replicationv1.Heartbeat{Time: timestamppb.Now()}}}); err != nil {
				return err
			}
		}
	}
}

func (r *replicationService) StreamTransactions(req *replicationv1.StreamTransactionsRequest, stream replicationv1.ReplicationService_StreamTransactionsServer) error {
	primary, err := r.primary()
	if err != nil {
		return err
	}

	// The feed starts at the replica's position.
	have := wire.PosFromProto(req.GetPosition())
	feed, err := r.store.Feed(req.GetName(), have, feedBytes)
	if err != nil {
		return wire.ToStatus(err)
	}
	defer feed.Close()
	log := r.log.With(logkey.DB, feed.Name(), "replica", req.GetHostname())
	send := func(msg *replicationv1.StreamTransactionsResponse) error {
		msg.Primary = primary
		return stream.Send(msg)
	}
	defer r.subs.stream(feed.Name(), req.GetHostname(), have.TXID)()

	// The node's stop ends the stream as its client's going away does.
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-r.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	ended := func() error {
		select {
		case <-r.stopping:
			return errStopping
		default:
			return nil
		}
	}

	// Send what the feed gives until the stream ends.
	hb := time.NewTicker(r.heartbeat)
	defer hb.Stop()
	for {
		item, err := feed.Next(ctx)
		switch {
		case ctx.Err() != nil:
			return ended()
		case err != nil:
			return wire.ToStatus(err)
		}
		switch {
		case item.Snapshot != nil:
			log.Info("sending snapshot", "reason", item.Snapshot.Reason)
			err := sendSnapshot(item.Snapshot, send)
			item.Snapshot.Close()
			if err != nil {
				return wire.ToStatus(fmt.Errorf("snapshot of %q: %w", feed.Name(), err))
			}

		case item.Idle:
			// The replica has everything: wait for a commit, with
			// heartbeats meanwhile.
			feed.Sent(item)
			select {
			case <-ctx.Done():
				return ended()
			case <-item.Changed:
			case <-hb.C:
				if primary, err = r.primary(); err != nil {
					return err
				}
				if err := send(&replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_Heartbeat{
					Heartbeat: &replicationv1.Heartbeat{Time: timestamppb.Now()}}}); err != nil {
					return err
				}
			}
			continue

		case item.Large:
			// A large transaction goes a part at a time, each its own
			// message: neither end holds more than a part.
			part := wire.TxnToProto(item.Txns[0], item.More)
			if err := send(&replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_Transaction{Transaction: part}}); err != nil {
				return err
			}

		default:
			if err := send(txnsToProto(item.Txns)); err != nil {
				return err
			}
		}
		feed.Sent(item)
	}
}

// sendSnapshot sends a snapshot in chunks of snapshotChunkPages pages. The
// snapshot reads each chunk from a view of the database, holding nothing
// while the chunk is sent.
func sendSnapshot(snap *engine.Snapshot, send func(*replicationv1.StreamTransactionsResponse) error) error {
	if err := send(&replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_SnapshotBegin{SnapshotBegin: &replicationv1.SnapshotBegin{
		Position: wire.PosToProto(snap.Pos), PageSize: snap.PageSize, PageCount: snap.PageCount, Reason: snap.Reason, Diverged: snap.Diverged}}}); err != nil {
		return err
	}
	pageSize := int(snap.PageSize)
	buf := make([]byte, pageSize*snapshotChunkPages)
	pgno := uint32(1)
	for {
		n, err := snap.Read(buf)
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
		msg := &replicationv1.SnapshotPages{}
		for off := 0; off+pageSize <= n; off += pageSize {
			msg.Pages = append(msg.Pages, &replicationv1.Page{Pgno: pgno, Data: buf[off : off+pageSize]})
			pgno++
		}
		if err := send(&replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_SnapshotPages{SnapshotPages: msg}}); err != nil {
			return err
		}
	}
	if pgno-1 != snap.PageCount {
		return fmt.Errorf("the snapshot read %d pages, not %d", pgno-1, snap.PageCount)
	}
	return send(&replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_SnapshotEnd{SnapshotEnd: &replicationv1.SnapshotEnd{}}})
}

package server

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pagewire/pagewire"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
)

// snapshotChunkPages is how many pages one SnapshotPages message carries.
const snapshotChunkPages = 256

// replicationService streams the primary's databases to replicas.
type replicationService struct {
	replicationv1.UnimplementedReplicationServiceServer
	store     *Store
	node      NodeInfo
	heartbeat time.Duration
	log       *slog.Logger
}

var _ replicationv1.ReplicationServiceServer = (*replicationService)(nil)

// primary describes this node as the stream's sender, or refuses when it is
// not the primary.
func (r *replicationService) primary() (*replicationv1.Primary, error) {
	role, ro := r.store.Role()
	if role != pagewire.RolePrimary {
		return nil, toStatus(&ro)
	}
	return &replicationv1.Primary{Hostname: r.node.Hostname, AdvertiseUrl: r.node.AdvertiseURL, Epoch: uint64(r.store.Epoch())}, nil
}

func (r *replicationService) WatchDatabases(req *replicationv1.WatchDatabasesRequest, stream replicationv1.ReplicationService_WatchDatabasesServer) error {
	ctx := stream.Context()
	primary, err := r.primary()
	if err != nil {
		return err
	}
	log := r.log.With("replica", req.GetHostname())
	log.Info("replica watching databases")
	defer log.Info("replica stopped watching databases")
	hb := time.NewTicker(r.heartbeat)
	defer hb.Stop()
	known := map[string]bool{}
	first := true
	for {
		changed := r.store.databasesChanged()
		dbs := r.store.Databases()
		if first {
			list := &replicationv1.DatabaseList{}
			for _, di := range dbs {
				list.Databases = append(list.Databases, &replicationv1.DatabaseState{Name: di.Name, Position: posToProto(di.Pos)})
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
						Created: &replicationv1.DatabaseState{Name: di.Name, Position: posToProto(di.Pos)}}}); err != nil {
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
		select {
		case <-ctx.Done():
			return nil
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
	ctx := stream.Context()
	primary, err := r.primary()
	if err != nil {
		return err
	}
	d, err := r.store.db(req.GetName())
	if err != nil {
		return toStatus(err)
	}
	log := r.log.With(logKeyDB, d.name, "replica", req.GetHostname())
	send := func(msg *replicationv1.StreamTransactionsResponse) error {
		msg.Primary = primary
		return stream.Send(msg)
	}
	have := pagewire.Pos{TXID: pagewire.TXID(req.GetPosition().GetTxid()), Checksum: req.GetPosition().GetChecksum()}
	next, reason, diverged := d.streamStart(have)
	hb := time.NewTicker(r.heartbeat)
	defer hb.Stop()
	var rd *txlogReader
	defer func() {
		if rd != nil {
			rd.Close()
		}
	}()
	for {
		if reason != "" {
			if rd != nil {
				rd.Close()
				rd = nil
			}
			log.Info("sending snapshot", "reason", reason)
			pos, err := r.sendSnapshot(d, reason, diverged, send)
			if err != nil {
				return toStatus(fmt.Errorf("snapshot of %q: %w", d.name, err))
			}
			next, reason, diverged = pos.TXID+1, "", false
			continue
		}
		d.mu.RLock()
		pos, changed, deleted := d.pos, d.changed, d.deleted
		d.mu.RUnlock()
		if deleted {
			return toStatus(fmt.Errorf("%w: database %q was deleted", pagewire.ErrNotFound, d.name))
		}
		if pos.TXID < next {
			select {
			case <-ctx.Done():
				return nil
			case <-changed:
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
		}
		if rd == nil {
			if rd, err = d.txlog.readFrom(next); err != nil {
				reason, diverged = fmt.Sprintf("transaction %d is no longer in the transaction log", next), false
				continue
			}
		}
		txn, ok, err := rd.Next()
		switch {
		case errors.Is(err, errTxlogGap) || (err == nil && !ok):
			reason, diverged = fmt.Sprintf("the transaction log has no transaction %d", next), false
			continue
		case err != nil:
			return toStatus(err)
		}
		for _, part := range txnToProto(txn) {
			if err := send(&replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_Transaction{Transaction: part}}); err != nil {
				return err
			}
		}
		next++
	}
}

// streamStart decides where a replica at `have` starts: the TXID to send
// next, or a reason to send a snapshot first, and whether the replica's
// copy has diverged from the primary's history (it then keeps it aside).
func (d *database) streamStart(have pagewire.Pos) (next pagewire.TXID, snapshotReason string, diverged bool) {
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
	rd, err := d.txlog.readFrom(have.TXID + 1)
	if err != nil {
		return 0, fmt.Sprintf("transaction %d is no longer in the transaction log", have.TXID+1), false
	}
	defer rd.Close()
	txn, ok, err := rd.Next()
	if err != nil || !ok {
		return 0, fmt.Sprintf("the transaction log has no transaction %d", have.TXID+1), false
	}
	if txn.PreChecksum != have.Checksum {
		return 0, fmt.Sprintf("the replica's checksum at TXID %d differs from the primary's: diverged", have.TXID), true
	}
	return have.TXID + 1, "", false
}

// sendSnapshot copies the database to a temporary file (a consistent copy,
// taken under a read lock but without holding it while sending) and sends
// it in chunks.
func (r *replicationService) sendSnapshot(d *database, reason string, diverged bool, send func(*replicationv1.StreamTransactionsResponse) error) (pagewire.Pos, error) {
	f, err := os.CreateTemp(filepath.Join(r.store.dir, "dbs"), ".snapshot-*")
	if err != nil {
		return pagewire.Pos{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	pos, pageSize, err := d.copyPages(f, false)
	if err != nil {
		return pos, err
	}
	st, err := f.Stat()
	if err != nil {
		return pos, err
	}
	count := uint32(st.Size() / int64(pageSize))
	if err := send(&replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_SnapshotBegin{SnapshotBegin: &replicationv1.SnapshotBegin{
		Position: posToProto(pos), PageSize: pageSize, PageCount: count, Reason: reason, Diverged: diverged}}}); err != nil {
		return pos, err
	}
	buf := make([]byte, int(pageSize)*snapshotChunkPages)
	for pgno := uint32(1); pgno <= count; {
		n, err := f.ReadAt(buf, int64(pgno-1)*int64(pageSize))
		if err != nil && !errors.Is(err, io.EOF) {
			return pos, err
		}
		msg := &replicationv1.SnapshotPages{}
		for off := 0; off+int(pageSize) <= n; off += int(pageSize) {
			msg.Pages = append(msg.Pages, &replicationv1.Page{Pgno: pgno, Data: buf[off : off+int(pageSize)]})
			pgno++
		}
		if len(msg.Pages) == 0 {
			return pos, fmt.Errorf("snapshot file is shorter than %d pages", count)
		}
		if err := send(&replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_SnapshotPages{SnapshotPages: msg}}); err != nil {
			return pos, err
		}
	}
	return pos, send(&replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_SnapshotEnd{SnapshotEnd: &replicationv1.SnapshotEnd{}}})
}

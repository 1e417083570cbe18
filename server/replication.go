package server

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/ewma"
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
	stopping  <-chan struct{} // closed when the node stops
	subs      *subscribers
	halts     *halts
}

// errStopping ends streams when the node stops.
var errStopping = status.Error(codes.Unavailable, "the node is shutting down; reconnect to the primary")

var _ replicationv1.ReplicationServiceServer = (*replicationService)(nil)

// primary describes this node as the stream's sender, or refuses when it is
// not the primary.
func (r *replicationService) primary() (*replicationv1.Primary, error) {
	st := r.store.role.Load() // role, primary and epoch from one change
	// A primary that stepped down to hand off keeps its epoch until a new
	// primary is known, and keeps serving its last transactions so that
	// candidates catch up before taking over.
	handingOff := st.role == pagewire.RoleReplica && st.ro.Primary == "" && st.epoch > 0
	if st.role != pagewire.RolePrimary && !handingOff {
		ro := st.ro
		return nil, toStatus(&ro)
	}
	return &replicationv1.Primary{Hostname: r.node.Hostname, AdvertiseUrl: r.node.AdvertiseURL, Epoch: uint64(st.epoch)}, nil
}

func (r *replicationService) WatchDatabases(req *replicationv1.WatchDatabasesRequest, stream replicationv1.ReplicationService_WatchDatabasesServer) error {
	ctx := stream.Context()
	primary, err := r.primary()
	if err != nil {
		return err
	}
	log := r.log.With("replica", req.GetHostname())
	defer r.subs.watch(req.GetHostname())()
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
	sent, done := r.subs.stream(d.name, req.GetHostname(), have.TXID)
	defer done()
	hb := time.NewTicker(r.heartbeat)
	defer hb.Stop()
	var rd *txlogReader
	var held *pagewire.Txn // read from rd, not sent yet
	// A busy stream's next message waits until sendInterval after the last.
	var lastSend time.Time
	rate, busy := ewma.New(busyWindow), false
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
			held = nil
			log.Info("sending snapshot", "reason", reason)
			pos, err := r.sendSnapshot(d, reason, diverged, send)
			if err != nil {
				return toStatus(fmt.Errorf("snapshot of %q: %w", d.name, err))
			}
			next, reason, diverged = pos.TXID+1, "", false
			sent(pos.TXID, false)
			continue
		}
		if wait := sendInterval - time.Since(lastSend); busy && wait > 0 {
			// Busy: let more transactions gather for one message.
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-r.stopping:
				t.Stop()
				return errStopping
			case <-t.C:
			}
		}
		pos, changed, deleted := d.watchPos()
		if deleted {
			return toStatus(fmt.Errorf("%w: database %q was deleted", pagewire.ErrNotFound, d.name))
		}
		if pos.TXID < next {
			sent(pos.TXID, true)
			select {
			case <-ctx.Done():
				return nil
			case <-r.stopping:
				return errStopping
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
		var txn pagewire.Txn
		var ok bool
		if held != nil {
			txn, ok, err, held = *held, true, nil, nil
		} else {
			txn, ok, err = rd.Next()
		}
		switch {
		case errors.Is(err, errTxlogGap) || (err == nil && !ok):
			reason, diverged = fmt.Sprintf("the transaction log has no transaction %d", next), false
			continue
		case err != nil:
			return toStatus(err)
		}
		if txnBytes(txn) > maxMessageBytes/2 {
			// A large transaction goes alone, split if it must be.
			for _, part := range txnToProto(txn) {
				if err := send(&replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_Transaction{Transaction: part}}); err != nil {
					return err
				}
			}
			next++
			sent(next-1, next > pos.TXID)
			continue
		}
		// Small transactions already committed go together, in one
		// message: a replica that is behind, or a primary committing
		// faster than this stream sends, costs one send per batch.
		batch, size := []pagewire.Txn{txn}, txnBytes(txn)
		for next+pagewire.TXID(len(batch)) <= pos.TXID && len(batch) < maxSendBatch {
			t, ok, err := rd.Next()
			if err != nil || !ok {
				// Reopened at the next TXID, the log reports it again.
				rd.Close()
				rd = nil
				break
			}
			if size+txnBytes(t) > maxMessageBytes/2 {
				held = &t // sent next
				break
			}
			batch, size = append(batch, t), size+txnBytes(t)
		}
		if err := send(txnsToProto(batch)); err != nil {
			return err
		}
		next += pagewire.TXID(len(batch))
		sent(next-1, next > pos.TXID)
		lastSend = time.Now()
		busy = rate.Add(len(batch), lastSend) >= busyRate
	}
}

// sendInterval is the least time between two messages of transactions on a
// busy stream: the transactions committed meanwhile go in one message,
// which costs the primary and the replica one send and one receive instead
// of one each. A stream is busy while its transactions commit at busyRate
// or faster, averaged over busyWindow; otherwise each is sent as soon as it
// commits, so that visibility lag at moderate rates does not change.
const (
	sendInterval = 20 * time.Millisecond
	busyRate     = 2500 // transactions per second
	busyWindow   = 50 * time.Millisecond
)

// maxSendBatch bounds how many transactions one message carries.
const maxSendBatch = 256

// txnBytes is how many page bytes a transaction carries.
func txnBytes(t pagewire.Txn) int { return len(t.Pages) * int(t.PageSize) }

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

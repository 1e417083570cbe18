package upstream

import (
	"fmt"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/wire"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
	"github.com/pagewire/pagewire/replicator"
)

func primaryFromProto(p *replicationv1.Primary) replicator.PrimaryInfo {
	return replicator.PrimaryInfo{Hostname: p.GetHostname(), AdvertiseURL: p.GetAdvertiseUrl(), Epoch: pagewire.Epoch(p.GetEpoch()), SyncCommits: p.GetSyncCommits()}
}

func databaseEventFromProto(msg *replicationv1.WatchDatabasesResponse) replicator.DatabaseEvent {
	ev := replicator.DatabaseEvent{Primary: primaryFromProto(msg.GetPrimary())}
	switch e := msg.GetEvent().(type) {
	case *replicationv1.WatchDatabasesResponse_List:
		ev.IsList = true
		for _, d := range e.List.GetDatabases() {
			ev.List = append(ev.List, replicator.DatabaseState{Name: d.GetName(), Pos: wire.PosFromProto(d.GetPosition())})
		}
	case *replicationv1.WatchDatabasesResponse_Created:
		ev.Created = &replicator.DatabaseState{Name: e.Created.GetName(), Pos: wire.PosFromProto(e.Created.GetPosition())}
	case *replicationv1.WatchDatabasesResponse_Deleted:
		ev.Deleted = e.Deleted
	default:
		ev.Heartbeat = true
	}
	return ev
}

// txnEventFromProto converts and checks a stream message: a malformed one
// is an error, never applied.
func txnEventFromProto(msg *replicationv1.StreamTransactionsResponse) (replicator.TxnEvent, error) {
	ev := replicator.TxnEvent{Primary: primaryFromProto(msg.GetPrimary())}
	switch e := msg.GetEvent().(type) {
	case *replicationv1.StreamTransactionsResponse_Transaction:
		txn, err := wire.TxnFromProto(e.Transaction)
		if err != nil {
			return ev, err
		}
		ev.Txn = &txn
	case *replicationv1.StreamTransactionsResponse_SnapshotBegin:
		b := e.SnapshotBegin
		ev.Snapshot = &replicator.Snapshot{Pos: wire.PosFromProto(b.GetPosition()), PageSize: b.GetPageSize(), PageCount: b.GetPageCount(),
			Reason: b.GetReason(), Diverged: b.GetDiverged()}
		if !pagewire.ValidPageSize(b.GetPageSize()) || b.GetPageCount() == 0 || b.GetPageCount() > pagewire.MaxPageCount {
			return ev, fmt.Errorf("%w: snapshot with page size %d and %d pages", pagewire.ErrInvalidArgument, b.GetPageSize(), b.GetPageCount())
		}
	case *replicationv1.StreamTransactionsResponse_SnapshotPages:
		for _, p := range e.SnapshotPages.GetPages() {
			ev.SnapshotPages = append(ev.SnapshotPages, pagewire.Page{Pgno: p.GetPgno(), Data: p.GetData()})
		}
		if len(ev.SnapshotPages) == 0 {
			return ev, fmt.Errorf("%w: empty snapshot pages message", pagewire.ErrInvalidArgument)
		}
	case *replicationv1.StreamTransactionsResponse_SnapshotEnd:
		ev.SnapshotEnd = true
	case *replicationv1.StreamTransactionsResponse_Heartbeat:
		ev.Heartbeat = true
	default:
		return ev, fmt.Errorf("%w: stream message of unknown kind", pagewire.ErrInvalidArgument)
	}
	return ev, nil
}

// txnsFromProto checks and converts a message of consecutive whole
// transactions.
func txnsFromProto(msg *replicationv1.StreamTransactionsResponse, ts *replicationv1.Transactions) ([]replicator.TxnEvent, error) {
	txns, err := wire.TxnsFromProto(ts.GetTransactions())
	if err != nil {
		return nil, err
	}
	primary := primaryFromProto(msg.GetPrimary())
	evs := make([]replicator.TxnEvent, len(txns))
	for i := range txns {
		evs[i] = replicator.TxnEvent{Primary: primary, Txn: &txns[i]}
	}
	return evs, nil
}

// checkPart checks that part is the next part of the transaction whose
// first part was first and whose pages so far end at last: the same
// transaction, with pages after last.
func checkPart(first *replicationv1.Transaction, last uint32, part *replicationv1.Transaction) error {
	switch {
	case part == nil:
		return fmt.Errorf("%w: transaction %d was cut off by another message", pagewire.ErrInvalidArgument, first.GetTxid())
	case part.GetTxid() != first.GetTxid():
		return fmt.Errorf("%w: transaction %d was cut off by transaction %d", pagewire.ErrInvalidArgument, first.GetTxid(), part.GetTxid())
	case part.GetPreChecksum() != first.GetPreChecksum() || part.GetPostChecksum() != first.GetPostChecksum() ||
		part.GetPageCount() != first.GetPageCount() || part.GetPageSize() != first.GetPageSize():
		return fmt.Errorf("%w: a part of transaction %d disagrees with its first part on checksums or sizes", pagewire.ErrInvalidArgument, first.GetTxid())
	case len(part.GetPages()) == 0 || part.GetPages()[0].GetPgno() <= last:
		return fmt.Errorf("%w: a part of transaction %d does not carry pages after page %d", pagewire.ErrInvalidArgument, first.GetTxid(), last)
	}
	return nil
}

package client

import (
	"fmt"

	"github.com/pagewire/pagewire"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
	"github.com/pagewire/pagewire/replicator"
)

func posFromProto(p *replicationv1.Position) pagewire.Pos {
	return pagewire.Pos{TXID: pagewire.TXID(p.GetTxid()), Checksum: p.GetChecksum()}
}

func primaryFromProto(p *replicationv1.Primary) replicator.PrimaryInfo {
	return replicator.PrimaryInfo{Hostname: p.GetHostname(), AdvertiseURL: p.GetAdvertiseUrl(), Epoch: pagewire.Epoch(p.GetEpoch())}
}

func databaseEventFromProto(msg *replicationv1.WatchDatabasesResponse) replicator.DatabaseEvent {
	ev := replicator.DatabaseEvent{Primary: primaryFromProto(msg.GetPrimary())}
	switch e := msg.GetEvent().(type) {
	case *replicationv1.WatchDatabasesResponse_List:
		ev.IsList = true
		for _, d := range e.List.GetDatabases() {
			ev.List = append(ev.List, replicator.DatabaseState{Name: d.GetName(), Pos: posFromProto(d.GetPosition())})
		}
	case *replicationv1.WatchDatabasesResponse_Created:
		ev.Created = &replicator.DatabaseState{Name: e.Created.GetName(), Pos: posFromProto(e.Created.GetPosition())}
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
		txn, err := txnFromProto(e.Transaction)
		if err != nil {
			return ev, err
		}
		ev.Txn = &txn
	case *replicationv1.StreamTransactionsResponse_SnapshotBegin:
		b := e.SnapshotBegin
		ev.Snapshot = &replicator.Snapshot{Pos: posFromProto(b.GetPosition()), PageSize: b.GetPageSize(), PageCount: b.GetPageCount(),
			Reason: b.GetReason(), Diverged: b.GetDiverged()}
		if !pagewire.ValidPageSize(b.GetPageSize()) || b.GetPageCount() == 0 {
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

// TxnFromProto checks and converts one whole transaction.
func TxnFromProto(t *replicationv1.Transaction) (pagewire.Txn, error) { return txnFromProto(t) }

// txnFromProto checks and converts one whole transaction.
func txnFromProto(t *replicationv1.Transaction) (pagewire.Txn, error) {
	txn := pagewire.Txn{TXID: pagewire.TXID(t.GetTxid()), PreChecksum: t.GetPreChecksum(), PostChecksum: t.GetPostChecksum(),
		PageSize: t.GetPageSize(), PageCount: t.GetPageCount(), CommitTime: t.GetCommitTime().AsTime()}
	pages, err := pagesFromProto(t.GetPages(), t.GetPageSize(), t.GetPageCount())
	if err != nil {
		return txn, fmt.Errorf("transaction %d: %w", txn.TXID, err)
	}
	if len(pages) == 0 {
		return txn, fmt.Errorf("%w: transaction %d has no pages", pagewire.ErrInvalidArgument, txn.TXID)
	}
	txn.Pages = pages
	return txn, nil
}

// txnsFromProto checks and converts a message of consecutive whole
// transactions.
func txnsFromProto(msg *replicationv1.StreamTransactionsResponse, ts *replicationv1.Transactions) ([]replicator.TxnEvent, error) {
	list := ts.GetTransactions()
	if len(list) == 0 {
		return nil, fmt.Errorf("%w: empty transactions message", pagewire.ErrInvalidArgument)
	}
	primary := primaryFromProto(msg.GetPrimary())
	evs := make([]replicator.TxnEvent, 0, len(list))
	for i, t := range list {
		if t.GetMore() {
			return nil, fmt.Errorf("%w: transaction %d is split inside a transactions message", pagewire.ErrInvalidArgument, t.GetTxid())
		}
		if i > 0 && t.GetTxid() != list[i-1].GetTxid()+1 {
			return nil, fmt.Errorf("%w: transaction %d follows %d in a transactions message", pagewire.ErrInvalidArgument, t.GetTxid(), list[i-1].GetTxid())
		}
		txn, err := txnFromProto(t)
		if err != nil {
			return nil, err
		}
		evs = append(evs, replicator.TxnEvent{Primary: primary, Txn: &txn})
	}
	return evs, nil
}

// pagesFromProto checks a transaction's pages: ascending, unique, within
// the database size, each exactly one page.
func pagesFromProto(in []*replicationv1.Page, pageSize, pageCount uint32) ([]pagewire.Page, error) {
	if !pagewire.ValidPageSize(pageSize) {
		return nil, fmt.Errorf("%w: page size %d", pagewire.ErrInvalidArgument, pageSize)
	}
	out := make([]pagewire.Page, len(in))
	var last uint32
	for i, p := range in {
		switch {
		case p.GetPgno() == 0 || p.GetPgno() <= last:
			return nil, fmt.Errorf("%w: page numbers not ascending at %d", pagewire.ErrInvalidArgument, p.GetPgno())
		case p.GetPgno() > pageCount:
			return nil, fmt.Errorf("%w: page %d is beyond the database size %d", pagewire.ErrInvalidArgument, p.GetPgno(), pageCount)
		case uint32(len(p.GetData())) != pageSize:
			return nil, fmt.Errorf("%w: page %d is %d bytes, want %d", pagewire.ErrInvalidArgument, p.GetPgno(), len(p.GetData()), pageSize)
		}
		last = p.GetPgno()
		out[i] = pagewire.Page{Pgno: p.GetPgno(), Data: p.GetData()}
	}
	return out, nil
}

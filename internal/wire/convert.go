package wire

import (
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pagewire/pagewire"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
)

// MaxMessageBytes bounds the bytes of pages in one stream message; a
// larger transaction is split over several (Transaction.more), which the
// replica applies as they come, never joined.
const MaxMessageBytes = 4 << 20

// MaxForwardBytes bounds the pages of one transaction written under a halt
// lock on a replica: it goes to the primary in one message.
const MaxForwardBytes = 64 << 20

// MaxForwardMessageBytes bounds a whole ForwardTransaction request on the
// wire: MaxForwardBytes of pages, each page's framing (at most 16 bytes of
// tags, lengths and page number, for pages as small as 512 bytes) and the
// rest of the request.
const MaxForwardMessageBytes = MaxForwardBytes + MaxForwardBytes/512*16 + 64<<10

// PosToProto converts a position.
func PosToProto(p pagewire.Pos) *replicationv1.Position {
	return &replicationv1.Position{Txid: uint64(p.TXID), Checksum: p.Checksum}
}

// PosFromProto converts a position; nil is the zero position.
func PosFromProto(p *replicationv1.Position) pagewire.Pos {
	return pagewire.Pos{TXID: pagewire.TXID(p.GetTxid()), Checksum: p.GetChecksum()}
}

// TxnToProto converts a transaction, or one part of a transaction split
// over several messages (more set on all parts but the last, each with the
// transaction's header and the next of its pages), to one message. The
// pages should not exceed MaxMessageBytes.
func TxnToProto(t pagewire.Txn, more bool) *replicationv1.Transaction {
	return &replicationv1.Transaction{Txid: uint64(t.TXID), PreChecksum: t.PreChecksum, PostChecksum: t.PostChecksum,
		PageCount: t.PageCount, PageSize: t.PageSize, CommitTime: timestamppb.New(t.CommitTime), Pages: pagesToProto(t.Pages), More: more}
}

func pagesToProto(in []pagewire.Page) []*replicationv1.Page {
	out := make([]*replicationv1.Page, 0, len(in))
	for _, p := range in {
		out = append(out, &replicationv1.Page{Pgno: p.Pgno, Data: p.Data})
	}
	return out
}

// TxnFromProto checks and converts one whole transaction: a malformed one
// is an ErrInvalidArgument error, never applied.
func TxnFromProto(t *replicationv1.Transaction) (pagewire.Txn, error) {
	txn := pagewire.Txn{TXID: pagewire.TXID(t.GetTxid()), PreChecksum: t.GetPreChecksum(), PostChecksum: t.GetPostChecksum(),
		PageSize: t.GetPageSize(), PageCount: t.GetPageCount(), CommitTime: t.GetCommitTime().AsTime()}
	if txn.PageCount > pagewire.MaxPageCount {
		return txn, fmt.Errorf("%w: transaction %d sets the database to %d pages, more than SQLite's %d", pagewire.ErrInvalidArgument, txn.TXID, txn.PageCount, pagewire.MaxPageCount)
	}
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

// TxnsFromProto checks and converts a message of consecutive whole
// transactions.
func TxnsFromProto(list []*replicationv1.Transaction) ([]pagewire.Txn, error) {
	if len(list) == 0 {
		return nil, fmt.Errorf("%w: empty transactions message", pagewire.ErrInvalidArgument)
	}
	out := make([]pagewire.Txn, 0, len(list))
	for i, t := range list {
		if t.GetMore() {
			return nil, fmt.Errorf("%w: transaction %d is split inside a transactions message", pagewire.ErrInvalidArgument, t.GetTxid())
		}
		if i > 0 && t.GetTxid() != list[i-1].GetTxid()+1 {
			return nil, fmt.Errorf("%w: transaction %d follows %d in a transactions message", pagewire.ErrInvalidArgument, t.GetTxid(), list[i-1].GetTxid())
		}
		txn, err := TxnFromProto(t)
		if err != nil {
			return nil, err
		}
		out = append(out, txn)
	}
	return out, nil
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

// HaltLockToProto converts a lock; withID is false when it is shown to
// anyone but its holder.
func HaltLockToProto(l pagewire.HaltLock, withID bool) *replicationv1.HaltLock {
	out := &replicationv1.HaltLock{Txid: uint64(l.TXID), Expires: timestamppb.New(l.Expires), Holder: l.Holder}
	if withID {
		out.Id = l.ID
	}
	return out
}

// HaltLockFromProto converts a lock.
func HaltLockFromProto(l *replicationv1.HaltLock) pagewire.HaltLock {
	return pagewire.HaltLock{ID: l.GetId(), TXID: pagewire.TXID(l.GetTxid()), Expires: l.GetExpires().AsTime(), Holder: l.GetHolder()}
}

// ForwardRequest makes the ForwardTransaction request of a halt lock's
// holder: the whole transaction in one message, of at most
// MaxForwardBytes of pages.
func ForwardRequest(db, haltID string, epoch pagewire.Epoch, t pagewire.Txn) (*replicationv1.ForwardTransactionRequest, error) {
	if n := len(t.Pages) * int(t.PageSize); n > MaxForwardBytes {
		return nil, fmt.Errorf("%w: the transaction changes %d MiB of pages; under a halt lock a transaction may change at most %d MiB: split it",
			pagewire.ErrInvalidArgument, n>>20, MaxForwardBytes>>20)
	}
	return &replicationv1.ForwardTransactionRequest{Name: db, HaltId: haltID, Epoch: uint64(epoch), Transaction: &replicationv1.Transaction{
		Txid: uint64(t.TXID), PreChecksum: t.PreChecksum, PostChecksum: t.PostChecksum, PageCount: t.PageCount, PageSize: t.PageSize,
		CommitTime: timestamppb.New(t.CommitTime), Pages: pagesToProto(t.Pages)}}, nil
}

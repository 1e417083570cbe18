package upstream

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"google.golang.org/grpc"

	"github.com/pagewire/pagewire"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
)

func txnMsg(pages ...*replicationv1.Page) *replicationv1.StreamTransactionsResponse {
	return &replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_Transaction{
		Transaction: &replicationv1.Transaction{Txid: 5, PageSize: 512, PageCount: 3, Pages: pages}}}
}

func page(pgno uint32, size int) *replicationv1.Page {
	return &replicationv1.Page{Pgno: pgno, Data: bytes.Repeat([]byte{1}, size)}
}

func TestTxnEventFromProto_RefusesBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  *replicationv1.StreamTransactionsResponse
	}{
		{"no pages", txnMsg()},
		{"page zero", txnMsg(page(0, 512))},
		{"descending", txnMsg(page(2, 512), page(1, 512))},
		{"duplicate", txnMsg(page(2, 512), page(2, 512))},
		{"beyond size", txnMsg(page(4, 512))},
		{"short page", txnMsg(page(1, 100))},
		{"oversized page", txnMsg(page(1, 1024))},
		{"bad page size", &replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_Transaction{
			Transaction: &replicationv1.Transaction{Txid: 5, PageSize: 1000, PageCount: 1, Pages: []*replicationv1.Page{page(1, 1000)}}}}},
		{"empty snapshot", &replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_SnapshotBegin{
			SnapshotBegin: &replicationv1.SnapshotBegin{PageSize: 4096}}}},
		{"snapshot of 2^32-1 pages", &replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_SnapshotBegin{
			SnapshotBegin: &replicationv1.SnapshotBegin{PageSize: 4096, PageCount: 0xFFFFFFFF}}}},
		{"transaction to 2^32-1 pages", &replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_Transaction{
			Transaction: &replicationv1.Transaction{Txid: 5, PageSize: 512, PageCount: 0xFFFFFFFF, Pages: []*replicationv1.Page{page(1, 512)}}}}},
		{"unknown kind", &replicationv1.StreamTransactionsResponse{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := txnEventFromProto(tc.msg); !errors.Is(err, pagewire.ErrInvalidArgument) {
				t.Fatalf("err=%v, want ErrInvalidArgument", err)
			}
		})
	}
}

func TestTxnEventFromProto_Transaction(t *testing.T) {
	ev, err := txnEventFromProto(txnMsg(page(1, 512), page(3, 512)))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Txn == nil || ev.Txn.TXID != 5 || len(ev.Txn.Pages) != 2 || ev.Txn.Pages[1].Pgno != 3 {
		t.Fatalf("got %+v", ev.Txn)
	}
}

func txnsMsg(txns ...*replicationv1.Transaction) *replicationv1.StreamTransactionsResponse {
	return &replicationv1.StreamTransactionsResponse{Primary: &replicationv1.Primary{Hostname: "p", Epoch: 3},
		Event: &replicationv1.StreamTransactionsResponse_Transactions{Transactions: &replicationv1.Transactions{Transactions: txns}}}
}

func txn(id uint64, pages ...*replicationv1.Page) *replicationv1.Transaction {
	return &replicationv1.Transaction{Txid: id, PageSize: 512, PageCount: 3, Pages: pages}
}

// fakeTxnStream replays messages, then io.EOF.
type fakeTxnStream struct {
	grpc.ClientStream
	msgs []*replicationv1.StreamTransactionsResponse
}

func (f *fakeTxnStream) Recv() (*replicationv1.StreamTransactionsResponse, error) {
	if len(f.msgs) == 0 {
		return nil, io.EOF
	}
	m := f.msgs[0]
	f.msgs = f.msgs[1:]
	return m, nil
}

func TestTxnStream_TransactionsMessageIsOneEventPerTransaction(t *testing.T) {
	s := &txnStream{s: &fakeTxnStream{msgs: []*replicationv1.StreamTransactionsResponse{
		txnsMsg(txn(5, page(1, 512)), txn(6, page(2, 512)), txn(7, page(3, 512))),
		txnMsg(page(1, 512)),
	}}}
	for _, want := range []pagewire.TXID{5, 6, 7, 5} {
		ev, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Txn == nil || ev.Txn.TXID != want {
			t.Fatalf("got %+v, want transaction %d", ev.Txn, want)
		}
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last message: err=%v, want io.EOF", err)
	}
}

func TestTxnStream_RefusesBadTransactionsMessage(t *testing.T) {
	split := txn(6, page(2, 512))
	split.More = true
	for _, tc := range []struct {
		name string
		msg  *replicationv1.StreamTransactionsResponse
	}{
		{"empty", txnsMsg()},
		{"gap", txnsMsg(txn(5, page(1, 512)), txn(7, page(1, 512)))},
		{"out of order", txnsMsg(txn(6, page(1, 512)), txn(5, page(1, 512)))},
		{"split member", txnsMsg(txn(5, page(1, 512)), split)},
		{"bad member", txnsMsg(txn(5, page(1, 512)), txn(6))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &txnStream{s: &fakeTxnStream{msgs: []*replicationv1.StreamTransactionsResponse{tc.msg}}}
			if _, err := s.Recv(); !errors.Is(err, pagewire.ErrInvalidArgument) {
				t.Fatalf("err=%v, want ErrInvalidArgument", err)
			}
		})
	}
}

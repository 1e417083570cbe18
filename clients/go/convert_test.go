package client

import (
	"bytes"
	"errors"
	"testing"

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

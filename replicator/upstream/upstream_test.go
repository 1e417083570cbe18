package upstream

import (
	"errors"
	"testing"

	"google.golang.org/grpc"

	"github.com/pagewire/pagewire"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
)

// endlessStream is a hostile primary: it sends next(i) for the i'th
// message, forever, and counts what it sent.
type endlessStream struct {
	grpc.ClientStream
	next func(i int) *replicationv1.StreamTransactionsResponse
	sent int
}

func (e *endlessStream) Recv() (*replicationv1.StreamTransactionsResponse, error) {
	e.sent++
	return e.next(e.sent), nil
}

// part is message i of a transaction split in parts of one page each.
func part(id uint64, pgno uint32, more bool) *replicationv1.StreamTransactionsResponse {
	m := txnMsg(page(pgno, 512))
	m.GetTransaction().Txid, m.GetTransaction().More = id, more
	return m
}

// A split transaction comes one part per event, each read alone: nothing
// is joined, so a primary that sends parts without end makes the replica
// hold no more than one. Parts beyond what the transaction's size allows,
// or of another transaction, are refused.
func TestTxnStream_PartsComeOneAtATimeAndAreBounded(t *testing.T) {
	t.Run("endless more parts", func(t *testing.T) {
		e := &endlessStream{next: func(i int) *replicationv1.StreamTransactionsResponse { return part(5, uint32(i), true) }}
		s := &txnStream{s: e}
		for pgno := uint32(1); pgno <= 3; pgno++ {
			ev, err := s.Recv()
			if err != nil {
				t.Fatalf("part %d: %v", pgno, err)
			}
			if !ev.More || ev.Txn == nil || len(ev.Txn.Pages) != 1 || ev.Txn.Pages[0].Pgno != pgno || e.sent != int(pgno) {
				t.Fatalf("part %d came as %+v after %d messages", pgno, ev, e.sent)
			}
		}
		// A transaction of 3 pages has no page 4.
		if _, err := s.Recv(); !errors.Is(err, pagewire.ErrInvalidArgument) {
			t.Fatalf("a part past the transaction's size: err=%v, want ErrInvalidArgument", err)
		}
	})

	for _, tc := range []struct {
		name string
		next *replicationv1.StreamTransactionsResponse
	}{
		{"the same page again", part(5, 1, true)},
		{"another transaction", part(6, 2, true)},
		{"another transaction, whole", part(6, 2, false)},
		{"a part without pages", func() *replicationv1.StreamTransactionsResponse {
			m := part(5, 2, true)
			m.GetTransaction().Pages = nil
			return m
		}()},
		{"another post-checksum", func() *replicationv1.StreamTransactionsResponse {
			m := part(5, 2, false)
			m.GetTransaction().PostChecksum = 99
			return m
		}()},
		{"another size", func() *replicationv1.StreamTransactionsResponse {
			m := part(5, 2, false)
			m.GetTransaction().PageCount = 2
			return m
		}()},
		{"a heartbeat", &replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_Heartbeat{Heartbeat: &replicationv1.Heartbeat{}}}},
		{"a transactions message", txnsMsg(txn(6, page(1, 512)))},
		{"a snapshot", &replicationv1.StreamTransactionsResponse{Event: &replicationv1.StreamTransactionsResponse_SnapshotBegin{
			SnapshotBegin: &replicationv1.SnapshotBegin{PageSize: 512, PageCount: 1}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &txnStream{s: &fakeTxnStream{msgs: []*replicationv1.StreamTransactionsResponse{part(5, 1, true), tc.next}}}
			if _, err := s.Recv(); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Recv(); !errors.Is(err, pagewire.ErrInvalidArgument) {
				t.Fatalf("err=%v, want ErrInvalidArgument", err)
			}
		})
	}

	t.Run("the last part ends it", func(t *testing.T) {
		s := &txnStream{s: &fakeTxnStream{msgs: []*replicationv1.StreamTransactionsResponse{
			part(5, 1, true), part(5, 3, false), part(6, 1, false), txnsMsg(txn(7, page(1, 512)))}}}
		for i, want := range []struct {
			txid pagewire.TXID
			more bool
		}{{5, true}, {5, false}, {6, false}, {7, false}} {
			ev, err := s.Recv()
			if err != nil {
				t.Fatalf("event %d: %v", i, err)
			}
			if ev.Txn.TXID != want.txid || ev.More != want.more {
				t.Fatalf("event %d: transaction %d more=%v, want %d more=%v", i, ev.Txn.TXID, ev.More, want.txid, want.more)
			}
		}
	})
}

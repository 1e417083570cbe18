package wire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/pagewire/pagewire"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
)

func TestStatus_DomainErrorsSurviveTheRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
	}{
		{fmt.Errorf("%w: db", pagewire.ErrNotFound), codes.NotFound},
		{fmt.Errorf("%w: bad", pagewire.ErrInvalidArgument), codes.InvalidArgument},
		{fmt.Errorf("%w: busy", pagewire.ErrBusy), codes.FailedPrecondition},
		{fmt.Errorf("%w: bad page", pagewire.ErrCorrupt), codes.DataLoss},
		{fmt.Errorf("%w: 4 exports running", pagewire.ErrTooMany), codes.ResourceExhausted},
		{&pagewire.ReadOnlyError{Primary: "node1", AdvertiseURL: "http://node1:20202"}, codes.FailedPrecondition},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{errors.New("something else"), codes.Internal},
	} {
		st := ToStatus(tc.err)
		if got := status.Code(st); got != tc.code {
			t.Errorf("ToStatus(%v) code = %v, want %v", tc.err, got, tc.code)
		}
		back := FromStatus(st)
		for _, sentinel := range []error{pagewire.ErrNotFound, pagewire.ErrInvalidArgument, pagewire.ErrBusy, pagewire.ErrCorrupt, pagewire.ErrReadOnly, pagewire.ErrTooMany} {
			if errors.Is(tc.err, sentinel) != errors.Is(back, sentinel) {
				t.Errorf("%v: errors.Is(%v) is %v before the wire, %v after", tc.err, sentinel, errors.Is(tc.err, sentinel), errors.Is(back, sentinel))
			}
		}
		var ro *pagewire.ReadOnlyError
		if errors.As(tc.err, &ro) {
			var got *pagewire.ReadOnlyError
			if !errors.As(back, &got) || got.Primary != ro.Primary || got.AdvertiseURL != ro.AdvertiseURL {
				t.Errorf("ReadOnlyError came back as %#v", back)
			}
		}
	}
	mounted := &pagewire.MountedError{Hostname: "app1", PID: 42, Dir: "/litefs"}
	st := ToStatus(fmt.Errorf("hold the mount session: %w", mounted))
	var got *pagewire.MountedError
	if status.Code(st) != codes.FailedPrecondition || !errors.As(FromStatus(st), &got) || *got != *mounted || !errors.Is(FromStatus(st), pagewire.ErrMounted) {
		t.Errorf("MountedError came back as %#v (%v)", FromStatus(st), st)
	}
	if ToStatus(nil) != nil || FromStatus(nil) != nil {
		t.Error("nil errors must stay nil")
	}
}

func page(pgno uint32, size int) *replicationv1.Page {
	return &replicationv1.Page{Pgno: pgno, Data: bytes.Repeat([]byte{byte(pgno)}, size)}
}

func TestTxnFromProto_RefusesBadInput(t *testing.T) {
	for name, txn := range map[string]*replicationv1.Transaction{
		"no pages":        {Txid: 2, PageSize: 512, PageCount: 1},
		"bad page size":   {Txid: 2, PageSize: 1000, PageCount: 1, Pages: []*replicationv1.Page{page(1, 1000)}},
		"page zero":       {Txid: 2, PageSize: 512, PageCount: 1, Pages: []*replicationv1.Page{page(0, 512)}},
		"not ascending":   {Txid: 2, PageSize: 512, PageCount: 3, Pages: []*replicationv1.Page{page(2, 512), page(1, 512)}},
		"duplicate":       {Txid: 2, PageSize: 512, PageCount: 3, Pages: []*replicationv1.Page{page(2, 512), page(2, 512)}},
		"beyond the size": {Txid: 2, PageSize: 512, PageCount: 1, Pages: []*replicationv1.Page{page(2, 512)}},
		"short page":      {Txid: 2, PageSize: 512, PageCount: 1, Pages: []*replicationv1.Page{page(1, 100)}},
		"2^32-1 pages":    {Txid: 2, PageSize: 512, PageCount: 0xFFFFFFFF, Pages: []*replicationv1.Page{page(1, 512)}},
	} {
		if _, err := TxnFromProto(txn); !errors.Is(err, pagewire.ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", name, err)
		}
	}
	if _, err := TxnsFromProto(nil); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Errorf("empty list: err = %v", err)
	}
	gap := []*replicationv1.Transaction{
		{Txid: 2, PageSize: 512, PageCount: 1, Pages: []*replicationv1.Page{page(1, 512)}},
		{Txid: 4, PageSize: 512, PageCount: 1, Pages: []*replicationv1.Page{page(1, 512)}},
	}
	if _, err := TxnsFromProto(gap); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Errorf("a gap in a transactions message: err = %v", err)
	}
}

func TestTxnToProto_PartComesBack(t *testing.T) {
	const pageSize = 512
	in := pagewire.Txn{TXID: 9, PreChecksum: 1, PostChecksum: 2, PageSize: pageSize, PageCount: 9,
		Pages: []pagewire.Page{{Pgno: 4, Data: bytes.Repeat([]byte{4}, pageSize)}, {Pgno: 7, Data: bytes.Repeat([]byte{7}, pageSize)}}}
	for _, more := range []bool{true, false} {
		m := TxnToProto(in, more)
		if m.GetMore() != more {
			t.Fatalf("more = %v, want %v", m.GetMore(), more)
		}
		out, err := TxnFromProto(m)
		if err != nil {
			t.Fatal(err)
		}
		if out.TXID != in.TXID || out.PostChecksum != in.PostChecksum || out.PageCount != 9 || len(out.Pages) != 2 || !bytes.Equal(out.Pages[1].Data, in.Pages[1].Data) {
			t.Fatalf("the part came back as TXID %d with %d pages", out.TXID, len(out.Pages))
		}
	}
}

func TestForwardRequest_RefusesTooLargeTransactions(t *testing.T) {
	big := pagewire.Txn{TXID: 2, PageSize: 65536, PageCount: MaxForwardBytes/65536 + 1}
	for i := uint32(1); i <= big.PageCount; i++ {
		big.Pages = append(big.Pages, pagewire.Page{Pgno: i, Data: make([]byte, 65536)})
	}
	if _, err := ForwardRequest("app.db", "h1", 1, big); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Fatalf("err = %v, want ErrInvalidArgument", err)
	}
}

// The largest transaction ForwardRequest makes, of the smallest pages with
// the longest page numbers, fits in MaxForwardMessageBytes, the limit the
// server takes it under.
func TestForwardRequest_LargestFitsTheMessageLimit(t *testing.T) {
	const pageSize = 512
	n := MaxForwardBytes / pageSize
	txn := pagewire.Txn{TXID: math.MaxUint64, PreChecksum: math.MaxUint64, PostChecksum: math.MaxUint64, PageSize: pageSize,
		PageCount: pagewire.MaxPageCount, CommitTime: time.Now()}
	data := make([]byte, pageSize)
	for i := range n {
		txn.Pages = append(txn.Pages, pagewire.Page{Pgno: pagewire.MaxPageCount - uint32(n) + uint32(i), Data: data})
	}
	req, err := ForwardRequest(strings.Repeat("d", 255), strings.Repeat("h", 64), math.MaxUint64, txn)
	if err != nil {
		t.Fatal(err)
	}
	if size := proto.Size(req); size > MaxForwardMessageBytes {
		t.Fatalf("the largest forward request is %d bytes, over MaxForwardMessageBytes (%d)", size, MaxForwardMessageBytes)
	}
}

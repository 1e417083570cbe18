package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pagewire/pagewire"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
)

// MaxForwardBytes bounds the pages of one transaction written under a halt
// lock on a replica: it goes to the primary in one message.
const MaxForwardBytes = 64 << 20

// HaltLock is a held halt lock.
type HaltLock struct {
	ID      string        // names the lock: Release needs it
	TXID    pagewire.TXID // the database's TXID on the primary when taken
	Expires time.Time     // when the lock is released by itself
	Holder  string        // hostname of the node it was taken through
}

// HaltOptions tune AcquireHalt; zero values take the node's defaults.
type HaltOptions struct {
	TTL  time.Duration // the lock's lifetime (30 s)
	Wait time.Duration // how long to wait for the lock (10 s)
}

// AcquireHalt takes database db's halt lock through the node behind conn.
// On a replica, writes to db through that node's mount are then committed
// on the primary before they return; open the connections that write
// after taking the lock (a connection opened on a replica before it is
// read-only).
func AcquireHalt(ctx context.Context, conn grpc.ClientConnInterface, db string, o HaltOptions) (HaltLock, error) {
	req := &adminv1.AcquireHaltRequest{Name: db}
	if o.TTL != 0 {
		req.Ttl = durationpb.New(o.TTL)
	}
	if o.Wait != 0 {
		req.Wait = durationpb.New(o.Wait)
	}
	resp, err := adminv1.NewAdminServiceClient(conn).AcquireHalt(ctx, req)
	if err != nil {
		return HaltLock{}, Error(err)
	}
	l := resp.GetLock()
	return HaltLock{ID: l.GetId(), TXID: pagewire.TXID(l.GetTxid()), Expires: l.GetExpires().AsTime(), Holder: l.GetHolder()}, nil
}

// ReleaseHalt releases a halt lock taken with AcquireHalt.
func ReleaseHalt(ctx context.Context, conn grpc.ClientConnInterface, db, id string) error {
	_, err := adminv1.NewAdminServiceClient(conn).ReleaseHalt(ctx, &adminv1.ReleaseHaltRequest{Name: db, Id: id})
	return Error(err)
}

// WithHalt runs fn while holding database db's halt lock through the node
// behind conn, and releases it after. fn's context ends when the lock
// expires. fn's error, if any, is returned; a failure to release is
// returned only when fn succeeded.
func WithHalt(ctx context.Context, conn grpc.ClientConnInterface, db string, o HaltOptions, fn func(ctx context.Context, lock HaltLock) error) error {
	lock, err := AcquireHalt(ctx, conn, db, o)
	if err != nil {
		return fmt.Errorf("take the halt lock of %q: %w", db, err)
	}
	fctx, cancel := context.WithDeadline(ctx, lock.Expires)
	ferr := fn(fctx, lock)
	cancel()
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer rcancel()
	rerr := ReleaseHalt(rctx, conn, db, lock.ID)
	if errors.Is(rerr, pagewire.ErrNotFound) && ferr == nil {
		return fmt.Errorf("the halt lock of %q expired before fn returned: its writes after %s may have failed", db, lock.Expires.Format(time.RFC3339))
	}
	if ferr != nil {
		return ferr
	}
	if rerr != nil {
		return fmt.Errorf("release the halt lock of %q: %w", db, rerr)
	}
	return nil
}

// ForwardRequest makes the ForwardTransaction request of a halt lock's
// holder: the whole transaction in one message.
func ForwardRequest(db, haltID string, epoch pagewire.Epoch, t pagewire.Txn) (*replicationv1.ForwardTransactionRequest, error) {
	if n := len(t.Pages) * int(t.PageSize); n > MaxForwardBytes {
		return nil, fmt.Errorf("%w: the transaction changes %d MiB of pages; under a halt lock a transaction may change at most %d MiB: split it",
			pagewire.ErrInvalidArgument, n>>20, MaxForwardBytes>>20)
	}
	pages := make([]*replicationv1.Page, len(t.Pages))
	for i, p := range t.Pages {
		pages[i] = &replicationv1.Page{Pgno: p.Pgno, Data: p.Data}
	}
	return &replicationv1.ForwardTransactionRequest{Name: db, HaltId: haltID, Epoch: uint64(epoch), Transaction: &replicationv1.Transaction{
		Txid: uint64(t.TXID), PreChecksum: t.PreChecksum, PostChecksum: t.PostChecksum, PageCount: t.PageCount, PageSize: t.PageSize,
		CommitTime: timestamppb.New(t.CommitTime), Pages: pages}}, nil
}

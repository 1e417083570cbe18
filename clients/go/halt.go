package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/wire"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
)

// MaxForwardBytes bounds the pages of one transaction written under a halt
// lock on a replica: it goes to the primary in one message.
const MaxForwardBytes = wire.MaxForwardBytes

// HaltLock is a held halt lock.
type HaltLock = pagewire.HaltLock

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
	return wire.HaltLockFromProto(resp.GetLock()), nil
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

package client

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/pagewire/pagewire"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
)

// WaitForPosition waits until the node behind conn has database db at txid
// or past it: read-your-writes on a replica, given the TXID a write got on
// the primary (the first half of its <db>-pos file). timeout bounds the
// wait on the node (0: its default, 10 s; at most 5 min); it answers with a
// DeadlineExceeded error that says how far it got.
func WaitForPosition(ctx context.Context, conn grpc.ClientConnInterface, db string, txid pagewire.TXID, timeout time.Duration) (pagewire.Pos, error) {
	req := &adminv1.WaitForPositionRequest{Name: db, Txid: uint64(txid)}
	if timeout > 0 {
		req.Timeout = durationpb.New(timeout)
	}
	resp, err := adminv1.NewAdminServiceClient(conn).WaitForPosition(ctx, req)
	if err != nil {
		return pagewire.Pos{}, Error(err)
	}
	return pagewire.Pos{TXID: pagewire.TXID(resp.GetTxid()), Checksum: resp.GetChecksum()}, nil
}

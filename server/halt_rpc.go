package server

import (
	"context"
	"fmt"

	"github.com/pagewire/pagewire"
	client "github.com/pagewire/pagewire/clients/go"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
)

// The halt lock's two faces: AdminService for clients (and the HTTP API,
// which calls the same methods), ReplicationService between nodes.

func (a *adminService) AcquireHalt(ctx context.Context, req *adminv1.AcquireHaltRequest) (*adminv1.AcquireHaltResponse, error) {
	lock, err := a.halts.Acquire(ctx, req.GetName(), req.GetTtl().AsDuration(), req.GetWait().AsDuration())
	if err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.AcquireHaltResponse{Lock: adminHaltLockToProto(lock, true)}, nil
}

func (a *adminService) ReleaseHalt(ctx context.Context, req *adminv1.ReleaseHaltRequest) (*adminv1.ReleaseHaltResponse, error) {
	if err := a.halts.Release(ctx, req.GetName(), req.GetId()); err != nil {
		return nil, toStatus(err)
	}
	return &adminv1.ReleaseHaltResponse{}, nil
}

func (r *replicationService) AcquireHalt(ctx context.Context, req *replicationv1.AcquireHaltRequest) (*replicationv1.AcquireHaltResponse, error) {
	if err := pagewire.ValidateDBName(req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	ttl, wait, err := haltDurations(req.GetTtl().AsDuration(), req.GetWait().AsDuration())
	if err != nil {
		return nil, toStatus(err)
	}
	holder := req.GetHostname()
	if holder == "" {
		holder = "unnamed replica"
	}
	lock, err := r.halts.grant(ctx, req.GetName(), holder, pagewire.Epoch(req.GetEpoch()), ttl, wait, true)
	if err != nil {
		return nil, toStatus(err)
	}
	return &replicationv1.AcquireHaltResponse{Lock: haltLockToProto(lock)}, nil
}

func (r *replicationService) ReleaseHalt(_ context.Context, req *replicationv1.ReleaseHaltRequest) (*replicationv1.ReleaseHaltResponse, error) {
	if err := pagewire.ValidateDBName(req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if err := r.halts.release(req.GetName(), req.GetId(), "released"); err != nil {
		return nil, toStatus(err)
	}
	return &replicationv1.ReleaseHaltResponse{}, nil
}

func (r *replicationService) ForwardTransaction(ctx context.Context, req *replicationv1.ForwardTransactionRequest) (*replicationv1.ForwardTransactionResponse, error) {
	if err := pagewire.ValidateDBName(req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if req.GetTransaction().GetMore() {
		return nil, toStatus(fmt.Errorf("%w: a forwarded transaction comes in one message", pagewire.ErrInvalidArgument))
	}
	txn, err := client.TxnFromProto(req.GetTransaction())
	if err != nil {
		return nil, toStatus(err)
	}
	pos, err := r.halts.forward(ctx, req.GetName(), req.GetHaltId(), pagewire.Epoch(req.GetEpoch()), txn)
	if err != nil {
		return nil, toStatus(err)
	}
	return &replicationv1.ForwardTransactionResponse{Position: posToProto(pos)}, nil
}

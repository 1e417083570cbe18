package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/engine"
	"github.com/pagewire/pagewire/internal/wire"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
)

// The halt lock's faces: AdminService for clients (and the HTTP API, which
// calls the same methods), ReplicationService between nodes, and
// haltPrimary, the replica's end of the latter.

func (a *adminService) AcquireHalt(ctx context.Context, req *adminv1.AcquireHaltRequest) (*adminv1.AcquireHaltResponse, error) {
	lock, err := a.halts.Acquire(ctx, req.GetName(), req.GetTtl().AsDuration(), req.GetWait().AsDuration())
	if err != nil {
		return nil, wire.ToStatus(err)
	}
	return &adminv1.AcquireHaltResponse{Lock: wire.HaltLockToProto(lock, true)}, nil
}

func (a *adminService) ReleaseHalt(ctx context.Context, req *adminv1.ReleaseHaltRequest) (*adminv1.ReleaseHaltResponse, error) {
	if err := a.halts.Release(ctx, req.GetName(), req.GetId()); err != nil {
		return nil, wire.ToStatus(err)
	}
	return &adminv1.ReleaseHaltResponse{}, nil
}

func (r *replicationService) AcquireHalt(ctx context.Context, req *replicationv1.AcquireHaltRequest) (*replicationv1.AcquireHaltResponse, error) {
	lock, err := r.halts.GrantToReplica(ctx, req.GetName(), req.GetHostname(), pagewire.Epoch(req.GetEpoch()),
		req.GetTtl().AsDuration(), req.GetWait().AsDuration())
	if err != nil {
		return nil, wire.ToStatus(err)
	}
	return &replicationv1.AcquireHaltResponse{Lock: wire.HaltLockToProto(lock, true)}, nil
}

func (r *replicationService) ReleaseHalt(_ context.Context, req *replicationv1.ReleaseHaltRequest) (*replicationv1.ReleaseHaltResponse, error) {
	if err := r.halts.ReleaseGrant(req.GetName(), req.GetId()); err != nil {
		return nil, wire.ToStatus(err)
	}
	return &replicationv1.ReleaseHaltResponse{}, nil
}

func (r *replicationService) ForwardTransaction(ctx context.Context, req *replicationv1.ForwardTransactionRequest) (*replicationv1.ForwardTransactionResponse, error) {
	if err := pagewire.ValidateDBName(req.GetName()); err != nil {
		return nil, wire.ToStatus(err)
	}
	if req.GetTransaction().GetMore() {
		return nil, wire.ToStatus(fmt.Errorf("%w: a forwarded transaction comes in one message", pagewire.ErrInvalidArgument))
	}
	txn, err := wire.TxnFromProto(req.GetTransaction())
	if err != nil {
		return nil, wire.ToStatus(err)
	}
	pos, err := r.halts.Forward(ctx, req.GetName(), req.GetHaltId(), pagewire.Epoch(req.GetEpoch()), txn)
	if err != nil {
		return nil, wire.ToStatus(err)
	}
	return &replicationv1.ForwardTransactionResponse{Position: wire.PosToProto(pos)}, nil
}

// haltPrimary is engine.HaltPrimary over gRPC: a replica's calls to its
// primary's ReplicationService, one connection per primary URL.
type haltPrimary struct {
	creds wire.Credentials
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

var _ engine.HaltPrimary = (*haltPrimary)(nil)

func newHaltPrimary(creds wire.Credentials) *haltPrimary {
	return &haltPrimary{creds: creds, conns: map[string]*grpc.ClientConn{}}
}

func (p *haltPrimary) AcquireHalt(ctx context.Context, url string, req engine.HaltRequest) (pagewire.HaltLock, error) {
	rc, err := p.client(url)
	if err != nil {
		return pagewire.HaltLock{}, err
	}
	actx, cancel := context.WithTimeout(ctx, req.Wait+haltRPCSlack)
	defer cancel()
	resp, err := rc.AcquireHalt(actx, &replicationv1.AcquireHaltRequest{Name: req.DB, Hostname: req.Hostname, Epoch: uint64(req.Epoch),
		Ttl: durationpb.New(req.TTL), Wait: durationpb.New(req.Wait)})
	if err != nil {
		return pagewire.HaltLock{}, wire.FromStatus(err)
	}
	return wire.HaltLockFromProto(resp.GetLock()), nil
}

func (p *haltPrimary) ReleaseHalt(ctx context.Context, url, db, id string) error {
	rc, err := p.client(url)
	if err != nil {
		return err
	}
	_, err = rc.ReleaseHalt(ctx, &replicationv1.ReleaseHaltRequest{Name: db, Id: id})
	return wire.FromStatus(err)
}

func (p *haltPrimary) ForwardTransaction(ctx context.Context, url, db, haltID string, epoch pagewire.Epoch, txn pagewire.Txn) (pagewire.Pos, error) {
	req, err := wire.ForwardRequest(db, haltID, epoch, txn)
	if err != nil {
		return pagewire.Pos{}, err
	}
	rc, err := p.client(url)
	if err != nil {
		return pagewire.Pos{}, err
	}
	resp, err := rc.ForwardTransaction(ctx, req)
	if err != nil {
		return pagewire.Pos{}, wire.FromStatus(err)
	}
	return wire.PosFromProto(resp.GetPosition()), nil
}

// haltRPCSlack is how much longer than its wait an AcquireHalt call may
// take: the trip there and back.
const haltRPCSlack = 5 * time.Second

// client returns a ReplicationService client of the node at url, over a
// connection made once.
func (p *haltPrimary) client(url string) (replicationv1.ReplicationServiceClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.conns[url]
	if c == nil {
		var err error
		if c, err = wire.Dial(url, p.creds); err != nil {
			return nil, err
		}
		p.conns[url] = c
	}
	return replicationv1.NewReplicationServiceClient(c), nil
}

func (p *haltPrimary) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for url, c := range p.conns {
		_ = c.Close()
		delete(p.conns, url)
	}
	return nil
}

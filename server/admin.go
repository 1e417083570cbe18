package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/engine"
	"github.com/pagewire/pagewire/internal/wire"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
)

// exportChunk is the size of one ExportDatabase message.
const exportChunk = 1 << 20

// adminService serves AdminService from a Store.
type adminService struct {
	adminv1.UnimplementedAdminServiceServer
	store   *engine.Store
	node    NodeInfo
	handoff func(ctx context.Context, target string) (hostname, url string, err error)
	halts   *engine.Halts
	subs    *subscribers
	// proxyURL is this node's proxy's URL ("" without one).
	proxyURL string
	backup   func(db string) (BackupStatus, bool) // Config.Backup
}

// NewNodeID returns a random ID for a run of a node.
func NewNodeID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// defaultWaitForPosition is WaitForPosition's timeout when none is given:
// the proxy's max-lag default.
const defaultWaitForPosition = 10 * time.Second

// maxWaitForPosition bounds WaitForPosition's timeout: each waiting call
// holds a goroutine and a stream, so a client cannot park them for hours.
const maxWaitForPosition = 5 * time.Minute

func (a *adminService) WaitForPosition(ctx context.Context, req *adminv1.WaitForPositionRequest) (*adminv1.WaitForPositionResponse, error) {
	timeout := req.GetTimeout().AsDuration()
	if req.GetTimeout() != nil && timeout < 0 {
		return nil, status.Error(codes.InvalidArgument, "timeout must not be negative")
	}
	if timeout == 0 {
		timeout = defaultWaitForPosition
	}
	if timeout > maxWaitForPosition {
		return nil, status.Errorf(codes.InvalidArgument, "timeout %s is over the %s a WaitForPosition may wait: wait in shorter calls", timeout, maxWaitForPosition)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pos, err := a.store.WaitForPosition(ctx, req.GetName(), pagewire.TXID(req.GetTxid()))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, status.Error(codes.DeadlineExceeded, err.Error()+"; this node lags the primary, or the TXID was never written")
		}
		return nil, wire.ToStatus(err)
	}
	return &adminv1.WaitForPositionResponse{Txid: uint64(pos.TXID), Checksum: pos.Checksum}, nil
}

func (a *adminService) Handoff(ctx context.Context, req *adminv1.HandoffRequest) (*adminv1.HandoffResponse, error) {
	if a.handoff == nil {
		return nil, status.Error(codes.FailedPrecondition, "a static lease cannot be handed off: change lease.candidate in the config and restart the nodes, or use lease.type consul")
	}
	if t := req.GetTarget(); t != "" && t == a.node.Hostname {
		return nil, status.Errorf(codes.InvalidArgument, "target %q is this node, the primary: name another candidate", t)
	}
	host, url, err := a.handoff(ctx, req.GetTarget())
	if err != nil {
		return nil, wire.ToStatus(err) // a node that is not the primary: ErrReadOnly, FAILED_PRECONDITION
	}
	return &adminv1.HandoffResponse{Primary: host, PrimaryUrl: url}, nil
}

var _ adminv1.AdminServiceServer = (*adminService)(nil)

func (a *adminService) ListDatabases(context.Context, *adminv1.ListDatabasesRequest) (*adminv1.ListDatabasesResponse, error) {
	dbs := a.store.Databases()
	resp := &adminv1.ListDatabasesResponse{Databases: make([]*adminv1.Database, len(dbs))}
	for i, di := range dbs {
		resp.Databases[i] = databaseToProto(di, a.backup)
	}
	return resp, nil
}

func (a *adminService) GetDatabase(_ context.Context, req *adminv1.GetDatabaseRequest) (*adminv1.GetDatabaseResponse, error) {
	di, err := a.store.Database(req.GetName())
	if err != nil {
		return nil, wire.ToStatus(err)
	}
	role, ro := a.store.Role()
	resp := &adminv1.GetDatabaseResponse{Database: databaseToProto(di, a.backup), Primary: ro.Primary, IsPrimary: role == pagewire.RolePrimary}
	if resp.IsPrimary {
		resp.Primary = a.node.Hostname
		for _, ri := range a.subs.replicas(di.Name, di.Pos.TXID) {
			resp.Replicas = append(resp.Replicas, &adminv1.Replica{Hostname: ri.Hostname, Txid: uint64(ri.TXID), Lag: durationpb.New(ri.Lag)})
		}
	}
	if lock, ok := a.halts.Held(di.Name); ok {
		resp.HaltLock = wire.HaltLockToProto(lock, false)
	}
	return resp, nil
}

func (a *adminService) VerifyDatabase(_ context.Context, req *adminv1.VerifyDatabaseRequest) (*adminv1.VerifyDatabaseResponse, error) {
	r, err := a.store.Verify(req.GetName(), req.GetRepair())
	if err != nil {
		return nil, wire.ToStatus(err)
	}
	return verifyReportToProto(r), nil
}

func (a *adminService) GetNode(context.Context, *adminv1.GetNodeRequest) (*adminv1.GetNodeResponse, error) {
	role, ro := a.store.Role()
	primary, primaryURL := ro.Primary, ro.AdvertiseURL
	if role == pagewire.RolePrimary {
		primary, primaryURL = a.node.Hostname, a.node.AdvertiseURL
	}
	return &adminv1.GetNodeResponse{Hostname: a.node.Hostname, AdvertiseUrl: a.node.AdvertiseURL,
		Role: roleToProto(role), Primary: primary, Version: a.node.Version, NodeId: a.node.ID, PrimaryUrl: primaryURL, ProxyUrl: a.proxyURL}, nil
}

// chunkWriter sends what is written to it as ExportDatabase messages.
type chunkWriter struct {
	send func(*adminv1.ExportDatabaseResponse) error
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += exportChunk {
		end := min(off+exportChunk, len(p))
		msg := &adminv1.ExportDatabaseResponse{Data: p[off:end]}
		if err := w.send(msg); err != nil {
			return off, err
		}
	}
	return len(p), nil
}

func (a *adminService) ExportDatabase(req *adminv1.ExportDatabaseRequest, stream adminv1.AdminService_ExportDatabaseServer) error {
	// The engine reads from a view of the database, holding no lock while
	// a chunk is sent: a client that reads slowly, or not at all, blocks
	// no writer. The stream's end (the client gone) ends the export.
	w := &chunkWriter{send: stream.Send}
	pos, err := a.store.Export(stream.Context(), req.GetName(), w)
	if err != nil {
		return wire.ToStatus(fmt.Errorf("export %q: %w", req.GetName(), err))
	}
	// The last message carries the position the snapshot was taken at.
	return stream.Send(&adminv1.ExportDatabaseResponse{Txid: uint64(pos.TXID), Checksum: pos.Checksum})
}

// importReader reads the data of ImportDatabase messages.
type importReader struct {
	recv func() (*adminv1.ImportDatabaseRequest, error)
	buf  []byte
}

func (r *importReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		msg, err := r.recv()
		if err != nil {
			return 0, err // io.EOF at the end of the stream
		}
		r.buf = msg.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (a *adminService) ImportDatabase(stream adminv1.AdminService_ImportDatabaseServer) error {
	first, err := stream.Recv()
	if errors.Is(err, io.EOF) {
		return wire.ToStatus(fmt.Errorf("%w: import stream is empty", pagewire.ErrInvalidArgument))
	} else if err != nil {
		return err
	}
	r := &importReader{recv: stream.Recv, buf: first.GetData()}
	di, err := a.store.Import(first.GetName(), r)
	if err != nil {
		return wire.ToStatus(err)
	}
	return stream.SendAndClose(&adminv1.ImportDatabaseResponse{Database: databaseToProto(di, a.backup)})
}

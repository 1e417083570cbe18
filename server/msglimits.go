package server

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/pagewire/pagewire/internal/wire"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
)

// Each method takes messages of its own size at most. gRPC reads a whole
// message before any interceptor sees it, up to the server's one
// MaxRecvMsgSize (wire.MaxForwardMessageBytes, the largest any method
// takes), so that is the outer bound; limitUnary and limitStream then refuse a message over its
// method's own limit before the handler does anything with it.

// Message-size limits, in bytes.
const (
	// smallMessage: a request of names, ids, positions and durations.
	smallMessage = 64 << 10
	// importChunk: one ImportDatabase message; `pagewire import` sends
	// 1 MiB chunks.
	importChunk = 4 << 20
	// storageWrite: a WriteFile request, maxIO bytes of data and its fields.
	storageWrite = maxIO + 64<<10
)

// recvLimit is the largest message a method receives, and what to tell a
// client that sent a larger one.
type recvLimit struct {
	bytes int
	hint  string
}

// small is the limit of a method whose requests carry no data.
var small = recvLimit{smallMessage, "its requests carry names, ids and positions only"}

// recvLimits is every method's limit, by full method name. Methods not
// listed (health, reflection) take small messages.
var recvLimits = map[string]recvLimit{
	// AdminService: the CLI's and clients' calls.
	adminv1.AdminService_ListDatabases_FullMethodName:   small,
	adminv1.AdminService_GetDatabase_FullMethodName:     small,
	adminv1.AdminService_GetNode_FullMethodName:         small,
	adminv1.AdminService_ExportDatabase_FullMethodName:  small,
	adminv1.AdminService_ImportDatabase_FullMethodName:  {importChunk, "send the database in chunks of at most 1 MiB, as `pagewire import` does"},
	adminv1.AdminService_Handoff_FullMethodName:         small,
	adminv1.AdminService_WaitForPosition_FullMethodName: small,
	adminv1.AdminService_AcquireHalt_FullMethodName:     small,
	adminv1.AdminService_ReleaseHalt_FullMethodName:     small,
	adminv1.AdminService_VerifyDatabase_FullMethodName:  small,

	// ReplicationService: replicas' calls to the primary.
	replicationv1.ReplicationService_WatchDatabases_FullMethodName:          small,
	replicationv1.ReplicationService_StreamTransactions_FullMethodName:      small,
	replicationv1.ReplicationService_AcquireHalt_FullMethodName:             small,
	replicationv1.ReplicationService_ReleaseHalt_FullMethodName:             small,
	replicationv1.ReplicationService_AcknowledgeTransactions_FullMethodName: small,
	replicationv1.ReplicationService_ForwardTransaction_FullMethodName: {wire.MaxForwardMessageBytes,
		fmt.Sprintf("a transaction under a halt lock changes at most %d MiB of pages: split it", wire.MaxForwardBytes>>20)},

	// StorageService, on the storage socket: the mount's calls.
	storagev1.StorageService_ListFiles_FullMethodName:     small,
	storagev1.StorageService_LookupFile_FullMethodName:    small,
	storagev1.StorageService_CreateFile_FullMethodName:    small,
	storagev1.StorageService_StatFile_FullMethodName:      small,
	storagev1.StorageService_DeleteFile_FullMethodName:    small,
	storagev1.StorageService_OpenFile_FullMethodName:      small,
	storagev1.StorageService_CloseFile_FullMethodName:     small,
	storagev1.StorageService_ReadFile_FullMethodName:      small,
	storagev1.StorageService_WriteFile_FullMethodName:     {storageWrite, fmt.Sprintf("write at most %d MiB at a time", maxIO>>20)},
	storagev1.StorageService_TruncateFile_FullMethodName:  small,
	storagev1.StorageService_SyncFile_FullMethodName:      small,
	storagev1.StorageService_SyncDirectory_FullMethodName: small,
	storagev1.StorageService_WatchFiles_FullMethodName:    small,
	storagev1.StorageService_HoldMount_FullMethodName:     small,
}

// checkSize refuses a message received by method that is over the
// method's limit: RESOURCE_EXHAUSTED, as gRPC's own limit answers.
func checkSize(method string, m any) error {
	msg, ok := m.(proto.Message)
	if !ok {
		return nil
	}
	limit, ok := recvLimits[method]
	if !ok {
		limit = small
	}
	if n := proto.Size(msg); n > limit.bytes {
		return status.Errorf(codes.ResourceExhausted, "%s: the message is %d bytes, over the %d this method takes: %s", method, n, limit.bytes, limit.hint)
	}
	return nil
}

// limitUnary refuses a unary call whose request is over its method's limit.
func limitUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := checkSize(info.FullMethod, req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// limitStream refuses each message of a stream that is over its method's
// limit: the handler's RecvMsg fails, and the stream ends with that error.
func limitStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &limitedStream{ServerStream: ss, method: info.FullMethod})
}

// limitedStream checks each message it receives against its method's limit.
type limitedStream struct {
	grpc.ServerStream
	method string
}

func (s *limitedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return checkSize(s.method, m)
}

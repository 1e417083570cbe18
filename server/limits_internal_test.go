package server

import (
	"testing"

	"google.golang.org/grpc"

	"github.com/pagewire/pagewire/internal/wire"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
)

// Every method of pagewire's services has its own limit in recvLimits, so
// that a new RPC is given one on purpose; none is over the server's
// MaxRecvMsgSize, the outer bound.
func TestRecvLimits_EveryMethodHasOne(t *testing.T) {
	for _, sd := range []grpc.ServiceDesc{adminv1.AdminService_ServiceDesc, replicationv1.ReplicationService_ServiceDesc, storagev1.StorageService_ServiceDesc} {
		var names []string
		for _, m := range sd.Methods {
			names = append(names, m.MethodName)
		}
		for _, s := range sd.Streams {
			names = append(names, s.StreamName)
		}
		for _, name := range names {
			full := "/" + sd.ServiceName + "/" + name
			if _, ok := recvLimits[full]; !ok {
				t.Errorf("%s has no limit in recvLimits", full)
			}
		}
	}
	for method, l := range recvLimits {
		if l.bytes <= 0 || l.bytes > wire.MaxForwardMessageBytes || l.hint == "" {
			t.Errorf("%s: limit %d (hint %q), want 1..%d with a hint", method, l.bytes, l.hint, wire.MaxForwardMessageBytes)
		}
	}
}

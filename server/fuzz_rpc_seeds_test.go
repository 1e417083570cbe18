package server_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
	"github.com/pagewire/pagewire/wal"
)

// fuzzState is what a fresh fuzz node holds, as seeds need it: the IDs of
// its files are the same on every fresh node.
type fuzzState struct {
	dbID   uint64 // app.db
	walID  uint64 // app.db-wal, once the first CreateFile of a program made it
	page1  []byte // app.db's first page
	pos    *replicationv1.Position
	walHdr []byte // a WAL header and one commit frame of page 1
}

// learnFuzzState starts a fresh node and reads what seeds need from it.
func learnFuzzState(tb testing.TB) fuzzState {
	tb.Helper()
	n := startFuzzNode(tb)
	ctx := context.Background()
	storage := storagev1.NewStorageServiceClient(n.inproc)
	db, err := storage.LookupFile(ctx, &storagev1.LookupFileRequest{Name: fuzzDB})
	if err != nil {
		tb.Fatal(err)
	}
	w, err := storage.CreateFile(ctx, &storagev1.CreateFileRequest{Name: fuzzDB + "-wal"})
	if err != nil {
		tb.Fatal(err)
	}
	page, err := storage.ReadFile(ctx, &storagev1.ReadFileRequest{FileId: db.GetFile().GetFileId(), Length: 4096})
	if err != nil {
		tb.Fatal(err)
	}
	d, err := adminv1.NewAdminServiceClient(n.inproc).GetDatabase(ctx, &adminv1.GetDatabaseRequest{Name: fuzzDB})
	if err != nil {
		tb.Fatal(err)
	}
	st := fuzzState{dbID: db.GetFile().GetFileId(), walID: w.GetFile().GetFileId(), page1: page.GetData(),
		pos: &replicationv1.Position{Txid: d.GetDatabase().GetTxid(), Checksum: d.GetDatabase().GetChecksum()}}

	// A WAL that commits page 1 again, as SQLite would write it.
	h := wal.Header{PageSize: 4096, Salt: wal.Salt{1, 2}}
	st.walHdr = h.AppendTo(nil)
	enc := h.Encoder()
	st.walHdr = enc.AppendFrame(st.walHdr, 1, 1, st.page1)
	return st
}

// seedCall is one call of a seed program.
type seedCall struct {
	method string
	msgs   []proto.Message
}

// rpcSeedPrograms returns, for every method, programs that call it with a
// valid request (after the calls it needs first).
func rpcSeedPrograms(st fuzzState) map[string][][]seedCall {
	const (
		admin   = "/pagewire.admin.v1.AdminService/"
		repl    = "/pagewire.replication.v1.ReplicationService/"
		storage = "/pagewire.storage.v1.StorageService/"
		health  = "/grpc.health.v1.Health/"
	)
	one := func(method string, msgs ...proto.Message) [][]seedCall {
		return [][]seedCall{{{method, msgs}}}
	}
	ms := durationpb.New
	acquire := seedCall{admin + "AcquireHalt", []proto.Message{&adminv1.AcquireHaltRequest{Name: fuzzDB, Ttl: ms(time.Second), Wait: ms(100 * time.Millisecond)}}}
	createWAL := seedCall{storage + "CreateFile", []proto.Message{&storagev1.CreateFileRequest{Name: fuzzDB + "-wal"}}}
	txn := &replicationv1.Transaction{Txid: st.pos.GetTxid() + 1, PreChecksum: st.pos.GetChecksum(), PostChecksum: st.pos.GetChecksum(),
		PageCount: 1, PageSize: 4096, Pages: []*replicationv1.Page{{Pgno: 1, Data: st.page1}}}
	return map[string][][]seedCall{
		admin + "ListDatabases":   one(admin+"ListDatabases", &adminv1.ListDatabasesRequest{}),
		admin + "GetDatabase":     one(admin+"GetDatabase", &adminv1.GetDatabaseRequest{Name: fuzzDB}),
		admin + "GetNode":         one(admin+"GetNode", &adminv1.GetNodeRequest{}),
		admin + "ExportDatabase":  one(admin+"ExportDatabase", &adminv1.ExportDatabaseRequest{Name: fuzzDB}),
		admin + "ImportDatabase":  one(admin+"ImportDatabase", &adminv1.ImportDatabaseRequest{Name: "new.db", Data: st.page1[:100]}, &adminv1.ImportDatabaseRequest{Data: st.page1[100:]}),
		admin + "Handoff":         one(admin+"Handoff", &adminv1.HandoffRequest{Target: "node2"}),
		admin + "WaitForPosition": one(admin+"WaitForPosition", &adminv1.WaitForPositionRequest{Name: fuzzDB, Txid: st.pos.GetTxid(), Timeout: ms(100 * time.Millisecond)}),
		admin + "AcquireHalt":     {{acquire}},
		admin + "ReleaseHalt":     {{acquire, {admin + "ReleaseHalt", []proto.Message{&adminv1.ReleaseHaltRequest{Name: fuzzDB, Id: haltIDPlaceholder}}}}},
		admin + "VerifyDatabase":  one(admin+"VerifyDatabase", &adminv1.VerifyDatabaseRequest{Name: fuzzDB, Repair: true}),

		repl + "WatchDatabases":     one(repl+"WatchDatabases", &replicationv1.WatchDatabasesRequest{Hostname: "replica1"}),
		repl + "StreamTransactions": one(repl+"StreamTransactions", &replicationv1.StreamTransactionsRequest{Name: fuzzDB, Hostname: "replica1", Position: &replicationv1.Position{}}),
		repl + "AcquireHalt":        one(repl+"AcquireHalt", &replicationv1.AcquireHaltRequest{Name: fuzzDB, Hostname: "replica1", Epoch: 1, Ttl: ms(time.Second), Wait: ms(100 * time.Millisecond)}),
		repl + "ReleaseHalt":        {{acquire, {repl + "ReleaseHalt", []proto.Message{&replicationv1.ReleaseHaltRequest{Name: fuzzDB, Id: haltIDPlaceholder}}}}},
		repl + "AcknowledgeTransactions": one(repl+"AcknowledgeTransactions",
			&replicationv1.AcknowledgeTransactionsRequest{Name: fuzzDB, Hostname: "replica1", Epoch: 1, Position: st.pos, Durable: true},
			&replicationv1.AcknowledgeTransactionsRequest{Name: fuzzDB, Hostname: "replica1", Epoch: 1, Position: st.pos}),
		repl + "ForwardTransaction": {{acquire, {repl + "ForwardTransaction", []proto.Message{&replicationv1.ForwardTransactionRequest{Name: fuzzDB, HaltId: haltIDPlaceholder, Epoch: 1, Transaction: txn}}}}},

		storage + "ListFiles":     one(storage+"ListFiles", &storagev1.ListFilesRequest{}),
		storage + "LookupFile":    one(storage+"LookupFile", &storagev1.LookupFileRequest{Name: fuzzDB}),
		storage + "CreateFile":    {{createWAL}},
		storage + "StatFile":      one(storage+"StatFile", &storagev1.StatFileRequest{FileId: st.dbID}),
		storage + "DeleteFile":    one(storage+"DeleteFile", &storagev1.DeleteFileRequest{Name: fuzzDB}),
		storage + "OpenFile":      one(storage+"OpenFile", &storagev1.OpenFileRequest{FileId: st.dbID, Write: true}),
		storage + "CloseFile":     {{{storage + "OpenFile", []proto.Message{&storagev1.OpenFileRequest{FileId: st.dbID}}}, {storage + "CloseFile", []proto.Message{&storagev1.CloseFileRequest{FileId: st.dbID}}}}},
		storage + "ReadFile":      one(storage+"ReadFile", &storagev1.ReadFileRequest{FileId: st.dbID, Length: 4096}),
		storage + "WriteFile":     {{createWAL, {storage + "WriteFile", []proto.Message{&storagev1.WriteFileRequest{FileId: st.walID, Data: st.walHdr}}}}},
		storage + "TruncateFile":  {{createWAL, {storage + "TruncateFile", []proto.Message{&storagev1.TruncateFileRequest{FileId: st.walID, Size: 32}}}}},
		storage + "SyncFile":      one(storage+"SyncFile", &storagev1.SyncFileRequest{FileId: st.dbID}),
		storage + "SyncDirectory": one(storage+"SyncDirectory", &storagev1.SyncDirectoryRequest{}),
		storage + "WatchFiles":    one(storage+"WatchFiles", &storagev1.WatchFilesRequest{}),
		storage + "HoldMount":     one(storage+"HoldMount", &storagev1.HoldMountRequest{Hostname: "app1", Pid: 42, Dir: "/litefs"}),

		health + "Check": one(health+"Check", &healthgrpc.HealthCheckRequest{}),
		health + "Watch": one(health+"Watch", &healthgrpc.HealthCheckRequest{Service: "pagewire.primary"}),
		health + "List":  one(health+"List", &healthgrpc.HealthListRequest{}),
	}
}

// rpcSeeds encodes every seed program, on every face of its methods, in
// both of a request's encodings.
func rpcSeeds(tb testing.TB, methods []rpcMethod) []rpcSeed {
	tb.Helper()
	var seeds []rpcSeed
	programs := rpcSeedPrograms(learnFuzzState(tb))
	for _, m := range methods {
		for _, prog := range programs[m.name] {
			for _, f := range m.faces {
				for _, fill := range []bool{false, true} {
					var seed rpcSeed
					for _, c := range prog {
						cf := f
						if i := methodIndex(methods, c.method); !hasFace(methods[i], f) {
							cf = methods[i].faces[0] // a call before, on another service
						}
						seed.addCall(tb, methods, c.method, cf, fill, c.msgs...)
					}
					seeds = append(seeds, seed)
				}
			}
		}
	}
	return seeds
}

func methodIndex(methods []rpcMethod, name string) int {
	return slices.IndexFunc(methods, func(m rpcMethod) bool { return m.name == name })
}

func hasFace(m rpcMethod, f face) bool { return slices.Contains(m.faces, f) }

// The fuzzer knows every RPC the node serves, on every face it serves it
// on, and has a seed for each: a new RPC or service fails here until it
// is added (rpcFaces, rpcSeedPrograms).
func TestFuzzRPC_KnowsEveryMethod(t *testing.T) {
	methods := rpcMethods(t)
	seeds := rpcSeedPrograms(learnFuzzState(t))
	for _, m := range methods {
		if len(seeds[m.name]) == 0 {
			t.Errorf("FuzzRPC has no seed for %s: add a valid request to rpcSeedPrograms", m.name)
		}
	}
	for name := range seeds {
		if methodIndex(methods, name) < 0 {
			t.Errorf("rpcSeedPrograms has a seed for %s, which no service has", name)
		}
	}
	if len(methods) > 256 {
		t.Errorf("%d methods: a program's method byte reaches 256 of them", len(methods))
	}

	// What the node serves on its sockets, by reflection.
	n := startFuzzNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		f    face
		conn *grpc.ClientConn
	}{{faceNetwork, n.network}, {faceStorageSocket, n.socket}} {
		served := listServices(ctx, t, tc.conn)
		for name, faces := range rpcFaces {
			if got, want := served[name], hasFace(rpcMethod{faces: faces}, tc.f); got != want {
				t.Errorf("%s on the %s face: served=%v, rpcFaces says %v", name, tc.f, got, want)
			}
			delete(served, name)
		}
		for name := range served {
			t.Errorf("the node serves %s on the %s face, and rpcFaces does not list it", name, tc.f)
		}
	}

	// In process, with no reflection: a method answers unless its service
	// is not registered there.
	for _, m := range methods {
		if !m.unary() {
			continue
		}
		err := n.inproc.Invoke(ctx, m.name, m.in.New().Interface(), m.out.New().Interface())
		registered := !isUnregistered(err)
		if want := hasFace(m, faceInProcess); registered != want {
			t.Errorf("%s in process: registered=%v, rpcFaces says %v (%v)", m.name, registered, want, err)
		}
	}
	n.stop(t)
}

// isUnregistered tells the in-process channel's "not registered" from a
// method's own UNIMPLEMENTED.
func isUnregistered(err error) bool {
	return status.Code(err) == codes.Unimplemented && strings.Contains(status.Convert(err).Message(), "is not registered on the in-process channel")
}

// listServices lists the services conn's server serves, but reflection.
func listServices(ctx context.Context, t *testing.T, conn *grpc.ClientConn) map[protoreflect.FullName]bool {
	t.Helper()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.CloseSend()
	out := map[protoreflect.FullName]bool{}
	for _, s := range resp.GetListServicesResponse().GetService() {
		if name := protoreflect.FullName(s.GetName()); name.Parent() != "grpc.reflection.v1" && name.Parent() != "grpc.reflection.v1alpha" {
			out[name] = true
		}
	}
	return out
}

// A request written as field values reads back as the same request, so
// that both encodings of a seed are the same seed.
func TestFiller_RoundTrip(t *testing.T) {
	methods := rpcMethods(t)
	for name, progs := range rpcSeedPrograms(learnFuzzState(t)) {
		for _, prog := range progs {
			for _, c := range prog {
				m := methods[methodIndex(methods, c.method)]
				var b []byte
				for _, msg := range c.msgs {
					b = appendFill(b, msg.ProtoReflect(), 0)
				}
				got := fillMessages(m, b, len(c.msgs))
				if len(got) != len(c.msgs) {
					t.Fatalf("%s: read %d messages, want %d", name, len(got), len(c.msgs))
				}
				for i, msg := range c.msgs {
					back := m.in.New().Interface()
					if err := proto.Unmarshal(got[i], back); err != nil || !proto.Equal(back, msg) {
						t.Fatalf("%s: message %d reads back as %v (%v), want %v", name, i, back, err, msg)
					}
				}
			}
		}
	}
}

package server_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/pagewire/pagewire/engine"
	"github.com/pagewire/pagewire/internal/safego/safegotest"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
	"github.com/pagewire/pagewire/server"
)

// FuzzRPC drives every RPC a node serves with arbitrary messages, on a
// live node: a real server.Server over a real engine.Store in a temporary
// folder, reached over a loopback TCP listener (gRPC through the port
// splitter), the storage socket and the in-process channel. Each input is
// a short program of calls (see decodeProgram): the RPC, the face it is
// called on, and the request, read from the input as its wire encoding or
// as its field values. Over a socket the request's bytes are sent as they
// are (so the server's own decoding is fuzzed too); in process they are
// decoded into the request type first.
//
// Each input passes only if no call panicked (a panic the server recovered
// is still a bug: the node's logger records it), every call ended with a
// gRPC status that is not UNKNOWN (an error left unmapped), every reply
// over a socket decodes as its type, and afterwards the node still answers
// a health check (SERVING) and GetNode, and stops cleanly.
//
// The RPCs are read from the generated service descriptors, so a new RPC
// is fuzzed without a change here; TestFuzzRPC_KnowsEveryMethod fails
// until it has a seed and the node's services are all listed in rpcFaces.
func FuzzRPC(f *testing.F) {
	methods := rpcMethods(f)
	for _, seed := range rpcSeeds(f, methods) {
		f.Add(seed.calls, seed.reqs[0], seed.reqs[1], seed.reqs[2], seed.reqs[3])
	}
	f.Fuzz(func(t *testing.T, calls, req1, req2, req3, req4 []byte) {
		prog := decodeProgram(methods, calls, [maxCalls][]byte{req1, req2, req3, req4})
		if len(prog) == 0 {
			return
		}
		n := startFuzzNode(t)
		for _, c := range prog {
			n.call(t, c)
		}
		n.checkAlive(t)
		n.stop(t)
	})
}

// face is where a node serves a service.
type face int

const (
	faceNetwork       face = iota // http.addr: the TCP port
	faceStorageSocket             // the storage socket, for a mount in another process
	faceInProcess                 // the in-process channel, for the node's own mount
)

func (f face) String() string {
	return [...]string{"network", "storage socket", "in process"}[f]
}

// rpcFaces says where a node serves each service. Reflection is left out:
// grpc-go's, not the node's.
var rpcFaces = map[protoreflect.FullName][]face{
	"pagewire.admin.v1.AdminService":             {faceNetwork, faceInProcess},
	"pagewire.replication.v1.ReplicationService": {faceNetwork},
	"pagewire.storage.v1.StorageService":         {faceStorageSocket, faceInProcess},
	"grpc.health.v1.Health":                      {faceNetwork},
}

// rpcFiles are the files of the services in rpcFaces.
var rpcFiles = []protoreflect.FileDescriptor{
	adminv1.File_pagewire_admin_v1_admin_proto,
	replicationv1.File_pagewire_replication_v1_replication_proto,
	storagev1.File_pagewire_storage_v1_storage_proto,
	healthgrpc.File_grpc_health_v1_health_proto,
}

// rpcMethod is one RPC.
type rpcMethod struct {
	name    string // "/pagewire.admin.v1.AdminService/GetNode"
	desc    protoreflect.MethodDescriptor
	in, out protoreflect.MessageType
	faces   []face
}

func (m rpcMethod) unary() bool { return !m.desc.IsStreamingClient() && !m.desc.IsStreamingServer() }

// rpcMethods lists every method of rpcFiles' services, by name.
func rpcMethods(tb testing.TB) []rpcMethod {
	tb.Helper()
	var out []rpcMethod
	for _, fd := range rpcFiles {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			faces := rpcFaces[sd.FullName()]
			if len(faces) == 0 {
				tb.Fatalf("rpcFaces does not say where %s is served", sd.FullName())
			}
			for j := range sd.Methods().Len() {
				md := sd.Methods().Get(j)
				in, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
				if err != nil {
					tb.Fatal(err)
				}
				out2, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
				if err != nil {
					tb.Fatal(err)
				}
				out = append(out, rpcMethod{name: fmt.Sprintf("/%s/%s", sd.FullName(), md.Name()), desc: md, in: in, out: out2, faces: faces})
			}
		}
	}
	slices.SortFunc(out, func(a, b rpcMethod) int { return strings.Compare(a.name, b.name) })
	return out
}

// A program is at most maxCalls calls, encoded as the fuzz function's
// arguments: calls holds three bytes per call,
//
//	method (an index into rpcMethods, modulo their number)
//	face   (an index into the method's faces, modulo their number)
//	mode   (bit 7: how reqs[i] is read; a client stream sends
//	        1 + (mode&0x7f)%maxStreamMsgs messages)
//
// and call i's request is reqs[i], each its own argument so that the
// fuzzer can grow and shrink it freely. reqs[i] is read in one of two
// ways:
//
//   - bit 7 clear: as the request's wire encoding, whatever it holds (a
//     client stream's messages are framed: uvarint length, then the
//     message; the last takes what is left);
//   - bit 7 set: as the request's field values, one after another (see
//     filler): the fuzzer's byte mutations then reach values that rarely
//     come out of mutating an encoding, such as a 9-byte varint.
const (
	maxCalls      = 4
	maxStreamMsgs = 8
)

// rpcCall is one call of a program.
type rpcCall struct {
	m    rpcMethod
	face face
	msgs [][]byte // the request; several for a client stream
}

func decodeProgram(methods []rpcMethod, calls []byte, reqs [maxCalls][]byte) []rpcCall {
	var prog []rpcCall
	for i := 0; i < maxCalls && len(calls) >= 3*(i+1); i++ {
		b := calls[3*i:]
		m := methods[int(b[0])%len(methods)]
		c := rpcCall{m: m, face: m.faces[int(b[1])%len(m.faces)], msgs: [][]byte{reqs[i]}}
		count := 1
		if m.desc.IsStreamingClient() {
			count += int(b[2]&0x7f) % maxStreamMsgs
		}
		switch {
		case b[2]&0x80 != 0:
			c.msgs = fillMessages(m, reqs[i], count)
		case count > 1:
			c.msgs = splitMessages(reqs[i], count)
		}
		prog = append(prog, c)
	}
	return prog
}

// splitMessages splits b into count length-prefixed messages; the last one,
// or one whose length is cut short, takes what is left.
func splitMessages(b []byte, count int) [][]byte {
	var msgs [][]byte
	for len(msgs) < count-1 {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			break
		}
		msgs = append(msgs, b[n:n+int(l)])
		b = b[n+int(l):]
	}
	return append(msgs, b)
}

// rpcSeed is a program, as the fuzz function's arguments.
type rpcSeed struct {
	calls []byte
	reqs  [maxCalls][]byte
}

// addCall appends a call to a seed program, its request encoded (fill
// false) or as field values (fill true).
func (s *rpcSeed) addCall(tb testing.TB, methods []rpcMethod, name string, f face, fill bool, msgs ...proto.Message) {
	tb.Helper()
	i := slices.IndexFunc(methods, func(m rpcMethod) bool { return m.name == name })
	if i < 0 || i > 255 {
		tb.Fatalf("seed for %s: no such method among the first 256", name)
	}
	fi := slices.Index(methods[i].faces, f)
	if fi < 0 {
		tb.Fatalf("seed for %s: it is not served on the %s face", name, f)
	}
	n := len(s.calls) / 3
	if n == maxCalls {
		tb.Fatalf("seed for %s: a program has at most %d calls", name, maxCalls)
	}
	mode := byte(len(msgs) - 1)
	if fill {
		mode |= 0x80
	}
	s.calls = append(s.calls, byte(i), byte(fi), mode)
	var req []byte
	for j, m := range msgs {
		if fill {
			req = appendFill(req, m.ProtoReflect(), 0)
			continue
		}
		b, err := proto.Marshal(m)
		if err != nil {
			tb.Fatal(err)
		}
		if j < len(msgs)-1 {
			req = binary.AppendUvarint(req, uint64(len(b)))
		}
		req = append(req, b...)
	}
	s.reqs[n] = req
}

// filler reads a message's field values from bytes: for each field in
// order, a byte that leaves it unset (0) or sets it (a repeated field gets
// that many elements, modulo 8), then its value: 8 bytes for a 64-bit
// number, 4 for a 32-bit one, 1 for a bool, a uvarint length and the
// bytes for strings and bytes, the fields of a message in turn (to
// maxFillDepth). Past the end, every byte reads as 0. appendFill writes
// what fill reads.
type filler struct{ b []byte }

const maxFillDepth = 4

// fillMessages reads count messages of m's request type from b, encoded.
func fillMessages(m rpcMethod, b []byte, count int) [][]byte {
	f := &filler{b: b}
	var msgs [][]byte
	for range count {
		msg := m.in.New()
		f.fill(msg, 0)
		out, err := proto.Marshal(msg.Interface())
		if err != nil {
			continue
		}
		msgs = append(msgs, out)
	}
	return msgs
}

func (f *filler) next(n int) []byte {
	out := make([]byte, n)
	copy(out, f.b)
	f.b = f.b[min(n, len(f.b)):]
	return out
}

func (f *filler) fill(m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		set := f.next(1)[0]
		switch {
		case set == 0 || fd.IsMap():
		case fd.IsList():
			list := m.Mutable(fd).List()
			for range int(set) % 8 {
				if fd.Kind() == protoreflect.MessageKind {
					if depth < maxFillDepth {
						e := list.NewElement()
						f.fill(e.Message(), depth+1)
						list.Append(e)
					}
					continue
				}
				list.Append(f.scalar(fd))
			}
		case fd.Kind() == protoreflect.MessageKind:
			if depth < maxFillDepth {
				f.fill(m.Mutable(fd).Message(), depth+1)
			}
		case fd.ContainingOneof() != nil && m.WhichOneof(fd.ContainingOneof()) != nil:
			f.scalar(fd) // one field of a oneof is set already
		default:
			m.Set(fd, f.scalar(fd))
		}
	}
}

func (f *filler) scalar(fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(f.next(1)[0]&1 == 1)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(int32(binary.BigEndian.Uint32(f.next(4)))))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(binary.BigEndian.Uint32(f.next(4))))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(binary.BigEndian.Uint32(f.next(4)))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(binary.BigEndian.Uint64(f.next(8))))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(binary.BigEndian.Uint64(f.next(8)))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(math.Float32frombits(binary.BigEndian.Uint32(f.next(4))))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(math.Float64frombits(binary.BigEndian.Uint64(f.next(8))))
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(strings.ToValidUTF8(string(f.lengthPrefixed()), ""))
	default: // bytes
		return protoreflect.ValueOfBytes(f.lengthPrefixed())
	}
}

func (f *filler) lengthPrefixed() []byte {
	l, n := binary.Uvarint(f.b)
	if n <= 0 {
		f.b = nil
		return nil
	}
	f.b = f.b[n:]
	return f.next(int(min(l, uint64(len(f.b)))))
}

// appendFill appends m's field values as filler reads them.
func appendFill(b []byte, m protoreflect.Message, depth int) []byte {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch {
		case !m.Has(fd) || fd.IsMap() || (fd.Kind() == protoreflect.MessageKind && depth >= maxFillDepth):
			b = append(b, 0)
		case fd.IsList():
			list := m.Get(fd).List()
			b = append(b, byte(min(list.Len(), 7)))
			for j := range min(list.Len(), 7) {
				if fd.Kind() == protoreflect.MessageKind {
					b = appendFill(b, list.Get(j).Message(), depth+1)
				} else {
					b = appendScalar(b, fd, list.Get(j))
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			b = appendFill(append(b, 1), m.Get(fd).Message(), depth+1)
		default:
			b = appendScalar(append(b, 1), fd, m.Get(fd))
		}
	}
	return b
}

func appendScalar(b []byte, fd protoreflect.FieldDescriptor, v protoreflect.Value) []byte {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		if v.Bool() {
			return append(b, 1)
		}
		return append(b, 0)
	case protoreflect.EnumKind:
		return binary.BigEndian.AppendUint32(b, uint32(v.Enum()))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return binary.BigEndian.AppendUint32(b, uint32(v.Int()))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return binary.BigEndian.AppendUint32(b, uint32(v.Uint()))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return binary.BigEndian.AppendUint64(b, uint64(v.Int()))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return binary.BigEndian.AppendUint64(b, v.Uint())
	case protoreflect.FloatKind:
		return binary.BigEndian.AppendUint32(b, math.Float32bits(float32(v.Float())))
	case protoreflect.DoubleKind:
		return binary.BigEndian.AppendUint64(b, math.Float64bits(v.Float()))
	case protoreflect.StringKind:
		return append(binary.AppendUvarint(b, uint64(len(v.String()))), v.String()...)
	default:
		return append(binary.AppendUvarint(b, uint64(len(v.Bytes()))), v.Bytes()...)
	}
}

// haltIDPlaceholder in any string field of a request is replaced by the id
// of the last halt lock a call of the same program was granted: the
// fuzzer cannot guess a random id, and the calls that take one check it
// before anything else.
const haltIDPlaceholder = "$halt"

// fuzzCallTimeout bounds each call; fuzzStreamGrace is how long a stream
// may go on after its first reply (live streams never end by themselves).
const (
	fuzzCallTimeout = 300 * time.Millisecond
	fuzzStreamGrace = 20 * time.Millisecond
)

// fuzzNode is a live node for one input.
type fuzzNode struct {
	srv     *server.Server
	rec     *safegotest.Recorder
	network *grpc.ClientConn
	socket  *grpc.ClientConn
	inproc  grpc.ClientConnInterface
	haltID  string // the last halt lock granted
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

// fuzzDB is the database every node starts with.
const fuzzDB = "app.db"

func startFuzzNode(t testing.TB) *fuzzNode {
	t.Helper()
	rec := safegotest.NewRecorder()
	dir := t.TempDir()
	scfg := engine.DefaultStoreConfig()
	scfg.Dir, scfg.Logger = filepath.Join(dir, "data"), rec.Logger()
	store, err := engine.OpenStore(scfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.CreateDatabase(fuzzDB, 4096); err != nil {
		t.Fatal(err)
	}

	// A unix socket path must be short: t.TempDir's may not be.
	sockDir, err := os.MkdirTemp("", "pwfuzz")
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultConfig()
	cfg.Store, cfg.Listener, cfg.Logger = store, lis, rec.Logger()
	cfg.Node = server.NodeInfo{Hostname: "node1", AdvertiseURL: "http://" + lis.Addr().String()}
	cfg.StorageSocket = filepath.Join(sockDir, "s.sock")
	cfg.ShutdownTimeout, cfg.Heartbeat = 2*time.Second, 10*time.Millisecond
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &fuzzNode{srv: srv, rec: rec, inproc: srv.Conn(), cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		if !n.stopped {
			cancel()
			<-n.done
		}
		store.Close()
		os.RemoveAll(sockDir)
	})
	srv.SetReady(true)

	// Clients; the socket is there once Run has started.
	if n.network, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.network.Close() })
	// The socket's file is there from bind, before listen: wait until it
	// takes connections (a refused one would cost gRPC a second's backoff).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if c, err := net.Dial("unix", cfg.StorageSocket); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the storage socket never took connections")
		}
	}
	if n.socket, err = grpc.NewClient("unix://"+cfg.StorageSocket, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.socket.Close() })
	return n
}

// call makes one call and checks how it ended.
func (n *fuzzNode) call(t *testing.T, c rpcCall) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fuzzCallTimeout)
	defer cancel()

	// Requests: as they are, unless the halt id goes in.
	msgs := make([][]byte, len(c.msgs))
	for i, b := range c.msgs {
		msgs[i] = n.withHaltID(c.m, b)
	}

	var err error
	switch c.face {
	case faceNetwork, faceStorageSocket:
		conn := n.network
		if c.face == faceStorageSocket {
			conn = n.socket
		}
		err = n.callRaw(ctx, cancel, conn, c.m, msgs)
	case faceInProcess:
		err = n.callInProcess(ctx, cancel, c.m, msgs)
	}
	what := fmt.Sprintf("%s on the %s face", c.m.name, c.face)
	t.Logf("%s: %v", what, err)
	if err == nil {
		return
	}
	var bad errBadReply
	if errors.As(err, &bad) {
		t.Fatalf("%s: %v", what, bad.error)
	}
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("%s: error %v (%T) is not a gRPC status", what, err, err)
	}
	if st.Code() == codes.Unknown {
		t.Fatalf("%s: UNKNOWN: %q: an error left unmapped to a status", what, st.Message())
	}
}

// withHaltID replaces haltIDPlaceholder in b's string fields, if b
// decodes as the method's request; else it returns b as it is.
func (n *fuzzNode) withHaltID(m rpcMethod, b []byte) []byte {
	req := m.in.New()
	if proto.Unmarshal(b, req.Interface()) != nil || !replaceString(req, haltIDPlaceholder, n.haltID) {
		return b
	}
	out, err := proto.Marshal(req.Interface())
	if err != nil {
		return b
	}
	return out
}

// replaceString replaces old with new in every singular string field of m
// and its messages, and reports whether it replaced any.
func replaceString(m protoreflect.Message, old, new string) bool {
	replaced := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() || fd.IsMap():
		case fd.Kind() == protoreflect.StringKind && v.String() == old:
			m.Set(fd, protoreflect.ValueOfString(new))
			replaced = true
		case fd.Kind() == protoreflect.MessageKind:
			replaced = replaceString(v.Message(), old, new) || replaced
		}
		return true
	})
	return replaced
}

// noteReply remembers what later calls may use from a reply.
func (n *fuzzNode) noteReply(reply proto.Message) {
	switch r := reply.(type) {
	case *adminv1.AcquireHaltResponse:
		n.haltID = r.GetLock().GetId()
	case *replicationv1.AcquireHaltResponse:
		n.haltID = r.GetLock().GetId()
	}
}

// callRaw calls m over a real connection with the request bytes as they
// are. A reply must decode as m's reply type.
func (n *fuzzNode) callRaw(ctx context.Context, cancel context.CancelFunc, conn *grpc.ClientConn, m rpcMethod, msgs [][]byte) error {
	raw := grpc.ForceCodecV2(rawCodec{})
	decode := func(b []byte) error {
		reply := m.out.New().Interface()
		if err := proto.Unmarshal(b, reply); err != nil {
			return fmt.Errorf("the reply does not decode as %s: %w", m.out.Descriptor().FullName(), err)
		}
		n.noteReply(reply)
		return nil
	}
	if m.unary() {
		var reply []byte
		if err := conn.Invoke(ctx, m.name, &msgs[0], &reply, raw); err != nil {
			return err
		}
		return decodeOrFail(decode(reply))
	}
	return n.stream(ctx, cancel, conn, m, msgs, []grpc.CallOption{raw},
		func(i int) any { return &msgs[i] },
		func() (any, func() error) { var b []byte; return &b, func() error { return decode(b) } })
}

// callInProcess calls m on the in-process channel; a request that does
// not decode as m's request type cannot be sent there, and is skipped.
func (n *fuzzNode) callInProcess(ctx context.Context, cancel context.CancelFunc, m rpcMethod, msgs [][]byte) error {
	reqs := make([]proto.Message, len(msgs))
	for i, b := range msgs {
		reqs[i] = m.in.New().Interface()
		if proto.Unmarshal(b, reqs[i]) != nil {
			return nil
		}
	}
	if m.unary() {
		reply := m.out.New().Interface()
		if err := n.inproc.Invoke(ctx, m.name, reqs[0], reply); err != nil {
			return err
		}
		n.noteReply(reply)
		return nil
	}
	return n.stream(ctx, cancel, n.inproc, m, msgs, nil,
		func(i int) any { return reqs[i] },
		func() (any, func() error) {
			reply := m.out.New().Interface()
			return reply, func() error { n.noteReply(reply); return nil }
		})
}

// stream runs a streaming call: it sends the requests, closes its side and
// receives up to 4 replies, for fuzzStreamGrace after the first.
func (n *fuzzNode) stream(ctx context.Context, cancel context.CancelFunc, conn grpc.ClientConnInterface, m rpcMethod, msgs [][]byte, opts []grpc.CallOption,
	req func(i int) any, newReply func() (any, func() error)) error {
	desc := &grpc.StreamDesc{StreamName: string(m.desc.Name()), ServerStreams: m.desc.IsStreamingServer(), ClientStreams: m.desc.IsStreamingClient()}
	cs, err := conn.NewStream(ctx, desc, m.name, opts...)
	if err != nil {
		return err
	}
	for i := range msgs {
		if cs.SendMsg(req(i)) != nil {
			break // the error comes from RecvMsg
		}
	}
	if err := cs.CloseSend(); err != nil {
		return err
	}
	for i := range 4 {
		reply, check := newReply()
		err := cs.RecvMsg(reply)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := check(); err != nil {
			return decodeOrFail(err)
		}
		if i == 0 {
			time.AfterFunc(fuzzStreamGrace, cancel)
		}
	}
	cancel()
	return nil
}

// errBadReply marks a reply that does not decode: not a status, so call
// fails the input.
type errBadReply struct{ error }

func decodeOrFail(err error) error {
	if err == nil {
		return nil
	}
	return errBadReply{err}
}

// checkAlive fails the input unless the node answers a health check with
// SERVING and GetNode, over the network.
func (n *fuzzNode) checkAlive(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthgrpc.NewHealthClient(n.network).Check(ctx, &healthgrpc.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthgrpc.HealthCheckResponse_SERVING {
		t.Fatalf("after the calls, health: %v %v, want SERVING", resp.GetStatus(), err)
	}
	node, err := adminv1.NewAdminServiceClient(n.network).GetNode(ctx, &adminv1.GetNodeRequest{})
	if err != nil || node.GetHostname() != "node1" {
		t.Fatalf("after the calls, GetNode: %v %v", node, err)
	}
}

// stop stops the node: Run must return nil, and nothing may have panicked.
func (n *fuzzNode) stop(t *testing.T) {
	t.Helper()
	n.cancel()
	err := <-n.done
	n.stopped = true
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if panics := n.rec.Panics(); len(panics) > 0 {
		p := panics[0]
		t.Fatalf("%d panics were recovered; the first, in %s: %s\n%s", len(panics), p.Task, p.Value, p.Stack)
	}
}

// rawCodec sends and receives messages as the bytes they are: the fuzzer
// sends bytes that are no valid message too. Its name is the proto
// codec's, so that the server decodes them as it decodes any request.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

package server_test

import (
	"context"
	"encoding/binary"
	"hash/crc64"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/engine"
	"github.com/pagewire/pagewire/internal/wire"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
	"github.com/pagewire/pagewire/server"
	"github.com/pagewire/pagewire/wal"
)

// Hostile requests over a real gRPC connection: messages over their
// method's limit, imports that are no database or too big, forwarded
// transactions that claim pages they do not hold. Each is refused with a
// clear code and changes nothing.

// sqliteFile is a SQLite database file of n 4096-byte pages whose header
// says count pages (trusted: its version-valid-for equals its change
// counter).
func sqliteFile(n int, count uint32) []byte {
	b := make([]byte, n*4096)
	copy(b, "SQLite format 3\x00")
	binary.BigEndian.PutUint16(b[16:], 4096)
	b[18], b[19], b[21], b[22], b[23] = 1, 1, 64, 32, 32
	binary.BigEndian.PutUint32(b[24:], 1)
	binary.BigEndian.PutUint32(b[28:], count)
	binary.BigEndian.PutUint32(b[92:], 1)
	b[100] = 0x0d
	return b
}

// unchanged checks that db is at pos, and that its content matches it.
func unchanged(t *testing.T, store *engine.Store, db string, pos pagewire.Pos) {
	t.Helper()
	if got, _ := store.Position(db); got != pos {
		t.Fatalf("%s moved from %s to %s", db, pos, got)
	}
	if r, err := store.Verify(db, false); err != nil || !r.OK() {
		t.Fatalf("verify %s: %v, %v", db, r, err)
	}
}

// importDB sends file to ImportDatabase in chunks of chunk bytes.
func importDB(ctx context.Context, admin adminv1.AdminServiceClient, name string, file []byte, chunk int) error {
	stream, err := admin.ImportDatabase(ctx)
	if err != nil {
		return err
	}
	for off := 0; off == 0 || off < len(file); off += chunk {
		msg := &adminv1.ImportDatabaseRequest{Data: file[off:min(off+chunk, len(file))]}
		if off == 0 {
			msg.Name = name
		}
		if err := stream.Send(msg); err != nil {
			break // the server's answer comes from CloseAndRecv
		}
	}
	_, err = stream.CloseAndRecv()
	return err
}

func TestServer_MessagesOverTheirMethodsLimitAreRefused(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "storage.sock")
	conn, _, store := startServerWith(t, func(c *server.Config) { c.StorageSocket = sock })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := store.Create("app.db", engine.App); err != nil {
		t.Fatal(err)
	}
	if err := commitTestTransaction(store, "app.db"); err != nil {
		t.Fatal(err)
	}
	pos, _ := store.Position("app.db")
	admin := adminv1.NewAdminServiceClient(conn)
	refused := func(t *testing.T, err error, method string) {
		t.Helper()
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), method) || !strings.Contains(err.Error(), "this method takes") {
			t.Fatalf("%v, want RESOURCE_EXHAUSTED naming %s and its limit", err, method)
		}
	}

	t.Run("a unary call's request", func(t *testing.T) {
		_, err := admin.AcquireHalt(ctx, &adminv1.AcquireHaltRequest{Name: strings.Repeat("a", 100<<10), Ttl: durationpb.New(time.Second)})
		refused(t, err, "AcquireHalt")
	})
	t.Run("unknown fields count", func(t *testing.T) {
		req := &adminv1.GetNodeRequest{}
		req.ProtoReflect().SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, 99, protowire.BytesType), make([]byte, 100<<10)))
		_, err := admin.GetNode(ctx, req)
		refused(t, err, "GetNode")
	})
	t.Run("an import chunk", func(t *testing.T) {
		file := sqliteFile(1500, 1500) // 6 MiB
		err := importDB(ctx, admin, "app.db", file, len(file))
		refused(t, err, "ImportDatabase")
		err = importDB(ctx, admin, "app.db", file, 1<<20) // as pagewire import sends it
		if err != nil {
			t.Fatalf("the same file in 1 MiB chunks: %v", err)
		}
		pos, _ = store.Position("app.db")
	})
	t.Run("a stream of a method not listed", func(t *testing.T) {
		s, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(&reflectionpb.ServerReflectionRequest{Host: strings.Repeat("h", 100<<10)}); err != nil {
			t.Fatal(err)
		}
		_, err = s.Recv()
		refused(t, err, "ServerReflectionInfo")
	})
	t.Run("a write on the storage socket", func(t *testing.T) {
		storage := storageSocketAt(t, sock)
		fi, err := storage.LookupFile(ctx, &storagev1.LookupFileRequest{Name: "app.db"})
		if err != nil {
			t.Fatal(err)
		}
		_, err = storage.WriteFile(ctx, &storagev1.WriteFileRequest{FileId: fi.GetFile().GetFileId(), Data: make([]byte, 5<<20)})
		refused(t, err, "WriteFile")
	})
	unchanged(t, store, "app.db", pos)
}

// storageSocketAt is a StorageService client over the socket at sock.
func storageSocketAt(t *testing.T, sock string) storagev1.StorageServiceClient {
	t.Helper()
	waitFor(t, func() bool { _, err := os.Stat(sock); return err == nil })
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return storagev1.NewStorageServiceClient(conn)
}

func TestServer_ImportOfNoDatabaseOrTooBigIsRefused(t *testing.T) {
	cfg := storeConfig(t.TempDir())
	cfg.MaxImportSize = 4 * 4096
	store, err := engine.OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	conn, _, _ := startServerWith(t, func(c *server.Config) { c.Store = store })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := store.Create("app.db", engine.App); err != nil {
		t.Fatal(err)
	}
	if err := commitTestTransaction(store, "app.db"); err != nil {
		t.Fatal(err)
	}
	pos, _ := store.Position("app.db")
	admin := adminv1.NewAdminServiceClient(conn)

	for name, tc := range map[string]struct {
		file []byte
		want string
	}{
		"100 bytes claiming 2^32-1 pages": {sqliteFile(1, 0xFFFFFFFF)[:100], "not a whole number of its 4096-byte pages"},
		"a page claiming 2^32-1 pages":    {sqliteFile(1, 0xFFFFFFFF), "the header says the database has 4294967295 pages"},
		"truncated":                       {sqliteFile(2, 3), "but the file holds 2"},
		"over data.max-import-size":       {sqliteFile(5, 5), "raise data.max-import-size"},
	} {
		t.Run(name, func(t *testing.T) {
			for _, db := range []string{"app.db", "new.db"} {
				err := importDB(ctx, admin, db, tc.file, 1<<20)
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("import into %s: %v, want INVALID_ARGUMENT saying %q", db, err, tc.want)
				}
			}
			unchanged(t, store, "app.db", pos)
			if _, ok := store.Position("new.db"); ok {
				t.Fatal("a refused import created new.db")
			}
		})
	}
}

// checksum is the LTX checksum of pages (pgno → content) over pre, the
// database's checksum before them, where each page was absent before.
func checksumWith(pre uint64, pages map[uint32][]byte) uint64 {
	table := crc64.MakeTable(crc64.ISO)
	sum := pre &^ (1 << 63)
	for pgno, data := range pages {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], pgno)
		sum ^= crc64.Update(crc64.Update(0, table, b[:]), table, data) | 1<<63
	}
	return sum | 1<<63
}

// walAppender is the primary's held WAL writer in these tests: it appends
// a forwarded transaction's frames to the store's WAL as the node's apply
// worker does through the mount, and counts the transactions it is given.
type walAppender struct {
	store *engine.Store
	db    string

	mu      sync.Mutex
	applied int
	walID   uint64
	enc     wal.Encoder
	next    uint32
}

var _ engine.HeldWriter = (*walAppender)(nil)

func (w *walAppender) Apply(_ context.Context, pageCount uint32, pages []pagewire.Page, _ bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.applied++
	if w.walID == 0 {
		fi, err := w.store.Create(w.db+"-wal", engine.Applier)
		if err != nil {
			return err
		}
		h := wal.Header{PageSize: 4096, Salt: wal.Salt{41, 42}}
		if _, _, err := w.store.WriteAt(fi.ID, h.AppendTo(nil), 0, engine.Applier); err != nil {
			return err
		}
		w.walID, w.enc, w.next = fi.ID, h.Encoder(), 1
	}
	for i, p := range pages {
		var commit uint32
		if i == len(pages)-1 {
			commit = pageCount
		}
		if _, _, err := w.store.WriteAt(w.walID, w.enc.AppendFrame(nil, p.Pgno, commit, p.Data), wal.FrameOffset(w.next, 4096), engine.Applier); err != nil {
			return err
		}
		w.next++
	}
	return nil
}

func (w *walAppender) Release(context.Context) error { return nil }

func (w *walAppender) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.applied
}

// A halt lock's holder's forwarded transaction is checked before anything
// is allocated for it or applied: a count of 2^32-1 pages, pages past the
// count, repeated or out of order, of the wrong size, or a count its pages
// cannot account for are INVALID_ARGUMENT, and the primary's writer never
// sees them.
func TestReplicationService_ForwardRefusesMalformedTransactions(t *testing.T) {
	var held *walAppender
	conn, _, store := startServerWith(t, func(c *server.Config) {
		c.HoldWriter = func(_ context.Context, db string, _ time.Duration) (engine.HeldWriter, error) {
			held = &walAppender{store: c.Store, db: db}
			return held, nil
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := store.Create("app.db", engine.App); err != nil {
		t.Fatal(err)
	}
	rc := replicationv1.NewReplicationServiceClient(conn)
	lock, err := rc.AcquireHalt(ctx, &replicationv1.AcquireHaltRequest{Name: "app.db", Hostname: "r1", Ttl: durationpb.New(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	pos, _ := store.Position("app.db") // one page
	page := func(pgno uint32, size int) *replicationv1.Page {
		return &replicationv1.Page{Pgno: pgno, Data: make([]byte, size)}
	}
	forward := func(count uint32, pageSize uint32, pages ...*replicationv1.Page) (*replicationv1.ForwardTransactionResponse, error) {
		return rc.ForwardTransaction(ctx, &replicationv1.ForwardTransactionRequest{Name: "app.db", HaltId: lock.GetLock().GetId(),
			Transaction: &replicationv1.Transaction{Txid: uint64(pos.TXID) + 1, PreChecksum: pos.Checksum, PostChecksum: 1,
				PageSize: pageSize, PageCount: count, Pages: pages}})
	}
	many := make([]*replicationv1.Page, 1200) // 4.7 MiB: over any small method's limit, within this one's
	for i := range many {
		many[i] = page(uint32(i+1), 4096)
	}

	for name, tc := range map[string]struct {
		count, pageSize uint32
		pages           []*replicationv1.Page
	}{
		"2^32-1 pages":               {0xFFFFFFFF, 4096, []*replicationv1.Page{page(1, 4096)}},
		"SQLite's most pages":        {pagewire.MaxPageCount, 4096, []*replicationv1.Page{page(2, 4096)}},
		"two pages more than sent":   {4, 4096, []*replicationv1.Page{page(2, 4096)}},
		"1200 pages claiming 1202":   {1202, 4096, many},
		"a page past the count":      {2, 4096, []*replicationv1.Page{page(3, 4096)}},
		"a page twice":               {2, 4096, []*replicationv1.Page{page(2, 4096), page(2, 4096)}},
		"pages out of order":         {3, 4096, []*replicationv1.Page{page(3, 4096), page(2, 4096)}},
		"page 0":                     {1, 4096, []*replicationv1.Page{page(0, 4096)}},
		"a short page":               {2, 4096, []*replicationv1.Page{page(2, 100)}},
		"another database's pages":   {2, 512, []*replicationv1.Page{page(2, 512)}},
		"a page size SQLite has not": {2, 1000, []*replicationv1.Page{page(2, 1000)}},
		"no pages":                   {1, 4096, nil},
		"a database of 0 pages":      {0, 4096, []*replicationv1.Page{page(1, 4096)}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := forward(tc.count, tc.pageSize, tc.pages...)
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("%v, want INVALID_ARGUMENT", err)
			}
			if n := held.count(); n != 0 {
				t.Fatalf("the primary's writer was given %d transactions", n)
			}
			unchanged(t, store, "app.db", pos)
		})
	}

	// A transaction that adds the page it sends commits.
	p2 := make([]byte, 4096)
	p2[0] = 7
	post := checksumWith(pos.Checksum, map[uint32][]byte{2: p2})
	resp, err := rc.ForwardTransaction(ctx, &replicationv1.ForwardTransactionRequest{Name: "app.db", HaltId: lock.GetLock().GetId(),
		Transaction: &replicationv1.Transaction{Txid: uint64(pos.TXID) + 1, PreChecksum: pos.Checksum, PostChecksum: post,
			PageSize: 4096, PageCount: 2, Pages: []*replicationv1.Page{{Pgno: 2, Data: p2}}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := wire.PosFromProto(resp.GetPosition()); got.TXID != pos.TXID+1 || got.Checksum != post {
		t.Fatalf("forwarded transaction at %s, want %s/%016x", got, pos.TXID+1, post)
	}
}

package server_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/pagewire/pagewire"
	client "github.com/pagewire/pagewire/clients/go"
	"github.com/pagewire/pagewire/engine"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
	"github.com/pagewire/pagewire/server"
)

// startServer runs a real server.New over bufconn and returns a client
// connection to it, plus the store.
func startServer(t *testing.T) (*grpc.ClientConn, *server.Server, *engine.Store) {
	t.Helper()
	return startServerWith(t, nil)
}

// startServerWith is startServer with the config changed by edit first.
func startServerWith(t *testing.T, edit func(*server.Config)) (*grpc.ClientConn, *server.Server, *engine.Store) {
	t.Helper()
	lis, srv, store := startServerOn(t, edit)
	return dialBufconn(t, lis), srv, store
}

// dialBufconn returns a client connection to a server on lis, with opts.
// Cleanup closes it before the server stops.
func dialBufconn(t *testing.T, lis *bufconn.Listener, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///bufnet", append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// startServerOn runs a real server.New, its config changed by edit, over
// bufconn, and returns the listener, the server and its store.
func startServerOn(t *testing.T, edit func(*server.Config)) (*bufconn.Listener, *server.Server, *engine.Store) {
	t.Helper()
	store, err := engine.OpenStore(storeConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	cfg := server.DefaultConfig()
	cfg.Store, cfg.Listener, cfg.Node = store, lis, server.NodeInfo{Hostname: "node1", AdvertiseURL: "http://node1:20202"}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		store.Close()
	})
	return lis, srv, store
}

// storageSocket starts a server that serves StorageService on a unix
// socket, as a node does for a mount in another process, and returns a
// StorageService client over that socket.
func storageSocket(t *testing.T) (storagev1.StorageServiceClient, *grpc.ClientConn, *engine.Store) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "storage.sock")
	conn, _, store := startServerWith(t, func(c *server.Config) { c.StorageSocket = sock })
	return storagev1.NewStorageServiceClient(dialSocket(t, sock)), conn, store
}

// dialSocket waits for the storage socket sock and returns a connection
// to it. Cleanup closes it before the server stops.
func dialSocket(t *testing.T, sock string) *grpc.ClientConn {
	t.Helper()
	waitFor(t, func() bool { _, err := os.Stat(sock); return err == nil })
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// waitFor polls f for up to 10 s.
func waitFor(t *testing.T, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !f(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}

// A storage socket path as long as a unix socket path may be (107 bytes)
// is served.
func TestServer_StorageSocketAtTheLongestPath(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, strings.Repeat("d", 107-len(dir)-len("/")-len("/storage.sock")), "storage.sock")
	if len(sock) != 107 {
		t.Fatalf("test setup: the path is %d bytes", len(sock))
	}
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	startServerWith(t, func(c *server.Config) { c.StorageSocket = sock })
	waitFor(t, func() bool { _, err := os.Stat(sock); return err == nil })
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := storagev1.NewStorageServiceClient(conn).ListFiles(context.Background(), &storagev1.ListFilesRequest{}); err != nil {
		t.Fatalf("ListFiles on a 107-byte socket path: %v", err)
	}
}

func TestServer_StorageServiceIsNotOnTheListener(t *testing.T) {
	storage, conn, _ := storageSocket(t)
	ctx := context.Background()
	if _, err := storage.CreateFile(ctx, &storagev1.CreateFileRequest{Name: "app.db"}); err != nil {
		t.Fatalf("CreateFile on the storage socket: %v", err)
	}
	_, err := storagev1.NewStorageServiceClient(conn).DeleteFile(ctx, &storagev1.DeleteFileRequest{Name: "app.db"})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("DeleteFile on the listener: %v, want Unimplemented", err)
	}
	if _, err := storage.LookupFile(ctx, &storagev1.LookupFileRequest{Name: "app.db"}); err != nil {
		t.Fatalf("app.db after a DeleteFile on the listener: %v", err)
	}
}

func TestServer_ReadOnlyErrorCrossesTheWire(t *testing.T) {
	storage, _, store := storageSocket(t)
	ctx := context.Background()
	created, err := storage.CreateFile(ctx, &storagev1.CreateFileRequest{Name: "app.db"})
	if err != nil {
		t.Fatal(err)
	}
	store.SetRole(pagewire.RoleReplica, pagewire.ReadOnlyError{Primary: "node2", AdvertiseURL: "http://[fdaa::2]:20202"}, 1)
	_, err = storage.WriteFile(ctx, &storagev1.WriteFileRequest{FileId: created.GetFile().GetFileId(), Offset: 200, Data: []byte{1}})
	err = client.Error(err)
	var ro *pagewire.ReadOnlyError
	if !errors.As(err, &ro) {
		t.Fatalf("err=%v (%T), want a ReadOnlyError", err, err)
	}
	if ro.Primary != "node2" || ro.AdvertiseURL != "http://[fdaa::2]:20202" || !errors.Is(err, pagewire.ErrReadOnly) {
		t.Fatalf("got %+v", ro)
	}
}

func TestServer_ErrorsMapBack(t *testing.T) {
	storage, conn, _ := storageSocket(t)
	ctx := context.Background()
	admin := adminv1.NewAdminServiceClient(conn)
	for _, tc := range []struct {
		name string
		call func() error
		want error
	}{
		{"lookup missing", func() error {
			_, err := storage.LookupFile(ctx, &storagev1.LookupFileRequest{Name: "nosuch.db"})
			return err
		}, pagewire.ErrNotFound},
		{"bad name", func() error {
			_, err := storage.CreateFile(ctx, &storagev1.CreateFileRequest{Name: ".x"})
			return err
		}, pagewire.ErrInvalidName},
		{"journal", func() error {
			storage.CreateFile(ctx, &storagev1.CreateFileRequest{Name: "a.db"})
			_, err := storage.CreateFile(ctx, &storagev1.CreateFileRequest{Name: "a.db-journal"})
			return err
		}, pagewire.ErrNotWAL},
		{"stale id", func() error {
			_, err := storage.ReadFile(ctx, &storagev1.ReadFileRequest{FileId: 9999, Length: 10})
			return err
		}, pagewire.ErrStale},
		{"oversized read", func() error {
			_, err := storage.ReadFile(ctx, &storagev1.ReadFileRequest{FileId: 9999, Length: 1 << 30})
			return err
		}, pagewire.ErrInvalidArgument},
		{"admin missing db", func() error {
			_, err := admin.GetDatabase(ctx, &adminv1.GetDatabaseRequest{Name: "nosuch.db"})
			return err
		}, pagewire.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := client.Error(tc.call()); !errors.Is(err, tc.want) {
				t.Fatalf("err=%v, want %v", err, tc.want)
			}
		})
	}
}

func TestServer_HealthTellsTheTruth(t *testing.T) {
	conn, srv, _ := startServer(t)
	h := healthgrpc.NewHealthClient(conn)
	resp, err := h.Check(context.Background(), &healthgrpc.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus() != healthgrpc.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("status before ready = %v, want NOT_SERVING", resp.GetStatus())
	}
	srv.SetReady(true)
	resp, _ = h.Check(context.Background(), &healthgrpc.HealthCheckRequest{})
	if resp.GetStatus() != healthgrpc.HealthCheckResponse_SERVING {
		t.Fatalf("status when ready = %v, want SERVING", resp.GetStatus())
	}
}

// The pagewire.primary health service is SERVING on the primary only and
// follows role changes.
func TestServer_PrimaryHealthFollowsTheRole(t *testing.T) {
	conn, _, store := startServer(t)
	h := healthgrpc.NewHealthClient(conn)
	status := func() healthgrpc.HealthCheckResponse_ServingStatus {
		resp, err := h.Check(context.Background(), &healthgrpc.HealthCheckRequest{Service: server.PrimaryHealthService})
		if err != nil {
			return healthgrpc.HealthCheckResponse_UNKNOWN
		}
		return resp.GetStatus()
	}
	waitStatus := func(want healthgrpc.HealthCheckResponse_ServingStatus) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for status() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s health: %v, want %v", server.PrimaryHealthService, status(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitStatus(healthgrpc.HealthCheckResponse_SERVING) // a new store is a primary
	store.SetRole(pagewire.RoleReplica, pagewire.ReadOnlyError{Primary: "p"}, 2)
	waitStatus(healthgrpc.HealthCheckResponse_NOT_SERVING)
	store.SetPrimaryUntil(3, func() time.Time { return time.Time{} })
	waitStatus(healthgrpc.HealthCheckResponse_SERVING)
}

// WaitForPosition answers at once for a position reached, waits for a
// database that does not exist yet, and times out saying how far it got.
func TestServer_WaitForPosition(t *testing.T) {
	conn, _, store := startServer(t)
	ctx := context.Background()

	got := make(chan error, 1)
	go func() {
		_, err := client.WaitForPosition(ctx, conn, "later.db", 1, 10*time.Second)
		got <- err
	}()
	time.Sleep(50 * time.Millisecond) // let it start waiting
	if err := store.CreateDatabase("later.db", 4096); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiting for a database created meanwhile: %v", err)
	}

	pos, err := client.WaitForPosition(ctx, conn, "later.db", 1, 0)
	if err != nil || pos.TXID < 1 {
		t.Fatalf("position reached: %v %v", pos, err)
	}
	_, err = client.WaitForPosition(ctx, conn, "later.db", 99, 100*time.Millisecond)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("waiting past the end: %v, want DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "is at TXID") {
		t.Fatalf("the timeout does not say how far the node got: %v", err)
	}
	if _, err := client.WaitForPosition(ctx, conn, "../bad", 1, 0); !errors.Is(err, pagewire.ErrInvalidName) {
		t.Fatalf("bad name: %v, want ErrInvalidName", err)
	}
	// A timeout of hours would park a goroutine and a stream that long.
	if _, err := client.WaitForPosition(ctx, conn, "later.db", 1<<40, 24*time.Hour); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a 24 h timeout: %v, want InvalidArgument", err)
	} else if !strings.Contains(err.Error(), "shorter") {
		t.Fatalf("the refusal does not say what to do: %v", err)
	}
}

// Handoff is FAILED_PRECONDITION with a static lease and on a node that
// is not the primary, and names the new primary otherwise.
func TestServer_HandoffErrors(t *testing.T) {
	ctx := context.Background()
	conn, _, _ := startServer(t) // no Handoff: a static lease
	admin := adminv1.NewAdminServiceClient(conn)
	if _, err := admin.Handoff(ctx, &adminv1.HandoffRequest{}); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "static lease") {
		t.Fatalf("static lease: %v, want FAILED_PRECONDITION naming the static lease", err)
	}

	notPrimary := fmt.Errorf("%w: this node does not hold the lease", pagewire.ErrReadOnly)
	var next error
	conn, _, _ = startServerWith(t, func(c *server.Config) {
		c.Handoff = func(context.Context, string) (string, string, error) {
			if next != nil {
				return "", "", next
			}
			return "node2", "http://node2:20202", nil
		}
	})
	admin = adminv1.NewAdminServiceClient(conn)
	next = notPrimary
	if _, err := admin.Handoff(ctx, &adminv1.HandoffRequest{}); status.Code(err) != codes.FailedPrecondition || !errors.Is(client.Error(err), pagewire.ErrReadOnly) {
		t.Fatalf("not the primary: %v, want FAILED_PRECONDITION, a read-only error", err)
	}
	next = nil
	if _, err := admin.Handoff(ctx, &adminv1.HandoffRequest{Target: "node1"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("handoff to itself: %v, want INVALID_ARGUMENT", err)
	}
	resp, err := admin.Handoff(ctx, &adminv1.HandoffRequest{})
	if err != nil || resp.GetPrimary() != "node2" || resp.GetPrimaryUrl() != "http://node2:20202" {
		t.Fatalf("handoff: %v %v, want node2", resp, err)
	}
}

func TestServer_InProcessChannelServesStorage(t *testing.T) {
	_, srv, _ := startServer(t)
	storage := storagev1.NewStorageServiceClient(srv.Conn())
	ctx := context.Background()
	created, err := storage.CreateFile(ctx, &storagev1.CreateFileRequest{Name: "app.db"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := storage.ReadFile(ctx, &storagev1.ReadFileRequest{FileId: created.GetFile().GetFileId(), Length: 16})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(resp.GetData()), "SQLite format 3\x00"; got != want {
		t.Fatalf("read %q, want %q", got, want)
	}
	_, err = storage.LookupFile(ctx, &storagev1.LookupFileRequest{Name: "nosuch.db"})
	if !errors.Is(client.Error(err), pagewire.ErrNotFound) {
		t.Fatalf("err=%v, want ErrNotFound", err)
	}
}

// storeConfig is the default config for a store in dir.
func storeConfig(dir string) engine.StoreConfig {
	cfg := engine.DefaultStoreConfig()
	cfg.Dir = dir
	return cfg
}

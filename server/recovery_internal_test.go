package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/pagewire/pagewire/engine"
	"github.com/pagewire/pagewire/internal/safego"
	"github.com/pagewire/pagewire/internal/safego/safegotest"
)

// panicky is a health service whose every call panics.
type panicky struct {
	healthgrpc.UnimplementedHealthServer
}

func (panicky) Check(context.Context, *healthgrpc.HealthCheckRequest) (*healthgrpc.HealthCheckResponse, error) {
	panic("check exploded")
}

func (panicky) Watch(*healthgrpc.HealthCheckRequest, healthgrpc.Health_WatchServer) error {
	panic("watch exploded")
}

// serveBufconn serves gs on an in-memory listener until the test ends and
// returns a connection to it.
func serveBufconn(t *testing.T, gs *grpc.Server) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(lis)
	}()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
		<-done
	})
	return conn
}

// Every gRPC face of a node (the network server, the in-process channel,
// the storage socket's server) answers a handler's panic, unary or
// streaming, with INTERNAL and logs it with its stack; the process lives.
func TestNewGRPC_RecoversPanics(t *testing.T) {
	rec := safegotest.NewRecorder()
	gs, ch, storage := newGRPC(rec.Logger(), grpcprom.NewServerMetrics(), newAuthenticator(Auth{}), true)
	for _, r := range []grpc.ServiceRegistrar{gs, ch, storage} {
		healthgrpc.RegisterHealthServer(r, panicky{})
	}
	for _, tc := range []struct {
		name string
		conn grpc.ClientConnInterface
	}{
		{"network", serveBufconn(t, gs)},
		{"in process", ch},
		{"storage socket", serveBufconn(t, storage)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec.Reset()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c := healthgrpc.NewHealthClient(tc.conn)
			if _, err := c.Check(ctx, &healthgrpc.HealthCheckRequest{}); status.Code(err) != codes.Internal {
				t.Fatalf("unary: err=%v, want INTERNAL", err)
			}
			stream, err := c.Watch(ctx, &healthgrpc.HealthCheckRequest{})
			if err == nil {
				_, err = stream.Recv()
			}
			if status.Code(err) != codes.Internal {
				t.Fatalf("stream: err=%v, want INTERNAL", err)
			}
			got := rec.Panics()
			if len(got) != 2 {
				t.Fatalf("logged %d panics, want 2: %+v", len(got), got)
			}
			for i, want := range []string{"check exploded", "watch exploded"} {
				if got[i].Value != want || !strings.Contains(got[i].Stack, "panicky") {
					t.Fatalf("panic %d logged as %+v, want %q with a stack through the handler", i, got[i], want)
				}
			}
		})
	}
}

// newTestServer builds a Server over a store in a temporary folder; lis
// may be nil (in process only).
func newTestServer(t *testing.T, lis net.Listener) (*Server, *safegotest.Recorder) {
	t.Helper()
	rec := safegotest.NewRecorder()
	scfg := engine.DefaultStoreConfig()
	scfg.Dir, scfg.Logger = t.TempDir(), rec.Logger()
	store, err := engine.OpenStore(scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	cfg := DefaultConfig()
	cfg.Store, cfg.Listener, cfg.Logger, cfg.Node = store, lis, rec.Logger(), NodeInfo{Hostname: "node1"}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, rec
}

// A panic in a background task ends Run with the panic as its error, so
// that the node stops rather than run on without the task.
func TestServer_BackgroundPanicEndsRun(t *testing.T) {
	for _, tc := range []struct {
		name string
		lis  net.Listener
	}{
		{"in process", nil},
		{"on a listener", bufconn.Listen(1 << 20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, rec := newTestServer(t, tc.lis)
			s.tasks = append(s.tasks, task{"explode", func(context.Context) { panic("task exploded") }})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := s.Run(ctx) // returns on its own: ctx is only a safety net
			var pe *safego.PanicError
			if !errors.As(err, &pe) || pe.What != "explode" {
				t.Fatalf("Run: %v, want the task's panic", err)
			}
			if ctx.Err() != nil {
				t.Fatal("Run returned only when ctx ended")
			}
			if got := rec.Panics(); len(got) != 1 || got[0].Value != "task exploded" {
				t.Fatalf("logged %+v, want the panic", got)
			}
		})
	}
}

// A panicking HTTP handler gets a 500 with a JSON body and a log line with
// its stack; net/http's own abort still aborts.
func TestRecoverHTTP(t *testing.T) {
	rec := safegotest.NewRecorder()
	h := recoverHTTP(rec.Logger(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/abort" {
			panic(http.ErrAbortHandler)
		}
		panic("handler exploded")
	}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/dbs", nil))
	if w.Code != http.StatusInternalServerError || !strings.Contains(w.Body.String(), `"error"`) || !strings.Contains(w.Body.String(), "handler exploded") {
		t.Fatalf("got %d %q, want 500 with a JSON error", w.Code, w.Body.String())
	}
	if got := rec.Panics(); len(got) != 1 || got[0].Task != "HTTP GET /api/v1/dbs" {
		t.Fatalf("logged %+v, want the panic with the request", got)
	}
	func() {
		defer func() {
			if p := recover(); p != http.ErrAbortHandler {
				t.Fatalf("recovered %v, want http.ErrAbortHandler passed on", p)
			}
		}()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/abort", nil))
	}()
}

package server_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/pagewire/pagewire/engine"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
	"github.com/pagewire/pagewire/server"
)

// startTCPServer runs a ready server on a loopback port and returns its
// address and a function that stops it.
func startTCPServer(t *testing.T) (addr string, stop func()) {
	t.Helper()
	addr, _, stop = startTCPServerWith(t, nil)
	return addr, stop
}

// startTCPServerWith is startTCPServer with the config changed by edit
// first; it returns the server too.
func startTCPServerWith(t *testing.T, edit func(*server.Config)) (addr string, srv *server.Server, stop func()) {
	t.Helper()
	store, err := engine.OpenStore(storeConfig(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultConfig()
	cfg.Store, cfg.Listener, cfg.Node = store, ln, server.NodeInfo{Hostname: "node1", AdvertiseURL: "http://" + ln.Addr().String()}
	if edit != nil {
		edit(&cfg)
	}
	srv, err = server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.SetReady(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		store.Close()
	}
	t.Cleanup(func() { stop() })
	return ln.Addr().String(), srv, stop
}

func grpcHealth(t *testing.T, conn *grpc.ClientConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthgrpc.NewHealthClient(conn).Check(ctx, &healthgrpc.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("gRPC health check: %v", err)
	}
	if resp.GetStatus() != healthgrpc.HealthCheckResponse_SERVING {
		t.Fatalf("gRPC health: %v, want SERVING", resp.GetStatus())
	}
}

func TestPortSplit_EveryKindOfClientOnOnePort(t *testing.T) {
	addr, _ := startTCPServer(t)

	t.Run("HTTP/1.1", func(t *testing.T) {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 1 {
			t.Fatalf("GET /healthz: %s %d, want HTTP/1.1 200", resp.Proto, resp.StatusCode)
		}
	})

	t.Run("HTTP/1.0 request shorter than the HTTP/2 preface", func(t *testing.T) {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(line, "HTTP/1.0 ") {
			t.Fatalf("status line %q, want an HTTP/1.0 answer", line)
		}
	})

	t.Run("h2c HTTP", func(t *testing.T) {
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		// Twice on one connection: it outlives the SETTINGS exchange.
		for i := 0; i < 2; i++ {
			resp, err := c.Get("http://" + addr + "/api/v1/dbs")
			if err != nil {
				t.Fatalf("request %d: %v", i+1, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
				t.Fatalf("GET /api/v1/dbs over h2c: %s %d, want HTTP/2 200", resp.Proto, resp.StatusCode)
			}
			time.Sleep(100 * time.Millisecond) // the client's ACK has surely been read by now
		}
	})

	t.Run("gRPC", func(t *testing.T) {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		grpcHealth(t, conn)
	})

	t.Run("gRPC connection idle before its first call", func(t *testing.T) {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Connect()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
			if !conn.WaitForStateChange(ctx, s) {
				t.Fatalf("connection state %v, never ready", s)
			}
		}
		time.Sleep(1500 * time.Millisecond) // past the splitter's wait for a first request
		grpcHealth(t, conn)
	})
}

// A replication stream open on the node does not hold up its stop.
func TestPortSplit_StopEndsStreams(t *testing.T) {
	addr, stop := startTCPServer(t)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := replicationv1.NewReplicationServiceClient(conn).WatchDatabases(ctx, &replicationv1.WatchDatabasesRequest{Hostname: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatalf("first message: %v", err)
	}
	stop()
	for {
		_, err := s.Recv()
		if err == nil {
			continue
		}
		// Ended by the node, not cut when a shutdown timeout ran out.
		if st, _ := status.FromError(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "shutting down") {
			t.Fatalf("stream ended with %v, want Unavailable saying the node is shutting down", err)
		}
		return
	}
}

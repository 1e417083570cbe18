package server_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	reflectiongrpc "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	client "github.com/pagewire/pagewire/clients/go"
	"github.com/pagewire/pagewire/engine"
	"github.com/pagewire/pagewire/internal/tlsfiles"
	"github.com/pagewire/pagewire/internal/tlsfiles/tlsfilestest"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
	"github.com/pagewire/pagewire/server"
)

const (
	tokenNew = "0123456789abcdef-new-token"
	tokenOld = "0123456789abcdef-old-token"
)

// startTCP runs a server on a real loopback port and returns its address.
func startTCP(t *testing.T, edit func(*server.Config)) (addr string, store *engine.Store) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, _, store = startServerWith(t, func(c *server.Config) {
		c.Listener = lis
		if edit != nil {
			edit(c)
		}
	})
	return lis.Addr().String(), store
}

func dialT(t *testing.T, url string, opts ...client.Option) *grpc.ClientConn {
	t.Helper()
	conn, err := client.Dial(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func wantCode(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msg) {
		t.Errorf("%s: %v, want %s saying %q", what, err, code, msg)
	}
}

// httpGet does a request and returns the status code and body.
func httpDo(t *testing.T, hc *http.Client, method, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAuth_GRPCNeedsAToken(t *testing.T) {
	addr, store := startTCP(t, func(c *server.Config) { c.Auth.Tokens = []string{tokenNew, tokenOld} })
	ctx := context.Background()
	url := "http://" + addr

	// Without a token, or with a wrong one, nothing that reads or changes
	// data answers.
	for _, tc := range []struct {
		name string
		opts []client.Option
		want string
	}{
		{"no token", nil, "requires a bearer token (auth.token is set)"},
		{"wrong token", []client.Option{client.WithToken("0123456789abcdef-guess")}, "not one of the node's auth.token values"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := dialT(t, url, tc.opts...)
			admin := adminv1.NewAdminServiceClient(conn)
			_, err := admin.GetNode(ctx, &adminv1.GetNodeRequest{})
			wantCode(t, "GetNode", err, codes.Unauthenticated, tc.want)
			_, err = admin.ListDatabases(ctx, &adminv1.ListDatabasesRequest{})
			wantCode(t, "ListDatabases", err, codes.Unauthenticated, tc.want)
			imp, err := admin.ImportDatabase(ctx)
			if err == nil {
				_ = imp.Send(&adminv1.ImportDatabaseRequest{Name: "new.db", Data: make([]byte, 4096)})
				_, err = imp.CloseAndRecv()
			}
			wantCode(t, "ImportDatabase", err, codes.Unauthenticated, tc.want)
			exp, err := admin.ExportDatabase(ctx, &adminv1.ExportDatabaseRequest{Name: "new.db"})
			if err == nil {
				_, err = exp.Recv()
			}
			wantCode(t, "ExportDatabase", err, codes.Unauthenticated, tc.want)
			st, err := replicationv1.NewReplicationServiceClient(conn).StreamTransactions(ctx, &replicationv1.StreamTransactionsRequest{Name: "new.db"})
			if err == nil {
				_, err = st.Recv()
			}
			wantCode(t, "StreamTransactions", err, codes.Unauthenticated, tc.want)
			_, err = replicationv1.NewReplicationServiceClient(conn).AcquireHalt(ctx, &replicationv1.AcquireHaltRequest{Name: "new.db"})
			wantCode(t, "AcquireHalt", err, codes.Unauthenticated, tc.want)
			ack, err := replicationv1.NewReplicationServiceClient(conn).AcknowledgeTransactions(ctx)
			if err == nil {
				_ = ack.Send(&replicationv1.AcknowledgeTransactionsRequest{Name: "new.db", Hostname: "r1", Epoch: 1})
				_, err = ack.CloseAndRecv()
			}
			wantCode(t, "AcknowledgeTransactions", err, codes.Unauthenticated, tc.want)

			// Health and reflection stay open.
			if _, err := healthgrpc.NewHealthClient(conn).Check(ctx, &healthgrpc.HealthCheckRequest{}); err != nil {
				t.Errorf("health without a token: %v", err)
			}
			rs, err := reflectiongrpc.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
			if err == nil {
				err = rs.Send(&reflectiongrpc.ServerReflectionRequest{MessageRequest: &reflectiongrpc.ServerReflectionRequest_ListServices{}})
			}
			if err == nil {
				_, err = rs.Recv()
			}
			if err != nil {
				t.Errorf("reflection without a token: %v", err)
			}
		})
	}
	if dbs := store.Databases(); len(dbs) != 0 {
		t.Fatalf("databases after unauthenticated calls: %+v", dbs)
	}

	// Both tokens of a rotation are accepted.
	for _, tok := range []string{tokenNew, tokenOld} {
		conn := dialT(t, url, client.WithToken(tok))
		if _, err := adminv1.NewAdminServiceClient(conn).GetNode(ctx, &adminv1.GetNodeRequest{}); err != nil {
			t.Errorf("GetNode with token %q: %v", tok, err)
		}
	}
}

func TestAuth_HTTPNeedsAToken(t *testing.T) {
	for _, protect := range []bool{false, true} {
		addr, _ := startTCP(t, func(c *server.Config) {
			c.Auth = server.Auth{Tokens: []string{tokenNew}, ProtectMetrics: protect}
		})
		base := "http://" + addr
		hc := &http.Client{}
		for _, tc := range []struct {
			method, path string
			open         bool
		}{
			{"GET", "/healthz", true},
			{"GET", "/primary", true},
			{"GET", "/metrics", !protect},
			{"GET", "/api/v1/dbs", false},
			{"GET", "/api/v1/dbs/app.db", false},
			{"GET", "/api/v1/dbs/app.db/verify", false},
			{"POST", "/api/v1/dbs/app.db/halt", false},
			{"DELETE", "/api/v1/dbs/app.db/halt", false},
			{"POST", "/primary", false},
			{"GET", "/nowhere", false},
		} {
			code, body := httpDo(t, hc, tc.method, base+tc.path, "")
			if tc.open && code == http.StatusUnauthorized || !tc.open && (code != http.StatusUnauthorized || !strings.Contains(body, "auth.token")) {
				t.Errorf("protect-metrics %v: %s %s without a token: %d %s", protect, tc.method, tc.path, code, body)
			}
			if code, _ := httpDo(t, hc, tc.method, base+tc.path, "wrong-token-0123456789"); !tc.open && code != http.StatusUnauthorized {
				t.Errorf("%s %s with a wrong token: %d, want 401", tc.method, tc.path, code)
			}
			if code, body := httpDo(t, hc, tc.method, base+tc.path, tokenNew); code == http.StatusUnauthorized {
				t.Errorf("%s %s with the token: %d %s", tc.method, tc.path, code, body)
			}
		}
		if code, body := httpDo(t, hc, "GET", base+"/metrics", tokenNew); code != http.StatusOK || !strings.Contains(body, `pagewire_auth_failures_total{surface="http"}`) {
			t.Errorf("/metrics: %d, want pagewire_auth_failures_total counted", code)
		}
	}
}

func TestAuth_StorageOverTCPIsAnOptInWithAuth(t *testing.T) {
	_, err := server.New(func() server.Config {
		store, err := engine.OpenStore(storeConfig(t.TempDir()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		c := server.DefaultConfig()
		c.Store, c.Node, c.ServeStorage = store, server.NodeInfo{Hostname: "n"}, true
		return c
	}())
	if err == nil || !strings.Contains(err.Error(), "Auth.Tokens") {
		t.Fatalf("ServeStorage without tokens: %v, want an error", err)
	}

	addr, store := startTCP(t, func(c *server.Config) { c.Auth.Tokens, c.ServeStorage = []string{tokenNew}, true })
	ctx := context.Background()
	storage := storagev1.NewStorageServiceClient(dialT(t, "http://"+addr, client.WithToken(tokenNew)))
	if _, err := storage.CreateFile(ctx, &storagev1.CreateFileRequest{Name: "app.db"}); err != nil {
		t.Fatalf("CreateFile with the token: %v", err)
	}
	anon := storagev1.NewStorageServiceClient(dialT(t, "http://"+addr))
	_, err = anon.DeleteFile(ctx, &storagev1.DeleteFileRequest{Name: "app.db"})
	wantCode(t, "DeleteFile without a token", err, codes.Unauthenticated, "auth.token")
	if _, err := store.Database("app.db"); err != nil {
		t.Fatalf("app.db after an unauthenticated DeleteFile: %v", err)
	}
}

// tlsServer starts a server with TLS from a test CA; it returns the
// address and the CA.
func tlsServer(t *testing.T, auth tlsfiles.ClientAuth) (string, *tlsfilestest.CA) {
	t.Helper()
	dir := t.TempDir()
	ca := tlsfilestest.NewCA(t, dir, "ca")
	pair := ca.Issue("node1", "localhost", "127.0.0.1")
	files, err := tlsfiles.Load(pair.CertFile, pair.KeyFile, ca.CertFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := files.Server(auth)
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := startTCP(t, func(c *server.Config) { c.TLS, c.Auth.Tokens = cfg, []string{tokenNew} })
	return addr, ca
}

func clientTLS(t *testing.T, ca *tlsfilestest.CA, pair tlsfilestest.Pair) func() *tls.Config {
	f, err := tlsfiles.Load(pair.CertFile, pair.KeyFile, ca.CertFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f.Client
}

func TestTLS_Port(t *testing.T) {
	addr, ca := tlsServer(t, tlsfiles.NoClientCert)
	_, port, _ := net.SplitHostPort(addr)
	ctx := context.Background()

	// gRPC over https:// with the CA and the token.
	conn := dialT(t, "https://localhost:"+port, client.WithTLS(clientTLS(t, ca, tlsfilestest.Pair{})), client.WithToken(tokenNew))
	if _, err := adminv1.NewAdminServiceClient(conn).GetNode(ctx, &adminv1.GetNodeRequest{}); err != nil {
		t.Fatalf("GetNode over TLS: %v", err)
	}

	// The HTTP API over TLS, HTTP/1.1 and HTTP/2.
	for _, h2 := range []bool{false, true} {
		tr := &http.Transport{TLSClientConfig: clientTLS(t, ca, tlsfilestest.Pair{})(), ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		hc := &http.Client{Transport: tr}
		if code, body := httpDo(t, hc, "GET", "https://localhost:"+port+"/api/v1/dbs", tokenNew); code != http.StatusOK {
			t.Errorf("HTTP/2 %v: GET /api/v1/dbs over TLS: %d %s", h2, code, body)
		}
		tr.CloseIdleConnections()
	}

	// Plaintext, or TLS without the CA, gets nowhere.
	plain := dialT(t, "http://"+addr, client.WithToken(tokenNew))
	if _, err := adminv1.NewAdminServiceClient(plain).GetNode(ctx, &adminv1.GetNodeRequest{}); err == nil {
		t.Error("GetNode in plaintext on a TLS port succeeded")
	}
	untrusted := dialT(t, "https://localhost:"+port, client.WithToken(tokenNew))
	if _, err := adminv1.NewAdminServiceClient(untrusted).GetNode(ctx, &adminv1.GetNodeRequest{}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("GetNode trusting only the system's roots: %v, want a certificate error", err)
	}
}

func TestTLS_RequireClientCert(t *testing.T) {
	addr, ca := tlsServer(t, tlsfiles.RequireClientCert)
	_, port, _ := net.SplitHostPort(addr)
	url := "https://localhost:" + port
	ctx := context.Background()
	other := tlsfilestest.NewCA(t, t.TempDir(), "other")
	for _, tc := range []struct {
		name string
		tls  func() *tls.Config
		ok   bool
	}{
		{"no client certificate", clientTLS(t, ca, tlsfilestest.Pair{}), false},
		{"certificate of another CA", func() *tls.Config {
			c := clientTLS(t, ca, tlsfilestest.Pair{})()
			stranger := other.Issue("stranger")
			cert, err := tls.LoadX509KeyPair(stranger.CertFile, stranger.KeyFile)
			if err != nil {
				t.Fatal(err)
			}
			c.Certificates = []tls.Certificate{cert}
			return c
		}, false},
		{"certificate of the CA", clientTLS(t, ca, ca.Issue("node2", "node2")), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := dialT(t, url, client.WithTLS(tc.tls), client.WithToken(tokenNew))
			_, err := adminv1.NewAdminServiceClient(conn).GetNode(ctx, &adminv1.GetNodeRequest{})
			if (err == nil) != tc.ok {
				t.Fatalf("GetNode: %v, want success %v", err, tc.ok)
			}
		})
	}
}

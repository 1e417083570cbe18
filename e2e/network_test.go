//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/pagewire/pagewire"
	client "github.com/pagewire/pagewire/clients/go"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
)

// These tests cover the node's one port (DESIGN §6): the HTTP API, gRPC,
// health and reflection, metrics, and IPv6.

// netGet fetches url and returns the status code, body and header.
func netGet(url string) (int, string, http.Header, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header, err
}

// netGetJSON fetches url, checks that it answered JSON with status want, and
// decodes the body into v.
func netGetJSON(t testing.TB, url string, want int, v any) string {
	t.Helper()
	code, body, h, err := netGet(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if code != want {
		t.Errorf("GET %s = %d, want %d: %s", url, code, want, body)
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("GET %s: Content-Type %q, want application/json", url, ct)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Errorf("GET %s: body is not JSON (%v): %s", url, err, body)
	}
	return body
}

// netErrorBody is the JSON body of an HTTP API error (DESIGN §6).
type netErrorBody struct {
	Error  string `json:"error"`
	Reason string `json:"reason"`
}

// netDial connects a gRPC client to addr (host:port) in plaintext.
func netDial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestNetwork_HTTP checks the HTTP API on the node's port.
func TestNetwork_HTTP(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	cliMakeDB(t, n, "net.db", 4)
	txid := n.Pos("net.db")[:16]

	t.Run("healthz", func(t *testing.T) {
		var got map[string]string
		netGetJSON(t, n.URL+"/healthz", http.StatusOK, &got)
		if got["status"] != "ok" {
			t.Errorf("/healthz status %q, want ok", got["status"])
		}
	})

	t.Run("healthz over h2c", func(t *testing.T) {
		tr := &http.Transport{Protocols: new(http.Protocols)}
		tr.Protocols.SetUnencryptedHTTP2(true)
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		resp, err := c.Get(n.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /healthz over h2c: %s %d, want HTTP/2 200", resp.Proto, resp.StatusCode)
		}
	})

	t.Run("list databases", func(t *testing.T) {
		type db struct {
			Name     string `json:"name"`
			TXID     string `json:"txid"`
			Checksum string `json:"checksum"`
		}
		var got struct {
			Databases []db `json:"databases"`
		}
		body := netGetJSON(t, n.URL+"/api/v1/dbs", http.StatusOK, &got)
		i := slices.IndexFunc(got.Databases, func(d db) bool { return d.Name == "net.db" })
		if i < 0 {
			t.Fatalf("/api/v1/dbs does not list net.db: %s", body)
		}
		d := got.Databases[i]
		if d.TXID != txid {
			t.Errorf("net.db txid %q, want %q (the -pos file's)", d.TXID, txid)
		}
		if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(d.Checksum) || d.Checksum != n.Pos("net.db")[17:] {
			t.Errorf("net.db checksum %q, want the -pos file's %q", d.Checksum, n.Pos("net.db")[17:])
		}
	})

	t.Run("get database", func(t *testing.T) {
		var got struct {
			Name      string `json:"name"`
			TXID      string `json:"txid"`
			Primary   string `json:"primary"`
			IsPrimary bool   `json:"is_primary"`
			Epoch     uint64 `json:"epoch"`
		}
		netGetJSON(t, n.URL+"/api/v1/dbs/net.db", http.StatusOK, &got)
		// A static lease's epoch is 1 (DESIGN §7).
		if got.Name != "net.db" || got.TXID != txid || got.Primary != "node1" || !got.IsPrimary || got.Epoch != 1 {
			t.Errorf("/api/v1/dbs/net.db = %+v, want net.db at %s on primary node1 at epoch 1", got, txid)
		}
	})

	t.Run("missing database", func(t *testing.T) {
		var got netErrorBody
		netGetJSON(t, n.URL+"/api/v1/dbs/nosuch.db", http.StatusNotFound, &got)
		if !strings.Contains(got.Error, "nosuch.db") {
			t.Errorf("error %q does not name nosuch.db", got.Error)
		}
		if got.Reason != pagewire.ReasonNotFound {
			t.Errorf("reason %q, want %q", got.Reason, pagewire.ReasonNotFound)
		}
	})

	for _, name := range []string{"..%2Fx", ".hidden", "a%00b", "x.db-wal"} {
		t.Run("bad name "+name, func(t *testing.T) {
			var got netErrorBody
			netGetJSON(t, n.URL+"/api/v1/dbs/"+name, http.StatusBadRequest, &got)
			if got.Error == "" {
				t.Errorf("no error message")
			}
			if got.Reason != pagewire.ReasonInvalidName {
				t.Errorf("reason %q, want %q", got.Reason, pagewire.ReasonInvalidName)
			}
		})
	}

	t.Run("unknown endpoint", func(t *testing.T) {
		var got netErrorBody
		netGetJSON(t, n.URL+"/api/v1/nosuch", http.StatusNotFound, &got)
		if got.Error == "" {
			t.Errorf("no error message")
		}
	})

	t.Run("metrics", func(t *testing.T) {
		code, body, _, err := netGet(n.URL + "/metrics")
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET /metrics = %d, %v", code, err)
		}
		var want uint64
		fmt.Sscanf(txid, "%x", &want)
		for _, re := range []string{
			fmt.Sprintf(`(?m)^litefs_db_txid\{db="net\.db"\} %d$`, want),
			`(?m)^litefs_is_primary 1$`,
			`(?m)^litefs_db_commit_count\{db="net\.db"\} \d+$`,
		} {
			if !regexp.MustCompile(re).MatchString(body) {
				t.Errorf("/metrics has no line matching %s:\n%s", re, body)
			}
		}
	})
}

// TestNetwork_GRPC checks gRPC on the same port as HTTP: health,
// reflection and AdminService.
func TestNetwork_GRPC(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	cliMakeDB(t, n, "grpc.db", 3)
	conn := netDial(t, n.HTTPAddr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("health", func(t *testing.T) {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := resp.GetStatus(), healthpb.HealthCheckResponse_SERVING; got != want {
			t.Fatalf("health status %v, want %v", got, want)
		}
	})

	t.Run("reflection", func(t *testing.T) {
		stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		err = stream.Send(&reflectionpb.ServerReflectionRequest{
			MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{ListServices: "*"},
		})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		_ = stream.CloseSend()
		var names []string
		for _, s := range resp.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		for _, want := range []string{"pagewire.admin.v1.AdminService", "pagewire.replication.v1.ReplicationService", "grpc.health.v1.Health"} {
			if !slices.Contains(names, want) {
				t.Errorf("reflection lists %v, without %s", names, want)
			}
		}
		if slices.Contains(names, "pagewire.storage.v1.StorageService") {
			t.Errorf("reflection on http.addr lists the mount's private StorageService: %v", names)
		}

		// A client can also fetch the service's descriptors, as grpcurl
		// describe does.
		err = func() error {
			s, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
			if err != nil {
				return err
			}
			defer s.CloseSend()
			if err := s.Send(&reflectionpb.ServerReflectionRequest{
				MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "pagewire.admin.v1.AdminService"},
			}); err != nil {
				return err
			}
			r, err := s.Recv()
			if err != nil {
				return err
			}
			if e := r.GetErrorResponse(); e != nil {
				return errors.New(e.GetErrorMessage())
			}
			if len(r.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
				return errors.New("no file descriptors")
			}
			return nil
		}()
		if err != nil {
			t.Errorf("reflection of pagewire.admin.v1.AdminService: %v", err)
		}
	})

	t.Run("ListDatabases", func(t *testing.T) {
		resp, err := adminv1.NewAdminServiceClient(conn).ListDatabases(ctx, &adminv1.ListDatabasesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var want uint64
		fmt.Sscanf(n.Pos("grpc.db")[:16], "%x", &want)
		i := slices.IndexFunc(resp.GetDatabases(), func(d *adminv1.Database) bool { return d.GetName() == "grpc.db" })
		if i < 0 {
			t.Fatalf("ListDatabases does not list grpc.db: %v", resp)
		}
		if got := resp.GetDatabases()[i].GetTxid(); got != want {
			t.Errorf("grpc.db txid %d, want %d", got, want)
		}
	})

	t.Run("GetDatabase not found", func(t *testing.T) {
		_, err := adminv1.NewAdminServiceClient(conn).GetDatabase(ctx, &adminv1.GetDatabaseRequest{Name: "nosuch.db"})
		if got, want := status.Code(err), codes.NotFound; got != want {
			t.Fatalf("GetDatabase(nosuch.db): code %v (%v), want %v", got, err, want)
		}
		if !errors.Is(client.Error(err), pagewire.ErrNotFound) {
			t.Errorf("GetDatabase(nosuch.db): %v does not carry reason NOT_FOUND", err)
		}
	})

	t.Run("GetNode", func(t *testing.T) {
		resp, err := adminv1.NewAdminServiceClient(conn).GetNode(ctx, &adminv1.GetNodeRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetHostname() != "node1" || resp.GetRole() != adminv1.Role_ROLE_PRIMARY {
			t.Errorf("GetNode = %v, want node1 as primary", resp)
		}
	})
}

// TestNetwork_IPv6 starts nodes listening on [::1] and on [::] and checks
// that they answer over IPv6 (and, on [::], over IPv4 too).
func TestNetwork_IPv6(t *testing.T) {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("::1 is not configured on lo: %v", err)
	}
	l.Close()

	for _, tc := range []struct {
		name, host string
		urls       []string // PORT is replaced with the port
	}{
		{"loopback", "::1", []string{"http://[::1]:PORT"}},
		{"any", "::", []string{"http://[::1]:PORT", "http://127.0.0.1:PORT"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", net.JoinHostPort(tc.host, "0"))
			if err != nil {
				t.Skipf("cannot listen on [%s]: %v", tc.host, err)
			}
			port := fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
			l.Close()

			dir := t.TempDir()
			mnt, data := filepath.Join(dir, "mnt"), filepath.Join(dir, "data")
			cfgPath := filepath.Join(dir, "pagewire.yml")
			cfg := fmt.Sprintf("fuse:\n  dir: %q\ndata:\n  dir: %q\nhttp:\n  addr: \"[%s]:%s\"\nlease:\n  type: static\n  hostname: v6node\n  candidate: true\n",
				mnt, data, tc.host, port)
			if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			p := cliStart(t, dir, nil, []string{mnt}, "mount", "-config", cfgPath)
			base := strings.ReplaceAll(tc.urls[0], "PORT", port)
			p.waitHealthy(base, time.Minute)
			for _, u := range tc.urls {
				u = strings.ReplaceAll(u, "PORT", port)
				var got map[string]string
				netGetJSON(t, u+"/healthz", http.StatusOK, &got)
				if got["status"] != "ok" {
					t.Errorf("%s/healthz status %q, want ok", u, got["status"])
				}
			}
			// gRPC and the CLI work over IPv6 too.
			out, code := cliRun(t, dir, nil, time.Minute, "status", "-url", "http://[::1]:"+port)
			if code != 0 || !strings.Contains(out, "hostname: v6node") {
				t.Errorf("status -url http://[::1]:%s: exit %d:\n%s", port, code, out)
			}
			p.signal(syscall.SIGTERM)
			if code := p.wait(time.Minute); code != 0 {
				t.Errorf("exit code %d after SIGTERM, want 0", code)
			}
		})
	}
}

// The block protocol is the node's own: not served on http.addr, where a
// DeleteFile from anyone on the network would delete a database, but on an
// owner-only unix socket in data.dir, for a mount in another process.
func TestNetwork_StorageServiceIsPrivate(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	cliMakeDB(t, n, "private.db", 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// On http.addr: unimplemented, and the database is untouched.
	conn := netDial(t, n.HTTPAddr)
	_, err := storagev1.NewStorageServiceClient(conn).DeleteFile(ctx, &storagev1.DeleteFileRequest{Name: "private.db"})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("DeleteFile on http.addr: %v, want Unimplemented", err)
	}
	if got := cli(t, n.Path("private.db"), "select count(*) from t;"); strings.TrimSpace(got) != "3" {
		t.Fatalf("after the refused DeleteFile, private.db has %q rows, want 3", got)
	}

	// On the socket: owner-only, and it serves the block protocol.
	sock := filepath.Join(n.DataDir, "storage.sock")
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatalf("the storage socket: %v", err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the storage socket's mode is %v, want an owner-only (0600) socket", fi.Mode())
	}
	uconn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer uconn.Close()
	resp, err := storagev1.NewStorageServiceClient(uconn).LookupFile(ctx, &storagev1.LookupFileRequest{Name: "private.db"})
	if err != nil || resp.GetFile().GetSize() == 0 {
		t.Fatalf("LookupFile on the storage socket: %v %v", resp, err)
	}

	// The node removes its socket when it stops.
	n.Stop()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("after the node stopped, the storage socket: %v, want it gone", err)
	}
}

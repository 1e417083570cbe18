//go:build integration

package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	client "github.com/pagewire/pagewire/clients/go"
	"github.com/pagewire/pagewire/internal/tlsfiles"
	"github.com/pagewire/pagewire/internal/tlsfiles/tlsfilestest"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
	replicationv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/replication/v1"
	storagev1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/storage/v1"
)

// The attacker's script: an attacker on the nodes' network, some of whose
// requests carry the token (a leaked token must still not crash or stall
// a node), throws hostile requests at a primary and a replica with
// auth.token and TLS. Afterwards every node is up and answering, and every
// database's position and content are as they were.

// attack is one hostile request; it returns an error when the node's
// answer is not the refusal it should be.
type attack struct {
	name string
	run  func(ctx context.Context, a *attacker) error
}

// attacker holds what the attacks need.
type attacker struct {
	t        *testing.T
	p, r     *Node
	ca       *tlsfilestest.CA
	tlsConf  func() *tls.Config
	anon     *grpc.ClientConn // no token
	wrong    *grpc.ClientConn // a wrong token
	insider  *grpc.ClientConn // the token (leaked)
	https    *http.Client
	hostPort string
}

// refused checks that err is a gRPC error with code.
func refused(err error, code codes.Code) error {
	if status.Code(err) != code {
		return fmt.Errorf("got %v, want %s", err, code)
	}
	return nil
}

// refusedAny checks that err is a refusal (any code but OK and Internal,
// Unknown: those would be a crash turned into an error).
func refusedAny(err error) error {
	switch status.Code(err) {
	case codes.OK:
		return fmt.Errorf("accepted")
	case codes.Internal, codes.Unknown:
		return fmt.Errorf("an internal error: %v", err)
	}
	return nil
}

// httpStatus sends an HTTPS request and returns the status code.
func (a *attacker) httpStatus(ctx context.Context, method, path, token string, body io.Reader) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, a.p.URL+path, body)
	if err != nil {
		return 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.https.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func wantHTTP(code int, err error, want int) error {
	if err != nil {
		return err
	}
	if code != want {
		return fmt.Errorf("HTTP %d, want %d", code, want)
	}
	return nil
}

// rawTLS opens a TLS connection to the primary's port.
func (a *attacker) rawTLS() (*tls.Conn, error) {
	return tls.Dial("tcp", a.hostPort, a.tlsConf())
}

// hugeHeaderDB is a 100-byte SQLite header claiming 2^32-1 pages.
func hugeHeaderDB() []byte {
	b := make([]byte, 100)
	copy(b, "SQLite format 3\x00")
	binary.BigEndian.PutUint16(b[16:], 4096)
	b[18], b[19], b[21], b[22], b[23] = 1, 1, 64, 32, 32
	binary.BigEndian.PutUint32(b[24:], 1)
	binary.BigEndian.PutUint32(b[28:], 0xFFFFFFFF)
	binary.BigEndian.PutUint32(b[92:], 1)
	binary.BigEndian.PutUint32(b[96:], 3045000)
	return b
}

func importBytes(ctx context.Context, conn *grpc.ClientConn, name string, chunks ...[]byte) error {
	s, err := adminv1.NewAdminServiceClient(conn).ImportDatabase(ctx)
	if err != nil {
		return err
	}
	for i, c := range chunks {
		req := &adminv1.ImportDatabaseRequest{Data: c}
		if i == 0 {
			req.Name = name
		}
		if err := s.Send(req); err != nil {
			break
		}
	}
	_, err = s.CloseAndRecv()
	return err
}

// halt takes a halt lock on the primary as a made-up replica.
func (a *attacker) halt(ctx context.Context) (*replicationv1.HaltLock, error) {
	resp, err := replicationv1.NewReplicationServiceClient(a.insider).AcquireHalt(ctx, &replicationv1.AcquireHaltRequest{
		Name: "db", Hostname: "attacker", Ttl: durationpb.New(10 * time.Second), Wait: durationpb.New(5 * time.Second)})
	if err != nil {
		return nil, err
	}
	return resp.GetLock(), nil
}

func (a *attacker) forward(ctx context.Context, id string, txn *replicationv1.Transaction) error {
	_, err := replicationv1.NewReplicationServiceClient(a.insider).ForwardTransaction(ctx, &replicationv1.ForwardTransactionRequest{
		Name: "db", HaltId: id, Transaction: txn})
	return err
}

// forwardUnderHalt takes a halt lock, forwards txn with it and releases it.
func (a *attacker) forwardUnderHalt(ctx context.Context, txn *replicationv1.Transaction) error {
	lock, err := a.halt(ctx)
	if err != nil {
		return fmt.Errorf("acquire a halt lock: %v", err)
	}
	defer func() {
		_, _ = replicationv1.NewReplicationServiceClient(a.insider).ReleaseHalt(context.Background(), &replicationv1.ReleaseHaltRequest{Name: "db", Id: lock.GetId()})
	}()
	return refusedAny(a.forward(ctx, lock.GetId(), txn))
}

func page(pgno uint32, n int) *replicationv1.Page {
	return &replicationv1.Page{Pgno: pgno, Data: make([]byte, n)}
}

var attacks = []attack{
	// Tokens.
	{"GetNode without a token", func(ctx context.Context, a *attacker) error {
		_, err := adminv1.NewAdminServiceClient(a.anon).GetNode(ctx, &adminv1.GetNodeRequest{})
		return refused(err, codes.Unauthenticated)
	}},
	{"ListDatabases with a wrong token", func(ctx context.Context, a *attacker) error {
		_, err := adminv1.NewAdminServiceClient(a.wrong).ListDatabases(ctx, &adminv1.ListDatabasesRequest{})
		return refused(err, codes.Unauthenticated)
	}},
	{"import over db without a token", func(ctx context.Context, a *attacker) error {
		return refused(importBytes(ctx, a.anon, "db", make([]byte, 8192)), codes.Unauthenticated)
	}},
	{"StreamTransactions with a wrong token", func(ctx context.Context, a *attacker) error {
		s, err := replicationv1.NewReplicationServiceClient(a.wrong).StreamTransactions(ctx, &replicationv1.StreamTransactionsRequest{Name: "db"})
		if err == nil {
			_, err = s.Recv()
		}
		return refused(err, codes.Unauthenticated)
	}},
	{"Handoff without a token", func(ctx context.Context, a *attacker) error {
		_, err := adminv1.NewAdminServiceClient(a.anon).Handoff(ctx, &adminv1.HandoffRequest{})
		return refused(err, codes.Unauthenticated)
	}},
	{"HTTP list without a token", func(ctx context.Context, a *attacker) error {
		code, err := a.httpStatus(ctx, "GET", "/api/v1/dbs", "", nil)
		return wantHTTP(code, err, 401)
	}},
	{"HTTP halt with a wrong token", func(ctx context.Context, a *attacker) error {
		code, err := a.httpStatus(ctx, "POST", "/api/v1/dbs/db/halt", "0123456789abcdef-guess", nil)
		return wantHTTP(code, err, 401)
	}},
	{"HTTP Basic auth instead of Bearer", func(ctx context.Context, a *attacker) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", a.p.URL+"/api/v1/dbs", nil)
		req.SetBasicAuth("admin", e2eToken)
		resp, err := a.https.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return wantHTTP(resp.StatusCode, nil, 401)
	}},

	// The block protocol is not on the port, even with the token.
	{"DeleteFile on the port", func(ctx context.Context, a *attacker) error {
		_, err := storagev1.NewStorageServiceClient(a.insider).DeleteFile(ctx, &storagev1.DeleteFileRequest{Name: "db"})
		return refused(err, codes.Unimplemented)
	}},
	{"WriteFile on the port", func(ctx context.Context, a *attacker) error {
		_, err := storagev1.NewStorageServiceClient(a.insider).WriteFile(ctx, &storagev1.WriteFileRequest{FileId: 1, Offset: 0, Data: []byte("x")})
		return refused(err, codes.Unimplemented)
	}},

	// Sizes and counts, with the token.
	{"import of a header claiming 2^32-1 pages", func(ctx context.Context, a *attacker) error {
		return refused(importBytes(ctx, a.insider, "evil.db", hugeHeaderDB()), codes.InvalidArgument)
	}},
	{"import that is not a whole number of pages", func(ctx context.Context, a *attacker) error {
		b := hugeHeaderDB()
		binary.BigEndian.PutUint32(b[28:], 1)
		return refused(importBytes(ctx, a.insider, "evil.db", append(b, make([]byte, 5000)...)), codes.InvalidArgument)
	}},
	{"import of garbage", func(ctx context.Context, a *attacker) error {
		return refused(importBytes(ctx, a.insider, "evil.db", []byte(strings.Repeat("garbage!", 1024))), codes.InvalidArgument)
	}},
	{"an import over data.max-import-size", func(ctx context.Context, a *attacker) error {
		b := hugeHeaderDB()
		binary.BigEndian.PutUint32(b[28:], 1280)
		chunks := [][]byte{append(b, make([]byte, 4096-100)...)}
		for range 1279 {
			chunks = append(chunks, make([]byte, 4096))
		}
		err := importBytes(ctx, a.insider, "evil.db", chunks...)
		if e := refused(err, codes.InvalidArgument); e != nil {
			return e
		}
		if !strings.Contains(err.Error(), "data.max-import-size") {
			return fmt.Errorf("%v does not name data.max-import-size", err)
		}
		return nil
	}},
	{"import with a bad name", func(ctx context.Context, a *attacker) error {
		return refused(importBytes(ctx, a.insider, "../../etc/passwd", hugeHeaderDB()), codes.InvalidArgument)
	}},
	{"forward page_count 0xFFFFFFFF", func(ctx context.Context, a *attacker) error {
		return a.forwardUnderHalt(ctx, &replicationv1.Transaction{PageCount: 0xFFFFFFFF, PageSize: 4096, Pages: []*replicationv1.Page{page(1, 4096)}})
	}},
	{"forward pgno 0", func(ctx context.Context, a *attacker) error {
		return a.forwardUnderHalt(ctx, &replicationv1.Transaction{PageCount: 2, PageSize: 4096, Pages: []*replicationv1.Page{page(0, 4096)}})
	}},
	{"forward a page of the wrong size", func(ctx context.Context, a *attacker) error {
		return a.forwardUnderHalt(ctx, &replicationv1.Transaction{PageCount: 2, PageSize: 4096, Pages: []*replicationv1.Page{page(2, 17)}})
	}},
	{"forward pages beyond page_count", func(ctx context.Context, a *attacker) error {
		return a.forwardUnderHalt(ctx, &replicationv1.Transaction{PageCount: 2, PageSize: 4096, Pages: []*replicationv1.Page{page(9, 4096)}})
	}},
	{"forward with a forged halt id", func(ctx context.Context, a *attacker) error {
		return refusedAny(a.forward(ctx, "forged", &replicationv1.Transaction{PageCount: 2, PageSize: 4096, Pages: []*replicationv1.Page{page(2, 4096)}}))
	}},
	{"WaitForPosition for a week", func(ctx context.Context, a *attacker) error {
		_, err := adminv1.NewAdminServiceClient(a.insider).WaitForPosition(ctx, &adminv1.WaitForPositionRequest{Name: "db", Txid: 1 << 60, Timeout: durationpb.New(7 * 24 * time.Hour)})
		return refused(err, codes.InvalidArgument)
	}},
	{"a 10 KB database name", func(ctx context.Context, a *attacker) error {
		_, err := adminv1.NewAdminServiceClient(a.insider).GetDatabase(ctx, &adminv1.GetDatabaseRequest{Name: strings.Repeat("a", 10000)})
		return refused(err, codes.InvalidArgument)
	}},
	{"a name with a NUL byte", func(ctx context.Context, a *attacker) error {
		_, err := adminv1.NewAdminServiceClient(a.insider).GetDatabase(ctx, &adminv1.GetDatabaseRequest{Name: "db\x00x"})
		return refused(err, codes.InvalidArgument)
	}},
	{"a 100 MiB message", func(ctx context.Context, a *attacker) error {
		_, err := adminv1.NewAdminServiceClient(a.insider).GetDatabase(ctx, &adminv1.GetDatabaseRequest{Name: strings.Repeat("a", 100<<20)})
		return refused(err, codes.ResourceExhausted)
	}},
	{"ReleaseHalt of a made-up lock", func(ctx context.Context, a *attacker) error {
		_, err := replicationv1.NewReplicationServiceClient(a.insider).ReleaseHalt(ctx, &replicationv1.ReleaseHaltRequest{Name: "db", Id: "made-up"})
		return refusedAny(err)
	}},
	{"Handoff to a node that does not exist", func(ctx context.Context, a *attacker) error {
		_, err := adminv1.NewAdminServiceClient(a.insider).Handoff(ctx, &adminv1.HandoffRequest{Target: "nobody"})
		return refusedAny(err)
	}},
	{"HTTP halt with a 10 MiB body", func(ctx context.Context, a *attacker) error {
		code, err := a.httpStatus(ctx, "POST", "/api/v1/dbs/db/halt", e2eToken, strings.NewReader(strings.Repeat("x", 10<<20)))
		if err == nil && code < 400 {
			return fmt.Errorf("HTTP %d, want a refusal", code)
		}
		return nil
	}},
	{"HTTP with a 2 MiB header", func(ctx context.Context, a *attacker) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", a.p.URL+"/api/v1/dbs", nil)
		req.Header.Set("X-Big", strings.Repeat("x", 2<<20))
		resp, err := a.https.Do(req)
		if err != nil {
			return nil // the node may cut the connection
		}
		resp.Body.Close()
		if resp.StatusCode < 400 {
			return fmt.Errorf("HTTP %d, want a refusal", resp.StatusCode)
		}
		return nil
	}},

	// Connections.
	{"plaintext on the TLS port", func(ctx context.Context, a *attacker) error {
		c, err := net.Dial("tcp", a.hostPort)
		if err != nil {
			return err
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /api/v1/dbs HTTP/1.1\r\nHost: x\r\n\r\n")
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		if strings.Contains(line, "200") {
			return fmt.Errorf("plaintext request answered %q", line)
		}
		return nil
	}},
	{"TLS without trusting the node's CA", func(ctx context.Context, a *attacker) error {
		c, err := tls.Dial("tcp", a.hostPort, &tls.Config{ServerName: "127.0.0.1"})
		if err == nil {
			c.Close()
			return fmt.Errorf("handshake with an untrusted certificate succeeded")
		}
		return nil
	}},
	{"garbage bytes instead of a TLS handshake", func(ctx context.Context, a *attacker) error {
		c, err := net.Dial("tcp", a.hostPort)
		if err != nil {
			return err
		}
		defer c.Close()
		_, _ = c.Write([]byte(strings.Repeat("\x16\x03\x01\xff\xff", 1000)))
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.Copy(io.Discard, c)
		return nil
	}},
	{"an HTTP/2 preface then garbage", func(ctx context.Context, a *attacker) error {
		c, err := a.rawTLS()
		if err != nil {
			return err
		}
		defer c.Close()
		_, _ = c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + strings.Repeat("\xff", 1<<16)))
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.Copy(io.Discard, c)
		return nil
	}},
	{"slow headers", func(ctx context.Context, a *attacker) error {
		c, err := a.rawTLS()
		if err != nil {
			return err
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /api/v1/dbs HTTP/1.1\r\nHost: x\r\n")
		// Never finish the headers: the node closes the connection in its
		// own time; until then the other attacks run beside it.
		go func() { _, _ = io.Copy(io.Discard, c) }()
		return nil
	}},
	{"a stalled export and a writer beside it", func(ctx context.Context, a *attacker) error {
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		s, err := adminv1.NewAdminServiceClient(a.insider).ExportDatabase(sctx, &adminv1.ExportDatabaseRequest{Name: "big"})
		if err != nil {
			return err
		}
		if _, err := s.Recv(); err != nil {
			return err
		}
		// Never read again: the primary's writers carry on.
		done := make(chan error, 1)
		go func() { _, err := insertRowsErr(a.t, a.p.Path("big"), 5); done <- err }()
		select {
		case err := <-done:
			return err
		case <-time.After(60 * time.Second):
			return fmt.Errorf("a writer is stuck behind a stalled export")
		}
	}},
	{"1,000 idle connections", func(ctx context.Context, a *attacker) error {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for range 1000 {
			c, err := net.Dial("tcp", a.hostPort)
			if err != nil {
				break
			}
			conns = append(conns, c)
		}
		// With them open, an honest caller is still served.
		_, err := adminv1.NewAdminServiceClient(a.insider).ListDatabases(ctx, &adminv1.ListDatabasesRequest{})
		return err
	}},
	{"100 watch streams left open", func(ctx context.Context, a *attacker) error {
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		for range 100 {
			if _, err := replicationv1.NewReplicationServiceClient(a.insider).WatchDatabases(sctx, &replicationv1.WatchDatabasesRequest{}); err != nil {
				return err
			}
		}
		_, err := adminv1.NewAdminServiceClient(a.insider).ListDatabases(ctx, &adminv1.ListDatabasesRequest{})
		return err
	}},
	{"a replica's stream from a position in the future", func(ctx context.Context, a *attacker) error {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		s, err := replicationv1.NewReplicationServiceClient(a.insider).StreamTransactions(sctx, &replicationv1.StreamTransactionsRequest{
			Name: "db", Hostname: "attacker", Position: &replicationv1.Position{Txid: 1 << 62, Checksum: 42}})
		if err != nil {
			return err
		}
		for {
			if _, err := s.Recv(); err != nil {
				return nil // a snapshot, then the deadline: nothing changes on the primary
			}
		}
	}},
}

func TestAttack_NodesSurviveAndLoseNothing(t *testing.T) {
	if len(attacks) < 30 {
		t.Fatalf("the script has %d attacks; the bar is 30", len(attacks))
	}
	ca := tlsfilestest.NewCA(t, t.TempDir(), "ca")
	sec := &NodeSecurity{Token: e2eToken, CA: ca}
	p := StartNode(t, NodeOptions{Security: sec, Data: "  max-import-size: 1MiB\n"})
	r := StartNode(t, NodeOptions{Security: sec, ReplicaOf: p})
	insertRows(t, p.Path("db"), 50)
	cliMakeDB(t, p, "big", 20000) // an export of it does not fit in the flow-control windows
	before := map[string]string{"db": waitCaughtUp(t, "db", p, r), "big": waitCaughtUp(t, "big", p, r)}

	files, err := tlsfiles.Load("", "", ca.CertFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := &attacker{t: t, p: p, r: r, ca: ca, tlsConf: func() *tls.Config {
		c := files.Client()
		c.ServerName = "127.0.0.1"
		return c
	}, https: p.HTTP, hostPort: p.HTTPAddr}
	dial := func(opts ...client.Option) *grpc.ClientConn {
		conn, err := client.Dial(p.URL, append(opts, client.WithTLS(files.Client))...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	a.anon, a.wrong, a.insider = dial(), dial(client.WithToken("0123456789abcdef-guess")), dial(client.WithToken(e2eToken))

	for _, at := range attacks {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		if err := at.run(ctx, a); err != nil {
			t.Errorf("attack %q: %v", at.name, err)
		}
		cancel()
		// After each, both nodes still answer.
		for _, n := range []*Node{p, r} {
			if !n.Running() {
				t.Fatalf("after attack %q the node at %s is down:\n%s", at.name, n.URL, n.Log)
			}
			if code, _ := n.HTTPGet("/healthz"); code != 200 {
				t.Fatalf("after attack %q /healthz of %s: %d", at.name, n.URL, code)
			}
		}
	}

	// Nothing was lost: the databases are where they were, or (the one
	// the writer beside the stalled export wrote) the replica has every
	// commit, and all is intact.
	before["big"] = p.Pos("big")
	for db, pos := range before {
		if got := waitCaughtUp(t, db, p, r); got != pos {
			t.Errorf("%s: position %s after the attacks, want %s", db, got, pos)
		}
		for _, n := range []*Node{p, r} {
			if got := strings.Split(countAndCheck(t, n, db), "\n"); got[len(got)-1] != "ok" {
				t.Errorf("%s on %s: %q", db, n.URL, got)
			}
		}
	}
	if _, err := adminv1.NewAdminServiceClient(a.insider).GetNode(context.Background(), &adminv1.GetNodeRequest{}); err != nil {
		t.Fatalf("GetNode after the attacks: %v", err)
	}
	if code, body := p.HTTPGet("/api/v1/dbs/evil.db"); code != 401 && code != 404 {
		t.Errorf("evil.db after the attacks: %d %s", code, body)
	}
}

//go:build integration

package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	client "github.com/pagewire/pagewire/clients/go"
	"github.com/pagewire/pagewire/internal/tlsfiles"
	"github.com/pagewire/pagewire/internal/tlsfiles/tlsfilestest"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
)

// Security tests: nodes with auth.token and TLS (mTLS) on their ports, as
// separate processes; replication, halt forwarding and the CLI show the
// token and certificates, and nothing without them reads or changes data.

const e2eToken = "e2e-0123456789abcdef-token"

// secureCluster starts a primary and a replica that require the token and
// client certificates from one CA.
func secureCluster(t *testing.T) (p, r *Node, ca *tlsfilestest.CA) {
	t.Helper()
	ca = tlsfilestest.NewCA(t, t.TempDir(), "ca")
	sec := &NodeSecurity{Token: e2eToken, CA: ca, RequireClientCert: true}
	p = StartNode(t, NodeOptions{Security: sec})
	r = StartNode(t, NodeOptions{Security: sec, ReplicaOf: p})
	return p, r, ca
}

// authorized does an HTTP request through n's TLS client, with token if
// set, and returns the status code.
func authorized(t *testing.T, n *Node, method, path, token string) int {
	t.Helper()
	req, err := http.NewRequest(method, n.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := n.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestSecurity_TokenAndMutualTLS(t *testing.T) {
	p, r, ca := secureCluster(t)
	if !strings.HasPrefix(p.URL, "https://") {
		t.Fatalf("primary URL %q: want https", p.URL)
	}

	// Replication runs over mTLS with the token.
	insertRows(t, p.Path("db"), 20)
	waitCaughtUp(t, "db", p, r)
	if got := countAndCheck(t, r, "db"); got != "20\nok" {
		t.Fatalf("replica: %q", got)
	}

	// The HTTP API: health and the primary are open, data needs the token.
	for _, tc := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/healthz", "", 200},
		{"GET", "/primary", "", 200},
		{"GET", "/api/v1/dbs", "", 401},
		{"GET", "/api/v1/dbs", "wrong-0123456789abcdef", 401},
		{"GET", "/api/v1/dbs", e2eToken, 200},
		{"POST", "/api/v1/dbs/db/halt", "", 401},
	} {
		if got := authorized(t, p, tc.method, tc.path, tc.token); got != tc.want {
			t.Errorf("%s %s (token %q): %d, want %d", tc.method, tc.path, tc.token, got, tc.want)
		}
	}

	// The CLI: without a token it says which setting is missing; with the
	// flags, or the environment, it works.
	node := ca.Issue("cli", "cli")
	tlsFlags := []string{"-tls-ca", ca.CertFile, "-tls-cert", node.CertFile, "-tls-key", node.KeyFile}
	out, code := cliRun(t, "", nil, time.Minute, append([]string{"status", "-url", p.URL}, tlsFlags...)...)
	if code == 0 || !strings.Contains(out, "PAGEWIRE_TOKEN") {
		t.Errorf("status without a token: exit %d\n%s", code, out)
	}
	out, code = cliRun(t, "", nil, time.Minute, "status", "-url", p.URL, "-token", e2eToken)
	if code == 0 || !strings.Contains(out, "certificate") {
		t.Errorf("status without the CA: exit %d\n%s", code, out)
	}
	out, code = cliRun(t, "", nil, time.Minute, append([]string{"status", "-url", p.URL, "-token", e2eToken}, tlsFlags...)...)
	if code != 0 || !strings.Contains(out, "role:     primary") {
		t.Fatalf("status with the token and certificates: exit %d\n%s", code, out)
	}
	env := []string{"PAGEWIRE_URL=" + r.URL, "PAGEWIRE_TOKEN=" + e2eToken, "PAGEWIRE_TLS_CA=" + ca.CertFile,
		"PAGEWIRE_TLS_CERT=" + node.CertFile, "PAGEWIRE_TLS_KEY=" + node.KeyFile}
	exported := filepath.Join(t.TempDir(), "db.sqlite")
	if out, code := cliRun(t, "", env, time.Minute, "export", "-name", "db", exported); code != 0 {
		t.Fatalf("export from the replica with the environment: exit %d\n%s", code, out)
	}
	if got := strings.TrimSpace(python(t, readTestdata(t, "count.py"), exported)); got != "20\nok" {
		t.Fatalf("exported copy: %q", got)
	}

	// A halt lock through the replica: its writes are forwarded to the
	// primary with the replica's token and certificate.
	insert := readTestdata(t, "halt_insert.py")
	if out, code := cliRun(t, "", env, time.Minute, "halt", "-name", "db", "--", "python3", "-c", insert, r.Path("db"), "5"); code != 0 {
		t.Fatalf("halt through the replica: exit %d\n%s", code, out)
	}
	if got := countAndCheck(t, p, "db"); got != "25\nok" {
		t.Fatalf("primary after the replica's halt-locked writes: %q", got)
	}

	// Nothing without the token changed data: an import and a handoff
	// with the certificates but no token are refused.
	want := waitCaughtUp(t, "db", p, r)
	if err := os.WriteFile(filepath.Join(t.TempDir(), "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	noToken := []string{"PAGEWIRE_URL=" + p.URL, "PAGEWIRE_TLS_CA=" + ca.CertFile, "PAGEWIRE_TLS_CERT=" + node.CertFile, "PAGEWIRE_TLS_KEY=" + node.KeyFile, "PAGEWIRE_TOKEN="}
	if out, code := cliRun(t, "", noToken, time.Minute, "import", "-name", "db", exported); code == 0 || !strings.Contains(out, "auth.token") {
		t.Errorf("import without a token: exit %d\n%s", code, out)
	}
	if out, code := cliRun(t, "", noToken, time.Minute, "handoff"); code == 0 || !strings.Contains(out, "auth.token") {
		t.Errorf("handoff without a token: exit %d\n%s", code, out)
	}
	if got := p.Pos("db"); got != want {
		t.Fatalf("primary position after refused calls: %s, want %s", got, want)
	}

	// The Go client: WithToken and WithTLS.
	files, err := tlsfiles.Load(node.CertFile, node.KeyFile, ca.CertFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := client.Dial(p.URL, client.WithTLS(files.Client))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = adminv1.NewAdminServiceClient(conn).GetDatabase(context.Background(), &adminv1.GetDatabaseRequest{Name: "db"})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("GetDatabase without a token: %v, want Unauthenticated", err)
	}
	conn2, err := client.Dial(p.URL, client.WithTLS(files.Client), client.WithToken(e2eToken))
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	if _, err := adminv1.NewAdminServiceClient(conn2).GetDatabase(context.Background(), &adminv1.GetDatabaseRequest{Name: "db"}); err != nil {
		t.Fatalf("GetDatabase with the token: %v", err)
	}
}

// A replica without the token does not get the primary's data, and says
// why in its log.
func TestSecurity_ReplicaWithoutTheToken(t *testing.T) {
	p := StartNode(t, NodeOptions{Security: &NodeSecurity{Token: e2eToken}})
	insertRows(t, p.Path("db"), 3)
	r := StartNode(t, NodeOptions{ReplicaOf: p, NoWait: true})
	waitFor(t, 60*time.Second, "the replica to log the refusal", func() bool {
		return strings.Contains(r.Log.String(), "auth.token")
	})
	if _, err := os.Stat(r.Path("db")); err == nil {
		t.Fatal("a replica without the token has the primary's database")
	}
}

// A replica's proxy finds the primary's proxy with the token and over
// TLS, and forwards writes there.
func TestSecurity_ProxyForwardsWithTheToken(t *testing.T) {
	sec := &NodeSecurity{Token: e2eToken, CA: tlsfilestest.NewCA(t, t.TempDir(), "ca")}
	p := startSecureAppNode(t, nil, "", sec)
	r := startSecureAppNode(t, p, "", sec)
	waitFor(t, 30*time.Second, "app.db on the replica", func() bool {
		_, err := os.Stat(r.Path("app.db"))
		return err == nil
	})
	resp, body, txid := do(t, "POST", r.ProxyURL+"/items", `{"name": "secure", "value": "1"}`, "")
	if resp.StatusCode != 201 || len(txid) != 16 {
		t.Fatalf("POST through the replica's proxy: %d %s", resp.StatusCode, body)
	}
	resp, body, _ = do(t, "GET", r.ProxyURL+"/items", "", txid)
	if resp.StatusCode != 200 || !strings.Contains(body, `"secure"`) {
		t.Fatalf("GET with the cookie on the replica: %d %s", resp.StatusCode, body)
	}
}

//go:build integration

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Proxy tests: three nodes (static lease), each running the example app
// (deploy/example) behind its proxy, as a user would deploy them.

// appNode is a node with its proxy and the example app.
type appNode struct {
	*Node
	ProxyURL string
}

// startAppNode starts a node whose exec runs the example app on app.db,
// behind the node's proxy.
func startAppNode(t *testing.T, primary *appNode, extra string) *appNode {
	t.Helper()
	return startSecureAppNode(t, primary, extra, nil)
}

// startSecureAppNode is startAppNode with auth and TLS on the node's port.
func startSecureAppNode(t *testing.T, primary *appNode, extra string, sec *NodeSecurity) *appNode {
	t.Helper()
	proxyAddr, appAddr := freeAddr(t), freeAddr(t)
	opts := NodeOptions{Config: fmt.Sprintf("proxy:\n  addr: %q\n  target: %q\n  db: app.db\n  max-lag: 5s\n%s", proxyAddr, appAddr, extra), Security: sec}
	if primary != nil {
		opts.ReplicaOf = primary.Node
	} else {
		// Replicas reach the primary's proxy at its advertise URL's host.
		opts.Lease = "lease:\n  type: static\n  hostname: node1\n  advertise-url: \"{{URL}}\"\n  candidate: true\n"
	}
	// The app finds the mount in $PAGEWIRE_TEST_MNT (see Node.Start).
	opts.Args = []string{"--", "sh", "-c", fmt.Sprintf("exec %s -addr %s -db \"$PAGEWIRE_TEST_MNT/app.db\"", exampleBin, appAddr)}
	n := StartNode(t, opts)
	an := &appNode{Node: n, ProxyURL: "http://" + proxyAddr}
	waitFor(t, 30*time.Second, "the example app behind "+an.ProxyURL, func() bool {
		resp, err := http.Get(an.ProxyURL + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return an
}

// appCluster starts a primary and two replicas with the app.
func appCluster(t *testing.T) (*appNode, []*appNode) {
	t.Helper()
	p := startAppNode(t, nil, "")
	rs := []*appNode{startAppNode(t, p, ""), startAppNode(t, p, "")}
	for _, r := range rs {
		waitFor(t, 30*time.Second, "app.db on "+r.URL, func() bool {
			code, _ := r.HTTPGet("/api/v1/dbs/app.db")
			return code == 200
		})
	}
	return p, rs
}

type item struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Value string `json:"value"`
}

// do sends a request with an optional __txid cookie and returns the
// response (body read) and the __txid it set.
func do(t testing.TB, method, url, body, txid string) (*http.Response, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if txid != "" {
		req.AddCookie(&http.Cookie{Name: "__txid", Value: txid})
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	set := ""
	for _, c := range resp.Cookies() {
		if c.Name == "__txid" {
			set = c.Value
		}
	}
	return resp, string(b), set
}

func TestProxy_WritesForwardedAndReadYourWrites(t *testing.T) {
	p, rs := appCluster(t)
	r1, r2 := rs[0], rs[1]

	// A POST to a replica's proxy lands on the primary.
	resp, body, txid := do(t, "POST", r1.ProxyURL+"/items", `{"name": "first", "value": "1"}`, "")
	if resp.StatusCode != 201 || len(txid) != 16 {
		t.Fatalf("POST through a replica: %d %s (cookie %q)", resp.StatusCode, body, txid)
	}
	var it item
	if err := json.Unmarshal([]byte(body), &it); err != nil || it.ID == 0 {
		t.Fatalf("POST answer %q: %v", body, err)
	}
	if got := strings.Split(p.Pos("app.db"), "/")[0]; got < txid {
		t.Fatalf("the primary is at TXID %s, the write's cookie says %s", got, txid)
	}
	if out := python(t, `
import sqlite3, sys
print(sqlite3.connect(sys.argv[1]).execute("select name from items where id = ?", (int(sys.argv[2]),)).fetchone()[0])
`, p.Path("app.db"), fmt.Sprint(it.ID)); strings.TrimSpace(out) != "first" {
		t.Fatalf("the primary's copy: %q", out)
	}
	// A read with the cookie on the other replica sees it.
	resp, body, _ = do(t, "GET", fmt.Sprintf("%s/items/%d", r2.ProxyURL, it.ID), "", txid)
	if resp.StatusCode != 200 || !strings.Contains(body, `"first"`) {
		t.Fatalf("GET with the cookie on another replica: %d %s", resp.StatusCode, body)
	}

	// A halt-lock write on a replica's mount is on the primary, and its app
	// serves it, when `pagewire halt` returns.
	out, code := r2.CLI("halt", "-name", "app.db", "-url", r2.URL, "--", "python3", "-c", `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)
c.execute("insert into items(name, value, created_at) values ('halted', 'h', '2026-01-01')")
print(c.execute("select id from items where name = 'halted'").fetchone()[0])
`, r2.Path("app.db"))
	if code != 0 {
		t.Fatalf("pagewire halt on a replica: exit %d\n%s", code, out)
	}
	id := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:])
	if resp, body, _ := do(t, "GET", p.ProxyURL+"/items/"+id, "", ""); resp.StatusCode != 200 || !strings.Contains(body, `"halted"`) {
		t.Fatalf("the halt-lock write (id %s) on the primary right after `pagewire halt` returned: %d %s", id, resp.StatusCode, body)
	}

	// Read-your-writes across random nodes, 1,000 rounds.
	nodes := []*appNode{p, r1, r2}
	failures := 0
	for i := range 1000 {
		w := nodes[rand.IntN(len(nodes))]
		r := rs[rand.IntN(len(rs))]
		resp, body, txid := do(t, "POST", w.ProxyURL+"/items", fmt.Sprintf(`{"name": "round-%d", "value": "v"}`, i), "")
		if resp.StatusCode != 201 || txid == "" {
			t.Fatalf("round %d: POST through %s: %d %s", i, w.URL, resp.StatusCode, body)
		}
		var it item
		_ = json.Unmarshal([]byte(body), &it)
		resp, body, _ = do(t, "GET", fmt.Sprintf("%s/items/%d", r.ProxyURL, it.ID), "", txid)
		if resp.StatusCode != 200 || !strings.Contains(body, fmt.Sprintf(`"round-%d"`, i)) {
			failures++
			pos := r.Pos("app.db")
			time.Sleep(200 * time.Millisecond)
			resp2, body2, _ := do(t, "GET", fmt.Sprintf("%s/items/%d", r.ProxyURL, it.ID), "", txid)
			t.Errorf("round %d: wrote through %s, read through %s: %d %s (cookie %s, replica pos %s; 200ms later %d %s)", i, w.URL, r.URL, resp.StatusCode, body, txid, pos, resp2.StatusCode, body2)
		}
	}
	t.Logf("read-your-writes: %d of 1000 rounds failed", failures)

	// Bad input is the app's to answer, wherever it is sent.
	for _, n := range nodes {
		if resp, body, _ := do(t, "POST", n.ProxyURL+"/items", "{not json", ""); resp.StatusCode != 400 || !strings.Contains(body, "error") {
			t.Errorf("bad JSON through %s: %d %s", n.URL, resp.StatusCode, body)
		}
		big := `{"name": "big", "value": "` + strings.Repeat("x", 2<<20) + `"}`
		if resp, body, _ := do(t, "POST", n.ProxyURL+"/items", big, ""); resp.StatusCode != 413 {
			t.Errorf("a 2 MiB body through %s: %d %s", n.URL, resp.StatusCode, body)
		}
		if resp, body, _ := do(t, "GET", n.ProxyURL+"/items/abc", "", ""); resp.StatusCode != 400 {
			t.Errorf("a bad id through %s: %d %s", n.URL, resp.StatusCode, body)
		}
		if resp, body, _ := do(t, "GET", n.ProxyURL+"/litefs/health", "", ""); resp.StatusCode != 200 {
			t.Errorf("proxy health on %s: %d %s", n.URL, resp.StatusCode, body)
		}
	}
}

func TestProxy_ReadWaitsThenTimesOut(t *testing.T) {
	p, rs := appCluster(t)
	r := rs[0]
	_, _, txid := do(t, "POST", p.ProxyURL+"/items", `{"name": "a", "value": "1"}`, "")
	// A TXID the primary never reached: the replica waits max-lag, then 504.
	resp, body, _ := do(t, "GET", r.ProxyURL+"/items", "", "00000000ffffffff")
	if resp.StatusCode != 504 || !strings.Contains(body, "00000000ffffffff") {
		t.Fatalf("a read for a TXID never written: %d %s", resp.StatusCode, body)
	}
	if resp, body, _ := do(t, "GET", r.ProxyURL+"/items", "", txid); resp.StatusCode != 200 || !strings.Contains(body, `"a"`) {
		t.Fatalf("a read for the write's TXID: %d %s", resp.StatusCode, body)
	}
}

// The primary's app sees the client that a replica's proxy saw, not what
// the client claimed in X-Forwarded-*; a request that claims to be
// forwarded, from an address no replica watches from, gets its claims
// replaced. The app here echoes the headers it got.
func TestProxy_ClientAddressThroughAReplica(t *testing.T) {
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"xff": r.Header.Get("X-Forwarded-For"),
			"xfh": r.Header.Get("X-Forwarded-Host"), "by": r.Header.Get("Pagewire-Forwarded-By")})
	}))
	defer echo.Close()
	proxyConfig := func(addr string) string {
		return fmt.Sprintf("proxy:\n  addr: %q\n  target: %q\n  db: app.db\n", addr, echo.Listener.Addr().String())
	}
	pAddr, rAddr := freeAddr(t), freeAddr(t)
	p := StartNode(t, NodeOptions{Config: proxyConfig(pAddr),
		// Replicas reach the primary's proxy at its advertise URL's host.
		Lease: "lease:\n  type: static\n  hostname: node1\n  advertise-url: \"{{URL}}\"\n  candidate: true\n"})
	StartNode(t, NodeOptions{Config: proxyConfig(rAddr), ReplicaOf: p})
	waitFor(t, 30*time.Second, "the replica to watch the primary", func() bool {
		_, body := p.HTTPGet("/metrics")
		return strings.Contains(body, "litefs_subscriber_count 1")
	})

	send := func(from, url string, hdr map[string]string) map[string]string {
		t.Helper()
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}, Timeout: 30 * time.Second}
		req, _ := http.NewRequest("POST", url, strings.NewReader("{}"))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != 200 {
			t.Fatalf("POST %s: %d %v", url, resp.StatusCode, err)
		}
		return got
	}
	forged := map[string]string{"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "bank.example"}

	// Through the replica: the replica's view of the client, and its hop.
	got := send("127.0.0.2", "http://"+rAddr+"/items", forged)
	if got["xff"] != "127.0.0.2, 127.0.0.1" || got["xfh"] != rAddr || got["by"] == "" {
		t.Errorf("through a replica the primary's app saw %v; want X-Forwarded-For \"127.0.0.2, 127.0.0.1\", -Host %q and the replica as forwarder", got, rAddr)
	}

	// Straight to the primary, claiming to be forwarded, from elsewhere.
	forged["Pagewire-Forwarded-By"] = "replica-9"
	got = send("127.0.0.3", "http://"+pAddr+"/items", forged)
	if got["xff"] != "127.0.0.3" || got["xfh"] != pAddr || got["by"] != "" {
		t.Errorf("a forged forward reached the primary's app as %v; want X-Forwarded-For \"127.0.0.3\", -Host %q, no forwarder", got, pAddr)
	}
}

//go:build integration

package e2e

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/consultest"
)

// consulCluster starts a Consul agent and n candidate nodes on a Consul
// lease.
func consulCluster(t *testing.T, n int) (*consultest.Agent, []*Node) {
	t.Helper()
	agent := consultest.Start(t)
	var nodes []*Node
	for i := range n {
		nodes = append(nodes, startConsulNode(t, agent, fmt.Sprintf("node%d", i+1), true))
	}
	return agent, nodes
}

func startConsulNode(t *testing.T, agent *consultest.Agent, host string, candidate bool) *Node {
	t.Helper()
	return startConsulNodeAt(t, agent.URL, host, candidate, "")
}

// startConsulNodeAt starts a node on the Consul at consulURL; extra is
// more YAML for the lease section (indented two spaces).
func startConsulNodeAt(t *testing.T, consulURL, host string, candidate bool, extra string) *Node {
	t.Helper()
	return StartNode(t, NodeOptions{Lease: consulLease(consulURL, host, candidate, extra)})
}

// consulLease is the lease section of a node on the Consul at consulURL;
// extra is more YAML for it (indented two spaces).
func consulLease(consulURL, host string, candidate bool, extra string) string {
	return fmt.Sprintf(`lease:
  type: consul
  hostname: %s
  advertise-url: "{{URL}}"
  candidate: %v
%s  consul:
    url: %q
    key: pagewire-e2e/primary
    ttl: 10s
    lock-delay: 1s
`, host, candidate, extra, consulURL)
}

// leaseRoles asks every running node whether it is the primary (the
// litefs_is_primary metric) and whom /primary names.
func leaseRoles(t *testing.T, nodes []*Node) (primaries []*Node, named map[string]int) {
	t.Helper()
	named = map[string]int{}
	for _, n := range nodes {
		if !n.Running() {
			continue
		}
		code, body := n.HTTPGet("/metrics")
		if code == http.StatusOK && strings.Contains(body, "\nlitefs_is_primary 1") {
			primaries = append(primaries, n)
		}
		if code, p := n.HTTPGet("/primary"); code == http.StatusOK {
			named[strings.TrimSpace(p)]++
		}
	}
	return primaries, named
}

// waitOnePrimary waits until exactly one running node is the primary and
// every running node names it; it returns it.
func waitOnePrimary(t *testing.T, nodes []*Node, timeout time.Duration) *Node {
	t.Helper()
	var primary *Node
	waitFor(t, timeout, "exactly one primary, named by every node", func() bool {
		ps, named := leaseRoles(t, nodes)
		if len(ps) != 1 {
			return false
		}
		running := 0
		for _, n := range nodes {
			if n.Running() {
				running++
			}
		}
		code, host := ps[0].HTTPGet("/primary")
		if code != http.StatusOK || named[strings.TrimSpace(host)] != running {
			return false
		}
		primary = ps[0]
		return true
	})
	return primary
}

// allBut returns nodes without x.
func allBut(nodes []*Node, x *Node) []*Node {
	var out []*Node
	for _, n := range nodes {
		if n != x {
			out = append(out, n)
		}
	}
	return out
}

func (n *Node) hostname(t *testing.T) string {
	code, body := n.HTTPGet("/primary")
	if code != http.StatusOK {
		t.Fatalf("GET /primary on %s: %d %s", n.Dir, code, body)
	}
	return body
}

func TestLease_ConsulOnePrimaryOthersFollow(t *testing.T) {
	_, nodes := consulCluster(t, 3)
	p := waitOnePrimary(t, nodes, time.Minute)
	cliMakeDB(t, p, "lease.db", 50)
	others := allBut(nodes, p)
	waitCaughtUp(t, "lease.db", p, others...)
	for _, r := range others {
		if got := countAndCheck(t, r, "lease.db"); got != "50\nok" {
			t.Fatalf("replica %s: %q, want 50 rows and ok", r.Dir, got)
		}
		// Writes on a follower are refused, not lost.
		if out, err := insertRowsErr(t, r.Path("lease.db"), 1); err == nil || !strings.Contains(out, "readonly") {
			t.Fatalf("write on a follower: err=%v output=%q, want a read-only error", err, out)
		}
	}
}

// kill -9 of the primary: a candidate takes over once Consul frees the
// lease, the survivors follow it, and writes resume on it.
func TestLease_ConsulFailoverAfterKill(t *testing.T) {
	_, nodes := consulCluster(t, 3)
	p := waitOnePrimary(t, nodes, time.Minute)
	cliMakeDB(t, p, "fo.db", 20)
	others := allBut(nodes, p)
	waitCaughtUp(t, "fo.db", p, others...)
	p.Kill()
	killed := time.Now()
	// Consul frees a dead holder's session after up to 2×TTL, plus
	// lock-delay: allow a generous margin.
	np := waitOnePrimary(t, others, 90*time.Second)
	t.Logf("new primary %s after %s", strings.TrimSpace(np.hostname(t)), time.Since(killed).Round(100*time.Millisecond))
	insertRows(t, np.Path("fo.db"), 10)
	rest := allBut(others, np)
	waitCaughtUp(t, "fo.db", np, rest...)
	for _, n := range append(rest, np) {
		if got := countAndCheck(t, n, "fo.db"); got != "30\nok" {
			t.Fatalf("%s: %q, want 30 rows and ok", n.Dir, got)
		}
	}
}

// A primary stopped with SIGTERM stops taking writes and releases the
// lease, so another candidate takes it without waiting for it to expire.
func TestLease_ConsulStoppedPrimaryReleases(t *testing.T) {
	_, nodes := consulCluster(t, 2)
	p := waitOnePrimary(t, nodes, time.Minute)
	other := nodes[0]
	if other == p {
		other = nodes[1]
	}
	stopped := time.Now()
	p.Stop()
	waitOnePrimary(t, []*Node{other}, 30*time.Second)
	t.Logf("the other candidate took over %s after SIGTERM", time.Since(stopped).Round(10*time.Millisecond))
	insertRows(t, other.Path("after.db"), 3)
}

// A node with candidate: false follows and never takes the lease, even
// when no candidate is left.
func TestLease_ConsulNonCandidateNeverLeads(t *testing.T) {
	agent, nodes := consulCluster(t, 1)
	p := waitOnePrimary(t, nodes, time.Minute)
	r := startConsulNode(t, agent, "follower", false)
	cliMakeDB(t, p, "nc.db", 5)
	waitCaughtUp(t, "nc.db", p, r)
	p.Stop()
	// With the only candidate gone the follower names no primary, takes
	// no writes and stays a replica.
	waitFor(t, 30*time.Second, "the follower to see no primary", func() bool {
		code, body := r.HTTPGet("/primary")
		return code == http.StatusOK && strings.TrimSpace(body) == ""
	})
	if _, body := r.HTTPGet("/metrics"); !strings.Contains(body, "\nlitefs_is_primary 0") {
		t.Fatal("a non-candidate reports itself primary")
	}
	if out, err := insertRowsErr(t, r.Path("nc.db"), 1); err == nil || !strings.Contains(out, "readonly") {
		t.Fatalf("write with no primary: err=%v output=%q, want a read-only error", err, out)
	}
}

// A Consul that refuses connections is retried, not fatal: the node comes
// up, takes no writes, and /healthz says what to check.
func TestLease_ConsulRefusingConnectionsIsReported(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := ln.Addr().String()
	ln.Close()
	n := StartNode(t, NodeOptions{Lease: fmt.Sprintf(`lease:
  type: consul
  hostname: lonely
  advertise-url: "{{URL}}"
  candidate: true
  consul:
    url: "http://%s"
`, deadAddr)})
	waitFor(t, 30*time.Second, "/healthz to report the lease problem", func() bool {
		code, body := n.HTTPGet("/healthz")
		return code == http.StatusOK && strings.Contains(body, "degraded") &&
			strings.Contains(body, "lease.consul.url") && strings.Contains(body, "FLY_CONSUL_URL") && strings.Contains(body, "connection refused")
	})
	// Creating a database is a write too: refused, and nothing is left.
	if out, err := insertRowsErr(t, n.Path("nolease.db"), 1); err == nil {
		t.Fatalf("write with no lease succeeded: %q", out)
	}
	if _, err := os.Stat(n.Path("nolease.db")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stat nolease.db: %v, want it absent", err)
	}
	if !n.Running() {
		t.Fatal("the node exited instead of retrying")
	}
	if !strings.Contains(n.Log.String(), "could not read the lease; retrying") {
		t.Fatalf("node log does not say it retries:\n%s", n.Log.String())
	}
}

// LiteFS's "common mistake": a static-lease config with candidate: true
// copied to a second node. The copy finds the primary its
// lease.advertise-url names, refuses writes (pointing apps at it) and
// reports the conflict; the real primary keeps taking writes.
func TestLease_StaticTwoPrimariesDetected(t *testing.T) {
	a := StartNode(t, NodeOptions{Lease: "lease:\n  type: static\n  hostname: node-a\n  advertise-url: \"{{URL}}\"\n  candidate: true\n"})
	b := StartNode(t, NodeOptions{Lease: fmt.Sprintf("lease:\n  type: static\n  hostname: node-a\n  advertise-url: %q\n  candidate: true\n", a.URL)})
	waitFor(t, 30*time.Second, "the copy's /healthz to report the conflict", func() bool {
		code, body := b.HTTPGet("/healthz")
		return code == http.StatusOK && strings.Contains(body, "two nodes claim to be the static primary") &&
			strings.Contains(body, "lease.candidate")
	})
	if !strings.Contains(b.Log.String(), "static lease conflict") {
		t.Fatalf("the copy's log does not report the conflict:\n%s", b.Log)
	}
	// Creating a database is a write: refused, and nothing is left.
	if out, err := insertRowsErr(t, b.Path("x.db"), 1); err == nil || !strings.Contains(out, "unable to open database file") {
		t.Fatalf("write on the copy: err=%v output=%q, want it refused", err, out)
	}
	if _, err := os.Stat(b.Path("x.db")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stat x.db on the copy: %v, want it absent", err)
	}
	insertRows(t, a.Path("x.db"), 5)
	if code, body := a.HTTPGet("/healthz"); code != http.StatusOK || !strings.Contains(body, `"ok"`) {
		t.Fatalf("the real primary's /healthz: %d %s", code, body)
	}
}

// lease.promote: a candidate started with promote: true takes over from
// the running primary once it has caught up; the old primary follows it.
func TestLease_ConsulPromote(t *testing.T) {
	agent := consultest.Start(t)
	a := startConsulNode(t, agent, "node1", true)
	waitOnePrimary(t, []*Node{a}, time.Minute)
	cliMakeDB(t, a, "promo.db", 100)
	b := startConsulNodeAt(t, agent.URL, "node2", true, "  promote: true\n")
	waitFor(t, time.Minute, "the promoted node to be the only primary", func() bool {
		ps, named := leaseRoles(t, []*Node{a, b})
		return len(ps) == 1 && ps[0] == b && named["node2"] == 2
	})
	if !strings.Contains(b.Log.String(), "lease.promote: caught up") {
		t.Fatalf("the promoted node's log does not say why it took over:\n%s", b.Log)
	}
	if got := countAndCheck(t, b, "promo.db"); got != "100\nok" {
		t.Fatalf("promoted node: %q, want 100 rows", got)
	}
	insertRows(t, b.Path("promo.db"), 5)
	waitCaughtUp(t, "promo.db", b, a)
	if got := countAndCheck(t, a, "promo.db"); got != "105\nok" {
		t.Fatalf("old primary after the promotion: %q, want 105 rows", got)
	}
}

// TestLease_StaticReplicaNamesThePrimary checks that a static replica's
// .primary and GET /primary name the primary as the primary calls itself,
// whether its lease.hostname is the primary's (as LiteFS's docs write it)
// or its own.
func TestLease_StaticReplicaNamesThePrimary(t *testing.T) {
	p := StartNode(t, NodeOptions{}) // static primary "node1"
	cliMakeDB(t, p, "named.db", 2)
	for _, tc := range []struct {
		name  string
		lease string // "": LiteFS's style, lease.hostname is the primary's
	}{
		{"hostname is the primary's", ""},
		{"hostname is the replica's own", fmt.Sprintf("lease:\n  type: static\n  hostname: replica-own\n  advertise-url: %q\n  candidate: false\n", p.URL)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := NodeOptions{ReplicaOf: p}
			if tc.lease != "" {
				opts = NodeOptions{Lease: tc.lease}
			}
			r := StartNode(t, opts)
			waitCaughtUp(t, "named.db", p, r)
			var file, api string
			ok := pollUntil(30*time.Second, func() bool {
				b, _ := os.ReadFile(r.Path(".primary"))
				_, api = r.HTTPGet("/primary")
				file = string(b)
				return file == "node1\n" && api == "node1\n"
			})
			if !ok {
				t.Fatalf(".primary = %q, GET /primary = %q, want both %q (the primary's own hostname)", file, api, "node1\n")
			}
		})
	}
}

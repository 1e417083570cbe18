//go:build integration

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Synchronous replication (replication.sync-replicas): a commit on the
// primary returns once enough replicas have it durably.

// syncConfig is the replication section for sync-replicas 1 with timeout.
func syncConfig(timeout string) string {
	return fmt.Sprintf("replication:\n  sync-replicas: 1\n  sync-timeout: %s\n", timeout)
}

// replicaTXIDs reads GET /api/v1/dbs/{db} on the primary: each replica's
// TXID, as it acknowledged having applied it, by hostname.
func replicaTXIDs(t *testing.T, p *Node, db string) map[string]string {
	t.Helper()
	code, body := p.HTTPGet("/api/v1/dbs/" + db)
	if code != 200 {
		t.Fatalf("GET /api/v1/dbs/%s: %d %s", db, code, body)
	}
	var resp struct {
		Replicas []struct {
			Hostname string `json:"hostname"`
			TXID     string `json:"txid"`
		} `json:"replicas"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range resp.Replicas {
		out[r.Hostname] = r.TXID
	}
	return out
}

// With sync-replicas 1, every commit is on the replica, visible to its
// readers, when it returns on the primary, under FULL and NORMAL; and the
// primary reports the replica at the TXID it applied.
func TestSyncReplication_CommitsAreOnTheReplicaWhenTheyReturn(t *testing.T) {
	p := StartNode(t, NodeOptions{Config: syncConfig("0s")})
	r := StartNode(t, NodeOptions{ReplicaOf: p, Config: syncConfig("0s")})
	script := readTestdata(t, "sync_insert.py")
	insertRows(t, p.Path("db"), 1) // the table, before the replica follows it
	waitCaughtUp(t, "db", p, r)

	for _, mode := range []string{"FULL", "NORMAL"} {
		if out := strings.TrimSpace(python(t, script, p.Path("db"), r.Path("db"), "30", mode)); out != "ok" {
			t.Fatalf("synchronous=%s: %s", mode, out)
		}
	}

	// The primary shows what the replica applied: everything.
	txid := posTXID(t, p.Pos("db"))
	if got := replicaTXIDs(t, p, "db")[r.Hostname]; got != txid.String() {
		t.Fatalf("the primary reports %s at TXID %q, want %s (its -pos: %s)", r.Hostname, got, txid, r.Pos("db"))
	}
	if got := metric(t, p, fmt.Sprintf(`litefs_db_position_replica{db="db",replica=%q}`, r.Hostname)); got != fmt.Sprint(uint64(txid)) {
		t.Fatalf("litefs_db_position_replica of %s on the primary = %q, want %d", r.Hostname, got, uint64(txid))
	}
	if got := metric(t, p, "pagewire_sync_replication_timeouts_total"); got != "0" {
		t.Fatalf("pagewire_sync_replication_timeouts_total = %s, want 0", got)
	}
}

// stopped freezes a node's process (SIGSTOP) until the returned func
// resumes it; cleanup resumes it too.
func stopped(t *testing.T, n *Node) (resume func()) {
	t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resume = func() { _ = n.cmd.Process.Signal(syscall.SIGCONT) }
	t.Cleanup(resume)
	return resume
}

// With sync-timeout 0 a commit waits for its replica as long as it takes:
// it does not return while the only replica is frozen, and returns once the
// replica is back, with the row there.
func TestSyncReplication_CommitWaitsForAFrozenReplica(t *testing.T) {
	p := StartNode(t, NodeOptions{Config: syncConfig("0s")})
	r := StartNode(t, NodeOptions{ReplicaOf: p})
	insertRows(t, p.Path("db"), 1)
	waitCaughtUp(t, "db", p, r)

	resume := stopped(t, r)
	cmd := exec.Command("python3", "-c", readTestdata(t, "insert_rows.py"), p.Path("db"), "1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{}) // closed when the client exits, with werr
	var werr error
	go func() { werr = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })

	// The commit waits: the primary says so, and the client has not returned.
	waitFor(t, 30*time.Second, "a commit waiting for the replica", func() bool {
		return metric(t, p, "pagewire_sync_replication_waiting") == "1"
	})
	select {
	case <-done:
		t.Fatalf("the commit returned (%v) while the only replica was frozen: %s", werr, out.String())
	default:
	}

	// Back: the commit returns, and the row is on the replica.
	resume()
	select {
	case <-done:
		if werr != nil {
			t.Fatalf("insert: %v\n%s", werr, out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the commit did not return after the replica came back")
	}
	if got := countAndCheck(t, r, "db"); got != "2\nok" {
		t.Fatalf("replica right after the commit returned: %q, want 2 rows", got)
	}
	if got := metric(t, p, "pagewire_sync_replication_timeouts_total"); got != "0" {
		t.Fatalf("pagewire_sync_replication_timeouts_total = %s, want 0", got)
	}
}

// With a sync-timeout (opted in: the default waits without limit), a commit whose replica is gone
// returns after the timeout, and the primary says so in its log and
// metrics; commits wait again once the replica has caught up.
func TestSyncReplication_TimeoutGoesOnAsynchronously(t *testing.T) {
	p := StartNode(t, NodeOptions{Config: syncConfig("1s")})
	r := StartNode(t, NodeOptions{ReplicaOf: p})
	insertRows(t, p.Path("db"), 1)
	waitCaughtUp(t, "db", p, r)

	resume := stopped(t, r)
	insertRows(t, p.Path("db"), 3) // returns: the first after the timeout, the others at once
	if got := metric(t, p, "pagewire_sync_replication_timeouts_total"); got != "1" {
		t.Fatalf("pagewire_sync_replication_timeouts_total = %s, want 1", got)
	}
	if got := metric(t, p, `pagewire_sync_replication_degraded{db="db"}`); got != "1" {
		t.Fatalf("pagewire_sync_replication_degraded = %s, want 1", got)
	}
	if !strings.Contains(p.Log.String(), "commits no longer wait for replicas") {
		t.Fatalf("the primary's log does not say commits went on without the replica:\n%s", p.Log)
	}

	// The replica comes back and catches up: commits wait again.
	resume()
	waitCaughtUp(t, "db", p, r)
	waitFor(t, 30*time.Second, "commits waiting for replicas again", func() bool {
		return metric(t, p, `pagewire_sync_replication_degraded{db="db"}`) == "0"
	})
	script := readTestdata(t, "sync_insert.py")
	if out := strings.TrimSpace(python(t, script, p.Path("db"), r.Path("db"), "5", "FULL")); out != "ok" {
		t.Fatal(out)
	}
}

//go:build integration

package e2e

import (
	"strings"
	"testing"
	"time"
)

// Issue 12: three transactions of 1,000 rows × 100 KB (about 100 MB each)
// with SQLite's default page cache spill pages into the WAL before their
// commits and rewrite the checksums of spilled frames they change again.
// Every one must be counted and replicated, and the primary must take
// writes after a restart.
func TestBigTransactions_SpilledCommitsReplicate(t *testing.T) {
	primary := StartNode(t, NodeOptions{})
	replica := StartNode(t, NodeOptions{ReplicaOf: primary})

	if got := strings.TrimSpace(python(t, readTestdata(t, "bigtxns.py"), primary.Path("big.db"), "3", "1000", "100000")); got != "3000" {
		t.Fatalf("primary has %s rows, want 3000", got)
	}
	if strings.Contains(primary.Log.String(), "not counted") {
		t.Fatalf("the primary left a commit uncounted:\n%s", primary.Log)
	}
	want := primary.Pos("big.db")
	if !strings.HasPrefix(want, "0000000000000005/") {
		t.Fatalf("primary -pos %s, want TXID 5 (create, table, three transactions)", want)
	}
	waitFor(t, 2*time.Minute, "the replica to reach "+want, func() bool { return replica.Pos("big.db") == want })
	if got := countRows(t, replica.Path("big.db")); got != "3000" {
		t.Fatalf("replica has %s rows, want 3000", got)
	}
	for _, n := range []*Node{primary, replica} {
		if out, code := n.CLI("verify", "-url", n.URL, "-name", "big.db"); code != 0 || !strings.Contains(out, "ok at "+want) {
			t.Fatalf("verify on %s: exit %d: %s", n.Dir, code, out)
		}
	}

	primary.Stop()
	primary.Start(false)
	if strings.Contains(primary.Log.String(), "mismatch") {
		t.Fatalf("the primary found a mismatch at startup:\n%s", primary.Log)
	}
	if out, err := sqliteCLI(t, primary.Path("big.db"), "insert into t(v) values (1); select count(*) from t;"); err != nil || strings.TrimSpace(out) != "3001" {
		t.Fatalf("write after restart: %v: %s", err, out)
	}
	want = primary.Pos("big.db")
	waitFor(t, time.Minute, "the replica to reach "+want, func() bool { return replica.Pos("big.db") == want })
}

func countRows(t testing.TB, path string) string {
	t.Helper()
	return strings.TrimSpace(python(t, "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from t').fetchone()[0])", path))
}

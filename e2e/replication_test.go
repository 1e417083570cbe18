//go:build integration

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Replication tests: a primary and replicas as separate processes on
// loopback, each with its own mount and data dir (static lease).

// startCluster starts a primary (with data.retention, if set) and n replicas
// of it.
func startCluster(t *testing.T, n int, retention string) (*Node, []*Node) {
	t.Helper()
	p := StartNode(t, NodeOptions{Retention: retention})
	var rs []*Node
	for range n {
		rs = append(rs, StartNode(t, NodeOptions{ReplicaOf: p}))
	}
	return p, rs
}

// waitCaughtUp waits until every node's -pos of db equals the primary's.
func waitCaughtUp(t *testing.T, db string, p *Node, rs ...*Node) string {
	t.Helper()
	want := p.Pos(db)
	for _, r := range rs {
		waitFor(t, 60*time.Second, fmt.Sprintf("%s on %s to reach %s", db, r.Dir, want), func() bool {
			b, err := os.ReadFile(r.Path(db + "-pos"))
			return err == nil && strings.TrimSpace(string(b)) == want
		})
	}
	return want
}

// countAndCheck reads `select count(*) from t` and integrity_check of db
// on a node with Python (testdata/count.py): "count\nok" when all is well.
func countAndCheck(t *testing.T, n *Node, db string) string {
	t.Helper()
	return strings.TrimSpace(python(t, readTestdata(t, "count.py"), n.Path(db)))
}

// insertRows inserts n rows into table t of the database at path, one
// commit each, creating t if it is missing (testdata/insert_rows.py).
func insertRows(t testing.TB, path string, n int) {
	t.Helper()
	python(t, readTestdata(t, "insert_rows.py"), path, strconv.Itoa(n))
}

// insertRowsErr is insertRows for a write that may fail: it returns the
// script's output and error.
func insertRowsErr(t testing.TB, path string, n int) (string, error) {
	t.Helper()
	return pythonErr(readTestdata(t, "insert_rows.py"), path, strconv.Itoa(n))
}

func TestReplication_PrimaryToReplicas(t *testing.T) {
	p, rs := startCluster(t, 2, "")
	// A replica connection opened before the writes, kept open.
	insertRows(t, p.Path("app.db"), 0)
	waitCaughtUp(t, "app.db", p, rs...)
	early := startPython(t, "early reader", `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
print(c.execute("select count(*) from t").fetchone()[0], flush=True)
for line in sys.stdin:
    print(c.execute("select count(*) from t").fetchone()[0], flush=True)
`, rs[0].Path("app.db"))
	early.WaitLines(1, 30*time.Second)

	insertRows(t, p.Path("app.db"), 500)
	pos := waitCaughtUp(t, "app.db", p, rs...)
	for _, r := range rs {
		if got := countAndCheck(t, r, "app.db"); got != "500\nok" {
			t.Fatalf("replica count/integrity = %q, want 500 and ok", got)
		}
		b, err := os.ReadFile(r.Path(".primary"))
		if err != nil || string(b) != "node1\n" {
			t.Fatalf(".primary = %q (%v), want node1", b, err)
		}
	}
	early.Send("again")
	if got := early.WaitLines(2, 30*time.Second)[1]; got != "500" {
		t.Fatalf("the connection opened before the writes sees %s rows, want 500", got)
	}
	if _, err := os.Stat(p.Path(".primary")); !os.IsNotExist(err) {
		t.Fatalf(".primary on the primary: err=%v, want not exist", err)
	}
	t.Logf("all nodes at %s", pos)
}

func TestReplication_ReplicaRefusesWrites(t *testing.T) {
	p, rs := startCluster(t, 1, "")
	insertRows(t, p.Path("app.db"), 3)
	before := waitCaughtUp(t, "app.db", p, rs...)
	out, err := pythonErr(`
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("insert into t(v) values ('nope')")
`, rs[0].Path("app.db"))
	if err == nil || !strings.Contains(out, "readonly") {
		t.Fatalf("write on a replica: err=%v output=%q, want a read-only error", err, out)
	}
	if got := rs[0].Pos("app.db"); got != before {
		t.Fatalf("replica position moved from %s to %s", before, got)
	}
	if got := countAndCheck(t, rs[0], "app.db"); got != "3\nok" {
		t.Fatalf("replica rows = %q, want 3", got)
	}
}

func TestReplication_ManyDatabasesCreatedAndDeleted(t *testing.T) {
	p, rs := startCluster(t, 1, "")
	for i := range 5 {
		insertRows(t, p.Path(fmt.Sprintf("db%d.db", i)), 10*(i+1))
	}
	for i := range 5 {
		waitCaughtUp(t, fmt.Sprintf("db%d.db", i), p, rs...)
	}
	if err := os.Remove(p.Path("db3.db")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "db3.db to disappear from the replica", func() bool {
		_, err := os.Stat(rs[0].Path("db3.db"))
		return os.IsNotExist(err)
	})
	if got := countAndCheck(t, rs[0], "db4.db"); got != "50\nok" {
		t.Fatalf("db4.db on the replica: %q", got)
	}
}

func TestReplication_CatchUpFromLogThenSnapshot(t *testing.T) {
	p, rs := startCluster(t, 1, "15s")
	r := rs[0]
	insertRows(t, p.Path("app.db"), 10)
	waitCaughtUp(t, "app.db", p, r)

	// Away for 10,000 transactions: back within retention, from the log.
	r.Stop()
	insertRows(t, p.Path("app.db"), 10000)
	r.Start(false)
	waitCaughtUp(t, "app.db", p, r)
	if strings.Contains(r.Log.String(), "applied snapshot") {
		t.Fatalf("the replica caught up by snapshot, want the transaction log:\n%s", r.Log)
	}
	if got := countAndCheck(t, r, "app.db"); got != "10010\nok" {
		t.Fatalf("replica: %q", got)
	}

	// Away past retention: a snapshot. The primary can no longer prove
	// that the replica's copy is its history (the replica might hold
	// transactions the primary lost), so the copy is kept aside.
	r.Stop()
	insertRows(t, p.Path("app.db"), 100)
	waitFor(t, 30*time.Second, "the primary to prune its transaction log", func() bool {
		entries, _ := os.ReadDir(filepath.Join(p.DataDir, "dbs", "app.db", "txlog"))
		return len(entries) == 0
	})
	r.Start(false)
	waitCaughtUp(t, "app.db", p, r)
	if !strings.Contains(r.Log.String(), "applied snapshot") {
		t.Fatalf("the replica did not catch up by snapshot:\n%s", r.Log)
	}
	if kept, _ := filepath.Glob(filepath.Join(r.DataDir, "diverged", "app.db.*")); len(kept) != 1 || !strings.Contains(r.Log.String(), "cannot be proven") {
		t.Fatalf("kept copies: %v, want one, for an unproven position:\n%s", kept, r.Log)
	}
	if got := countAndCheck(t, r, "app.db"); got != "10110\nok" {
		t.Fatalf("replica: %q", got)
	}
}

func TestReplication_KilledReplicaRecovers(t *testing.T) {
	p, rs := startCluster(t, 1, "")
	r := rs[0]
	insertRows(t, p.Path("app.db"), 1)
	waitCaughtUp(t, "app.db", p, r)
	w := startPython(t, "writer", readTestdata(t, "insert_rows.py"), p.Path("app.db"), "3000")
	waitFor(t, 60*time.Second, "the replica to apply some transactions", func() bool {
		return txidOf(t, r.Pos("app.db")) > 200
	})
	r.Kill()
	w.WaitOK(2 * time.Minute)
	r.Start(false)
	waitCaughtUp(t, "app.db", p, r)
	if got := countAndCheck(t, r, "app.db"); got != "3001\nok" {
		t.Fatalf("replica: %q", got)
	}
}

func TestReplication_DivergedReplicaIsReseeded(t *testing.T) {
	p, rs := startCluster(t, 1, "")
	r := rs[0]
	insertRows(t, p.Path("app.db"), 20)
	waitCaughtUp(t, "app.db", p, r)
	r.Stop()
	// Alter the replica's copy by hand, behind pagewire's back. A clean
	// stop checkpointed the WAL into the database file; drop the WAL so
	// that the altered page is what the files say.
	if err := os.Remove(filepath.Join(r.DataDir, "dbs", "app.db", "wal")); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(r.DataDir, "dbs", "app.db", "database"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("hand-edited"), 4096+2000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r.Start(false)
	waitCaughtUp(t, "app.db", p, r)
	if !strings.Contains(r.Log.String(), "checksum mismatch at startup") {
		t.Fatalf("the replica did not report the altered files:\n%s", r.Log)
	}
	kept, _ := filepath.Glob(filepath.Join(r.DataDir, "diverged", "app.db.*"))
	if len(kept) != 1 {
		t.Fatalf("kept copies: %v, want one", kept)
	}
	if !strings.Contains(r.Log.String(), kept[0]) {
		t.Fatalf("the log does not name the kept copy %s:\n%s", kept[0], r.Log)
	}
	if got := countAndCheck(t, r, "app.db"); got != "20\nok" {
		t.Fatalf("replica: %q", got)
	}
}

func TestReplication_VacuumAndLargeTransaction(t *testing.T) {
	p, rs := startCluster(t, 1, "")
	python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("create table t(id integer primary key, v blob)")
c.execute("begin")
for i in range(200):
    c.execute("insert into t(v) values (randomblob(1024*1024))")
c.execute("commit")
c.execute("delete from t where id % 2 = 0")
c.execute("vacuum")
`, p.Path("big.db"))
	waitCaughtUp(t, "big.db", p, rs...)
	if got := countAndCheck(t, rs[0], "big.db"); got != "100\nok" {
		t.Fatalf("replica: %q", got)
	}
}

// A replica that got a database by snapshot, with no transaction since,
// has no -wal yet: readers must still open it (they create it empty).
func TestReplication_ReadableRightAfterSnapshot(t *testing.T) {
	p := StartNode(t, NodeOptions{})
	insertRows(t, p.Path("db"), 5)
	r := StartNode(t, NodeOptions{ReplicaOf: p})
	waitCaughtUp(t, "db", p, r)
	if got := countAndCheck(t, r, "db"); got != "5\nok" {
		t.Fatalf("Python on the replica: %q", got)
	}
	if out, err := sqliteCLI(t, r.Path("db"), "select count(*) from t;"); err != nil || strings.TrimSpace(out) != "5" {
		t.Fatalf("sqlite3 CLI on the replica: %v %q", err, out)
	}
	if out, err := insertRowsErr(t, r.Path("db"), 1); err == nil || !strings.Contains(out, "readonly") {
		t.Fatalf("a write on the replica: %v\n%s", err, out)
	}
}

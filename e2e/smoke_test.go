//go:build integration

package e2e

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// TestSmoke_PythonWritesAndReads is the simplest end-to-end check: a node
// on the embedded layout, Python's sqlite3 writing and reading on the mount,
// and the -pos file and HTTP API agreeing on the TXID.
func TestSmoke_PythonWritesAndReads(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	out := python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
print(c.execute("pragma journal_mode").fetchone()[0])
c.execute("create table t(id integer primary key, v text)")
for i in range(10):
    c.execute("insert into t(v) values (?)", (str(i),))
print(c.execute("select count(*) from t").fetchone()[0])
print(c.execute("pragma integrity_check").fetchone()[0])
`, n.Path("smoke.db"))
	if got, want := strings.Fields(out), []string{"wal", "10", "ok"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("python printed %q, want %q", got, want)
	}
	// 1 (created) + 1 (create table) + 10 inserts.
	if got, want := n.Pos("smoke.db")[:16], "000000000000000c"; got != want {
		t.Fatalf("TXID in -pos = %s, want %s", got, want)
	}
	code, body := n.HTTPGet("/api/v1/dbs/smoke.db")
	if code != 200 || !strings.Contains(body, `"txid": "000000000000000c"`) {
		t.Fatalf("GET /api/v1/dbs/smoke.db = %d %s", code, body)
	}
}

// TestSmoke_GOMAXPROCSLeavesRoomForFUSEReaders: a node adds a P for each
// go-fuse reader that can sit blocked in read(2) on /dev/fuse, so that idle
// readers cannot hold every P (which stalled replication for 10–20 ms at a
// time); GOMAXPROCS set in the environment is left alone.
func TestSmoke_GOMAXPROCSLeavesRoomForFUSEReaders(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	base := runtime.GOMAXPROCS(0) // the runtime's default here, as the node's
	want := base + min(max(base, 2), 16) + 1
	if env := os.Getenv("GOMAXPROCS"); env != "" {
		want, _ = strconv.Atoi(env)
	}
	if got := metric(t, n, "go_sched_gomaxprocs_threads"); got != strconv.Itoa(want) {
		t.Fatalf("go_sched_gomaxprocs_threads = %q, want %d (default %d plus go-fuse's readers)", got, want, base)
	}
}

//go:build integration

package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// crashCheck runs testdata/crash_check.py on db and returns its lines:
// integrity_check; count(*), min(id), max(id) of table t (ids below
// 1,000,000); how many rows have ids from 1,000,000 up; journal_mode.
func crashCheck(t testing.TB, db string) []string {
	t.Helper()
	return strings.Split(strings.TrimSpace(python(t, readTestdata(t, "crash_check.py"), db)), "\n")
}

// TestCrash_KillDuringCommits kills the node with SIGKILL while a Python
// writer with synchronous=FULL commits one row at a time. The writer then
// fails; the restarted node clears the stale mount by itself, and every
// commit the writer saw acknowledged is there, with integrity_check ok and a
// TXID that counts every surviving commit.
func TestCrash_KillDuringCommits(t *testing.T) {
	const acked = 200
	n := StartNode(t, NodeOptions{})
	db := n.Path("crash.db")
	python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("create table t(id integer primary key, v text not null)")
c.close()
`, db)

	w := startPython(t, "writer", `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
c.execute("pragma synchronous=FULL")
i = 0
while True:
    i += 1
    c.execute("insert into t(id, v) values (?, ?)", (i, "row-%d" % i))
    print(i, flush=True)
`, db)
	w.WaitLines(acked, 5*time.Minute)
	n.Kill()
	if code := w.Wait(2 * time.Minute); code == 0 {
		t.Fatalf("the writer exited 0 after the node was killed; want a failure")
	}
	lines := w.Lines()
	for i, l := range lines {
		if l != strconv.Itoa(i+1) {
			t.Fatalf("writer line %d = %q, want %d", i+1, l, i+1)
		}
	}
	a := len(lines)
	t.Logf("%d commits acknowledged before the kill", a)

	n.Start(false) // must clear the stale mount left by the kill by itself

	got := crashCheck(t, db)
	if len(got) != 4 || got[0] != "ok" || got[2] != "0" || got[3] != "wal" {
		t.Fatalf("after restart: %q, want integrity ok, no stray rows, wal", got)
	}
	var count, lo, hi int
	if _, err := fmt.Sscan(got[1], &count, &lo, &hi); err != nil {
		t.Fatal(err)
	}
	// Every acknowledged id is there; at most one more commit (durable, but
	// its reply lost to the kill) may be too. Ids have no gaps.
	if count < a || count > a+1 || lo != 1 || hi != count {
		t.Fatalf("after restart t holds %d rows, ids %d..%d; want ids 1..%d (or 1..%d)", count, lo, hi, a, a+1)
	}
	txid := txidOf(t, n.Pos("crash.db"))
	if least := uint64(1 + 1 + a); txid < least {
		t.Errorf("TXID after restart = %d, want >= %d (1 + create table + %d acknowledged)", txid, least, a)
	}
	if want := uint64(1 + 1 + count); txid != want {
		t.Errorf("TXID after restart = %d, want %d (1 + create table + %d rows)", txid, want, count)
	}

	// The recovered database takes new commits, one TXID each.
	python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
c.execute("insert into t(id, v) values (?, 'after')", (int(sys.argv[2]),))
c.close()
`, db, strconv.Itoa(count+1))
	checkTXID(t, n, "crash.db", txid+1)
	if got := crashCheck(t, db); len(got) < 2 || got[0] != "ok" || got[1] != fmt.Sprintf("%d 1 %d", count+1, count+1) {
		t.Errorf("after a new commit: %q", got)
	}
}

// TestCrash_KillMidTransaction kills the node while a 20,000-row
// transaction is in flight (its pages spilled into the WAL, no commit). After
// the restart none of its rows exist, the earlier commits do, integrity is
// ok and the TXID counts only the commits.
func TestCrash_KillMidTransaction(t *testing.T) {
	const committed = 10
	n := StartNode(t, NodeOptions{})
	db := n.Path("big.db")
	python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("create table t(id integer primary key, v text not null)")
for i in range(1, int(sys.argv[2]) + 1):
    c.execute("insert into t(id, v) values (?, ?)", (i, "committed-%d" % i))
c.close()
`, db, strconv.Itoa(committed))
	before := n.Pos("big.db")
	if got, want := txidOf(t, before), uint64(1+1+committed); got != want {
		t.Fatalf("TXID before the big transaction = %d, want %d", got, want)
	}

	w := startPython(t, "big writer", `
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
def walsize():
    try:
        return os.stat(sys.argv[1] + "-wal").st_size
    except FileNotFoundError:
        return 0
c.execute("pragma cache_size=50")  # spill the transaction's pages into the WAL
c.execute("select count(*) from t").fetchone()
print(walsize(), flush=True)
c.execute("begin")
for i in range(20000):
    c.execute("insert into t(id, v) values (?, ?)", (1000000 + i, "x" * 200))
print(walsize(), flush=True)
sys.stdin.readline()
c.execute("commit")
print("committed", flush=True)
`, db)
	lines := w.WaitLines(2, 10*time.Minute)
	walBefore, _ := strconv.Atoi(lines[0])
	walDuring, _ := strconv.Atoi(lines[1])
	t.Logf("-wal size before the transaction %d, with it in flight %d", walBefore, walDuring)
	if walDuring < walBefore+100*4096 {
		t.Fatalf("-wal grew from %d to %d bytes during the transaction; the test wants its pages spilled into the WAL", walBefore, walDuring)
	}

	n.Kill()
	if code := w.Wait(2 * time.Minute); code == 0 {
		t.Fatalf("the big transaction's COMMIT succeeded after the node was killed")
	}
	for _, l := range w.Lines() {
		if l == "committed" {
			t.Fatalf("the big transaction committed after the node was killed")
		}
	}

	n.Start(false)
	want := []string{"ok", fmt.Sprintf("%d 1 %d", committed, committed), "0", "wal"}
	if got := crashCheck(t, db); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("after restart:\n got %q\nwant %q (integrity, committed rows, rows of the big transaction, journal mode)", got, want)
	}
	if got := n.Pos("big.db"); got != before {
		t.Errorf("-pos after restart = %s, want %s as before the uncommitted transaction", got, before)
	}
}

// TestCrash_PosSurvivesCleanRestart stops the node with SIGTERM and starts
// it again: the TXID and checksum in -pos (and the data) are the same, and
// the next commit moves the TXID by one and changes the checksum.
func TestCrash_PosSurvivesCleanRestart(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	db := n.Path("keep.db")
	python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("create table t(id integer primary key, v text)")
for i in range(25):
    c.execute("insert into t(v) values (?)", ("keep-%d" % i,))
c.close()
`, db)
	before := n.Pos("keep.db")
	if got, want := txidOf(t, before), uint64(1+1+25); got != want {
		t.Fatalf("TXID = %d, want %d", got, want)
	}

	n.Stop()
	if _, err := os.Stat(db); err == nil {
		t.Errorf("%s is still visible after the node stopped; want the mount gone", db)
	}
	n.Start(false)

	if got := n.Pos("keep.db"); got != before {
		t.Fatalf("-pos after a clean restart = %s, want %s", got, before)
	}
	checkRead(t, db, rowValues("keep", 25), 25)
	if got := n.Pos("keep.db"); got != before {
		t.Fatalf("-pos after reading = %s, want %s", got, before)
	}

	python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("insert into t(v) values ('keep-25')")
c.close()
`, db)
	after := n.Pos("keep.db")
	if got, want := txidOf(t, after), txidOf(t, before)+1; got != want {
		t.Errorf("TXID after one more commit = %d, want %d", got, want)
	}
	if after[17:] == before[17:] {
		t.Errorf("checksum did not change with a new commit: %s then %s", before, after)
	}
	checkRead(t, db, rowValues("keep", 26), 26)
}

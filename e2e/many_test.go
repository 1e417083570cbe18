//go:build integration

package e2e

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMany_TwoDatabasesAtOnce has two processes write two databases at the
// same time; each ends with all its rows, integrity ok and its own TXID.
func TestMany_TwoDatabasesAtOnce(t *testing.T) {
	const rows = 200
	n := StartNode(t, NodeOptions{})
	var ps []*proc
	for _, name := range []string{"one", "two"} {
		ps = append(ps, startPython(t, "writer of "+name, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
c.execute("create table t(id integer primary key, v text)")
for i in range(int(sys.argv[3])):
    c.execute("insert into t(v) values (?)", ("%s-%d" % (sys.argv[2], i),))
c.close()
print("done")
`, n.Path(name+".db"), name, strconv.Itoa(rows)))
	}
	for _, p := range ps {
		p.WaitOK(10 * time.Minute)
	}
	for _, name := range []string{"one", "two"} {
		checkRead(t, n.Path(name+".db"), rowValues(name, rows), rows)
		checkTXID(t, n, name+".db", 1+1+rows)
	}
}

// TestMany_FiftyDatabases creates fifty databases, writes a different number
// of commits to each and closes them; GET /api/v1/dbs and `pagewire status`
// list all fifty with the right TXIDs, and each reads back right.
func TestMany_FiftyDatabases(t *testing.T) {
	const dbs = 50
	n := StartNode(t, NodeOptions{})
	name := func(k int) string { return fmt.Sprintf("db%02d.db", k) }
	inserts := func(k int) int { return k%5 + 1 }

	python(t, `
import os, sqlite3, sys
mnt, dbs = sys.argv[1], int(sys.argv[2])
for k in range(dbs):
    c = sqlite3.connect(os.path.join(mnt, "db%02d.db" % k), isolation_level=None, timeout=60)
    c.execute("create table t(id integer primary key, v text)")
    for i in range(k % 5 + 1):
        c.execute("insert into t(v) values (?)", ("db%02d-%d" % (k, i),))
    c.close()
`, n.MountDir, strconv.Itoa(dbs))

	listed := listDBs(t, n)
	if len(listed) != dbs {
		t.Errorf("GET /api/v1/dbs lists %d databases, want %d: %v", len(listed), dbs, listed)
	}
	for k := range dbs {
		d, ok := listed[name(k)]
		if !ok {
			t.Errorf("GET /api/v1/dbs does not list %s", name(k))
			continue
		}
		if want := fmt.Sprintf("%016x", 1+1+inserts(k)); d.TXID != want {
			t.Errorf("%s: txid %s, want %s", name(k), d.TXID, want)
		}
		if pos := n.Pos(name(k)); pos != d.TXID+"/"+d.Checksum {
			t.Errorf("%s: -pos %s, API %s/%s", name(k), pos, d.TXID, d.Checksum)
		}
	}

	out, code := n.CLI("status", "-url", n.URL)
	if code != 0 {
		t.Fatalf("pagewire status: exit %d\n%s", code, out)
	}
	status := map[string]string{} // database: TXID, from the table's rows
	for _, l := range strings.Split(out, "\n") {
		// DATABASE TXID CHECKSUM PAGES PAGE-SIZE BACKUP...: rows name a .db.
		if f := strings.Fields(l); len(f) >= 5 && strings.HasSuffix(f[0], ".db") {
			status[f[0]] = f[1]
		}
	}
	for k := range dbs {
		if got, want := status[name(k)], fmt.Sprintf("%016x", 1+1+inserts(k)); got != want {
			t.Errorf("pagewire status: %s at TXID %q, want %s:\n%s", name(k), got, want, out)
		}
	}

	got := python(t, `
import os, sqlite3, sys
mnt, dbs = sys.argv[1], int(sys.argv[2])
for k in range(dbs):
    c = sqlite3.connect(os.path.join(mnt, "db%02d.db" % k), isolation_level=None, timeout=60)
    rows = c.execute("select group_concat(v, ',') from (select v from t order by id)").fetchone()[0]
    print(c.execute("pragma journal_mode").fetchone()[0], rows, c.execute("pragma integrity_check").fetchone()[0])
    c.close()
`, n.MountDir, strconv.Itoa(dbs))
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != dbs {
		t.Fatalf("read back %d databases, want %d:\n%s", len(lines), dbs, got)
	}
	for k, l := range lines {
		if want := "wal " + rowValues(fmt.Sprintf("db%02d", k), inserts(k)) + " ok"; l != want {
			t.Errorf("%s read back %q, want %q", name(k), l, want)
		}
	}
	// A second client reads a few with the CLI.
	for _, k := range []int{0, 24, 49} {
		out := cli(t, n.Path(name(k)), "SELECT count(*) FROM t;\n")
		if got, want := strings.TrimSpace(out), strconv.Itoa(inserts(k)); got != want {
			t.Errorf("sqlite3 CLI: %s has %s rows, want %s", name(k), got, want)
		}
	}
}

// TestMany_DeleteDatabase removes a database file on the mount once its
// clients closed it: it leaves the mount listing and GET /api/v1/dbs, its
// neighbour is untouched, and a database created again under the name
// starts empty at TXID 1.
func TestMany_DeleteDatabase(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	for _, name := range []string{"gone", "stays"} {
		python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("create table t(id integer primary key, v text)")
for i in range(3):
    c.execute("insert into t(v) values (?)", ("%s-%d" % (sys.argv[2], i),))
c.close()
`, n.Path(name+".db"), name)
	}
	if got := listDBs(t, n); len(got) != 2 {
		t.Fatalf("GET /api/v1/dbs before the delete: %v, want gone.db and stays.db", got)
	}
	stays := n.Pos("stays.db")

	if err := os.Remove(n.Path("gone.db")); err != nil {
		t.Fatalf("remove gone.db: %v", err)
	}
	if _, err := os.Stat(n.Path("gone.db")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat gone.db after remove: %v, want not exist", err)
	}
	if _, err := os.Stat(n.Path("gone.db-pos")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stat gone.db-pos after remove: %v, want not exist", err)
	}
	for _, name := range mountNames(t, n) {
		if strings.HasPrefix(name, "gone.db") {
			t.Errorf("mount still lists %s after the remove", name)
		}
	}
	listed := listDBs(t, n)
	if _, ok := listed["gone.db"]; ok || len(listed) != 1 {
		t.Errorf("GET /api/v1/dbs after removing gone.db: %v, want only stays.db", listed)
	}
	if code, body := n.HTTPGet("/api/v1/dbs/gone.db"); code != 404 {
		t.Errorf("GET /api/v1/dbs/gone.db = %d %s, want 404", code, body)
	}
	if got := n.Pos("stays.db"); got != stays {
		t.Errorf("stays.db -pos changed from %s to %s", stays, got)
	}
	checkRead(t, n.Path("stays.db"), rowValues("stays", 3), 3)

	// The name can be used again, for a new empty database.
	out := python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
print(c.execute("pragma journal_mode").fetchone()[0])
print(c.execute("select count(*) from sqlite_master").fetchone()[0])
c.close()
`, n.Path("gone.db"))
	if got, want := strings.Fields(out), []string{"wal", "0"}; !slices.Equal(got, want) {
		t.Errorf("gone.db created again: %q, want %q (WAL, no tables)", got, want)
	}
	// Its -pos must be there at once, although gone.db-pos was looked up
	// (and missing) a moment ago.
	if _, err := os.ReadFile(n.Path("gone.db-pos")); err != nil {
		t.Errorf("right after gone.db was created again: %v; want its -pos file", err)
		waitFor(t, 10*time.Second, "gone.db-pos to appear", func() bool {
			_, err := os.Stat(n.Path("gone.db-pos"))
			return err == nil
		})
	}
	checkTXID(t, n, "gone.db", 1)
}

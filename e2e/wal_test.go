//go:build integration

package e2e

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// createRows creates table t in db with n rows prefix-0 ... prefix-(n-1),
// one commit each (testdata/create_rows.py).
func createRows(t testing.TB, db, prefix string, n int) {
	t.Helper()
	python(t, readTestdata(t, "create_rows.py"), db, prefix, strconv.Itoa(n))
}

// logLines returns the node's log lines that contain every one of words,
// waiting up to 5 s for a first one: the log reaches the test through a
// pipe, a moment after the client saw the error it explains.
func logLines(n *Node, words ...string) []string {
	deadline := time.Now().Add(5 * time.Second)
	for {
		var out []string
		for _, l := range strings.Split(n.Log.String(), "\n") {
			ok := true
			for _, w := range words {
				ok = ok && strings.Contains(l, w)
			}
			if ok {
				out = append(out, l)
			}
		}
		if len(out) > 0 || time.Now().After(deadline) {
			return out
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWAL_LeaveWALRefused tries every other journal mode on a database on
// the mount. Each attempt fails (or reports wal); afterwards the data and
// -pos are unchanged, a fresh connection reports wal, no -journal exists,
// the node log says why, and the database still takes writes.
func TestWAL_LeaveWALRefused(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	for _, mode := range []string{"DELETE", "TRUNCATE", "PERSIST", "MEMORY", "OFF"} {
		t.Run(mode, func(t *testing.T) {
			name := "jm_" + strings.ToLower(mode) + ".db"
			db := n.Path(name)
			createRows(t, db, "jm", 3)
			before := n.Pos(name)

			out := strings.TrimSpace(python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
try:
    print("result", c.execute("pragma journal_mode=" + sys.argv[2]).fetchone()[0])
except sqlite3.Error as e:
    print("error", e)
c.close()
`, db, mode))
			t.Logf("PRAGMA journal_mode=%s: %s", mode, out)
			if !strings.HasPrefix(out, "error ") && out != "result wal" {
				t.Errorf("PRAGMA journal_mode=%s gave %q; want an error, or wal", mode, out)
			}

			checkRead(t, db, rowValues("jm", 3), 3)
			if got := n.Pos(name); got != before {
				t.Errorf("-pos changed from %s to %s by the refused journal_mode change", before, got)
			}
			if _, err := os.Stat(db + "-journal"); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("stat %s-journal: %v, want not exist", name, err)
			}
			if names := mountNames(t, n); slices.Contains(names, name+"-journal") {
				t.Errorf("mount lists %s-journal: %q", name, names)
			}
			if strings.HasPrefix(out, "error ") && len(logLines(n, name, "WAL")) == 0 {
				t.Errorf("node log has no line about %s and WAL explaining the refusal:\n%s", name, n.Log)
			}

			python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
c.execute("insert into t(v) values ('jm-3')")
c.close()
`, db)
			checkRead(t, db, rowValues("jm", 4), 4)
			if got, want := txidOf(t, n.Pos(name)), txidOf(t, before)+1; got != want {
				t.Errorf("TXID after one more commit = %d, want %d", got, want)
			}
		})
	}

	t.Run("JournalFile", func(t *testing.T) {
		db := n.Path("jf.db")
		createRows(t, db, "jf", 2)
		before := n.Pos("jf.db")
		err := os.WriteFile(db+"-journal", []byte("not a journal"), 0o644)
		if err == nil {
			t.Errorf("creating jf.db-journal on the mount succeeded; want an error")
		}
		if _, err := os.Stat(db + "-journal"); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stat jf.db-journal: %v, want not exist", err)
		}
		if len(logLines(n, "jf.db-journal", "WAL")) == 0 {
			t.Errorf("node log has no line about jf.db-journal and WAL:\n%s", n.Log)
		}
		checkRead(t, db, rowValues("jf", 2), 2)
		if got := n.Pos("jf.db"); got != before {
			t.Errorf("-pos changed from %s to %s", before, got)
		}
	})
}

// TestWAL_BadNames tries to create files whose names can't be databases:
// SQLite and a plain open both fail, and nothing appears on the mount or in
// the HTTP API.
func TestWAL_BadNames(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	names := []string{".hidden", "x.db-journal", "x.db-wal", "x.db-shm", "x.db-pos", strings.Repeat("n", 300), "sub/x.db"}
	for _, name := range names {
		out := strings.TrimSpace(python(t, `
import os, sqlite3, sys
try:
    c = sqlite3.connect(sys.argv[1], isolation_level=None)
    c.execute("create table t(x)")
    c.close()
    print("sqlite: created")
except sqlite3.Error as e:
    print("sqlite: refused:", e)
try:
    os.close(os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644))
    print("open: created")
except OSError as e:
    print("open: refused:", e)
`, n.Path(name)))
		short := name
		if len(short) > 20 {
			short = short[:20] + "..."
		}
		lines := strings.Split(out, "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "sqlite: refused") || !strings.HasPrefix(lines[1], "open: refused") {
			t.Errorf("creating %q: %q, want both refused", short, lines)
		}
	}
	if got := mountNames(t, n); len(got) != 0 {
		t.Errorf("mount lists %q after the refused creates, want nothing", got)
	}
	if got := listDBs(t, n); len(got) != 0 {
		t.Errorf("GET /api/v1/dbs lists %v after the refused creates, want nothing", got)
	}
}

// TestWAL_MkdirRenameRefused checks that mkdir and rename on the mount fail
// with EPERM and change nothing.
func TestWAL_MkdirRenameRefused(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	createRows(t, n.Path("r.db"), "r", 2)
	before := n.Pos("r.db")

	if err := os.Mkdir(n.Path("sub"), 0o755); !errors.Is(err, syscall.EPERM) {
		t.Errorf("mkdir on the mount: %v, want EPERM", err)
	}
	if err := os.Rename(n.Path("r.db"), n.Path("s.db")); !errors.Is(err, syscall.EPERM) {
		t.Errorf("rename on the mount: %v, want EPERM", err)
	}
	if len(logLines(n, "rename")) == 0 {
		t.Errorf("node log does not mention the refused rename:\n%s", n.Log)
	}
	if out, err := exec.Command("mv", n.Path("r.db"), n.Path("t.db")).CombinedOutput(); err == nil {
		t.Errorf("mv on the mount succeeded: %s", out)
	}
	for _, name := range mountNames(t, n) {
		if name != "r.db" && name != "r.db-pos" {
			t.Errorf("mount lists %q after the refused mkdir and renames", name)
		}
	}
	checkRead(t, n.Path("r.db"), rowValues("r", 2), 2)
	if got := n.Pos("r.db"); got != before {
		t.Errorf("-pos changed from %s to %s", before, got)
	}
}

// TestWAL_NonSQLiteFile writes a text file on the mount. The write either
// fails or is kept as written; either way the other database is untouched
// and the node stays healthy.
func TestWAL_NonSQLiteFile(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	createRows(t, n.Path("keep.db"), "keep", 5)
	before := n.Pos("keep.db")

	out, err := exec.Command("sh", "-c", `echo hello > "$1"`, "sh", n.Path("notes.txt")).CombinedOutput()
	t.Logf("echo hello > notes.txt: err=%v %s", err, out)
	b, rerr := os.ReadFile(n.Path("notes.txt"))
	switch {
	case err == nil && (rerr != nil || string(b) != "hello\n"):
		t.Errorf("echo succeeded but notes.txt reads %q, %v; a write that succeeds must be kept", b, rerr)
	case err != nil && rerr == nil && strings.Contains(string(b), "hello"):
		t.Errorf("echo failed but notes.txt holds %q", b)
	}
	if rerr == nil {
		t.Logf("notes.txt exists after the write: %d bytes; mount lists %q", len(b), mountNames(t, n))
	}

	checkRead(t, n.Path("keep.db"), rowValues("keep", 5), 5)
	if got := n.Pos("keep.db"); got != before {
		t.Errorf("keep.db -pos changed from %s to %s", before, got)
	}
	for name, d := range listDBs(t, n) {
		if d.Name == "" || name != d.Name {
			t.Errorf("GET /api/v1/dbs has a bad entry %+v", d)
		}
	}
	if code, body := n.HTTPGet("/healthz"); code != 200 {
		t.Errorf("GET /healthz = %d %s after the text file write", code, body)
	}
}

// TestWAL_ExportImport exports a database (with commits still only in its
// WAL, a client holding it open) with `pagewire export`; the sqlite3 CLI
// finds the export intact, with the same rows and in rollback-journal
// (delete) mode. `pagewire import` loads it under a new name, which then
// reads the same on the mount, in WAL mode, and takes writes.
func TestWAL_ExportImport(t *testing.T) {
	const rows = 100
	n := StartNode(t, NodeOptions{})
	holder := startPython(t, "holder", `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
c.execute("create table t(id integer primary key, v text)")
for i in range(int(sys.argv[2])):
    c.execute("insert into t(v) values (?)", ("exp-%d" % i,))
print("ready")
sys.stdin.readline()
c.close()
`, n.Path("exp.db"), strconv.Itoa(rows))
	holder.WaitLines(1, 5*time.Minute)
	pos := n.Pos("exp.db")

	file := filepath.Join(t.TempDir(), "export.db")
	out, code := n.CLI("export", "-name", "exp.db", "-url", n.URL, file)
	if code != 0 {
		t.Fatalf("pagewire export: exit %d\n%s", code, out)
	}
	if !strings.Contains(out, pos) {
		t.Errorf("pagewire export said %q, want it to name the position %s", out, pos)
	}
	holder.WaitOK(time.Minute)

	got := cli(t, file, "PRAGMA integrity_check;\nPRAGMA journal_mode;\nSELECT count(*) FROM t;\nSELECT group_concat(v, ',') FROM (SELECT v FROM t ORDER BY id);\n")
	want := []string{"ok", "delete", strconv.Itoa(rows), rowValues("exp", rows)}
	if g := strings.Fields(got); !slices.Equal(g, want) {
		t.Fatalf("sqlite3 on the export:\n got %q\nwant %q", g, want)
	}
	for _, suffix := range []string{"-wal", "-journal"} {
		if _, err := os.Stat(file + suffix); err == nil {
			t.Errorf("the export left %s next to it", filepath.Base(file+suffix))
		}
	}

	for _, name := range []string{"copy.db", "copy.db-pos"} {
		if _, err := os.Stat(n.Path(name)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("stat %s before the import: %v, want not exist", name, err)
		}
	}
	out, code = n.CLI("import", "-name", "copy.db", "-url", n.URL, file)
	if code != 0 {
		t.Fatalf("pagewire import: exit %d\n%s", code, out)
	}
	// The new database and its -pos are there at once, although both names
	// were looked up (and missing) a moment ago.
	for _, name := range []string{"copy.db", "copy.db-pos"} {
		if _, err := os.Stat(n.Path(name)); err != nil {
			t.Errorf("right after the import: %v", err)
			waitFor(t, 10*time.Second, name+" to appear", func() bool {
				_, err := os.Stat(n.Path(name))
				return err == nil
			})
		}
	}
	if _, ok := listDBs(t, n)["copy.db"]; !ok {
		t.Errorf("GET /api/v1/dbs does not list copy.db after the import")
	}
	checkRead(t, n.Path("copy.db"), rowValues("exp", rows), rows)
	checkRead(t, n.Path("exp.db"), rowValues("exp", rows), rows)

	imported := txidOf(t, n.Pos("copy.db"))
	python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("insert into t(v) values (?)", ("exp-%s" % sys.argv[2],))
c.close()
`, n.Path("copy.db"), strconv.Itoa(rows))
	checkRead(t, n.Path("copy.db"), rowValues("exp", rows+1), rows+1)
	checkTXID(t, n, "copy.db", imported+1)
}

// TestWAL_ImportWhileOpenRefused imports over a database that a Python
// process holds open: the import fails with exit code != 0 and a message
// that says the database is in use, and the data is unchanged. Once the
// process closed the database, the same import succeeds.
func TestWAL_ImportWhileOpenRefused(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	db := n.Path("held.db")
	createRows(t, db, "old", 4)
	before := n.Pos("held.db")

	src := filepath.Join(t.TempDir(), "new.db")
	cli(t, src, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);\nINSERT INTO t(v) VALUES ('new-0');\nINSERT INTO t(v) VALUES ('new-1');\n")

	holder := startPython(t, "holder", `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
def show():
    print(c.execute("select count(*) || ' ' || group_concat(v, ',') from (select v from t order by id)").fetchone()[0], flush=True)
show()
for line in sys.stdin:
    show()
c.close()
`, db)
	if got, want := holder.WaitLines(1, 2*time.Minute)[0], "4 "+rowValues("old", 4); got != want {
		t.Fatalf("holder read %q, want %q", got, want)
	}

	out, code := n.CLI("import", "-name", "held.db", "-url", n.URL, src)
	t.Logf("import while held open: exit %d: %s", code, out)
	if code == 0 {
		t.Fatalf("pagewire import over a database a client holds open succeeded:\n%s", out)
	}
	if !strings.Contains(out, "held.db") || !(strings.Contains(out, "in use") || strings.Contains(out, "open")) {
		t.Errorf("pagewire import's message %q does not say that held.db is in use", out)
	}
	holder.Send("again")
	if got, want := holder.WaitLines(2, 2*time.Minute)[1], "4 "+rowValues("old", 4); got != want {
		t.Errorf("holder reads %q after the refused import, want %q", got, want)
	}
	if got := n.Pos("held.db"); got != before {
		t.Errorf("-pos changed from %s to %s by the refused import", before, got)
	}
	holder.WaitOK(time.Minute)

	// No client has it open any more: the import must now go through.
	handles := -1
	if !pollUntil(30*time.Second, func() bool {
		handles = listDBs(t, n)["held.db"].OpenHandles
		return handles == 0
	}) {
		t.Errorf("GET /api/v1/dbs/held.db reports open_handles=%d 30s after every client closed it, want 0", handles)
	}
	out, code = n.CLI("import", "-name", "held.db", "-url", n.URL, src)
	if code != 0 {
		t.Fatalf("pagewire import after every client closed held.db: exit %d\n%s", code, out)
	}
	checkRead(t, db, rowValues("new", 2), 2)
	if after := n.Pos("held.db"); after == before {
		t.Errorf("-pos unchanged (%s) by the import", after)
	}
}

//go:build integration

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/syncbuf"
)

// This file holds the SQLite-client tests and the small helpers that the
// crash, many, wal, modernc, replication and failover tests share: client
// processes (proc), the sqlite3 CLI (cli), reads and checks of a database.

// proc is a client process (Python, usually) that a test talks to while
// it runs: it reads the process's stdout line by line and can write to its
// stdin. Cleanup kills the process if it is still running.
type proc struct {
	t     testing.TB
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *syncbuf.Buffer // stdout and stderr, for failure messages

	mu    sync.Mutex
	lines []string // complete stdout lines so far

	done chan struct{}
	err  error // the process's exit error, once done is closed
}

// startPython starts `python3 -u -c script args...` and returns at once.
func startPython(t testing.TB, name, script string, args ...string) *proc {
	t.Helper()
	return startProc(t, name, "python3", append([]string{"-u", "-c", script}, args...)...)
}

// startProc starts a program as a proc.
func startProc(t testing.TB, name, prog string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, out: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(prog, args...)
	p.cmd.Stderr = p.out
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(p.out, line)
			p.mu.Lock()
			p.lines = append(p.lines, line)
			p.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stdout) // a line too long for the scanner
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				// Killed, but its output stays open (a process stuck in
				// the kernel, or one that inherited the pipe): report it
				// rather than hang the run.
				t.Errorf("%s (pid %d) did not end within 30 s of SIGKILL", p.name, p.cmd.Process.Pid)
			}
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", p.name, p.out)
		}
	})
	return p
}

// Lines returns the complete stdout lines read so far.
func (p *proc) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// WaitLines waits until the process printed at least n lines and returns
// them; it fails the test if the process exits or timeout passes first.
func (p *proc) WaitLines(n int, timeout time.Duration) []string {
	p.t.Helper()
	ok := pollUntil(timeout, func() bool {
		if len(p.Lines()) >= n {
			return true
		}
		select {
		case <-p.done:
			return true
		default:
			return false
		}
	})
	lines := p.Lines()
	if len(lines) < n {
		if ok {
			p.t.Fatalf("%s exited (%v) after %d lines, want %d:\n%s", p.name, p.err, len(lines), n, p.out)
		}
		p.t.Fatalf("%s printed %d lines in %s, want %d:\n%s", p.name, len(lines), timeout, n, p.out)
	}
	return lines
}

// Send writes one line to the process's stdin.
func (p *proc) Send(line string) {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		p.t.Fatalf("write to %s: %v", p.name, err)
	}
}

// Wait closes stdin, waits for the process to exit and returns its exit
// code (-1 if it was killed by a signal).
func (p *proc) Wait(timeout time.Duration) int {
	p.t.Helper()
	_ = p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %s:\n%s", p.name, timeout, p.out)
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	p.t.Fatalf("%s: %v", p.name, p.err)
	return -1
}

// Kill kills the process with SIGKILL and waits until everything it
// printed was read.
func (p *proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// WaitOK waits for the process and fails the test unless it exited 0.
func (p *proc) WaitOK(timeout time.Duration) []string {
	p.t.Helper()
	if code := p.Wait(timeout); code != 0 {
		p.t.Fatalf("%s exited with code %d:\n%s", p.name, code, p.out)
	}
	return p.Lines()
}

// txidOf returns the TXID of a -pos value "%016x/%016x".
func txidOf(t testing.TB, pos string) uint64 {
	t.Helper()
	txid, _, ok := strings.Cut(pos, "/")
	v, err := strconv.ParseUint(txid, 16, 64)
	if !ok || len(txid) != 16 || err != nil {
		t.Fatalf("-pos %q is not %%016x/%%016x", pos)
	}
	return v
}

// dbInfo is a database as GET /api/v1/dbs reports it.
type dbInfo struct {
	Name        string `json:"name"`
	TXID        string `json:"txid"`
	Checksum    string `json:"checksum"`
	OpenHandles int    `json:"open_handles"`
}

// listDBs returns the node's databases from GET /api/v1/dbs by name.
func listDBs(t testing.TB, n *Node) map[string]dbInfo {
	t.Helper()
	code, body := n.HTTPGet("/api/v1/dbs")
	if code != 200 {
		t.Fatalf("GET /api/v1/dbs = %d %s", code, body)
	}
	var resp struct {
		Databases []dbInfo `json:"databases"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatalf("GET /api/v1/dbs: %v\n%s", err, body)
	}
	out := map[string]dbInfo{}
	for _, d := range resp.Databases {
		out[d.Name] = d
	}
	return out
}

// mountNames lists the mount's directory.
func mountNames(t testing.TB, n *Node) []string {
	t.Helper()
	entries, err := os.ReadDir(n.MountDir)
	if err != nil {
		t.Fatalf("read mount: %v", err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// cli runs the sqlite3 shell and fails the test if it reports an error
// (the shell exits 0 after some errors, so its output is checked too).
func cli(t testing.TB, db, sql string) string {
	t.Helper()
	out, err := sqliteCLI(t, db, sql)
	if err != nil || strings.Contains(out, "Error") || strings.Contains(out, "Parse error") {
		t.Fatalf("sqlite3 %s: %v\n%s", db, err, out)
	}
	return out
}

// rowValues returns the rows the sqlite tests write: prefix-0 ... prefix-(n-1),
// comma-joined, as group_concat prints them.
func rowValues(prefix string, n int) string {
	vs := make([]string, n)
	for i := range vs {
		vs[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return strings.Join(vs, ",")
}

// checkRead reads db with Python and the sqlite3 CLI and checks that both
// see WAL mode, want (as rowValues prints it) and integrity ok.
func checkRead(t testing.TB, db, want string, count int) {
	t.Helper()
	wantLines := []string{"wal", strconv.Itoa(count), want, "ok"}
	if got := strings.Split(strings.TrimSpace(python(t, readTestdata(t, "read.py"), db)), "\n"); strings.Join(got, "\n") != strings.Join(wantLines, "\n") {
		t.Errorf("python read of %s:\n got %q\nwant %q", filepath.Base(db), got, wantLines)
	}
	out := cli(t, db, "PRAGMA journal_mode;\nSELECT count(*) FROM t;\nSELECT coalesce(group_concat(v, ','), '') FROM (SELECT v FROM t ORDER BY id);\nPRAGMA integrity_check;\n")
	if got := strings.Split(strings.TrimSpace(out), "\n"); strings.Join(got, "\n") != strings.Join(wantLines, "\n") {
		t.Errorf("sqlite3 CLI read of %s:\n got %q\nwant %q", filepath.Base(db), got, wantLines)
	}
}

// checkTXID checks the TXID in db's -pos file and in the HTTP API.
func checkTXID(t testing.TB, n *Node, db string, want uint64) {
	t.Helper()
	pos := n.Pos(db)
	if got := txidOf(t, pos); got != want {
		t.Errorf("%s: TXID in -pos = %d (%s), want %d", db, got, pos, want)
	}
	code, body := n.HTTPGet("/api/v1/dbs/" + db)
	if wantJSON := fmt.Sprintf(`"txid": "%016x"`, want); code != 200 || !strings.Contains(body, wantJSON) {
		t.Errorf("GET /api/v1/dbs/%s = %d %s, want txid %016x", db, code, body, want)
	}
}

// TestSQLite_Clients has Python's sqlite3 and the sqlite3 CLI each create a
// database on the mount, write to it in autocommit statements and one
// explicit transaction, and read it back; each database is in WAL mode
// without the client asking, passes integrity_check, is read the same by
// the other client, and its TXID is 1 + the committed write transactions.
func TestSQLite_Clients(t *testing.T) {
	n := StartNode(t, NodeOptions{})

	t.Run("Python", func(t *testing.T) {
		out := python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
print(c.execute("pragma journal_mode").fetchone()[0])
c.execute("create table t(id integer primary key, v text)")
for i in range(10):
    c.execute("insert into t(v) values (?)", ("py-%d" % i,))
c.execute("begin")
for i in range(10, 15):
    c.execute("insert into t(v) values (?)", ("py-%d" % i,))
c.execute("commit")
print(c.execute("select count(*) from t").fetchone()[0])
print(c.execute("select group_concat(v, ',') from (select v from t order by id)").fetchone()[0])
print(c.execute("pragma integrity_check").fetchone()[0])
print(c.execute("pragma journal_mode").fetchone()[0])
c.close()
`, n.Path("py.db"))
		want := []string{"wal", "15", rowValues("py", 15), "ok", "wal"}
		if got := strings.Fields(out); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("python printed %q, want %q", got, want)
		}
		// created (1) + create table + 10 autocommit inserts + 1 transaction.
		checkTXID(t, n, "py.db", 1+1+10+1)
	})

	t.Run("CLI", func(t *testing.T) {
		var sql strings.Builder
		sql.WriteString("PRAGMA journal_mode;\nCREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);\n")
		for i := range 4 {
			fmt.Fprintf(&sql, "INSERT INTO t(v) VALUES ('cli-%d');\n", i)
		}
		sql.WriteString("BEGIN;\n")
		for i := 4; i < 12; i++ {
			fmt.Fprintf(&sql, "INSERT INTO t(v) VALUES ('cli-%d');\n", i)
		}
		sql.WriteString("COMMIT;\nSELECT count(*) FROM t;\nSELECT group_concat(v, ',') FROM (SELECT v FROM t ORDER BY id);\nPRAGMA integrity_check;\n")
		out := cli(t, n.Path("cli.db"), sql.String())
		want := []string{"wal", "12", rowValues("cli", 12), "ok"}
		if got := strings.Fields(out); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("sqlite3 printed %q, want %q", got, want)
		}
		// created + create table + 4 autocommit inserts + 1 transaction.
		checkTXID(t, n, "cli.db", 1+1+4+1)
	})

	t.Run("CrossRead", func(t *testing.T) {
		checkRead(t, n.Path("py.db"), rowValues("py", 15), 15)
		checkRead(t, n.Path("cli.db"), rowValues("cli", 12), 12)
	})

	t.Run("CrossWrite", func(t *testing.T) {
		// The CLI adds to Python's database and Python to the CLI's.
		cli(t, n.Path("py.db"), "INSERT INTO t(v) VALUES ('py-15');\n")
		python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
c.execute("insert into t(v) values ('cli-12')")
c.close()
`, n.Path("cli.db"))
		checkRead(t, n.Path("py.db"), rowValues("py", 16), 16)
		checkRead(t, n.Path("cli.db"), rowValues("cli", 13), 13)
		checkTXID(t, n, "py.db", 1+1+10+1+1)
		checkTXID(t, n, "cli.db", 1+1+4+1+1)
	})
}

// TestSQLite_ConcurrentProcesses runs three writer and three reader
// processes on one database at once. Each writer commits 300 autocommit
// inserts; each reader checks that count(*) never goes down. At the end
// every row is there exactly once, integrity_check is ok, the TXID counts
// every commit, and a connection opened before any write (and kept open in
// its own process) sees all rows in its next transaction.
func TestSQLite_ConcurrentProcesses(t *testing.T) {
	const writers, readers, perWriter = 3, 3, 300
	n := StartNode(t, NodeOptions{})
	db := n.Path("conc.db")
	python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("create table t(id integer primary key, w integer not null, i integer not null, unique(w, i))")
c.close()
`, db)

	// The early connection: opened and used before any write, then idle.
	early := startPython(t, "early reader", `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
print(c.execute("select count(*) from t").fetchone()[0])
sys.stdin.readline()
print(c.execute("select count(*) from t").fetchone()[0])
print(c.execute("select count(distinct w * 100000 + i) from t").fetchone()[0])
print(c.execute("pragma integrity_check").fetchone()[0])
`, db)
	if got := early.WaitLines(1, 2*time.Minute)[0]; got != "0" {
		t.Fatalf("early connection saw %s rows before the writes, want 0", got)
	}

	stop := filepath.Join(t.TempDir(), "stop")
	var rs []*proc
	for r := range readers {
		rs = append(rs, startPython(t, fmt.Sprintf("reader %d", r), `
import os, sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
last, reads = 0, 0
while True:
    done = os.path.exists(sys.argv[2])
    n = c.execute("select count(*) from t").fetchone()[0]
    reads += 1
    if n < last:
        print("DECREASE %d -> %d after %d reads" % (last, n, reads))
        sys.exit(1)
    last = n
    if done:
        break
print(reads, last)
`, db, stop))
	}
	var ws []*proc
	for w := range writers {
		ws = append(ws, startPython(t, fmt.Sprintf("writer %d", w), `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
c.execute("pragma busy_timeout=60000")
w, n = int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    c.execute("insert into t(w, i) values (?, ?)", (w, i))
c.close()
print("done", n)
`, db, strconv.Itoa(w), strconv.Itoa(perWriter)))
	}
	for _, w := range ws {
		w.WaitOK(10 * time.Minute)
	}
	if err := os.WriteFile(stop, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		lines := r.WaitOK(5 * time.Minute)
		// Readers read after the stop file appeared, so after every commit.
		if f := strings.Fields(lines[len(lines)-1]); len(f) != 2 || f[1] != strconv.Itoa(writers*perWriter) {
			t.Errorf("%s ended with %q, want its last count to be %d", r.name, lines, writers*perWriter)
		}
	}

	early.Send("go")
	total := strconv.Itoa(writers * perWriter)
	if got, want := strings.Join(early.WaitOK(2*time.Minute), " "), "0 "+total+" "+total+" ok"; got != want {
		t.Errorf("early connection printed %q, want %q", got, want)
	}

	out := python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
print(c.execute("select count(*) from t").fetchone()[0])
for w, n, lo, hi in c.execute("select w, count(*), min(i), max(i) from t group by w order by w"):
    print(w, n, lo, hi)
print(c.execute("pragma integrity_check").fetchone()[0])
`, db)
	var want []string
	want = append(want, total)
	for w := range writers {
		want = append(want, fmt.Sprintf("%d %d 0 %d", w, perWriter, perWriter-1))
	}
	want = append(want, "ok")
	if got := strings.Split(strings.TrimSpace(out), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("final read:\n got %q\nwant %q", got, want)
	}
	checkTXID(t, n, "conc.db", uint64(1+1+writers*perWriter))
}

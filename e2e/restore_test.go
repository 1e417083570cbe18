//go:build integration

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/s3test"
)

// This file tests restores through the command line (backup_test.go the
// uploads, with the backup package): a primary backs up, `pagewire backup
// ls` lists what it wrote,
// `pagewire restore` restores to a file or onto a running cluster, and a
// node with restore-on-start and an empty data.dir restores before it
// serves. Restored databases are compared with the primary's at the same
// TXID by position (pagewire's checksum) and by sqlite3's answers.

// backupWith is a backup section for a new folder (File) or SeaweedFS
// server (S3), with extra (indented) keys appended.
func fileBackupWith(t testing.TB, extra string) string { return fileBackup(t.TempDir()) + extra }
func s3BackupWith(t testing.TB, extra string) string   { return s3Backup(s3test.Start(t)) + extra }

// backupStores are the stores tests back up to: a folder and SeaweedFS.
var backupStores = []struct {
	name   string
	backup func(testing.TB, string) string
}{{"File", fileBackupWith}, {"S3", s3BackupWith}}

// rowsOf is what the tests compare databases by: the rows of t that
// cliMakeDB writes, and integrity_check.
func rowsOf(t testing.TB, db string) string {
	t.Helper()
	return cli(t, db, "SELECT count(*), coalesce(group_concat(v, ','), '') FROM (SELECT v FROM t ORDER BY id);\nPRAGMA integrity_check;\n")
}

// backupHead is the newest TXID `pagewire backup ls -name db` lists for the
// backup in n's config; 0 if it lists none.
func backupHead(t testing.TB, n *Node, db string) uint64 {
	t.Helper()
	out, code := n.CLI("backup", "ls", "-name", db, "-config", n.ConfigPath)
	if code != 0 {
		return 0
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	fields := strings.Fields(lines[len(lines)-1])
	if len(fields) < 3 || fields[0] == "SEGMENT" {
		return 0
	}
	txids := fields[2]
	v, err := strconv.ParseUint(txids[strings.LastIndex(txids, "-")+1:], 16, 64)
	if err != nil {
		t.Fatalf("backup ls: TXIDS %q is not hex:\n%s", txids, out)
	}
	return v
}

// printed returns the value of a "  key: value" line of restore's output.
func printed(t testing.TB, out, key string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("restore printed no %s:\n%s", key, out)
	return ""
}

// cliFails runs a pagewire subcommand that must exit 1 with want in its
// output.
func cliFails(t testing.TB, n *Node, want string, args ...string) {
	t.Helper()
	if out, code := n.CLI(args...); code != 1 || !strings.Contains(out, want) {
		t.Errorf("pagewire %s: exit %d, want 1 and %q\n%s", strings.Join(args, " "), code, want, out)
	}
}

// restoreHistory is a database on a primary at two points: k, after 20
// rows, and head, after 15 more.
type restoreHistory struct {
	posK, posHead   string
	rowsK, rowsHead string
}

// makeRestoreHistory writes db's history on n and waits until it is
// backed up.
func makeRestoreHistory(t testing.TB, n *Node, db string) restoreHistory {
	t.Helper()
	var h restoreHistory
	cliMakeDB(t, n, db, 20)
	h.posK, h.rowsK = n.Pos(db), rowsOf(t, n.Path(db))
	cliMakeDB(t, n, db, 15)
	h.posHead, h.rowsHead = n.Pos(db), rowsOf(t, n.Path(db))
	waitBackedUp(t, n, db, h.posHead[:16])
	return h
}

// TestBackup_RestoreToFile restores offline (-o) from a `type: file`
// backup and from SeaweedFS: to a TXID in decimal and in hex, to the
// newest, and to the time restore printed for a TXID; each restore is at
// the primary's position for that TXID and sqlite3 reads the same rows.
// Bad input fails and writes nothing.
func TestBackup_RestoreToFile(t *testing.T) {
	for _, tc := range backupStores {
		t.Run(tc.name, func(t *testing.T) {
			n := StartNode(t, NodeOptions{Config: tc.backup(t, "")})
			h := makeRestoreHistory(t, n, "app.db")
			k := txidOf(t, h.posK)
			dir := t.TempDir()
			restore := func(out string, args ...string) (string, int) {
				return n.CLI(append([]string{"restore", "-name", "app.db", "-config", n.ConfigPath, "-o", filepath.Join(dir, out)}, args...)...)
			}
			check := func(file, out string, code int, pos, rows string) {
				t.Helper()
				if code != 0 {
					t.Fatalf("restore to %s: exit %d\n%s", file, code, out)
				}
				if got := printed(t, out, "position"); got != pos {
					t.Errorf("restore to %s: at %s, want %s\n%s", file, got, pos, out)
				}
				if got := rowsOf(t, filepath.Join(dir, file)); got != rows {
					t.Errorf("restore to %s: sqlite3 reads %q, want %q", file, got, rows)
				}
			}

			out, code := restore("k.db", "-txid", strconv.FormatUint(k, 10))
			check("k.db", out, code, h.posK, h.rowsK)
			at := printed(t, out, "time")
			out, code = restore("k-hex.db", "-txid", fmt.Sprintf("%016x", k))
			check("k-hex.db", out, code, h.posK, h.rowsK)
			out, code = restore("k-time.db", "-timestamp", at)
			check("k-time.db", out, code, h.posK, h.rowsK)
			out, code = restore("head.db")
			check("head.db", out, code, h.posHead, h.rowsHead)

			// Bad input: an error, and no file.
			for _, bad := range []struct {
				args []string
				want string
			}{
				{[]string{"-txid", strconv.FormatUint(txidOf(t, h.posHead)+1, 10)}, "past the backup's newest"},
				{[]string{"-timestamp", "2001-01-01T00:00:00Z"}, "nothing as old as"},
			} {
				out, code := restore("bad.db", bad.args...)
				if code != 1 || !strings.Contains(out, bad.want) {
					t.Errorf("restore %q: exit %d, want 1 and %q\n%s", bad.args, code, bad.want, out)
				}
				if _, err := os.Stat(filepath.Join(dir, "bad.db")); err == nil {
					t.Errorf("restore %q failed but wrote its file", bad.args)
				}
			}
			out, code = n.CLI("restore", "-name", "nope.db", "-config", n.ConfigPath, "-o", filepath.Join(dir, "nope.db"))
			if code != 1 || !strings.Contains(out, "nope.db") {
				t.Errorf("restore of a database the backup lacks: exit %d, want 1 and an error naming it\n%s", code, out)
			}
		})
	}
}

// TestBackup_List: `backup ls` lists the databases, and a database's
// restore points from its first snapshot to the newest transaction.
func TestBackup_List(t *testing.T) {
	n := StartNode(t, NodeOptions{Config: fileBackupWith(t, "")})
	cliMakeDB(t, n, "a.db", 5)
	cliMakeDB(t, n, "b.db", 3)
	waitBackedUp(t, n, "a.db", n.Pos("a.db")[:16])
	waitBackedUp(t, n, "b.db", n.Pos("b.db")[:16])

	out, code := n.CLI("backup", "ls", "-config", n.ConfigPath)
	if code != 0 || strings.TrimSpace(out) != "a.db\nb.db" {
		t.Fatalf("backup ls: exit %d, want a.db and b.db\n%s", code, out)
	}
	out, code = n.CLI("backup", "ls", "-name", "a.db", "-config", n.ConfigPath)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) < 2 || !strings.HasPrefix(lines[0], "SEGMENT") || !strings.Contains(out, " snapshot ") {
		t.Fatalf("backup ls -name a.db: exit %d, want a table with a snapshot\n%s", code, out)
	}
	if got, want := backupHead(t, n, "a.db"), txidOf(t, n.Pos("a.db")); got != want {
		t.Errorf("backup ls -name a.db ends at TXID %d, want %d\n%s", got, want, out)
	}
	out, code = n.CLI("backup", "ls", "-name", "nope.db", "-config", n.ConfigPath)
	if code != 1 || !strings.Contains(out, "nope.db") {
		t.Errorf("backup ls -name nope.db: exit %d, want 1 and an error naming it\n%s", code, out)
	}
}

// TestBackup_RestoreOntoCluster restores an older TXID onto a running
// primary, which imports it as a new transaction; its replica follows.
// Pointed at the replica, restore refuses before anything changes.
func TestBackup_RestoreOntoCluster(t *testing.T) {
	p := StartNode(t, NodeOptions{Config: fileBackupWith(t, "")})
	r := StartNode(t, NodeOptions{ReplicaOf: p})
	h := makeRestoreHistory(t, p, "app.db")
	waitFor(t, 30*time.Second, "the replica to catch up", func() bool { return r.Pos("app.db") == h.posHead })

	// Onto the replica: refused.
	out, code := r.CLI("restore", "-name", "app.db", "-txid", strconv.FormatUint(txidOf(t, h.posK), 10), "-config", p.ConfigPath, "-url", r.URL)
	if code != 1 || !strings.Contains(out, "is not the primary") {
		t.Fatalf("restore onto the replica: exit %d, want 1 and that it is not the primary\n%s", code, out)
	}
	if got := p.Pos("app.db"); got != h.posHead {
		t.Fatalf("a refused restore moved the primary from %s to %s", h.posHead, got)
	}

	// Onto the primary.
	out, code = p.CLI("restore", "-name", "app.db", "-txid", strconv.FormatUint(txidOf(t, h.posK), 10), "-config", p.ConfigPath, "-url", p.URL)
	if code != 0 || !strings.Contains(out, "imported app.db") {
		t.Fatalf("restore onto the primary: exit %d\n%s", code, out)
	}
	if got := rowsOf(t, p.Path("app.db")); got != h.rowsK {
		t.Errorf("the primary reads %q after the restore, want %q", got, h.rowsK)
	}
	if got, head := txidOf(t, p.Pos("app.db")), txidOf(t, h.posHead); got <= head {
		t.Errorf("the restore is at TXID %d, want a new transaction after %d", got, head)
	}
	pos := p.Pos("app.db")
	waitFor(t, 30*time.Second, "the replica to follow the restore", func() bool { return r.Pos("app.db") == pos })
	if got := rowsOf(t, r.Path("app.db")); got != h.rowsK {
		t.Errorf("the replica reads %q after the restore, want %q", got, h.rowsK)
	}
}

// TestBackup_RestoreOnStart starts a node with an empty data.dir and
// mount -restore-on-start on a primary's backup: before it serves, it has
// every database at the primary's position, with the same rows.
func TestBackup_RestoreOnStart(t *testing.T) {
	for _, tc := range backupStores {
		t.Run(tc.name, func(t *testing.T) {
			bk := tc.backup(t, "")
			p := StartNode(t, NodeOptions{Config: bk})
			ha := makeRestoreHistory(t, p, "a.db")
			cliMakeDB(t, p, "b.db", 3)
			posB, rowsB := p.Pos("b.db"), rowsOf(t, p.Path("b.db"))
			waitBackedUp(t, p, "b.db", posB[:16])
			p.Stop() // one primary uploads at a time

			n := StartNode(t, NodeOptions{Config: bk, Args: []string{"-restore-on-start"}})
			for db, want := range map[string][2]string{"a.db": {ha.posHead, ha.rowsHead}, "b.db": {posB, rowsB}} {
				if got := n.Pos(db); got != want[0] {
					t.Errorf("%s restored at %s, want %s", db, got, want[0])
				}
				if got := rowsOf(t, n.Path(db)); got != want[1] {
					t.Errorf("%s restored reads %q, want %q", db, got, want[1])
				}
			}
			if left, _ := filepath.Glob(filepath.Join(n.DataDir, ".restore-on-start-*")); len(left) != 0 {
				t.Errorf("restore-on-start left %v", left)
			}
		})
	}
}

// TestBackup_RestoreOnStartWithoutBackups needs no uploader: an empty
// backup starts the node empty; a backup that does not verify stops the
// start with an error naming the object and what to do, and restores
// nothing; -restore-on-start without a backup is refused; restore and
// backup ls say when the config has no backup.
func TestBackup_RestoreOnStartWithoutBackups(t *testing.T) {
	t.Run("Empty", func(t *testing.T) {
		n := StartNode(t, NodeOptions{Config: fileBackupWith(t, "  restore-on-start: true\n")})
		if names := mountNames(t, n); len(names) != 0 {
			t.Errorf("a node restored from an empty backup has %v, want nothing", names)
		}
		if !strings.Contains(n.Log.String(), "the backup has no databases") {
			t.Errorf("the log does not say the backup was empty:\n%s", n.Log)
		}
		cliFails(t, n, "app.db", "restore", "-name", "app.db", "-config", n.ConfigPath, "-o", filepath.Join(t.TempDir(), "x.db"))
		if out, code := n.CLI("backup", "ls", "-config", n.ConfigPath); code != 0 || !strings.Contains(out, "no databases") {
			t.Errorf("backup ls of an empty backup: exit %d\n%s", code, out)
		}
	})
	t.Run("Broken", func(t *testing.T) {
		dir := t.TempDir()
		begin := filepath.Join(dir, "app.db", "0000000000000001-00000000", "begin.json")
		if err := os.MkdirAll(filepath.Dir(begin), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(begin, []byte("not json"), 0o644); err != nil {
			t.Fatal(err)
		}
		n := StartNode(t, NodeOptions{NoWait: true, Config: fmt.Sprintf("backup:\n  type: file\n  path: %q\n  restore-on-start: true\n", dir)})
		if code := n.Wait(60 * time.Second); code != 1 {
			t.Fatalf("a node whose restore-on-start fails exited %d, want 1\n%s", code, n.Log)
		}
		for _, want := range []string{"app.db/0000000000000001-00000000/begin.json", "-restore-on-start=false", "pagewire backup ls -name app.db"} {
			if !strings.Contains(n.Log.String(), want) {
				t.Errorf("the node's error does not say %q:\n%s", want, n.Log)
			}
		}
		if entries, _ := os.ReadDir(filepath.Join(n.DataDir, "dbs")); len(entries) != 0 {
			t.Errorf("a failed restore-on-start left %d entries in data.dir/dbs", len(entries))
		}
	})
	t.Run("FlagWithoutBackup", func(t *testing.T) {
		n := StartNode(t, NodeOptions{NoWait: true, Args: []string{"-restore-on-start"}})
		if code := n.Wait(60 * time.Second); code != 1 || !strings.Contains(n.Log.String(), "-restore-on-start needs a backup") {
			t.Fatalf("mount -restore-on-start without a backup: exit %d, want 1 and why\n%s", code, n.Log)
		}
		cliFails(t, n, "configures no backup", "restore", "-name", "app.db", "-config", n.ConfigPath, "-o", filepath.Join(t.TempDir(), "x.db"))
		cliFails(t, n, "configures no backup", "backup", "ls", "-config", n.ConfigPath)
	})
}

// On a terminal (a pty from script(1)) restore, import and export show a
// progress bar on stderr (cmd/pagewire's tests check that it stays quiet
// on a file that is no terminal).
func TestBackup_ProgressOnTerminal(t *testing.T) {
	section := fileBackup(t.TempDir())
	p := StartNode(t, NodeOptions{Config: section})
	insertRows(t, p.Path("bar.db"), 20)
	waitBackedUp(t, p, "bar.db", p.Pos("bar.db")[:16])
	onTTY := func(args ...string) string {
		t.Helper()
		cmd := pagewireBin + " " + strings.Join(args, " ")
		out, err := exec.Command("script", "-qec", cmd, "/dev/null").CombinedOutput()
		if err != nil {
			t.Fatalf("%s on a terminal: %v\n%s", cmd, err, out)
		}
		return string(out)
	}
	restored := filepath.Join(t.TempDir(), "bar.db")
	if out := onTTY("restore", "-name", "bar.db", "-o", restored, "-config", p.ConfigPath); !strings.Contains(out, "100%") {
		t.Errorf("restore on a terminal shows no progress bar:\n%q", out)
	}
	if out := onTTY("import", "-name", "copy.db", "-url", p.URL, restored); !strings.Contains(out, "upload copy.db") || !strings.Contains(out, "100%") {
		t.Errorf("import on a terminal shows no progress bar:\n%q", out)
	}
	if out := onTTY("export", "-name", "copy.db", "-url", p.URL, filepath.Join(t.TempDir(), "out.db")); !strings.Contains(out, "download copy.db") {
		t.Errorf("export on a terminal shows no progress:\n%q", out)
	}
}

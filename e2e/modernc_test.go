//go:build integration

package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite" // driver "sqlite"
)

// modernc runs lines on db with modernc.org/sqlite in this test process
// (the node serving the mount is another process, so using the mount here
// is safe) and returns the printed values; it fails the test on an error.
// A line starting with '?' is a query whose rows are printed with columns
// joined by '|'; any other line is executed.
func modernc(t testing.TB, path string, lines ...string) []string {
	t.Helper()
	out, err := moderncErr(path, lines...)
	if err != nil {
		t.Fatalf("modernc on %s: %v\n%s", filepath.Base(path), err, out)
	}
	return strings.Fields(out)
}

// moderncErr is modernc returning the output so far and the first error.
func moderncErr(path string, lines ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return "", err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	conn, err := db.Conn(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	var out strings.Builder
	for _, line := range lines {
		q, isQuery := strings.CutPrefix(strings.TrimSpace(line), "?")
		if !isQuery {
			if _, err := conn.ExecContext(ctx, q); err != nil {
				return out.String(), fmt.Errorf("%s: %w", q, err)
			}
			continue
		}
		if err := printQuery(ctx, conn, q, &out); err != nil {
			return out.String(), fmt.Errorf("%s: %w", q, err)
		}
	}
	return out.String(), nil
}

// printQuery runs q on conn and prints its rows to out, one a line, with
// columns joined by '|'.
func printQuery(ctx context.Context, conn *sql.Conn, q string, out *strings.Builder) error {
	rows, err := conn.QueryContext(ctx, q)
	if err != nil {
		return err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		fields := make([]string, len(vals))
		for i, v := range vals {
			if b, ok := v.([]byte); ok {
				v = string(b)
			}
			fields[i] = fmt.Sprint(v)
		}
		fmt.Fprintln(out, strings.Join(fields, "|"))
	}
	return rows.Err()
}

// TestModernc_Clients has modernc.org/sqlite create a database on the mount
// (WAL without asking), write in autocommit statements and a transaction,
// and read it back with integrity_check ok and the expected TXID; Python
// and the sqlite3 CLI read what modernc wrote, and modernc reads (and adds
// to) what Python and the CLI wrote.
func TestModernc_Clients(t *testing.T) {
	n := StartNode(t, NodeOptions{})

	t.Run("CreateWriteRead", func(t *testing.T) {
		lines := []string{
			"?PRAGMA journal_mode",
			"CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
		}
		for i := range 6 {
			lines = append(lines, fmt.Sprintf("INSERT INTO t(v) VALUES ('mc-%d')", i))
		}
		lines = append(lines, "BEGIN")
		for i := 6; i < 20; i++ {
			lines = append(lines, fmt.Sprintf("INSERT INTO t(v) VALUES ('mc-%d')", i))
		}
		lines = append(lines, "COMMIT",
			"?SELECT count(*) FROM t",
			"?SELECT group_concat(v, ',') FROM (SELECT v FROM t ORDER BY id)",
			"?PRAGMA integrity_check",
			"?PRAGMA journal_mode")
		got := modernc(t, n.Path("mc.db"), lines...)
		want := []string{"wal", "20", rowValues("mc", 20), "ok", "wal"}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("modernc printed %q, want %q", got, want)
		}
		// created + create table + 6 autocommit inserts + 1 transaction.
		checkTXID(t, n, "mc.db", 1+1+6+1)
	})

	t.Run("OthersReadModernc", func(t *testing.T) {
		checkRead(t, n.Path("mc.db"), rowValues("mc", 20), 20)
	})

	t.Run("ModerncReadsOthers", func(t *testing.T) {
		python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("create table t(id integer primary key, v text)")
for i in range(7):
    c.execute("insert into t(v) values (?)", ("py-%d" % i,))
c.close()
`, n.Path("py.db"))
		cli(t, n.Path("cli.db"), "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);\nBEGIN;\n"+
			"INSERT INTO t(v) VALUES ('cli-0');\nINSERT INTO t(v) VALUES ('cli-1');\nINSERT INTO t(v) VALUES ('cli-2');\nCOMMIT;\n")
		for _, c := range []struct {
			db, prefix string
			rows       int
		}{{"py.db", "py", 7}, {"cli.db", "cli", 3}} {
			got := modernc(t, n.Path(c.db),
				"?PRAGMA journal_mode",
				"?SELECT count(*) FROM t",
				"?SELECT group_concat(v, ',') FROM (SELECT v FROM t ORDER BY id)",
				"?PRAGMA integrity_check")
			want := []string{"wal", fmt.Sprint(c.rows), rowValues(c.prefix, c.rows), "ok"}
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("modernc read of %s: %q, want %q", c.db, got, want)
			}
		}
		// modernc adds a row to Python's database; Python and the CLI see it.
		modernc(t, n.Path("py.db"), "INSERT INTO t(v) VALUES ('py-7')")
		checkRead(t, n.Path("py.db"), rowValues("py", 8), 8)
		checkTXID(t, n, "py.db", 1+1+7+1)
		checkTXID(t, n, "cli.db", 1+1+1)
	})
}

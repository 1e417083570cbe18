//go:build integration

package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
)

// exportWriter sets up a database of ~6 MB (table t of 4,000 rows and
// table junk of 2,000, each row 1 KB of random bytes) checkpointed into
// the database file, with a few commits left in the WAL, and prints
// "ready". On a line on stdin it commits 60 transactions, each updating
// every 30th row of t (pages all over the file), with checkpoints every
// 100 pages (new WAL generations over the old frames); halfway it drops
// junk, VACUUMs (the database shrinks) and checkpoints with TRUNCATE (the
// database file and the WAL are cut). It prints "done" and exits at the
// next line.
const exportWriter = `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
c.execute("pragma wal_autocheckpoint=100")
c.execute("create table t(id integer primary key, v integer, pad blob)")
c.execute("create table junk(id integer primary key, pad blob)")
c.execute("begin")
for i in range(4000):
    c.execute("insert into t(id, v, pad) values (?, 0, randomblob(1000))", (i,))
for i in range(2000):
    c.execute("insert into junk(pad) values (randomblob(1000))")
c.execute("commit")
c.execute("pragma wal_checkpoint(truncate)")
for i in range(5):
    c.execute("update t set v = -1 where id = ?", (i * 800,))
print("ready", flush=True)
sys.stdin.readline()
for k in range(1, 61):
    c.execute("begin")
    c.execute("update t set v = ? where id % 30 = ?", (k, k % 30))
    c.execute("commit")
    if k == 30:
        c.execute("drop table junk")
        c.execute("vacuum")
        c.execute("pragma wal_checkpoint(truncate)")
print("done", flush=True)
sys.stdin.readline()
c.close()
`

// TestWAL_StalledExportBlocksNoWriter opens an ExportDatabase stream with
// a plain gRPC client whose windows stay at 64 KiB, reads one message and
// stops reading, as a stalled or hostile client does. Meanwhile a SQLite
// writer on the mount commits, checkpoints, VACUUMs and truncates: none of
// it waits for the client. Read on, the stream is the database at the
// position the export began at, byte for byte the same as a `pagewire
// export` taken just before, and sqlite3 finds it intact.
func TestWAL_StalledExportBlocksNoWriter(t *testing.T) {
	n := StartNode(t, NodeOptions{})
	writer := startPython(t, "writer", exportWriter, n.Path("exp.db"))
	writer.WaitLines(1, 5*time.Minute)
	pos := n.Pos("exp.db")

	// The database now, with `pagewire export`.
	ref := filepath.Join(t.TempDir(), "ref.db")
	if out, code := n.CLI("export", "-name", "exp.db", "-url", n.URL, ref); code != 0 || !strings.Contains(out, pos) {
		t.Fatalf("pagewire export: exit %d, want it at %s\n%s", code, pos, out)
	}
	want, err := os.ReadFile(ref)
	if err != nil {
		t.Fatal(err)
	}

	// The stalled stream: one message read, then none.
	conn, err := grpc.NewClient(n.HTTPAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	stream, err := adminv1.NewAdminServiceClient(conn).ExportDatabase(ctx, &adminv1.ExportDatabaseRequest{Name: "exp.db"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(want) < 4*len(first.GetData()) {
		t.Fatalf("the database is %d bytes, the first message %d: too small for the stream to stall mid-way", len(want), len(first.GetData()))
	}

	// The writer's whole workload runs while the stream waits.
	writer.Send("go")
	writer.WaitLines(2, 5*time.Minute)
	if pos2 := n.Pos("exp.db"); txidOf(t, pos2) < txidOf(t, pos)+60 {
		t.Fatalf("the database is at %s after the workload, from %s: want at least 60 more transactions", pos2, pos)
	}
	spills, _ := filepath.Glob(filepath.Join(n.DataDir, "dbs", ".snapshot-*"))
	if len(spills) == 0 {
		t.Error("the workload overwrote pages the export had yet to send, and no .snapshot-* file keeps them")
	}

	// Read on: the database where the export began.
	got := bytes.NewBuffer(first.GetData())
	var txid uint64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("export stream after the workload: %v", err)
		}
		got.Write(msg.GetData())
		if msg.GetTxid() != 0 {
			txid = msg.GetTxid()
		}
	}
	if txid != txidOf(t, pos) {
		t.Errorf("the stalled export is at TXID %d, want %d (%s)", txid, txidOf(t, pos), pos)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("the stalled export (%d bytes) differs from the export taken at %s (%d bytes)", got.Len(), pos, len(want))
	}
	file := filepath.Join(t.TempDir(), "stalled.db")
	if err := os.WriteFile(file, got.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := strings.Fields(cli(t, file, "PRAGMA integrity_check;\nSELECT count(*), sum(v = 0), sum(v = -1) FROM t;\nSELECT count(*) FROM junk;\n")); strings.Join(out, " ") != "ok 4000|3995|5 2000" {
		t.Errorf("sqlite3 on the stalled export: %q, want integrity ok, 4000 rows as before the workload and junk whole", out)
	}
	if spills, _ := filepath.Glob(filepath.Join(n.DataDir, "dbs", ".snapshot-*")); len(spills) != 0 {
		// The server's handler may still be returning; give it a moment.
		waitFor(t, 10*time.Second, "the export's spill file to go", func() bool {
			s, _ := filepath.Glob(filepath.Join(n.DataDir, "dbs", ".snapshot-*"))
			return len(s) == 0
		})
	}
	writer.Send("")
	writer.WaitOK(time.Minute)
}

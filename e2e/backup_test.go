//go:build integration

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gocloud.dev/blob"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/backup"
	"github.com/pagewire/pagewire/config"
	"github.com/pagewire/pagewire/internal/consultest"
	"github.com/pagewire/pagewire/internal/s3test"
)

// This file tests continuous backup from a running primary to a real
// bucket (a folder, or SeaweedFS's S3 server on loopback) and restores
// from it with the backup package, as `pagewire restore` does.

// fileBackup is the backup section for a folder.
func fileBackup(dir string) string {
	return fmt.Sprintf("backup:\n  type: file\n  path: %q\n  delay: 200ms\n", dir)
}

// s3Backup is the backup section for the S3 server.
func s3Backup(s *s3test.Server) string {
	return fmt.Sprintf("backup:\n  type: s3\n  bucket: %s\n  path: pw\n  endpoint: %q\n  region: %s\n  force-path-style: true\n  access-key-id: %s\n  secret-access-key: %s\n  delay: 200ms\n",
		s.Bucket, s.Endpoint, s.Region, s.AccessKey, s.SecretKey)
}

// openBackup opens the bucket a node's backup section names, as the
// node and the CLI do.
func openBackup(t testing.TB, section string) *blob.Bucket {
	t.Helper()
	cfg, err := config.Parse([]byte(section), "backup section", os.Getenv)
	if err != nil {
		t.Fatalf("backup section: %v", err)
	}
	b, err := backup.OpenBucket(context.Background(), cfg.Backup)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// backupJSON is the backup part of GET /api/v1/dbs/{db}.
type backupJSON struct {
	TXID       string  `json:"txid"`
	LagSeconds float64 `json:"lag_seconds"`
	Error      string  `json:"error"`
	Segment    string  `json:"segment"`
}

// backupState reads a database's backup status from the node's API; nil
// when the node does not upload it.
func backupState(t testing.TB, n *Node, db string) *backupJSON {
	t.Helper()
	resp, err := n.HTTP.Get(n.URL + "/api/v1/dbs/" + db)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	var j struct {
		Backup *backupJSON `json:"backup"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&j); err != nil {
		t.Fatal(err)
	}
	return j.Backup
}

// waitBackedUp waits until n's backup of db reaches TXID txid (hex, as
// -pos), with nothing pending.
func waitBackedUp(t testing.TB, n *Node, db, txid string) {
	t.Helper()
	waitFor(t, 60*time.Second, fmt.Sprintf("the backup of %s to reach %s", db, txid), func() bool {
		b := backupState(t, n, db)
		return b != nil && b.TXID == txid && b.LagSeconds == 0
	})
}

// writeHistory runs testdata/backup_writer.py: count transactions on db,
// and returns the database's -pos after each, by TXID.
func writeHistory(t *testing.T, n *Node, db string, count int, seed int) map[pagewire.TXID]string {
	t.Helper()
	p := startPython(t, "backup writer", readTestdata(t, "backup_writer.py"), n.Path(db), strconv.Itoa(count), strconv.Itoa(seed))
	lines := p.WaitOK(5 * time.Minute)
	hist := map[pagewire.TXID]string{}
	for _, l := range lines {
		pos, ok := strings.CutPrefix(l, "pos ")
		if !ok {
			continue
		}
		hist[pagewire.TXID(txidOf(t, pos))] = pos
	}
	if len(hist) < count/2 {
		t.Fatalf("the writer reported %d positions for %d transactions", len(hist), count)
	}
	return hist
}

// restoreAt restores db as of txid (0: the newest) and returns the
// restored position as -pos prints it, and the file.
func restoreAt(t testing.TB, b *blob.Bucket, db string, txid pagewire.TXID) (string, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), db)
	r, err := backup.Restore(context.Background(), b, backup.RestoreOptions{DB: db, TXID: txid, Output: out})
	if err != nil {
		t.Fatalf("restore %s at %d: %v", db, txid, err)
	}
	return r.Pos.String(), out
}

// checkPointInTime restores db at count random TXIDs of hist, and its
// newest, and requires each to be the primary's state at that TXID.
func checkPointInTime(t *testing.T, b *blob.Bucket, db string, hist map[pagewire.TXID]string, count int) {
	t.Helper()
	txids := make([]pagewire.TXID, 0, len(hist))
	for x := range hist {
		txids = append(txids, x)
	}
	slices.Sort(txids)
	rng := rand.New(rand.NewPCG(uint64(len(hist)), 7))
	picks := []pagewire.TXID{txids[0], txids[len(txids)-1]}
	for range count - len(picks) {
		picks = append(picks, txids[rng.IntN(len(txids))])
	}
	start := time.Now()
	for _, x := range picks {
		if got, _ := restoreAt(t, b, db, x); got != hist[x] {
			t.Fatalf("restore at TXID %d gave %s, the primary had %s", x, got, hist[x])
		}
	}
	t.Logf("%d/%d point-in-time restores equal to the primary's state (checksum) in %s", len(picks), len(picks), time.Since(start).Round(time.Millisecond))
}

// A primary backing up to a folder: every commit reaches it, and a
// restore to any TXID is the primary's database at that TXID; the newest
// restore opens in SQLite with the primary's rows.
func TestBackup_FilePointInTime(t *testing.T) {
	section := fileBackup(filepath.Join(t.TempDir(), "backup"))
	p := StartNode(t, NodeOptions{Config: section})
	hist := writeHistory(t, p, "pitr.db", 200, 1)
	head := p.Pos("pitr.db")
	waitBackedUp(t, p, "pitr.db", head[:16])
	b := openBackup(t, section)
	checkPointInTime(t, b, "pitr.db", hist, 30)

	got, file := restoreAt(t, b, "pitr.db", 0)
	if got != head {
		t.Fatalf("newest restore %s, primary %s", got, head)
	}
	want := countAndCheck(t, p, "pitr.db")
	out, err := sqliteCLI(t, file, "select count(*) from t; pragma integrity_check;")
	if err != nil || strings.TrimSpace(out) != want {
		t.Fatalf("restored file: %q (%v), the primary's: %q", out, err, want)
	}
	if code, body := p.HTTPGet("/metrics"); code != 200 || !strings.Contains(body, `pagewire_backup_position{db="pitr.db"} `+strconv.FormatUint(txidOf(t, head), 10)) {
		t.Fatalf("metrics lack the backup position %d:\n%s", txidOf(t, head), grepLines(body, "pagewire_backup"))
	}
	if out, code := p.CLI("status", "-url", p.URL); code != 0 || !strings.Contains(out, head[:16]+" (") {
		t.Fatalf("pagewire status does not show the backup at %s:\n%s", head[:16], out)
	}
}

// The same against a real S3 server, with 100 point-in-time restores;
// a node restarted on the same backup continues it in a new segment.
func TestBackup_S3PointInTime(t *testing.T) {
	s3 := s3test.Start(t)
	section := s3Backup(s3)
	p := StartNode(t, NodeOptions{Config: section})
	hist := writeHistory(t, p, "pitr.db", 250, 2)
	waitBackedUp(t, p, "pitr.db", p.Pos("pitr.db")[:16])
	first := backupState(t, p, "pitr.db").Segment

	p.Stop()
	p.Start(false)
	for x, pos := range writeHistory(t, p, "pitr.db", 50, 3) {
		hist[x] = pos
	}
	head := p.Pos("pitr.db")
	waitBackedUp(t, p, "pitr.db", head[:16])
	if second := backupState(t, p, "pitr.db").Segment; second == first {
		t.Fatalf("the restarted node uploads to segment %s again", first)
	}
	b := openBackup(t, section)
	checkPointInTime(t, b, "pitr.db", hist, 100)
	points, err := backup.List(context.Background(), b, "pitr.db")
	if err != nil || len(points) < 2 {
		t.Fatalf("restore points: %v, %v", points, err)
	}
}

// A bucket that stops answering: writes go on, the lag grows and the
// node says so (API, metrics, log); once it answers again the backup
// catches up and restores to the newest transaction.
func TestBackup_BucketOutage(t *testing.T) {
	s3 := s3test.Start(t)
	section := s3Backup(s3)
	p := StartNode(t, NodeOptions{Config: section})
	insertRows(t, p.Path("out.db"), 20)
	waitBackedUp(t, p, "out.db", p.Pos("out.db")[:16])

	s3.Stop()
	insertRows(t, p.Path("out.db"), 50)
	waitFor(t, 60*time.Second, "the API to report the failing upload and a growing lag", func() bool {
		b := backupState(t, p, "out.db")
		return b != nil && b.Error != "" && b.LagSeconds > 1
	})
	_, body := p.HTTPGet("/metrics")
	if !strings.Contains(body, `pagewire_backup_upload_errors_total{db="out.db"}`) || strings.Contains(body, `pagewire_backup_upload_errors_total{db="out.db"} 0`) {
		t.Fatalf("metrics do not count the failed uploads:\n%s", grepLines(body, "pagewire_backup"))
	}
	if !strings.Contains(p.Log.String(), "backup upload failed") {
		t.Fatalf("the log does not say the upload fails:\n%s", p.Log)
	}

	s3.Restart(t)
	head := p.Pos("out.db")
	waitBackedUp(t, p, "out.db", head[:16])
	if got, _ := restoreAt(t, openBackup(t, section), "out.db", 0); got != head {
		t.Fatalf("restore after the outage: %s, primary %s", got, head)
	}
}

// Kill -9 of the primary while it uploads, on a Consul lease with
// synchronous replication: the next primary continues the backup, and
// every acknowledged write is in it.
func TestBackup_KillPrimaryFailover(t *testing.T) {
	s3 := s3test.Start(t)
	section := s3Backup(s3) + "replication:\n  sync-replicas: 1\n"
	agent := consultest.Start(t)
	var nodes []*Node
	for i := range 3 {
		nodes = append(nodes, StartNode(t, NodeOptions{Config: section, Lease: consulLease(agent.URL, fmt.Sprintf("node%d", i+1), true, "")}))
	}
	p := waitOnePrimary(t, nodes, time.Minute)
	setupProbe(t, p, nodes)
	collect, stopProbes := probeWrites(t, nodes)
	waitProbeWrite(t, collect, indexOf(nodes, p))
	time.Sleep(2 * time.Second) // uploads under way

	p.Kill()
	np := waitOnePrimary(t, allBut(nodes, p), 90*time.Second)
	waitFor(t, 60*time.Second, "a write on the new primary", func() bool { return firstWriteAfter(collect(), indexOf(nodes, p), now()-1) >= 0 })
	stopProbes()
	head := np.Pos("probe.db")
	waitBackedUp(t, np, "probe.db", head[:16])

	got, file := restoreAt(t, openBackup(t, section), "probe.db", 0)
	if got != head {
		t.Fatalf("the backup's newest is %s, the new primary's %s", got, head)
	}
	have := map[string]bool{}
	for _, r := range probeRows(t, file) {
		have[r] = true
	}
	ws := collect()
	missing := 0
	for _, w := range ws {
		if !have[fmt.Sprintf("%d_%.6f", w.node, w.t0)] {
			missing++
			if missing <= 5 {
				t.Errorf("acknowledged write of node %d at %.6f is not in the backup", w.node, w.t0)
			}
		}
	}
	t.Logf("%d acknowledged writes, %d missing from the backup after kill -9 and failover", len(ws), missing)
	if missing > 0 {
		t.FailNow()
	}
	p.Start(false) // rejoins; its cleanup checks the mount is gone
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A backup whose last object is damaged (its trailer cut off): the node
// cannot prove where the backup ends, says so, and starts its segment
// with a snapshot; a restore to the newest transaction works, and one to
// a transaction only the damaged object holds fails, naming it.
func TestBackup_DamagedHeadStartsSnapshot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "backup")
	section := fileBackup(dir)
	p := StartNode(t, NodeOptions{Config: section})
	insertRows(t, p.Path("dmg.db"), 30)
	before := p.Pos("dmg.db")
	waitBackedUp(t, p, "dmg.db", before[:16])
	p.Stop()

	packs, _ := filepath.Glob(filepath.Join(dir, "dmg.db", "*", "l0", "*.pack"))
	slices.Sort(packs)
	if len(packs) == 0 {
		t.Fatalf("no packs under %s", dir)
	}
	last := packs[len(packs)-1]
	fi, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(last, fi.Size()-5); err != nil {
		t.Fatal(err)
	}

	p.Start(false)
	insertRows(t, p.Path("dmg.db"), 5)
	head := p.Pos("dmg.db")
	waitBackedUp(t, p, "dmg.db", head[:16])
	if !strings.Contains(p.Log.String(), "cannot continue the backup from where it ends") {
		t.Fatalf("the log does not say the backup's end is unreadable:\n%s", p.Log)
	}
	b := openBackup(t, section)
	if got, _ := restoreAt(t, b, "dmg.db", 0); got != head {
		t.Fatalf("newest restore %s, primary %s", got, head)
	}
	// The new segment's snapshot is at `before`: the transaction before it
	// is only in the damaged pack.
	_, err = backup.Restore(context.Background(), b, backup.RestoreOptions{DB: "dmg.db", TXID: pagewire.TXID(txidOf(t, before) - 1), Output: filepath.Join(t.TempDir(), "x.db")})
	if err == nil || !strings.Contains(err.Error(), filepath.Base(last)) {
		t.Fatalf("restore through the damaged pack: %v, want an error naming %s", err, filepath.Base(last))
	}
}

// A backup that a primary of a newer lease epoch uploads to is not this
// static primary's to extend: it uploads nothing and says why, and its
// writes go on.
func TestBackup_NewerEpochInBucketIsNotExtended(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "backup")
	seg := filepath.Join(dir, "fenced.db", "00000000000000ff-00000000")
	if err := os.MkdirAll(seg, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(seg, "begin.json"), []byte(`{"prev_head":0,"node":"other","time":"2026-01-01T00:00:00Z"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	p := StartNode(t, NodeOptions{Config: fileBackup(dir)})
	insertRows(t, p.Path("fenced.db"), 10)
	waitFor(t, 30*time.Second, "the log to say the backup belongs to a newer epoch", func() bool {
		return strings.Contains(p.Log.String(), "newer than this primary's")
	})
	entries, _ := os.ReadDir(filepath.Join(dir, "fenced.db"))
	if len(entries) != 1 {
		t.Fatalf("the backup has %d segments, want the other primary's alone", len(entries))
	}
	if got := countAndCheck(t, p, "fenced.db"); got != "10\nok" {
		t.Fatalf("writes: %q", got)
	}
}

// Handoffs there and back: each new primary continues the backup in a
// segment of its own, the old one stops reporting it, and the backup's
// newest restore is the final primary's database.
func TestBackup_FollowsHandoffs(t *testing.T) {
	section := fileBackup(filepath.Join(t.TempDir(), "backup"))
	agent := consultest.Start(t)
	var nodes []*Node
	for i := range 2 {
		nodes = append(nodes, StartNode(t, NodeOptions{Config: section, Lease: consulLease(agent.URL, fmt.Sprintf("node%d", i+1), true, "")}))
	}
	p := waitOnePrimary(t, nodes, time.Minute)
	segments := map[string]bool{}
	for round := range 3 {
		insertRows(t, p.Path("hand.db"), 10)
		head := p.Pos("hand.db")
		waitBackedUp(t, p, "hand.db", head[:16])
		segments[backupState(t, p, "hand.db").Segment] = true
		if round == 2 {
			break
		}
		waitCaughtUp(t, "hand.db", p, allBut(nodes, p)...)
		if out, code := p.CLI("handoff", "-url", p.URL); code != 0 {
			t.Fatalf("handoff: exit %d: %s", code, out)
		}
		old := p
		waitFor(t, 30*time.Second, "a new primary", func() bool {
			primaries, _ := leaseRoles(t, nodes)
			return len(primaries) == 1 && primaries[0] != old
		})
		p = allBut(nodes, old)[0]
		waitFor(t, 10*time.Second, "the old primary to stop reporting the backup", func() bool { return backupState(t, old, "hand.db") == nil })
	}
	if len(segments) != 3 {
		t.Fatalf("segments %v, want one per primary's run", segments)
	}
	if got, _ := restoreAt(t, openBackup(t, section), "hand.db", 0); got != p.Pos("hand.db") {
		t.Fatalf("newest restore %s, primary %s", got, p.Pos("hand.db"))
	}
}

// The primary compacts its uploads as it goes (levels of 1 s and 3 s
// here): compacted objects appear, and restores to any TXID still equal
// the primary's state.
func TestBackup_CompactsWhileWriting(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "backup")
	section := fileBackup(dir) + "  levels: [1s, 3s]\n"
	p := StartNode(t, NodeOptions{Config: section})
	hist := writeHistory(t, p, "cmp.db", 60, 4)
	time.Sleep(1500 * time.Millisecond)
	for x, pos := range writeHistory(t, p, "cmp.db", 60, 5) {
		hist[x] = pos
	}
	head := p.Pos("cmp.db")
	waitBackedUp(t, p, "cmp.db", head[:16])
	waitFor(t, 60*time.Second, "level-2 objects in the backup", func() bool {
		l2, _ := filepath.Glob(filepath.Join(dir, "cmp.db", "*", "l2", "*.ltx"))
		return len(l2) > 0
	})
	if !strings.Contains(p.Log.String(), "backup compacted and pruned") {
		t.Fatalf("the log does not report the compaction:\n%s", p.Log)
	}
	checkPointInTime(t, openBackup(t, section), "cmp.db", hist, 40)
}

// A backup whose snapshot is gone cannot restore its head: the next run
// does not continue it, but starts with a snapshot of its own.
func TestBackup_UnrestorableHeadStartsSnapshot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "backup")
	section := fileBackup(dir)
	p := StartNode(t, NodeOptions{Config: section})
	insertRows(t, p.Path("nosnap.db"), 10)
	waitBackedUp(t, p, "nosnap.db", p.Pos("nosnap.db")[:16])
	p.Stop()
	snaps, _ := filepath.Glob(filepath.Join(dir, "nosnap.db", "*", "snap", "*.ltx"))
	if len(snaps) != 1 {
		t.Fatalf("snapshots %v, want one", snaps)
	}
	if err := os.Remove(snaps[0]); err != nil {
		t.Fatal(err)
	}

	p.Start(false)
	insertRows(t, p.Path("nosnap.db"), 5)
	head := p.Pos("nosnap.db")
	waitBackedUp(t, p, "nosnap.db", head[:16])
	if !strings.Contains(p.Log.String(), "cannot continue the backup from where it ends") {
		t.Fatalf("the log does not say why the backup is not continued:\n%s", p.Log)
	}
	if got, _ := restoreAt(t, openBackup(t, section), "nosnap.db", 0); got != head {
		t.Fatalf("newest restore %s, primary %s", got, head)
	}
}

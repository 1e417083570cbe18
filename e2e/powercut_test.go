//go:build integration

package e2e

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire/internal/faultfs"
)

// The power-cut test's size. CI runs the defaults; a long run is e.g.
//
//	PAGEWIRE_E2E_RACE=0 go test -tags integration -run TestPowerCut ./e2e \
//	    -timeout 0 -v -powercut.rounds=200
var (
	powercutRounds = flag.Int("powercut.rounds", 15, "power-cut test: randomized cut rounds")
	powercutSeed   = flag.Uint64("powercut.seed", 0, "power-cut test: seed (0: from the clock)")
)

// powercutWriter commits rows with synchronous=FULL and appends each row's
// id to the file argv[4] once its COMMIT returned: what SQLite reported
// durable. (A file on the test's own disk, one write per commit: what a
// killed writer wrote is still there.) Ids start at argv[2]+1. A few transactions are large (their pages spill into the WAL),
// and now and then it truncates the WAL with a checkpoint.
const powercutWriter = `
import os, random, sqlite3, sys
db, base, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ack = os.open(sys.argv[4], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
rnd = random.Random(seed)
c = sqlite3.connect(db, isolation_level=None, timeout=60)
c.execute("pragma synchronous=FULL")
i = base
while True:
    n = 1 if rnd.random() < 0.9 else rnd.randint(2, 300)
    c.execute("begin")
    ids = []
    for _ in range(n):
        i += 1
        c.execute("insert into t(id, v) values (?, ?)", (i, "x" * rnd.choice((10, 500, 3000))))
        ids.append(i)
    c.execute("commit")
    os.write(ack, ("".join("%d\n" % i for i in ids)).encode())
    r = rnd.random()
    if r < 0.02:
        c.execute("pragma wal_checkpoint(TRUNCATE)").fetchall()
    elif r < 0.04:
        c.execute("pragma wal_checkpoint(PASSIVE)").fetchall()
`

// powercutIDs prints every id of table t, then integrity_check.
const powercutIDs = `
import sqlite3, sys
c = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True, timeout=60)
print(" ".join(str(r[0]) for r in c.execute("select id from t order by id")))
print(c.execute("pragma integrity_check").fetchone()[0])
`

// faultDisk is a node's data.dir on a faultfs mount.
type faultDisk struct {
	*faultfs.FS
	name string
}

// newFaultDisk mounts a faultfs under dir; the mount's root is the
// node's data.dir.
func newFaultDisk(t *testing.T, dir, name string) *faultDisk {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("faultfs mounts with mount(2): needs root")
	}
	backing, mnt := filepath.Join(dir, name+"-disk"), filepath.Join(dir, name+"-data")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := faultfs.Mount(backing, mnt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("unmount %s's faultfs: %v", name, err)
		}
	})
	return &faultDisk{FS: f, name: name}
}

// cut simulates a power cut of the disk (its node and apps must be dead).
func (d *faultDisk) cut(t *testing.T) faultfs.Report {
	t.Helper()
	rep, err := d.PowerCut()
	if err != nil {
		t.Fatalf("power cut of %s: %v", d.name, err)
	}
	return rep
}

// diverged lists what the node kept aside under data.dir/diverged.
func (d *faultDisk) diverged(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(d.Mountpoint(), "diverged"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// readIDs returns the ids of table t in db, and integrity_check's answer.
func readIDs(t *testing.T, db string) (map[int]bool, string, error) {
	t.Helper()
	out, err := pythonErr(powercutIDs, db)
	if err != nil {
		return nil, "", fmt.Errorf("%v: %s", err, out)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 2 {
		return nil, "", fmt.Errorf("unexpected output %q", out)
	}
	ids := map[int]bool{}
	for _, f := range strings.Fields(lines[0]) {
		v, err := strconv.Atoi(f)
		if err != nil {
			return nil, "", fmt.Errorf("id %q: %v", f, err)
		}
		ids[v] = true
	}
	return ids, lines[1], nil
}

// missing returns the ids in acked that are not in have, sorted.
func missing(acked, have map[int]bool) []int {
	var out []int
	for id := range acked {
		if !have[id] {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// idRanges shows sorted ids compactly: 1-5,9.
func idRanges(ids []int) string {
	var b strings.Builder
	for i := 0; i < len(ids); {
		j := i
		for j+1 < len(ids) && ids[j+1] == ids[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteString(",")
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", ids[i], ids[j])
		} else {
			fmt.Fprintf(&b, "%d", ids[i])
		}
		i = j + 1
	}
	return b.String()
}

// TestPowerCut runs a static primary and a replica, each with its data.dir
// on a faultfs, and a writer committing with synchronous=FULL on the
// primary's mount. Each round cuts the power of the primary, the replica,
// or both, at a random moment (in half the rounds the disks' fsyncs take
// 1-10ms, and one in flight at the cut does not count): their nodes and the
// writer are killed with SIGKILL, everything their disks had not fsynced is
// dropped, and the nodes start again. Then every commit the writer saw acknowledged, in any round,
// must be on the primary and on the replica; both must reach the same TXID
// and checksum; nothing may be kept aside under data.dir/diverged.
func TestPowerCut(t *testing.T) {
	seed := *powercutSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (-powercut.seed to repeat), %d rounds", seed, *powercutRounds)
	rnd := rand.New(rand.NewPCG(seed, 0))

	dir := t.TempDir()
	pdisk, rdisk := newFaultDisk(t, dir, "primary"), newFaultDisk(t, dir, "replica")
	p := StartNode(t, NodeOptions{DataDir: pdisk.Mountpoint()})
	r := StartNode(t, NodeOptions{DataDir: rdisk.Mountpoint(), ReplicaOf: p})
	const dbName = "pc.db"
	db := p.Path(dbName)
	python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("pragma synchronous=FULL")
c.execute("create table t(id integer primary key, v text not null)")
c.close()
`, db)
	waitCaughtUp(t, dbName, p, r)
	// The nodes' folders and the new database were made long before the
	// first cut: the kernel wrote them back. (TestPowerCut_NewDatabase cuts
	// a database that was just made.)
	for _, d := range []*faultDisk{pdisk, rdisk} {
		if err := d.SyncAll(); err != nil {
			t.Fatal(err)
		}
	}

	acked := map[int]bool{}
	var lostP, lostR, divergedRounds, unconverged int
	for round := 1; round <= *powercutRounds; round++ {
		base := round * 1_000_000
		// Half the rounds have disks whose fsync takes a while, as real
		// ones do: a cut then often lands between a commit's write and its
		// fsync.
		var fsyncDelay time.Duration
		if rnd.IntN(2) == 1 {
			fsyncDelay = time.Duration(1+rnd.IntN(10)) * time.Millisecond
		}
		pdisk.SetFsyncDelay(fsyncDelay)
		rdisk.SetFsyncDelay(fsyncDelay)
		ackFile := filepath.Join(dir, fmt.Sprintf("acks-%d", round))
		w := startPython(t, fmt.Sprintf("writer round %d", round), powercutWriter, db, strconv.Itoa(base), strconv.FormatUint(rnd.Uint64()>>1, 10), ackFile)
		waitFor(t, 2*time.Minute, "the writer's first commit", func() bool {
			fi, err := os.Stat(ackFile)
			return err == nil && fi.Size() > 0
		})
		delay := time.Duration(rnd.IntN(1500)) * time.Millisecond
		time.Sleep(delay)

		victim := []string{"primary", "replica", "both"}[rnd.IntN(3)]
		var reports []string
		// The power goes at once; the processes die just after.
		for _, d := range []*faultDisk{pdisk, rdisk} {
			if victim == "both" || victim == d.name {
				d.Freeze()
			}
		}
		if victim != "replica" {
			p.Kill()
		}
		if victim != "primary" {
			r.Kill()
		}
		w.Kill()
		lines := readAcks(t, ackFile)
		for _, id := range lines {
			acked[id] = true
		}
		var changes []string
		for _, d := range []*faultDisk{pdisk, rdisk} {
			if victim == "both" || victim == d.name {
				rep := d.cut(t)
				reports = append(reports, d.name+": "+rep.String())
				for _, c := range rep.Changes {
					changes = append(changes, d.name+" "+c)
				}
			}
		}
		t.Logf("round %d: cut %s after %s (fsync takes %s), %d rows acknowledged this round (%d in all); %s",
			round, victim, delay, fsyncDelay, len(lines), len(acked), strings.Join(reports, "; "))
		// The logs of the nodes that were cut, up to the cut, for failures.
		before := map[*Node]string{p: p.Log.String(), r: r.Log.String()}
		if victim != "replica" {
			p.Start(false)
		}
		if victim != "primary" {
			r.Start(false)
		}
		explained := false
		explain := func() {
			if explained {
				return
			}
			explained = true
			t.Logf("round %d: what the cut dropped:\n  %s", round, strings.Join(changes, "\n  "))
			for _, n := range []*Node{p, r} {
				name := map[*Node]string{p: "primary", r: "replica"}[n]
				t.Logf("round %d: %s log before the cut (tail):\n%s\n%s log since (tail):\n%s", round, name, tail(before[n], 30), name, tail(n.Log.String(), 30))
			}
		}

		// The primary holds every acknowledged row.
		ids, integrity, err := readIDs(t, db)
		if err != nil {
			t.Fatalf("round %d: read the primary: %v\nprimary log:\n%s", round, err, p.Log)
		}
		if integrity != "ok" {
			t.Errorf("round %d: primary integrity_check: %s", round, integrity)
		}
		if m := missing(acked, ids); len(m) > 0 {
			lostP += len(m)
			t.Errorf("round %d (cut %s): %d acknowledged rows lost on the primary: %s", round, victim, len(m), idRanges(m))
			for _, id := range m {
				delete(acked, id) // report each loss once
			}
			explain()
		}

		// The replica catches up to the same position and rows.
		if !pollUntil(60*time.Second, func() bool { return r.Pos(dbName) == p.Pos(dbName) }) {
			unconverged++
			t.Errorf("round %d (cut %s): the replica did not converge in 60s: primary %s, replica %s", round, victim, p.Pos(dbName), r.Pos(dbName))
			explain()
		}
		rids, rintegrity, err := readIDs(t, r.Path(dbName))
		if err != nil {
			t.Fatalf("round %d: read the replica: %v\nreplica log:\n%s", round, err, r.Log)
		}
		if rintegrity != "ok" {
			t.Errorf("round %d: replica integrity_check: %s", round, rintegrity)
		}
		if m := missing(acked, rids); len(m) > 0 {
			lostR += len(m)
			t.Errorf("round %d (cut %s): %d acknowledged rows missing on the replica: %s", round, victim, len(m), idRanges(m))
		}
		if extra := missing(rids, ids); len(extra) > 0 {
			t.Errorf("round %d (cut %s): the replica has %d rows the primary lacks: %s", round, victim, len(extra), idRanges(extra))
		}

		// Nothing diverged.
		pd, rd := pdisk.diverged(t), rdisk.diverged(t)
		if len(pd)+len(rd) > 0 {
			divergedRounds++
			t.Errorf("round %d (cut %s): kept aside under data.dir/diverged: primary %q, replica %q", round, victim, pd, rd)
			explain()
			for _, d := range []*faultDisk{pdisk, rdisk} {
				if err := os.RemoveAll(filepath.Join(d.Mountpoint(), "diverged")); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	t.Logf("power cut: %d rounds, %d rows acknowledged, %d lost on the primary, %d missing on the replica, %d rounds with data kept aside, %d rounds not converged",
		*powercutRounds, len(acked)+lostP, lostP, lostR, divergedRounds, unconverged)
}

// readAcks reads the ids in a writer's ack file (complete lines only).
func readAcks(t *testing.T, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	} else {
		s = ""
	}
	var ids []int
	for _, l := range strings.Fields(s) {
		id, err := strconv.Atoi(l)
		if err != nil {
			t.Fatalf("%s holds %q", path, l)
		}
		ids = append(ids, id)
	}
	return ids
}

// tail returns the last n lines of s, but for a replica's reconnecting
// while its primary is down.
func tail(s string, n int) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		if !strings.Contains(l, "reconnecting") {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestPowerCut_NewDatabase cuts the power of a primary right after a new
// database got its first acknowledged commits: the database's folder, and
// the node's own folders, must be durable by then.
func TestPowerCut_NewDatabase(t *testing.T) {
	dir := t.TempDir()
	pdisk := newFaultDisk(t, dir, "primary")
	p := StartNode(t, NodeOptions{DataDir: pdisk.Mountpoint()})
	db := p.Path("new.db")
	python(t, `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("pragma synchronous=FULL")
c.execute("create table t(id integer primary key, v text not null)")
for i in range(1, 11):
    c.execute("insert into t(id, v) values (?, 'x')", (i,))
c.close()
`, db)
	p.Kill()
	t.Logf("power cut: %s", pdisk.cut(t))
	p.Start(false)
	ids, integrity, err := readIDs(t, db)
	if err != nil {
		t.Fatalf("read new.db after the cut: %v", err)
	}
	want := map[int]bool{}
	for i := 1; i <= 10; i++ {
		want[i] = true
	}
	if m := missing(want, ids); len(m) > 0 || integrity != "ok" {
		t.Errorf("after the cut new.db lacks acknowledged rows %s (integrity %s)", idRanges(m), integrity)
	}
}

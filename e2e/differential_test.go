//go:build integration

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"
)

// The differential suite's size. CI runs the defaults; a long run is e.g.
//
//	PAGEWIRE_E2E_RACE=0 go test -tags integration -run TestDifferential ./e2e \
//	    -timeout 0 -diff.steps 500 -diff.maxmb 220 -diff.huge 12
var (
	diffSteps = flag.Int("diff.steps", 36, "differential suite: randomized steps")
	diffSeed  = flag.Uint64("diff.seed", 0, "differential suite: seed (0: from the clock)")
	diffMaxMB = flag.Int("diff.maxmb", 40, "differential suite: largest transaction, in MB")
	diffHuge  = flag.Int("diff.huge", 0, "differential suite: transactions over 100 MB to run at least (needs -diff.maxmb > 100)")
)

// diffDBs are the databases every step may touch.
var diffDBs = []string{"a.db", "b.db", "c.db"}

// driver is the Python process that writes on the primary's mount and keeps
// the model of what it committed (testdata/differential.py).
type driver struct {
	t   testing.TB
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startDriver(t testing.TB, mount string) *driver {
	t.Helper()
	cmd := exec.Command("python3", append([]string{"testdata/differential.py", "drive", mount}, diffDBs...)...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &driver{t: t, cmd: cmd, in: in, out: bufio.NewReaderSize(out, 1<<20)}
	t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return d
}

// do runs one command and returns its answer; an answer with ok false is
// returned as an error.
func (d *driver) do(cmd map[string]any) (map[string]any, error) {
	d.t.Helper()
	b, _ := json.Marshal(cmd)
	if _, err := d.in.Write(append(b, '\n')); err != nil {
		d.t.Fatalf("driver: %v", err)
	}
	line, err := d.out.ReadBytes('\n')
	if err != nil {
		d.t.Fatalf("driver died: %v", err)
	}
	var res map[string]any
	if err := json.Unmarshal(line, &res); err != nil {
		d.t.Fatalf("driver answered %q: %v", line, err)
	}
	if ok, _ := res["ok"].(bool); !ok {
		return res, fmt.Errorf("%v", res["error"])
	}
	return res, nil
}

// must runs a command that has to succeed.
func (d *driver) must(cmd map[string]any) map[string]any {
	d.t.Helper()
	res, err := d.do(cmd)
	if err != nil {
		d.t.Fatalf("driver %v: %v", cmd, err)
	}
	return res
}

// digests maps database name to table to [rows, digest].
type digests map[string]map[string][2]any

// model is what the driver committed, by database and table.
func (d *driver) model() digests {
	d.t.Helper()
	raw, _ := json.Marshal(d.must(map[string]any{"op": "model"})["model"])
	var m map[string]map[string][2]any
	if err := json.Unmarshal(raw, &m); err != nil {
		d.t.Fatal(err)
	}
	return m
}

// nodeDigests reads databases on a node's mount and digests their rows.
func nodeDigests(t testing.TB, n *Node, dbs []string) digests {
	t.Helper()
	var paths []string
	for _, db := range dbs {
		paths = append(paths, n.Path(db))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "python3", append([]string{"testdata/differential.py", "digest"}, paths...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("digest on %s: %v\n%s", n.Dir, err, out)
	}
	var byPath map[string]map[string][2]any
	if err := json.Unmarshal(out, &byPath); err != nil {
		t.Fatalf("digest output %q: %v", out, err)
	}
	d := digests{}
	for i, db := range dbs {
		d[db] = byPath[paths[i]]
	}
	return d
}

// diffRun is one run of the suite: the cluster, the driver and the tally.
type diffRun struct {
	t       *testing.T
	rng     *rand.Rand
	primary *Node
	nodes   []*Node // primary first
	drv     *driver
	tally   map[string]int
	bigTxns int // transactions over 100 MB
	bytes   int64
	// size is about how many bytes of large rows each database holds;
	// past maxSize a step deletes them, so that digests stay quick.
	size map[string]int64
	// touched are the databases the step wrote; all of them after a
	// restart. Their rows are digested; the others' positions and
	// verification are checked.
	touched map[string]bool
}

// maxSize is how large a database grows before its large rows go: a
// little over one of the largest transactions.
func maxSize() int64 { return int64(max(64, *diffMaxMB*5/4)) << 20 }

func TestDifferential(t *testing.T) {
	seed := *diffSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -diff.seed %d)", seed, seed)
	primary := StartNode(t, NodeOptions{})
	r := &diffRun{t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), primary: primary,
		tally: map[string]int{}, size: map[string]int64{}, touched: map[string]bool{}}
	r.nodes = []*Node{primary, StartNode(t, NodeOptions{ReplicaOf: primary}), StartNode(t, NodeOptions{ReplicaOf: primary})}
	r.drv = startDriver(t, primary.MountDir)
	for _, db := range diffDBs {
		r.drv.must(map[string]any{"op": "pragma", "db": db, "pragma": "user_version"})
	}
	r.touchAll()
	r.check(0, "create")
	start := time.Now()
	for step := 1; step <= *diffSteps; step++ {
		began := time.Now()
		what := r.step(step)
		r.tally[strings.Fields(what)[0]]++
		r.check(step, what)
		t.Logf("step %d: %s (%s with its check)", step, what, time.Since(began).Round(time.Millisecond))
	}
	var kinds []string
	for k, n := range r.tally {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(kinds)
	t.Logf("%d steps in %s, 0 divergences; %.0f MB committed, %d transactions over 100 MB; %s",
		*diffSteps, time.Since(start).Round(time.Second), float64(r.bytes)/1e6, r.bigTxns, strings.Join(kinds, " "))
}

func (r *diffRun) touchAll() {
	for _, db := range diffDBs {
		r.touched[db] = true
	}
}

// step runs one randomized step and says what it did.
func (r *diffRun) step(step int) string {
	rng := r.rng
	db := diffDBs[rng.IntN(len(diffDBs))]
	table := []string{"t1", "t2"}[rng.IntN(2)]
	seed := rng.Uint64() >> 12
	r.touched[db] = true
	for _, big := range diffDBs {
		if r.size[big] > maxSize() {
			res := r.drv.must(map[string]any{"op": "delete_big", "db": big})
			r.size[big] = 0
			r.touched = map[string]bool{big: true}
			return fmt.Sprintf("delete %v large rows of %s", res["rows"], big)
		}
	}
	if *diffHuge > r.bigTxns && *diffMaxMB > 100 && (rng.IntN(8) == 0 || *diffSteps-step < 2*(*diffHuge-r.bigTxns)) {
		return r.insert(db, table, seed, 100+rng.IntN(*diffMaxMB-99))
	}
	switch k := rng.IntN(100); {
	case k < 18:
		r.drv.must(map[string]any{"op": "insert", "db": db, "table": table, "seed": seed, "rows": 1, "min": 10, "max": 200})
		r.bytes += 100
		return "insert 1 row into " + db
	case k < 30:
		rows := 10 + rng.IntN(400)
		r.drv.must(map[string]any{"op": "insert", "db": db, "table": table, "seed": seed, "rows": rows, "min": 100, "max": 4000})
		r.bytes += int64(rows) * 2000
		return fmt.Sprintf("insert %d rows into %s", rows, db)
	case k < 38:
		return r.insert(db, table, seed, 1+rng.IntN(8))
	case k < 42:
		return r.insert(db, table, seed, min(*diffMaxMB, 16+rng.IntN(max(1, *diffMaxMB-15))))
	case k < 48:
		rows := 1 + rng.IntN(200)
		r.drv.must(map[string]any{"op": "update", "db": db, "table": table, "seed": seed, "rows": rows, "min": 10, "max": 30000})
		return fmt.Sprintf("update %d rows of %s", rows, db)
	case k < 53:
		rows := 1 + rng.IntN(300)
		r.drv.must(map[string]any{"op": "delete", "db": db, "table": table, "seed": seed, "rows": rows})
		return fmt.Sprintf("delete %d rows of %s", rows, db)
	case k < 56:
		r.drv.must(map[string]any{"op": "rollback", "db": db, "table": table, "seed": seed, "rows": 300, "max": 8000})
		return "rollback of a spilled transaction in " + db
	case k < 63:
		mode := []string{"PASSIVE", "FULL", "RESTART", "TRUNCATE"}[rng.IntN(4)]
		res := r.drv.must(map[string]any{"op": "checkpoint", "db": db, "mode": mode})
		return fmt.Sprintf("checkpoint %s of %s: %v", mode, db, res["rows"])
	case k < 66:
		limit := []int{-1, 0, 65536, 1 << 20}[rng.IntN(4)]
		r.drv.must(map[string]any{"op": "pragma", "db": db, "pragma": fmt.Sprintf("journal_size_limit=%d", limit)})
		return fmt.Sprintf("journal_size_limit %d on %s", limit, db)
	case k < 70:
		r.drv.must(map[string]any{"op": "close"})
		r.touchAll()
		return "close every connection (the last close checkpoints and deletes the WAL)"
	case k < 72:
		r.drv.must(map[string]any{"op": "vacuum", "db": db})
		return "vacuum " + db
	case k < 74:
		r.drv.must(map[string]any{"op": "pragma", "db": db, "pragma": "auto_vacuum=incremental"})
		r.drv.must(map[string]any{"op": "vacuum", "db": db})
		r.drv.must(map[string]any{"op": "pragma", "db": db, "pragma": fmt.Sprintf("incremental_vacuum(%d)", 1+rng.IntN(500))})
		return "incremental_vacuum " + db
	case k < 80:
		writers, txns := 2+rng.IntN(3), 5+rng.IntN(40)
		r.drv.must(map[string]any{"op": "concurrent", "db": db, "seed": seed, "writers": writers, "txns": txns, "max": 3000})
		return fmt.Sprintf("concurrent %d writers × %d transactions with a reader on %s", writers, txns, db)
	case k < 86:
		return r.killReplicaDuringInsert(db, table, seed)
	case k < 93:
		n := r.nodes[1+rng.IntN(2)]
		if rng.IntN(2) == 0 {
			n.Stop()
		} else {
			n.Kill()
		}
		n.Start(false)
		r.touchAll()
		return "restart a replica"
	default:
		r.drv.must(map[string]any{"op": "close"})
		how := "SIGTERM"
		if rng.IntN(2) == 0 {
			r.primary.Kill()
			how = "kill -9"
		} else {
			r.primary.Stop()
		}
		r.primary.Start(false)
		r.touchAll()
		return "restart the primary (" + how + ")"
	}
}

// insert commits one transaction of about mb megabytes, with SQLite's
// default page cache (pages spill into the WAL before the commit) or a
// large one (no spill).
func (r *diffRun) insert(db, table string, seed uint64, mb int) string {
	cache := []int{-2000, -2000, -600000}[r.rng.IntN(3)]
	rows := max(1, mb*10)
	r.drv.must(map[string]any{"op": "insert", "db": db, "table": table, "seed": seed, "rows": rows, "min": 90000, "max": 110000, "cache_size": cache})
	r.drv.must(map[string]any{"op": "pragma", "db": db, "pragma": "cache_size=-2000"})
	r.bytes += int64(rows) * 100000
	r.size[db] += int64(rows) * 100000
	if mb > 100 {
		r.bigTxns++
	}
	return fmt.Sprintf("insert %d MB into %s (cache_size %d)", mb, db, cache)
}

// killReplicaDuringInsert kills a replica at a random point of a large
// transaction's commit and replication, then starts it again.
func (r *diffRun) killReplicaDuringInsert(db, table string, seed uint64) string {
	n := r.nodes[1+r.rng.IntN(2)]
	delay := time.Duration(r.rng.IntN(1500)) * time.Millisecond
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(delay)
		_ = n.cmd.Process.Kill()
	}()
	what := r.insert(db, table, seed, 4+r.rng.IntN(12))
	<-done
	<-n.done
	n.Start(false)
	r.touchAll()
	return fmt.Sprintf("kill -9 of a replica %s into: %s", delay, what)
}

// check waits for the replicas to reach the primary's position, then
// compares every node's content with the driver's model, their -pos
// files, and each node's own verification of its databases.
func (r *diffRun) check(step int, what string) {
	t := r.t
	t.Helper()
	want := map[string]string{}
	for _, db := range diffDBs {
		want[db] = r.primary.Pos(db)
	}
	for _, n := range r.nodes[1:] {
		waitFor(t, 5*time.Minute, fmt.Sprintf("step %d (%s): replica %s to reach %v", step, what, n.Dir, want), func() bool {
			for _, db := range diffDBs {
				b, err := os.ReadFile(n.Path(db + "-pos"))
				if err != nil || strings.TrimSpace(string(b)) != want[db] {
					return false
				}
			}
			return true
		})
	}
	model := r.drv.model()
	var touched []string
	for _, db := range diffDBs {
		if r.touched[db] {
			touched = append(touched, db)
		}
	}
	r.touched = map[string]bool{}
	for i, n := range r.nodes {
		got := nodeDigests(t, n, touched)
		for _, db := range diffDBs {
			for _, table := range []string{"t1", "t2"} {
				if got[db] == nil {
					continue // not written since its last digest
				}
				if fmt.Sprint(got[db][table]) != fmt.Sprint(model[db][table]) {
					t.Fatalf("step %d (%s): node %d (%s) has %s.%s = %v, the driver committed %v",
						step, what, i, n.Dir, db, table, got[db][table], model[db][table])
				}
			}
			if i > 0 && n.Pos(db) != want[db] {
				t.Fatalf("step %d (%s): node %d's %s-pos moved to %s, primary's is %s", step, what, i, db, n.Pos(db), want[db])
			}
			code, body := n.HTTPGet("/api/v1/dbs/" + db + "/verify")
			var v struct {
				OK      bool   `json:"ok"`
				Summary string `json:"summary"`
			}
			if err := json.Unmarshal([]byte(body), &v); code != 200 || err != nil || !v.OK {
				t.Fatalf("step %d (%s): node %d verify %s: %d %s", step, what, i, db, code, body)
			}
		}
	}
}

package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// replicationScript is the Python side of the replication section; see its
// header for its modes.
//
//go:embed replication.py
var replicationScript string

const (
	// catchUpTimeout bounds a wait for replicas to reach the primary's
	// position; snapshotTimeout the snapshot catch-up of a new replica.
	catchUpTimeout  = 2 * time.Minute
	snapshotTimeout = 5 * time.Minute
	// posPollInterval is how often the harness reads -pos files while it
	// waits for a replica: fine enough to time a catch-up to a few ms, rare
	// enough not to slow the replica's node much (each read is a few FUSE
	// requests it serves).
	posPollInterval = 5 * time.Millisecond
	// applyWarmup is how long the writer on the primary runs before a
	// replica's point reads start, so they start during steady apply.
	applyWarmup = 300 * time.Millisecond
)

// The bars the issue set; the report prints them next to the results and
// nothing asserts them.
var replicationBars = bars{
	LagP99MS:          5,
	WriteRateRatio:    0.80,
	ReplicaReadRatio:  0.50,
	SnapshotMBPerSec:  150,
	LiteFSLagP50MS:    2.4,
	LiteFSLagP90MS:    5.7,
	LagRate:           1000,
	ReplicaApplyRate:  500,
	WriteRateReplicas: writeRateReplicas,
}

// writeRateReplicas is the most replicas the write rates run with.
const writeRateReplicas = 2

// runReplication runs the replication section and fills rr as it goes, so
// that on an error the report still holds what was measured. Every node it
// starts is stopped, and its mount gone, when it returns.
func runReplication(ctx context.Context, o options, bin, workDir, diskDir string, stderr io.Writer, rr *replicationReport) (err error) {
	s := &replicationRun{
		o: o, bin: bin, workDir: workDir, base: filepath.Join(workDir, "replication"),
		logf:     func(format string, args ...any) { fmt.Fprintf(stderr, "bench: replication: "+format+"\n", args...) },
		replicas: make([]*node, writeRateReplicas),
	}
	defer func() { err = errors.Join(err, stopNodes(s.nodes...)) }()
	if o.OnlySync {
		if err := s.syncRates(ctx, diskDir, rr); err != nil {
			return fmt.Errorf("synchronous replication write rates: %w", err)
		}
		return nil
	}

	// Start the primary.
	s.logf("starting the primary")
	if s.p, err = startNode(ctx, bin, nodeSpec{Name: "primary", Dir: filepath.Join(s.base, "primary")}); err != nil {
		return err
	}
	s.nodes = append(s.nodes, s.p)

	// 1. The primary's write rate with 0, 1 and 2 replicas.
	rates, err := s.writeRates(ctx)
	if err != nil {
		return err
	}
	rr.WriteRates = rates

	// 1b. With synchronous replication, on primaries of their own.
	if err := s.syncRates(ctx, diskDir, rr); err != nil {
		return fmt.Errorf("synchronous replication write rates: %w", err)
	}

	// Lag and reads run with one replica.
	if err := s.setReplicas(ctx, 1); err != nil {
		return err
	}

	// 2. Visibility lag, one run per definition of "visible".
	if err := s.lags(ctx, rr); err != nil {
		return err
	}

	// 3. Point reads: plain disk, the replica idle, the replica applying.
	if err := measureReplicaReads(ctx, o, s.p, s.replicas[0], diskDir, workDir, s.logf, rr); err != nil {
		return fmt.Errorf("replica point reads: %w", err)
	}
	s.dbs = append(s.dbs, replicaReadDB)

	if err := stopNodes(s.nodes...); err != nil {
		return err
	}

	// 4. Snapshot catch-up, on a fresh primary holding only the big
	// database, so the new replica copies nothing else.
	s.logf("starting a fresh primary for the snapshot")
	sp, err := startNode(ctx, bin, nodeSpec{Name: "snapshot primary", Dir: filepath.Join(s.base, "snapshot-primary")})
	if err != nil {
		return err
	}
	s.nodes = append(s.nodes, sp)
	snap, err := measureSnapshot(ctx, o, bin, sp, filepath.Join(s.base, "snapshot-replica"), workDir, s.logf, &s.nodes)
	if err != nil {
		return fmt.Errorf("snapshot catch-up: %w", err)
	}
	rr.Snapshot = snap
	return stopNodes(s.nodes...)
}

// replicationRun is the replication section's cluster: the primary, its
// replicas and the databases written on it so far.
type replicationRun struct {
	o                  options
	bin, workDir, base string // base holds every node's folder
	logf               func(format string, args ...any)
	nodes              []*node // every node started, for the final stop
	p                  *node   // the primary
	// replicas[i] is replica i+1's node, nil or stopped while it is not
	// running; a restart reuses its data.dir.
	replicas []*node
	dbs      []string // every database on the primary: a new replica catches up on all of them
	// CPUs of the separate placement (and all of them, to undo it).
	allCPUs, primaryCPUs, replicaCPUs []int
}

// setReplicas leaves replicas 1..k running, caught up on every database,
// and the others stopped.
func (s *replicationRun) setReplicas(ctx context.Context, k int) error {
	for i := len(s.replicas) - 1; i >= k; i-- {
		if r := s.replicas[i]; r != nil && !r.stopped {
			if err := r.stop(); err != nil {
				return err
			}
		}
	}
	for i := range k {
		if r := s.replicas[i]; r != nil && !r.stopped {
			continue
		}
		s.logf("starting replica %d", i+1)
		r, err := startNode(ctx, s.bin, nodeSpec{Name: fmt.Sprintf("replica %d", i+1), Dir: filepath.Join(s.base, fmt.Sprintf("replica%d", i+1)), Primary: s.p})
		if err != nil {
			return err
		}
		s.nodes = append(s.nodes, r)
		s.replicas[i] = r
		d, err := waitCaughtUp(ctx, s.p, []*node{r}, s.dbs)
		if err != nil {
			return err
		}
		s.logf("replica %d caught up on %d database(s) %.3f s after it was ready", i+1, len(s.dbs), d.Seconds())
	}
	return nil
}

// place pins the bench (so the writer it starts), the primary and the
// running replicas for a separate run; place(allCPUs, allCPUs) undoes it.
func (s *replicationRun) place(cpusPrimary, cpusReplicas []int) error {
	errs := []error{setAffinity(os.Getpid(), false, cpusPrimary), setAffinity(s.p.cmd.Process.Pid, true, cpusPrimary)}
	for _, r := range s.replicas {
		if r != nil && !r.stopped {
			errs = append(errs, setAffinity(r.cmd.Process.Pid, true, cpusReplicas))
		}
	}
	return errors.Join(errs...)
}

// writeRates measures the primary's write rate with 0, 1 and 2 replicas,
// interleaved: each round runs with 0, then 1, then 2 replicas (started,
// or restarted on their data.dir, and caught up before the run), so that
// the machine's drift over the section weighs on all three alike; and so
// in each placement, whose order alternates by round. A ratio is the
// median of the rounds' ratios to the same placement's run with no
// replica.
func (s *replicationRun) writeRates(ctx context.Context) ([]writeRateResult, error) {
	// The separate placement needs two CPUs.
	var canSeparate bool
	s.allCPUs, s.primaryCPUs, s.replicaCPUs, canSeparate = cpuSplit()
	placements := []string{placementShared}
	if canSeparate {
		placements = append(placements, placementSeparate)
	} else {
		s.logf("one CPU: the write rates run in the shared placement only")
	}

	// A result per placement and replica count.
	rates := make(map[string][]writeRateResult, len(placements))
	for _, pl := range placements {
		rates[pl] = make([]writeRateResult, writeRateReplicas+1)
	}

	// Each round: every placement, each with 0, 1 and 2 replicas.
	for round := 1; round <= s.o.Rounds; round++ {
		order := slices.Clone(placements)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, pl := range order {
			var none float64 // this round's rate with no replica
			for k := range writeRateReplicas + 1 {
				rate, err := s.writeRate(ctx, round, pl, k, &rates[pl][k])
				if err != nil {
					return nil, err
				}
				if k == 0 {
					none = rate
				}
				wr := &rates[pl][k]
				wr.Replicas, wr.Placement = k, pl
				wr.RoundRatios = append(wr.RoundRatios, rate/none)
				wr.Ratio = median(wr.RoundRatios)
				s.logf("round %d/%d insert-normal on the primary, %s placement, %d replica(s): %s tx/s, %s of none",
					round, s.o.Rounds, pl, k, formatRate(rate), formatRatio(rate/none))
			}
		}
	}

	// Placement by placement, as the report lists them.
	var out []writeRateResult
	for _, pl := range placements {
		out = append(out, rates[pl]...)
	}
	return out, nil
}

// writeRate runs insert-normal once on the primary with k replicas in
// placement pl, adds the run to wr and returns its rate.
func (s *replicationRun) writeRate(ctx context.Context, round int, pl string, k int, wr *writeRateResult) (float64, error) {
	if err := s.setReplicas(ctx, k); err != nil {
		return 0, err
	}
	if pl == placementSeparate {
		if err := s.place(s.primaryCPUs, s.replicaCPUs); err != nil {
			return 0, errors.Join(err, s.place(s.allCPUs, s.allCPUs))
		}
	}
	name := fmt.Sprintf("repl_ins_%s_%dr_r%d.db", pl, k, round)
	res, err := runWorkload(ctx, insertNormal, filepath.Join(s.p.MountDir, name), s.o.Inserts, s.workDir, nil)
	if pl == placementSeparate {
		err = errors.Join(err, s.place(s.allCPUs, s.allCPUs))
	}
	if err != nil {
		return 0, fmt.Errorf("write rate with %d replica(s), %s placement, round %d: %w", k, pl, round, err)
	}
	s.dbs = append(s.dbs, name)
	wr.Primary.add(res)
	if k > 0 {
		d, err := waitCaughtUp(ctx, s.p, s.replicas[:k], []string{name})
		if err != nil {
			return 0, err
		}
		wr.CatchUpSeconds = append(wr.CatchUpSeconds, d.Seconds())
	}
	return float64(res.Ops) / res.Seconds, nil
}

// lags measures the visibility lag on replica 1 by each definition of
// "visible", appending each result to rr.Lag.
func (s *replicationRun) lags(ctx context.Context, rr *replicationReport) error {
	for _, by := range []string{lagByPos, lagBySQL} {
		db := "repl_lag_" + by + ".db"
		res, err := measureLag(ctx, s.o, s.p, s.replicas[0], db, by, s.workDir)
		s.dbs = append(s.dbs, db)
		if err != nil {
			return fmt.Errorf("visibility lag (%s): %w", by, err)
		}
		s.logf("lag seen by %s: %d commits at %s tx/s, p50 %s, p99 %s, max %s", by, res.Commits, formatRate(res.CommitRate),
			formatMS(res.P50MS), formatMS(res.P99MS), formatMS(res.MaxMS))
		rr.Lag = append(rr.Lag, res)
	}
	return nil
}

// insertNormal is the workload the write rates run.
var insertNormal = func() workload {
	for _, w := range workloads {
		if w.Name == "insert-normal" {
			return w
		}
	}
	panic("no insert-normal workload")
}()

// posPath is the path of a database's -pos file on a node's mount.
func posPath(n *node, db string) string { return filepath.Join(n.MountDir, db+"-pos") }

// readPos reads a database's -pos file on a node's mount ("" if absent).
func readPos(n *node, db string) (string, error) {
	b, err := os.ReadFile(posPath(n, db))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s position on %s: %w", db, n.Name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// waitCaughtUp waits until every replica's -pos of every db equals the
// primary's (read once, at the start: the primary is idle meanwhile) and
// returns how long that took.
func waitCaughtUp(ctx context.Context, p *node, replicas []*node, dbs []string) (time.Duration, error) {
	start := time.Now()
	want := make([]string, len(dbs))
	for i, db := range dbs {
		var err error
		if want[i], err = readPos(p, db); err != nil {
			return 0, err
		}
		if want[i] == "" {
			return 0, fmt.Errorf("the primary has no %s-pos", db)
		}
	}
	for _, r := range replicas {
		for i, db := range dbs {
			if err := waitPos(ctx, r, db, want[i], catchUpTimeout); err != nil {
				return 0, err
			}
		}
	}
	return time.Since(start), nil
}

// waitPos polls a node's -pos of db until it reads want.
func waitPos(ctx context.Context, n *node, db, want string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(posPollInterval)
	defer tick.Stop()
	for {
		got, err := readPos(n, db)
		if err != nil {
			return err
		}
		if got == want {
			return nil
		}
		select {
		case <-n.done:
			return fmt.Errorf("%s exited while catching up on %s: %v\n%s", n.Name, db, n.err, n.logTail())
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%s did not catch up on %s within %s: its -pos reads %q, the primary's %q\n%s",
					n.Name, db, timeout, got, want, n.logTail())
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Definitions of "visible on the replica" the lag is measured by.
const (
	lagByPos = "pos" // the replica's -pos file shows the TXID
	lagBySQL = "sql" // SELECT max(id) FROM t on the replica returns the row
)

// measureLag runs a writer paced at o.LagRate on the primary for
// o.LagSeconds and a poller on the replica, and computes each commit's
// visibility lag.
func measureLag(ctx context.Context, o options, p, r *node, db, by, workDir string) (res lagResult, err error) {
	res = lagResult{SeenBy: by, TargetRate: o.LagRate}

	// Start the writer, which sets up the table and a warm-up row.
	w, ready, err := startRecordingWriter(ctx, "lag writer on the primary", p, db, o.LagRate, o.LagSeconds, workDir)
	if err != nil {
		return res, err
	}
	defer func() { err = w.finish(err) }()

	// Start the poller once the replica has the table (and the warm-up
	// row); the values it sees count from base.
	if _, err := waitCaughtUp(ctx, p, []*node{r}, []string{db}); err != nil {
		return res, err
	}
	pause := fmtFloat(o.LagPollPause.Seconds())
	args := []string{"poll-pos", posPath(r, db), pause}
	base := ready.BaseTXID
	if by == lagBySQL {
		args, base = []string{"poll-sql", filepath.Join(r.MountDir, db), pause}, ready.BaseID
	}
	rp, err := startPython(ctx, "lag poller ("+args[0]+") on the replica", replicationScript, workDir, args...)
	if err != nil {
		return res, err
	}
	defer func() { err = rp.finish(err) }()
	var pready struct{ Ready bool }
	if err := rp.read(&pready); err != nil {
		return res, err
	}

	// Let the writer commit.
	wres, err := runLagWriter(ctx, w, r, ready.BaseTXID, &res)
	if err != nil {
		return res, err
	}

	// Stop the poller once it has seen the last commit.
	if err := rp.send(fmt.Sprintf("stop %d", base+int64(wres.Commits))); err != nil {
		return res, err
	}
	var pres lagPollResult
	if err := rp.read(&pres); err != nil {
		return res, err
	}
	csv := ""
	if o.LagCSV != "" {
		csv = o.LagCSV + "-" + by + ".csv"
	}
	return res, res.setLags(base, wres, pres, csv)
}

// writerReady is what replication.py's writer reports once ready.
type writerReady struct {
	Ready    bool
	BaseTXID int64 `json:"base_txid"`
	BaseID   int64 `json:"base_id"`
}

// startRecordingWriter starts replication.py's writer on db on n's mount,
// paced at rate for seconds and noting each commit's time, and reads its
// ready line. The caller must call finish on the writer it returns.
func startRecordingWriter(ctx context.Context, what string, n *node, db string, rate, seconds float64, workDir string) (*pyProc, writerReady, error) {
	var ready writerReady
	w, err := startPython(ctx, what, replicationScript, workDir,
		"writer", filepath.Join(n.MountDir, db), posPath(n, db), fmtFloat(rate), fmtFloat(seconds), "1")
	if err != nil {
		return nil, ready, err
	}
	if err := w.read(&ready); err != nil {
		return nil, ready, w.finish(err)
	}
	return w, ready, nil
}

// lagWriterResult is what the lag writer reports after its run.
type lagWriterResult struct {
	Commits     int       `json:"commits"`
	Seconds     float64   `json:"seconds"`
	EndTXID     int64     `json:"end_txid"`
	CommitTimes []float64 `json:"commit_times"`
}

// lagPollResult is what the lag poller reports when stopped.
type lagPollResult struct {
	Polls   int          `json:"polls"`
	Seconds float64      `json:"seconds"`
	Seen    [][2]float64 `json:"seen"`
}

// check reports a run whose commits were not one TXID each from baseTXID
// on, each with its time.
func (wres lagWriterResult) check(baseTXID int64) error {
	if wres.Commits == 0 || len(wres.CommitTimes) != wres.Commits {
		return fmt.Errorf("the writer reported %d commits and %d commit times", wres.Commits, len(wres.CommitTimes))
	}
	if got := wres.EndTXID - baseTXID; got != int64(wres.Commits) {
		// The TXID of commit k would not be base+k.
		return fmt.Errorf("the primary's TXID went from %d to %d over %d commits; want one TXID per commit",
			baseTXID, wres.EndTXID, wres.Commits)
	}
	return nil
}

// runLagWriter lets the writer w run, checks that each commit took one TXID
// after baseTXID, and records in res the writer's rate and the replica r's
// own lag quantiles (from its /metrics) over the run.
func runLagWriter(ctx context.Context, w *pyProc, r *node, baseTXID int64, res *lagResult) (lagWriterResult, error) {
	var wres lagWriterResult
	client := &http.Client{Timeout: 10 * time.Second}
	before, err := scrapeCounters(ctx, client, r.URL+"/metrics")
	if err != nil {
		return wres, err
	}
	if err := w.send("go"); err != nil {
		return wres, err
	}
	if err := w.read(&wres); err != nil {
		return wres, err
	}
	if err := wres.check(baseTXID); err != nil {
		return wres, err
	}
	if after, err := scrapeCounters(ctx, client, r.URL+"/metrics"); err != nil {
		return wres, err
	} else {
		d := after.sub(before)
		b50, _ := d.lagQuantile(0.5, lagWithin)
		b99, share := d.lagQuantile(0.99, lagWithin)
		res.NodeP50MS, res.NodeP99MS, res.NodeWithin = b50*1000, b99*1000, share
	}
	res.Commits, res.WriterSeconds = wres.Commits, wres.Seconds
	res.CommitRate = float64(wres.Commits) / wres.Seconds
	return wres, nil
}

// setLags fills in res's poll counts and lag percentiles from the writer's
// commit times and the poller's sightings, whose values count from base.
// With csvPath set, it also writes each lag there.
func (res *lagResult) setLags(base int64, wres lagWriterResult, pres lagPollResult, csvPath string) error {
	res.Polls = pres.Polls
	if pres.Seconds > 0 {
		res.PollsPerSecond = float64(pres.Polls) / pres.Seconds
	}
	lags := visibilityLags(base, wres.CommitTimes, pres.Seen)
	res.Seen = len(lags)
	if len(lags) == 0 {
		return fmt.Errorf("the replica's poller saw none of the %d commits", wres.Commits)
	}
	for i := range lags {
		lags[i] *= 1000
	}
	if csvPath != "" {
		if err := writeLagCSV(csvPath, wres.CommitTimes, lags); err != nil {
			return err
		}
	}
	slices.Sort(lags)
	res.MinMS, res.MaxMS = lags[0], lags[len(lags)-1]
	res.P50MS, res.P90MS, res.P99MS = percentile(lags, 50), percentile(lags, 90), percentile(lags, 99)
	return nil
}

// visibilityLags returns, for each commit k (from 1) whose key is base+k and
// committed at commitTimes[k-1], the first time a poll saw a value at least
// base+k, minus the commit time, in seconds. seen is [value, time] in poll
// order. Commits never seen are left out.
func visibilityLags(base int64, commitTimes []float64, seen [][2]float64) []float64 {
	lags := make([]float64, 0, len(commitTimes))
	j := 0
	for k, ct := range commitTimes {
		key := float64(base + int64(k) + 1)
		for j < len(seen) && seen[j][0] < key {
			j++
		}
		if j == len(seen) {
			break
		}
		lags = append(lags, seen[j][1]-ct)
	}
	return lags
}

// lagWithin is the lag the node-side share is reported at: the bar.
const lagWithin = 0.005

// writeLagCSV writes "seconds since the first commit,lag ms" per commit
// seen, in commit order.
func writeLagCSV(path string, commitTimes, lagsMS []float64) error {
	var b strings.Builder
	b.WriteString("commit_s,lag_ms\n")
	for i, lag := range lagsMS {
		fmt.Fprintf(&b, "%.6f,%.3f\n", commitTimes[i]-commitTimes[0], lag)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// percentile is the nearest-rank percentile of sorted xs.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// replicaReadDB is the database the replica's point reads use.
const replicaReadDB = "repl_read.db"

// measureReplicaReads runs the point-read workload on plain disk (no
// concurrent writes), on the idle replica, and on the replica while a
// writer on the primary commits o.ApplyRate tx/s.
func measureReplicaReads(ctx context.Context, o options, p, r *node, diskDir, workDir string, logf func(string, ...any), rr *replicationReport) error {
	var setup struct{ Rows int }
	if err := runPython(ctx, "point-read setup on the primary", replicationScript, workDir, &setup,
		"setup-read", filepath.Join(p.MountDir, replicaReadDB)); err != nil {
		return err
	}
	if _, err := waitCaughtUp(ctx, p, []*node{r}, []string{replicaReadDB}); err != nil {
		return err
	}

	// Point reads on plain disk, on an idle replica, and on one that applies transactions.
	pointRead := workloads[slices.IndexFunc(workloads, func(w workload) bool { return w.Name == "point-read" })]
	disk := pointReadResult{Target: "disk", What: "plain disk, no concurrent writes"}
	idle := pointReadResult{Target: "replica-idle", What: "replica, no writes on the primary"}
	busy := pointReadResult{Target: "replica-applying", What: fmt.Sprintf("replica, while the primary commits %s tx/s", formatRate(o.ApplyRate))}
	replicaPath := filepath.Join(r.MountDir, replicaReadDB)
	readOnReplica := func(what string, before, after func(context.Context) error) (runResult, error) {
		ops, secs, err := timedRun(ctx, what, replicationScript, workDir,
			[]string{"point-read", replicaPath, strconv.Itoa(o.Reads)}, o.Reads, before, after)
		return runResult{Ops: ops, Seconds: secs}, err
	}

	// Each round reads on all three.
	for round := 1; round <= o.Rounds; round++ {
		res, err := runWorkload(ctx, pointRead, filepath.Join(diskDir, fmt.Sprintf("repl_read_r%d.db", round)), o.Reads, workDir, nil)
		if err != nil {
			return err
		}
		disk.Reads.add(res)

		if res, err = readOnReplica("point reads on the idle replica", nil, nil); err != nil {
			return err
		}
		idle.Reads.add(res)

		res, applied, writerRate, err := readWhileApplying(ctx, o, p, r, workDir, readOnReplica)
		if err != nil {
			return err
		}
		busy.Reads.add(res)
		busy.ApplyRates = append(busy.ApplyRates, applied)
		busy.WriterRates = append(busy.WriterRates, writerRate)
		logf("round %d/%d point reads: disk %s q/s, idle replica %s q/s, replica applying %s tx/s: %s q/s", round, o.Rounds,
			formatRate(disk.Reads.Rates[round-1]), formatRate(idle.Reads.Rates[round-1]), formatRate(applied), formatRate(busy.Reads.Rates[round-1]))
	}

	// Each target's rate relative to plain disk.
	for _, pr := range []*pointReadResult{&disk, &idle, &busy} {
		if disk.Reads.MedianRate > 0 {
			pr.Ratio = pr.Reads.MedianRate / disk.Reads.MedianRate
		}
	}
	busy.MedianApplyRate, busy.MedianWriterRate = median(busy.ApplyRates), median(busy.WriterRates)
	rr.PointReads = []pointReadResult{disk, idle, busy}
	return nil
}

// readWhileApplying runs one round of replica point reads while a paced
// writer commits on the primary. It returns the reads, the rate at which
// the replica's TXID grew during a warm-up and them, and the writer's own
// rate.
func readWhileApplying(ctx context.Context, o options, p, r *node, workDir string,
	read func(string, func(context.Context) error, func(context.Context) error) (runResult, error)) (res runResult, applied, writerRate float64, err error) {
	// Start the writer; it commits once the replica has its table.
	w, err := startPython(ctx, "paced writer on the primary", replicationScript, workDir,
		"writer", filepath.Join(p.MountDir, replicaReadDB), posPath(p, replicaReadDB), fmtFloat(o.ApplyRate), "0", "0")
	if err != nil {
		return res, 0, 0, err
	}
	defer func() { err = w.finish(err) }()

	// Wait for it to be ready and for the replica to have the table, then start it.
	var ready struct{ Ready bool }
	if err := w.read(&ready); err != nil {
		return res, 0, 0, err
	}
	if _, err := waitCaughtUp(ctx, p, []*node{r}, []string{replicaReadDB}); err != nil {
		return res, 0, 0, err
	}
	if err := w.send("go"); err != nil {
		return res, 0, 0, err
	}

	// Read on the replica after a warm-up, noting its TXID before and
	// after to learn the apply rate.
	var txid0, txid1 int64
	var t0, t1 time.Time
	readTXID := func(t *time.Time, txid *int64) func(context.Context) error {
		return func(context.Context) error {
			pos, err := readPos(r, replicaReadDB)
			if err != nil {
				return err
			}
			*t = time.Now()
			*txid, err = strconv.ParseInt(strings.SplitN(pos, "/", 2)[0], 16, 64)
			return err
		}
	}

	// The apply rate is taken over the warm-up and the reads: a quick
	// run's reads alone last a few milliseconds, too short to count on
	// seeing a transaction applied.
	if err := readTXID(&t0, &txid0)(ctx); err != nil {
		return res, 0, 0, err
	}
	if err := sleepCtx(ctx, applyWarmup); err != nil {
		return res, 0, 0, err
	}
	res, err = read("point reads on the replica while it applies", nil, readTXID(&t1, &txid1))
	if err != nil {
		return res, 0, 0, err
	}

	// Stop the writer and work out both rates.
	if err := w.send("stop"); err != nil {
		return res, 0, 0, err
	}
	var wres struct {
		Commits int     `json:"commits"`
		Seconds float64 `json:"seconds"`
	}
	if err := w.read(&wres); err != nil {
		return res, 0, 0, err
	}
	if wres.Seconds > 0 {
		writerRate = float64(wres.Commits) / wres.Seconds
	}
	if d := t1.Sub(t0).Seconds(); d > 0 {
		applied = float64(txid1-txid0) / d
	}
	return res, applied, writerRate, nil
}

// measureSnapshot writes a database of o.SnapshotMiB on the primary sp,
// starts a new replica with an empty data dir in dir and times its catch-up.
// The replica is added to *nodes, for the caller to stop.
func measureSnapshot(ctx context.Context, o options, bin string, sp *node, dir, workDir string, logf func(string, ...any), nodes *[]*node) (*snapshotResult, error) {
	const db = "repl_snapshot.db"
	logf("writing a %d MiB database on the primary", o.SnapshotMiB)
	var made struct {
		Bytes   int64   `json:"bytes"`
		Seconds float64 `json:"seconds"`
	}
	if err := runPython(ctx, "snapshot database setup on the primary", replicationScript, workDir, &made,
		"setup-snapshot", filepath.Join(sp.MountDir, db), strconv.Itoa(o.SnapshotMiB)); err != nil {
		return nil, err
	}

	// The position the new replica must reach.
	want, err := readPos(sp, db)
	if err != nil {
		return nil, err
	}
	res := &snapshotResult{Bytes: made.Bytes, WriteSeconds: made.Seconds}
	logf("wrote %.1f MB in %.3f s; starting a new replica", float64(made.Bytes)/1e6, made.Seconds)

	readyCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	r, err := launchNode(bin, nodeSpec{Name: "new replica", Dir: dir, Primary: sp})
	if err != nil {
		return nil, err
	}
	*nodes = append(*nodes, r)

	// Note, meanwhile, when it reports ready.
	type ready struct {
		at  time.Time
		err error
	}
	readyc := make(chan ready, 1)
	go func() {
		err := r.waitReady(readyCtx, posPollInterval)
		readyc <- ready{time.Now(), err}
	}()
	if err := waitPos(ctx, r, db, want, snapshotTimeout); err != nil {
		return nil, err
	}

	// Work out the times and rates.
	caughtUp := time.Now()
	rd := <-readyc
	if rd.err != nil {
		return nil, rd.err
	}
	res.FromStartSeconds = caughtUp.Sub(start).Seconds()
	res.ReadySeconds = rd.at.Sub(start).Seconds()
	res.FromReadySeconds = caughtUp.Sub(rd.at).Seconds()
	mb := float64(res.Bytes) / 1e6
	res.MBPerSecFromStart = mb / res.FromStartSeconds
	if res.FromReadySeconds > 0 {
		res.MBPerSecFromReady = mb / res.FromReadySeconds
	}
	if b, err := os.ReadFile(r.LogPath); err == nil {
		res.ViaSnapshot = strings.Contains(string(b), "applied snapshot")
	}
	logf("new replica caught up %.3f s after its start (ready after %.3f s): %.1f MB/s", res.FromStartSeconds, res.ReadySeconds, res.MBPerSecFromStart)
	return res, nil
}

// sleepCtx waits for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

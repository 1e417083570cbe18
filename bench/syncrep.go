package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// syncRateResult is the primary's write rate and commit latency for one
// workload with replication.sync-replicas set (0: asynchronous, the
// reference), next to the asynchronous rate with as many replicas and to
// plain disk.
type syncRateResult struct {
	Workload     string `json:"workload"`
	SyncReplicas int    `json:"sync_replicas"`
	Replicas     int    `json:"replicas"`
	Placement    string `json:"placement"`
	// Primary is the rate on the primary; LatencyMS the mean commit latency
	// of its median run (one writer, so seconds / commits).
	Primary   targetResult `json:"primary"`
	LatencyMS float64      `json:"latency_ms"`
	// VsAsync is the median rate over the asynchronous one with as many
	// replicas, the same workload and placement, in this step; VsDisk
	// over plain disk's, measured in this step.
	VsAsync  float64 `json:"vs_async"`
	VsDisk   float64 `json:"vs_disk"`
	DiskRate float64 `json:"disk_rate"`
}

// syncWorkloads are the workloads the synchronous replication rates run:
// under NORMAL the replicas' fsync is the only one a commit waits for,
// under FULL the primary pays its own first.
var syncWorkloads = func() []workload {
	var out []workload
	for _, w := range workloads {
		if w.Name == "insert-normal" || w.Name == "insert-full" {
			out = append(out, w)
		}
	}
	return out
}()

// syncConfigs are the (sync-replicas, replicas) pairs measured, each
// asynchronous reference before the synchronous run it is the reference
// of.
var syncConfigs = [][2]int{{0, 1}, {1, 1}, {0, 2}, {2, 2}}

// syncRates measures insert-normal and insert-full asynchronously and with
// sync-replicas 1 and 2, each on a primary of its own with as many
// replicas, in the separate placement when the machine has two CPUs, and
// plain disk in the same rounds.
func (s *replicationRun) syncRates(ctx context.Context, diskDir string, rr *replicationReport) (err error) {
	if s.allCPUs == nil {
		s.allCPUs, s.primaryCPUs, s.replicaCPUs, _ = cpuSplit()
	}
	pl := placementShared
	if len(s.replicaCPUs) > 0 {
		pl = placementSeparate
	}

	// Plain disk, the reference.
	disk := map[string]float64{}
	for _, w := range syncWorkloads {
		var t targetResult
		for round := 1; round <= s.o.Rounds; round++ {
			res, err := runWorkload(ctx, w, filepath.Join(diskDir, fmt.Sprintf("repl_sync_disk_%s_r%d.db", w.File, round)), s.o.ops(w), s.workDir, nil)
			if err != nil {
				return err
			}
			t.add(res)
		}
		disk[w.Name] = t.MedianRate
	}

	// Each configuration on a fresh primary with its replicas.
	async := map[[2]any]float64{} // by workload and replicas
	for _, c := range syncConfigs {
		n, k := c[0], c[1]
		res, err := s.syncRate(ctx, n, k, pl)
		if err != nil {
			return err
		}
		for _, r := range res {
			r.DiskRate = disk[r.Workload]
			r.VsDisk = r.Primary.MedianRate / r.DiskRate
			if n == 0 {
				async[[2]any{r.Workload, k}] = r.Primary.MedianRate
			}
			if a := async[[2]any{r.Workload, k}]; a > 0 {
				r.VsAsync = r.Primary.MedianRate / a
			}
			s.logf("%s, sync-replicas %d, %d replica(s), %s placement: %s tx/s, %.2f ms per commit, %s of async, %s of plain disk",
				r.Workload, n, k, pl, formatRate(r.Primary.MedianRate), r.LatencyMS, formatRatio(r.VsAsync), formatRatio(r.VsDisk))
			rr.SyncRates = append(rr.SyncRates, r)
		}
	}
	return nil
}

// syncRate runs rounds of each of syncWorkloads on a primary with
// sync-replicas n and k replicas, all stopped when it returns.
func (s *replicationRun) syncRate(ctx context.Context, n, k int, pl string) (out []syncRateResult, err error) {
	name := fmt.Sprintf("sync%d-%dr", n, k)
	base := filepath.Join(s.base, name)
	var nodes []*node
	defer func() { err = errors.Join(err, stopNodes(nodes...)) }()
	s.logf("starting a primary with sync-replicas %d and %d replica(s)", n, k)
	p, err := startNode(ctx, s.bin, nodeSpec{Name: name + " primary", Dir: filepath.Join(base, "primary"),
		Config: fmt.Sprintf("replication:\n  sync-replicas: %d\n  sync-timeout: 0s\n", n)})
	if err != nil {
		return nil, err
	}
	nodes = append(nodes, p)
	var replicas []*node
	for i := range k {
		r, err := startNode(ctx, s.bin, nodeSpec{Name: fmt.Sprintf("%s replica %d", name, i+1), Dir: filepath.Join(base, fmt.Sprintf("replica%d", i+1)), Primary: p})
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, r)
		replicas = append(replicas, r)
	}

	// The replicas must follow before the first commit, or it would wait
	// for them to join: the warm-up database is committed once they have.
	warm := "repl_sync_warm.db"
	if _, err := runWorkload(ctx, insertNormal, filepath.Join(p.MountDir, warm), 5, s.workDir, nil); err != nil {
		return nil, err
	}
	if _, err := waitCaughtUp(ctx, p, replicas, []string{warm}); err != nil {
		return nil, err
	}

	// The rounds, in the placement, the workloads alternating.
	place := func(cpusPrimary, cpusReplicas []int) error {
		errs := []error{setAffinity(os.Getpid(), false, cpusPrimary), setAffinity(p.cmd.Process.Pid, true, cpusPrimary)}
		for _, r := range replicas {
			errs = append(errs, setAffinity(r.cmd.Process.Pid, true, cpusReplicas))
		}
		return errors.Join(errs...)
	}
	out = make([]syncRateResult, len(syncWorkloads))
	for round := 1; round <= s.o.Rounds; round++ {
		for i, w := range syncWorkloads {
			if pl == placementSeparate {
				if err := place(s.primaryCPUs, s.replicaCPUs); err != nil {
					return nil, errors.Join(err, place(s.allCPUs, s.allCPUs))
				}
			}
			run, err := runWorkload(ctx, w, filepath.Join(p.MountDir, fmt.Sprintf("repl_sync_%s_r%d.db", w.File, round)), s.o.ops(w), s.workDir, nil)
			if pl == placementSeparate {
				err = errors.Join(err, place(s.allCPUs, s.allCPUs))
			}
			if err != nil {
				return nil, fmt.Errorf("%s with sync-replicas %d, round %d: %w", w.Name, n, round, err)
			}
			out[i].Primary.add(run)
		}
	}
	for i, w := range syncWorkloads {
		r := &out[i]
		r.Workload, r.SyncReplicas, r.Replicas, r.Placement = w.Name, n, k, pl
		r.LatencyMS = r.Primary.MedianSeconds / float64(s.o.ops(w)) * 1000
	}
	return out, nil
}

// writeSyncRates prints the write rates with synchronous replication, if
// measured.
func (rr *replicationReport) writeSyncRates(b io.Writer) {
	if len(rr.SyncRates) == 0 {
		return
	}
	fmt.Fprintf(b, "### The primary's write rate with synchronous replication\n\n"+
		"insert-normal (%s commits per run) and insert-full (%s) on a primary of its own with `replication.sync-replicas: N` "+
		"(`sync-timeout: 0s`; 0: asynchronous) and the replicas listed, "+
		"in the placement named (separate: primary and writer on half the CPUs, replicas on the other): "+
		"each synchronous commit returns once N replicas applied it with an fsync and acknowledged it "+
		"(under FULL after the primary's own fsync, in which it waits). "+
		"\"vs async\" is over the median rate of the same workload with as many replicas and sync-replicas 0, in this step; "+
		"\"vs plain disk\" over the workload on plain disk in this step. Latency is the mean of one writer's commits.\n\n",
		formatInt(rr.Settings.Inserts), formatInt(rr.Settings.Inserts/5))
	fmt.Fprintf(b, "| workload | sync-replicas | replicas | placement | primary | commit latency | vs async | vs plain disk | bar |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rr.SyncRates {
		bar := ""
		if r.SyncReplicas == 1 {
			bar = "≥ 50% of async"
		}
		fmt.Fprintf(b, "| %s | %d | %d | %s | %s tx/s | %s | %s | %s | %s |\n", r.Workload, r.SyncReplicas, r.Replicas, r.Placement,
			formatRate(r.Primary.MedianRate), formatMS(r.LatencyMS), formatRatio(r.VsAsync), formatRatio(r.VsDisk), bar)
	}
	fmt.Fprintln(b)
}

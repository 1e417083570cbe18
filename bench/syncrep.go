package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// syncRateResult is the primary's insert-normal rate and commit latency
// with replication.sync-replicas set, next to the asynchronous rate with as
// many replicas and to plain disk.
type syncRateResult struct {
	SyncReplicas int    `json:"sync_replicas"`
	Replicas     int    `json:"replicas"`
	Placement    string `json:"placement"`
	// Primary is the rate on the primary; LatencyMS the mean commit latency
	// of its median run (one writer, so seconds / commits).
	Primary   targetResult `json:"primary"`
	LatencyMS float64      `json:"latency_ms"`
	// VsAsync is the median rate over the asynchronous one with as many
	// replicas in the same placement (the write rates above); VsDisk over
	// plain disk's, measured in this step.
	VsAsync  float64 `json:"vs_async"`
	VsDisk   float64 `json:"vs_disk"`
	DiskRate float64 `json:"disk_rate"`
}

// syncRates measures insert-normal with sync-replicas 1 and 2, each on a
// primary of its own with that many replicas, in the separate placement
// when the machine has two CPUs, and plain disk in the same rounds.
func (s *replicationRun) syncRates(ctx context.Context, diskDir string, rr *replicationReport) (err error) {
	pl := placementShared
	if len(s.replicaCPUs) > 0 {
		pl = placementSeparate
	}
	async := map[int]float64{}
	for _, wr := range rr.WriteRates {
		if wr.Placement == pl {
			async[wr.Replicas] = wr.Primary.MedianRate
		}
	}

	// Plain disk, the reference.
	var disk targetResult
	for round := 1; round <= s.o.Rounds; round++ {
		res, err := runWorkload(ctx, insertNormal, filepath.Join(diskDir, fmt.Sprintf("repl_sync_disk_r%d.db", round)), s.o.Inserts, s.workDir, nil)
		if err != nil {
			return err
		}
		disk.add(res)
	}

	// Each sync-replicas value on a fresh primary with that many replicas.
	for _, n := range []int{1, 2} {
		res, err := s.syncRate(ctx, n, pl)
		if err != nil {
			return err
		}
		res.DiskRate = disk.MedianRate
		res.VsDisk = res.Primary.MedianRate / disk.MedianRate
		if a := async[n]; a > 0 {
			res.VsAsync = res.Primary.MedianRate / a
		}
		s.logf("sync-replicas %d, %d replica(s), %s placement: %s tx/s, %.2f ms per commit, %s of async, %s of plain disk",
			n, n, pl, formatRate(res.Primary.MedianRate), res.LatencyMS, formatRatio(res.VsAsync), formatRatio(res.VsDisk))
		rr.SyncRates = append(rr.SyncRates, res)
	}
	return nil
}

// syncRate runs insert-normal rounds on a primary with sync-replicas n and
// n replicas, all stopped when it returns.
func (s *replicationRun) syncRate(ctx context.Context, n int, pl string) (res syncRateResult, err error) {
	res = syncRateResult{SyncReplicas: n, Replicas: n, Placement: pl}
	base := filepath.Join(s.base, fmt.Sprintf("sync%d", n))
	var nodes []*node
	defer func() { err = errors.Join(err, stopNodes(nodes...)) }()
	s.logf("starting a primary with sync-replicas %d and its replicas", n)
	p, err := startNode(ctx, s.bin, nodeSpec{Name: fmt.Sprintf("sync-%d primary", n), Dir: filepath.Join(base, "primary"),
		Config: fmt.Sprintf("replication:\n  sync-replicas: %d\n  sync-timeout: 0s\n", n)})
	if err != nil {
		return res, err
	}
	nodes = append(nodes, p)
	var replicas []*node
	for i := range n {
		r, err := startNode(ctx, s.bin, nodeSpec{Name: fmt.Sprintf("sync-%d replica %d", n, i+1), Dir: filepath.Join(base, fmt.Sprintf("replica%d", i+1)), Primary: p})
		if err != nil {
			return res, err
		}
		nodes = append(nodes, r)
		replicas = append(replicas, r)
	}

	// The replicas must follow before the first commit, or it would wait
	// for them to join: the warm-up database is committed once they have.
	warm := "repl_sync_warm.db"
	if _, err := runWorkload(ctx, insertNormal, filepath.Join(p.MountDir, warm), 5, s.workDir, nil); err != nil {
		return res, err
	}
	if _, err := waitCaughtUp(ctx, p, replicas, []string{warm}); err != nil {
		return res, err
	}

	// The rounds, in the placement.
	place := func(cpusPrimary, cpusReplicas []int) error {
		errs := []error{setAffinity(os.Getpid(), false, cpusPrimary), setAffinity(p.cmd.Process.Pid, true, cpusPrimary)}
		for _, r := range replicas {
			errs = append(errs, setAffinity(r.cmd.Process.Pid, true, cpusReplicas))
		}
		return errors.Join(errs...)
	}
	for round := 1; round <= s.o.Rounds; round++ {
		if pl == placementSeparate {
			if err := place(s.primaryCPUs, s.replicaCPUs); err != nil {
				return res, errors.Join(err, place(s.allCPUs, s.allCPUs))
			}
		}
		run, err := runWorkload(ctx, insertNormal, filepath.Join(p.MountDir, fmt.Sprintf("repl_sync_r%d.db", round)), s.o.Inserts, s.workDir, nil)
		if pl == placementSeparate {
			err = errors.Join(err, place(s.allCPUs, s.allCPUs))
		}
		if err != nil {
			return res, fmt.Errorf("sync-replicas %d, round %d: %w", n, round, err)
		}
		res.Primary.add(run)
	}
	res.LatencyMS = res.Primary.MedianSeconds / float64(s.o.Inserts) * 1000
	return res, nil
}

// writeSyncRates prints the write rates with synchronous replication, if
// measured.
func (rr *replicationReport) writeSyncRates(b io.Writer) {
	if len(rr.SyncRates) == 0 {
		return
	}
	fmt.Fprintf(b, "### The primary's write rate with synchronous replication\n\n"+
		"insert-normal on a primary of its own with `replication.sync-replicas: N` (`sync-timeout: 0s`) and N replicas, "+
		"in the placement named (separate: primary and writer on half the CPUs, replicas on the other), %s per run: "+
		"each commit returns once N replicas applied it with an fsync and acknowledged it. "+
		"\"vs async\" is over the median rate with as many replicas without sync-replicas (the table above, same placement); "+
		"\"vs plain disk\" over insert-normal on plain disk in this step. Latency is the mean of one writer's commits.\n\n", formatInt(rr.Settings.Inserts))
	fmt.Fprintf(b, "| sync-replicas | replicas | placement | primary | commit latency | vs async | vs plain disk | bar |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range rr.SyncRates {
		bar := ""
		if r.SyncReplicas == 1 {
			bar = "≥ 50% of async"
		}
		fmt.Fprintf(b, "| %d | %d | %s | %s tx/s | %s | %s | %s | %s |\n", r.SyncReplicas, r.Replicas, r.Placement,
			formatRate(r.Primary.MedianRate), formatMS(r.LatencyMS), formatRatio(r.VsAsync), formatRatio(r.VsDisk), bar)
	}
	fmt.Fprintln(b)
}

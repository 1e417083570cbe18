package main

import (
	"fmt"
	"io"
	"strconv"
)

// replicationReport is what the replication section measured; parts that
// were not reached (after an error) are empty.
type replicationReport struct {
	Settings   replicationSettings `json:"settings"`
	Bars       bars                `json:"bars"`
	WriteRates []writeRateResult   `json:"write_rates,omitempty"`
	SyncRates  []syncRateResult    `json:"sync_write_rates,omitempty"`
	Lag        []lagResult         `json:"visibility_lag,omitempty"`
	PointReads []pointReadResult   `json:"point_reads,omitempty"`
	Snapshot   *snapshotResult     `json:"snapshot_catch_up,omitempty"`
}

// replicationSettings are the counts and rates the section used.
type replicationSettings struct {
	Rounds     int     `json:"rounds"`
	Inserts    int     `json:"inserts_per_write_rate_run"`
	Reads      int     `json:"reads_per_point_read_run"`
	LagRate    float64 `json:"lag_target_rate"`
	LagSeconds float64 `json:"lag_seconds"`
	// LagPollPauseMS is the poller's sleep between polls; 0: a tight loop.
	LagPollPauseMS float64 `json:"lag_poll_pause_ms"`
	ApplyRate      float64 `json:"apply_target_rate"`
	SnapshotMiB    int     `json:"snapshot_mib"`
}

// bars are the targets, reported next to the results, never
// asserted.
type bars struct {
	LagP99MS          float64 `json:"lag_p99_ms_max"`            // at LagRate tx/s on loopback
	LagRate           float64 `json:"lag_rate"`                  // tx/s
	LiteFSLagP50MS    float64 `json:"litefs_v0_5_14_lag_p50_ms"` // for reference
	LiteFSLagP90MS    float64 `json:"litefs_v0_5_14_lag_p90_ms"`
	WriteRateRatio    float64 `json:"write_rate_ratio_min"` // with WriteRateReplicas replicas vs none
	WriteRateReplicas int     `json:"write_rate_replicas"`
	ReplicaReadRatio  float64 `json:"replica_read_ratio_min"` // replica applying ReplicaApplyRate vs plain disk
	ReplicaApplyRate  float64 `json:"replica_apply_rate"`
	SnapshotMBPerSec  float64 `json:"snapshot_mb_per_sec_min"`
}

// writeRateResult is the primary's insert-normal rate with some replicas
// connected.
type writeRateResult struct {
	Replicas int `json:"replicas"`
	// Placement: "shared" (every process on every CPU) or "separate" (the
	// primary and its writer on half the CPUs, the replicas on the other).
	Placement string       `json:"placement"`
	Primary   targetResult `json:"primary"`
	Ratio     float64      `json:"ratio"` // median of RoundRatios
	// RoundRatios: per round, the rate / the same round's rate with no
	// replica.
	RoundRatios []float64 `json:"round_ratios"`
	// CatchUpSeconds: per round, from the end of the run (its Python
	// process gone) until every replica's -pos equalled the primary's.
	CatchUpSeconds []float64 `json:"catch_up_seconds,omitempty"`
}

// lagResult is the visibility lag by one definition of "visible".
type lagResult struct {
	SeenBy         string  `json:"seen_by"` // "pos": the replica's -pos file; "sql": SELECT max(id) on the replica
	TargetRate     float64 `json:"target_rate"`
	Commits        int     `json:"commits"`
	WriterSeconds  float64 `json:"writer_seconds"`
	CommitRate     float64 `json:"commit_rate"` // achieved
	Seen           int     `json:"seen"`        // commits the poller saw
	Polls          int     `json:"polls"`
	PollsPerSecond float64 `json:"polls_per_second"`
	MinMS          float64 `json:"min_ms"`
	P50MS          float64 `json:"p50_ms"`
	P90MS          float64 `json:"p90_ms"`
	P99MS          float64 `json:"p99_ms"`
	MaxMS          float64 `json:"max_ms"`
	// Node-side, from the replica's pagewire_replica_apply_lag_seconds
	// histogram over the same commits: bucket upper bounds, and the share
	// applied within 5 ms.
	NodeP50MS  float64 `json:"node_p50_ms_at_most"`
	NodeP99MS  float64 `json:"node_p99_ms_at_most"`
	NodeWithin float64 `json:"node_share_within_5ms"`
}

// pointReadResult is the point-read workload on one target.
type pointReadResult struct {
	Target string       `json:"target"` // disk, replica-idle, replica-applying
	What   string       `json:"what"`
	Reads  targetResult `json:"reads"`
	Ratio  float64      `json:"ratio"` // median rate / plain disk's
	// For replica-applying: per round, the rate at which the replica's TXID
	// grew during a 300 ms warm-up and the timed reads, and the writer's
	// rate on the primary.
	ApplyRates       []float64 `json:"apply_rates,omitempty"`
	WriterRates      []float64 `json:"writer_rates,omitempty"`
	MedianApplyRate  float64   `json:"median_apply_rate,omitempty"`
	MedianWriterRate float64   `json:"median_writer_rate,omitempty"`
}

// snapshotResult is a new replica's catch-up on one big database.
type snapshotResult struct {
	Bytes        int64   `json:"bytes"`         // page_count * page_size on the primary
	WriteSeconds float64 `json:"write_seconds"` // writing it on the primary, one transaction
	// From the replica's process start: until /healthz said 200, and until
	// its -pos equalled the primary's; and the latter from ready.
	ReadySeconds      float64 `json:"ready_seconds"`
	FromStartSeconds  float64 `json:"from_start_seconds"`
	FromReadySeconds  float64 `json:"from_ready_seconds"`
	MBPerSecFromStart float64 `json:"mb_per_sec_from_start"` // MB = 10^6 bytes
	MBPerSecFromReady float64 `json:"mb_per_sec_from_ready"`
	ViaSnapshot       bool    `json:"via_snapshot"` // its log says "applied snapshot"
}

// writeMarkdown prints the "## Replication" section.
func (rr *replicationReport) writeMarkdown(b io.Writer, cpus int) {
	s := rr.Settings
	fmt.Fprintf(b, "## Replication\n\n"+
		"A primary and its replicas, each `pagewire mount` in its own process with its own mount and data.dir, "+
		"static lease, on loopback; every SQLite client is a Python process of its own. "+
		"Rates are medians of %d round(s). Bars are the issue's targets, shown for comparison and asserted nowhere.\n\n", s.Rounds)

	rr.writeWriteRates(b, cpus)
	rr.writeSyncRates(b)
	rr.writeLag(b, cpus)
	rr.writePointReads(b)
	rr.writeSnapshot(b)
}

// writeWriteRates prints the primary's write rates with replicas, if measured.
func (rr *replicationReport) writeWriteRates(b io.Writer, cpus int) {
	if len(rr.WriteRates) == 0 {
		return
	}
	s, bar := rr.Settings, rr.Bars
	fmt.Fprintf(b, "### The primary's write rate with replicas connected\n\n"+
		"insert-normal (autocommit 1-row inserts, synchronous=NORMAL, %s per run) on the primary's mount, a fresh database per run. "+
		"The three are interleaved: each round runs with 0, then 1, then 2 replicas, each replica started (or restarted on its data.dir) "+
		"and caught up on every database before the run, so that the machine's drift weighs on all three alike. "+
		"Each round does so in two placements, in alternating order: **shared**, every process free to run on any of the %d CPUs, "+
		"so that the replicas compete with the primary and its writer for them; and **separate**, the primary and its writer "+
		"held to one half of the CPUs and the replicas to the other, as if they were separate machines, which leaves the primary's own "+
		"cost of serving replicas. "+
		"\"vs 0 replicas\" is the median of the rounds' ratios to the same round's and placement's run with none; \"caught up after\" is from the end of a run "+
		"until every replica's -pos equalled the primary's (median).\n\n", formatInt(s.Inserts), cpus)
	fmt.Fprintf(b, "| placement | replicas | primary | vs 0 replicas | replicas caught up after | bar |\n|---|---|---|---|---|---|\n")
	for _, wr := range rr.WriteRates {
		caught, barCell := "—", ""
		if len(wr.CatchUpSeconds) > 0 {
			caught = formatSeconds(median(wr.CatchUpSeconds))
		}
		if wr.Replicas == bar.WriteRateReplicas {
			barCell = "≥ " + formatRatio(bar.WriteRateRatio)
		}
		fmt.Fprintf(b, "| %s | %d | %s tx/s | %s | %s | %s |\n", wr.Placement, wr.Replicas, formatRate(wr.Primary.MedianRate), formatRatio(wr.Ratio), caught, barCell)
	}
	fmt.Fprintln(b)
}

// writeLag prints the visibility lags, if measured.
func (rr *replicationReport) writeLag(b io.Writer, cpus int) {
	if len(rr.Lag) == 0 {
		return
	}
	s, bar := rr.Settings, rr.Bars
	fmt.Fprintf(b, "### Visibility lag from commit on the primary to visible on a replica\n\n"+
		"One replica connected. A writer on the primary commits 1-row inserts paced at %s/s for %s s "+
		"and notes time.time() when each commit returns; a poller on the replica notes the first "+
		"time.time() it sees each transaction. One run per definition of visible: the replica's `-pos` file "+
		"shows the TXID (when its storage server counted the transaction), or `SELECT max(id) FROM t` through a "+
		"SQLite connection on the replica returns the row (what an app sees). Same machine, same clock. %s\n\n",
		formatRate(s.LagRate), fmtFloat(s.LagSeconds), pollNote(s.LagPollPauseMS, cpus))
	fmt.Fprintf(b, "| seen by | commits (seen) | achieved rate | polls/s | p50 | p90 | p99 | max | bar |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, l := range rr.Lag {
		seenBy := "replica's -pos file"
		if l.SeenBy == lagBySQL {
			seenBy = "SELECT max(id) on the replica"
		}
		fmt.Fprintf(b, "| %s | %s (%s) | %s tx/s | %s | %s | %s | %s | %s | p99 ≤ %s |\n",
			seenBy, formatInt(l.Commits), formatInt(l.Seen), formatRate(l.CommitRate), formatRate(l.PollsPerSecond),
			formatMS(l.P50MS), formatMS(l.P90MS), formatMS(l.P99MS), formatMS(l.MaxMS), formatMS(bar.LagP99MS))
	}
	fmt.Fprintf(b, "\nBar: p99 ≤ %s at %s tx/s on loopback. LiteFS v0.5.14 on this machine kind: p50 %s, p90 %s.\n\n",
		formatMS(bar.LagP99MS), formatRate(bar.LagRate), formatMS(bar.LiteFSLagP50MS), formatMS(bar.LiteFSLagP90MS))
	fmt.Fprintf(b, "The replica's own view of the same commits (its `pagewire_replica_apply_lag_seconds` histogram: from the primary's "+
		"commit time to the transaction being counted and visible on the replica; bucket bounds, so \"≤\"), free of the poller's own scheduling:\n\n"+
		"| run | p50 | p99 | applied within 5 ms |\n|---|---|---|---|\n")
	for _, l := range rr.Lag {
		fmt.Fprintf(b, "| %s | ≤ %s | ≤ %s | %.2f%% |\n", l.SeenBy, formatMS(l.NodeP50MS), formatMS(l.NodeP99MS), 100*l.NodeWithin)
	}
	fmt.Fprintln(b)
}

// writePointReads prints the point reads on a replica, if measured.
func (rr *replicationReport) writePointReads(b io.Writer) {
	if len(rr.PointReads) == 0 {
		return
	}
	s, bar := rr.Settings, rr.Bars
	fmt.Fprintf(b, "### Point reads on a replica\n\n"+
		"workload.py's point-read (SELECT by random primary key, one query per transaction, %s per run) on a "+
		"10,000-row table: on plain disk with no concurrent writes, and on the replica's copy of the same table, "+
		"idle, then while a writer on the primary commits 1-row inserts into it paced at %s/s (the rate shown is how "+
		"fast the replica's TXID grew during a 300 ms warm-up and the reads).\n\n", formatInt(s.Reads), formatRate(s.ApplyRate))
	fmt.Fprintf(b, "| target | reads | vs plain disk | bar |\n|---|---|---|---|\n")
	for _, pr := range rr.PointReads {
		what, barCell := pr.What, ""
		if pr.Target == "replica-applying" {
			what = fmt.Sprintf("replica, applying %s tx/s (writer: %s tx/s)", formatRate(pr.MedianApplyRate), formatRate(pr.MedianWriterRate))
			barCell = fmt.Sprintf("≥ %s while applying %s tx/s", formatRatio(bar.ReplicaReadRatio), formatRate(bar.ReplicaApplyRate))
		}
		fmt.Fprintf(b, "| %s | %s q/s | %s | %s |\n", what, formatRate(pr.Reads.MedianRate), formatRatio(pr.Ratio), barCell)
	}
	fmt.Fprintln(b)
}

// writeSnapshot prints the snapshot catch-up, if measured.
func (rr *replicationReport) writeSnapshot(b io.Writer) {
	sn := rr.Snapshot
	if sn == nil {
		return
	}
	s, bar := rr.Settings, rr.Bars
	fmt.Fprintf(b, "### Snapshot catch-up\n\n"+
		"A fresh primary holds one database of %.1f MB (%d rows of a 1 MiB random blob, written in one transaction in %s); "+
		"a new replica with an empty data.dir starts, and is timed until its -pos equals the primary's. "+
		"MB = 10^6 bytes of the database (page_count × page_size). Caught up by snapshot (its log says so): %v.\n\n",
		float64(sn.Bytes)/1e6, s.SnapshotMiB, formatSeconds(sn.WriteSeconds), sn.ViaSnapshot)
	fmt.Fprintf(b, "| timed from | to caught up | MB/s | bar |\n|---|---|---|---|\n")
	fmt.Fprintf(b, "| replica process start | %s | %s | ≥ %s MB/s |\n", formatSeconds(sn.FromStartSeconds), formatRate(sn.MBPerSecFromStart), fmtFloat(bar.SnapshotMBPerSec))
	fromReady := "—"
	if sn.MBPerSecFromReady > 0 {
		fromReady = formatRate(sn.MBPerSecFromReady)
	}
	fmt.Fprintf(b, "| replica ready (/healthz 200, %s after start) | %s | %s | |\n", formatSeconds(sn.ReadySeconds), formatSeconds(sn.FromReadySeconds), fromReady)
	fmt.Fprintln(b)
}

// pollNote says how the lag poller polled.
func pollNote(pauseMS float64, cpus int) string {
	if pauseMS == 0 {
		return fmt.Sprintf("The poller runs in a tight loop and keeps one of this machine's %d CPUs busy; "+
			"every -pos poll is a request the replica's node serves, so it competes with the apply.", cpus)
	}
	return fmt.Sprintf("The poller sleeps %s between polls (Python's time.sleep, which overshoots a little), "+
		"so that it does not starve the replica's node on this %d-CPU machine: a tight loop of -pos polls, each a request "+
		"the node serves, slows its apply (-lag-poll-pause 0 to see it).", formatMS(pauseMS), cpus)
}

// formatMS is a duration in milliseconds: two decimals below 10 ms.
func formatMS(ms float64) string {
	if ms < 10 && ms > -10 {
		return strconv.FormatFloat(ms, 'f', 2, 64) + " ms"
	}
	return strconv.FormatFloat(ms, 'f', 1, 64) + " ms"
}

// formatSeconds is a duration in seconds, or ms below one second.
func formatSeconds(s float64) string {
	if s < 1 {
		return formatMS(1000 * s)
	}
	return strconv.FormatFloat(s, 'f', 2, 64) + " s"
}

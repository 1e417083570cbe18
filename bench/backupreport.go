package main

import (
	"fmt"
	"io"
)

// backupReport is what the backup section measured; parts that were not
// reached (after an error) are empty.
type backupReport struct {
	Settings backupSettings `json:"settings"`
	Bars     backupBarSet   `json:"bars"`
	// insert-normal's rates: plain disk, and primaries with backup off
	// and on (in the same rounds).
	Disk targetResult `json:"disk"`
	Off  targetResult `json:"backup_off"`
	On   targetResult `json:"backup_on"`
	// RoundRatios: per round, the rate with backup on / off; Ratio their
	// median. OffVsDisk and OnVsDisk are median rates over plain disk's.
	RoundRatios []float64 `json:"round_ratios"`
	Ratio       float64   `json:"ratio"`
	OffVsDisk   float64   `json:"backup_off_vs_disk"`
	OnVsDisk    float64   `json:"backup_on_vs_disk"`
	// CatchUpSeconds: per round, from the end of the run with backup on
	// until the node reported the backup had all of it.
	CatchUpSeconds []float64      `json:"catch_up_seconds"`
	RPO            *rpoResult     `json:"rpo,omitempty"`
	Restore        *restoreResult `json:"restore,omitempty"`
}

// backupSettings are the counts and durations the section used.
type backupSettings struct {
	Rounds       int     `json:"rounds"`
	Inserts      int     `json:"inserts_per_write_rate_run"`
	DelaySeconds float64 `json:"backup_delay_seconds"`
	RPOSeconds   float64 `json:"rpo_seconds"`
	RPOSampleMS  float64 `json:"rpo_sample_interval_ms"`
	RestoreMiB   int     `json:"restore_mib"`
}

// backupBarSet are the targets, reported next to the results,
// never asserted.
type backupBarSet struct {
	WriteRateRatio    float64 `json:"write_rate_ratio_min"` // backup on vs off
	RPOP99Seconds     float64 `json:"rpo_p99_seconds_max"`  // at RPORate tx/s
	RPORate           float64 `json:"rpo_rate"`
	RestoreMBPerSec   float64 `json:"restore_mb_per_sec_min"` // of a RestoreDatabaseMB database, loopback S3
	RestoreDatabaseMB float64 `json:"restore_database_mb"`
}

// rpoResult is how far behind the backup was while a paced writer
// committed.
type rpoResult struct {
	TargetRate    float64 `json:"target_rate"`
	Commits       int     `json:"commits"`
	WriterSeconds float64 `json:"writer_seconds"`
	CommitRate    float64 `json:"commit_rate"` // achieved
	Samples       int     `json:"samples"`
	// From each sample: the time since the primary committed the first
	// transaction the backup lacked (0 when caught up).
	P50Seconds float64 `json:"p50_seconds"`
	P99Seconds float64 `json:"p99_seconds"`
	MaxSeconds float64 `json:"max_seconds"`
	// NodeLagMaxSeconds is the most the node's own backup.lag_seconds
	// read in the samples.
	NodeLagMaxSeconds float64 `json:"node_lag_max_seconds"`
	// CatchUpSeconds: from the writer's end until the backup had all.
	CatchUpSeconds float64 `json:"catch_up_seconds"`
}

// restoreResult is a restore of the newest state of a big database from
// the bucket to local disk.
type restoreResult struct {
	DatabaseBytes   int64   `json:"database_bytes"` // page_count * page_size on the primary
	WriteSeconds    float64 `json:"write_seconds"`  // writing it on the primary
	BackedUpSeconds float64 `json:"backed_up_seconds"`
	Seconds         float64 `json:"seconds"` // backup.Restore, bucket opened
	Objects         int     `json:"objects"`
	ReadBytes       int64   `json:"read_bytes"`
	RestoredBytes   int64   `json:"restored_bytes"` // page_size * page_count of the restored file
	MBPerSec        float64 `json:"mb_per_sec"`     // database MB (10^6 bytes) / Seconds
	ReadMBPerSec    float64 `json:"read_mb_per_sec"`
}

// writeMarkdown prints the "## Backup" section.
func (br *backupReport) writeMarkdown(b io.Writer) {
	s, bar := br.Settings, br.Bars
	fmt.Fprintf(b, "## Backup\n\n"+
		"Continuous backup (`backup.type: s3`, `delay: %ss`) to SeaweedFS's S3 server (`weed mini`, internal/s3test) on loopback; "+
		"primaries are `pagewire mount` processes with a static lease, every SQLite client a Python process. "+
		"Bars are the issue's targets, shown for comparison and asserted nowhere.\n\n", fmtFloat(s.DelaySeconds))

	// The write rates.
	if len(br.RoundRatios) > 0 {
		fmt.Fprintf(b, "### The primary's write rate, backup off and on\n\n"+
			"insert-normal (autocommit 1-row inserts, synchronous=NORMAL, %s per run), a fresh database per run, on plain disk "+
			"and on two primaries up side by side, one without a backup section and one with; each round runs all three, "+
			"in rotating order, and after the run with backup on waits until the node reports the backup has all of it "+
			"(%s s, median). Rates are medians of %d round(s); \"vs backup off\" is the median of the rounds' ratios.\n\n",
			formatInt(s.Inserts), fmtSeconds(median(br.CatchUpSeconds)), s.Rounds)
		fmt.Fprintf(b, "| target | insert-normal | vs backup off | vs plain disk | bar |\n|---|---|---|---|---|\n")
		fmt.Fprintf(b, "| plain disk | %s tx/s | | | |\n", formatRate(br.Disk.MedianRate))
		fmt.Fprintf(b, "| mount, backup off | %s tx/s | | %s | |\n", formatRate(br.Off.MedianRate), formatRatio(br.OffVsDisk))
		fmt.Fprintf(b, "| mount, backup on | %s tx/s | %s | %s | ≥ %s |\n\n", formatRate(br.On.MedianRate),
			formatRatio(br.Ratio), formatRatio(br.OnVsDisk), formatRatio(bar.WriteRateRatio))
	}

	// The RPO.
	if r := br.RPO; r != nil {
		fmt.Fprintf(b, "### RPO\n\n"+
			"A writer (autocommit 1-row inserts, synchronous=NORMAL) paced at %s tx/s for %s s on the primary with backup on; "+
			"every %s ms the harness reads GET /api/v1/dbs/{db}: the primary's TXID and the backup's (`backup.txid`, "+
			"the newest restorable). Each reading's RPO is the time since the primary committed the first transaction "+
			"the backup lacked (the writer's own commit times), 0 when caught up. "+
			"The node's own `backup.lag_seconds` peaked at %s s; after the writer stopped the backup had everything %s s later.\n\n",
			formatRate(r.TargetRate), fmtFloat(s.RPOSeconds), fmtFloat(s.RPOSampleMS), fmtSeconds(r.NodeLagMaxSeconds), fmtSeconds(r.CatchUpSeconds))
		fmt.Fprintf(b, "| commits | samples | p50 | p99 | max | bar (p99) | met |\n|---|---|---|---|---|---|---|\n")
		fmt.Fprintf(b, "| %s at %s tx/s | %d | %s s | %s s | %s s | ≤ %s s at %s tx/s | %s |\n\n",
			formatInt(r.Commits), formatRate(r.CommitRate), r.Samples, fmtSeconds(r.P50Seconds), fmtSeconds(r.P99Seconds),
			fmtSeconds(r.MaxSeconds), fmtFloat(bar.RPOP99Seconds), formatRate(bar.RPORate), yesNo(r.P99Seconds <= bar.RPOP99Seconds))
	}

	// The restore.
	if r := br.Restore; r != nil {
		fmt.Fprintf(b, "### Restore\n\n"+
			"A database of %d MiB (1 MiB random blobs, in %d transactions; written in %s s, backed up %s s later) restored, "+
			"newest state, from the bucket to local disk with backup.Restore (as `pagewire restore`), every object's checksums "+
			"verified. MB/s is the database's size (page_count × page_size, 10^6 bytes) over the restore's time.\n\n",
			s.RestoreMiB, min(backupRestoreTxns, s.RestoreMiB), fmtSeconds(r.WriteSeconds), fmtSeconds(r.BackedUpSeconds))
		fmt.Fprintf(b, "| database | objects read | bytes read | restore | restore rate | bar |\n|---|---|---|---|---|---|\n")
		fmt.Fprintf(b, "| %.1f MB | %d | %.1f MB | %s s | %.1f MB/s | ≥ %s MB/s (%s MB database) |\n\n",
			float64(r.DatabaseBytes)/1e6, r.Objects, float64(r.ReadBytes)/1e6, fmtSeconds(r.Seconds), r.MBPerSec,
			fmtFloat(bar.RestoreMBPerSec), fmtFloat(bar.RestoreDatabaseMB))
	}
}

// fmtSeconds is a duration in seconds to the millisecond.
func fmtSeconds(v float64) string { return fmt.Sprintf("%.3f", v) }

// yesNo is a bar's verdict.
func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

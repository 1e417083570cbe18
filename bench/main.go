package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil && ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "bench: interrupted; nodes stopped, nothing left mounted:", err)
		stop()
		os.Exit(130)
	case err != nil:
		fmt.Fprintln(os.Stderr, "bench:", err)
		stop()
		os.Exit(1)
	}
}

// options are the command line's settings.
type options struct {
	Bin     string
	Dir     string
	Rounds  int
	Inserts int
	Reads   int
	Rows    int
	JSON    string
	Quick   bool

	// Sections: -replication runs only the replication section,
	// -no-replication only the plain disk vs mount workloads.
	OnlyReplication bool
	NoReplication   bool
	// OnlySync runs only the replication section's synchronous
	// replication write rates.
	OnlySync      bool
	OnlyProxy     bool
	NoProxy       bool
	OnlyExport    bool
	NoExport      bool
	LagSeconds    float64
	LagRate       float64
	LagPollPause  time.Duration
	LagCSV        string
	ApplyRate     float64
	SnapshotMiB   int
	ExportMiB     int
	ExportSeconds float64

	// -vacuum runs only the VACUUM section, which is off otherwise: it
	// needs about 7.5 times -vacuum-gib of disk, and minutes.
	OnlyVacuum bool
	VacuumGiB  float64

	// -split runs only the split-mode section, which is off otherwise.
	OnlySplit bool

	// -backup runs only the backup section, which is off otherwise: it
	// needs the SeaweedFS weed binary, and minutes.
	OnlyBackup       bool
	BackupSeconds    float64
	BackupRestoreMiB int
}

// only reports whether a flag asked for one section alone.
func (o options) only() bool {
	return o.OnlyReplication || o.OnlySync || o.OnlyProxy || o.OnlyExport || o.OnlyVacuum || o.OnlyBackup || o.OnlySplit
}

// workloads reports whether the plain disk vs mount workloads run.
func (o options) workloads() bool { return !o.only() }

// replication reports whether the replication section runs.
func (o options) replication() bool {
	return o.OnlyReplication || o.OnlySync || (!o.only() && !o.NoReplication)
}

// proxy reports whether the proxy section runs.
func (o options) proxy() bool { return o.OnlyProxy || (!o.only() && !o.NoProxy) }

// export reports whether the export section runs.
func (o options) export() bool { return o.OnlyExport || (!o.only() && !o.NoExport) }

// Counts -quick uses for flags not given explicitly.
const (
	quickInserts     = 200
	quickReads       = 2000
	quickRows        = 5000
	quickLagSeconds  = 1
	quickSnapshotMiB = 8
	// The export section's database must outgrow the stream's windows
	// even in a smoke run; its writer runs shorter.
	quickExportSeconds = 1
	// The backup section's RPO run must outlast backup.delay a few times.
	quickBackupSeconds    = 5
	quickBackupRestoreMiB = 8
)

// parseFlags parses the command line: flags, then -quick's counts for the
// ones not given, then checks.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := newFlagSet(&o, stderr)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.Quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		o.applyQuick(set)
	}
	return o, o.check()
}

// newFlagSet returns the flag set that parses into o.
func newFlagSet(o *options, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)

	// The workloads.
	fs.StringVar(&o.Bin, "bin", "", "pagewire binary `path` (default: go build ./cmd/pagewire, without -race, into the work folder)")
	fs.StringVar(&o.Dir, "dir", "", "work `folder`, absent or empty, kept after the run (default: a temp dir, removed after);\n"+
		"the plain-disk target and the node's data.dir live here, so its filesystem is the one measured")
	fs.IntVar(&o.Rounds, "rounds", 3, "rounds per workload and target; the report shows the median")
	fs.IntVar(&o.Inserts, "inserts", 3000, "autocommit inserts per run at synchronous=NORMAL; FULL runs a fifth of it")
	fs.IntVar(&o.Reads, "reads", 50000, "point-read queries per run")
	fs.IntVar(&o.Rows, "rows", 100000, "rows in the big transaction")
	fs.StringVar(&o.JSON, "json", "", "also write the results as JSON to this `file`")

	// Sections.
	fs.BoolVar(&o.OnlyReplication, "replication", false, "run only the replication section (default: the workloads, then replication)")
	fs.BoolVar(&o.OnlySync, "sync", false, "run only the replication section's synchronous replication write rates")
	fs.BoolVar(&o.NoReplication, "no-replication", false, "skip the replication section")
	fs.BoolVar(&o.OnlyProxy, "proxy", false, "run only the proxy section: the example app's writes on plain disk and through a primary's and a replica's proxy")
	fs.BoolVar(&o.NoProxy, "no-proxy", false, "skip the proxy section")
	fs.BoolVar(&o.OnlyExport, "export", false, "run only the export section: a writer on the primary, undisturbed and while an export stream is open and not read")
	fs.BoolVar(&o.NoExport, "no-export", false, "skip the export section")
	fs.BoolVar(&o.OnlyVacuum, "vacuum", false, "run only the VACUUM section (off otherwise): a database of -vacuum-gib on a primary with two replicas,\n"+
		"VACUUM on the primary's mount and on plain disk, and the peak RSS of every pagewire process; needs about 7.5 times -vacuum-gib of disk")
	fs.Float64Var(&o.VacuumGiB, "vacuum-gib", 2, "vacuum: size in GiB of the database VACUUM rewrites")
	fs.BoolVar(&o.OnlySplit, "split", false, "run only the split-mode section (off otherwise): point reads and NORMAL inserts through pagewire fuse\n"+
		"in its own process against a node's storage socket, and through a node's own mount, in the same rounds")
	fs.BoolVar(&o.OnlyBackup, "backup", false, "run only the backup section (off otherwise): a primary's write rate with continuous backup to a\n"+
		"SeaweedFS S3 server on loopback off and on, the backup's RPO at 1,000 tx/s, and a restore from it; needs `make seaweedfs`")
	fs.Float64Var(&o.BackupSeconds, "backup-seconds", 60, "backup: how long the RPO writer commits at 1,000 tx/s")
	fs.IntVar(&o.BackupRestoreMiB, "backup-restore-mib", 200, "backup: size in MiB of the database restored from the backup")

	// The replication section.
	fs.Float64Var(&o.LagSeconds, "lag-seconds", 5, "replication: how long the writer runs for each visibility-lag measurement")
	fs.Float64Var(&o.LagRate, "lag-rate", 1000, "replication: commits per second the lag writer is paced at")
	fs.DurationVar(&o.LagPollPause, "lag-poll-pause", 100*time.Microsecond, "replication: the lag poller's sleep between polls of the replica;\n"+
		"0 polls in a tight loop, which on a small machine starves the replica's node: each -pos poll is a request it serves")
	fs.StringVar(&o.LagCSV, "lag-csv", "", "replication: also write each commit's time (from the first) and visibility lag to `PREFIX`-<seen by>.csv,\n"+
		"to see when the slow ones happen")
	fs.Float64Var(&o.ApplyRate, "apply-rate", 500, "replication: commits per second on the primary during the replica's point reads")
	fs.IntVar(&o.SnapshotMiB, "snapshot-mib", 200, "replication: size in MiB of the database a new replica catches up on by snapshot")

	// The export section.
	fs.IntVar(&o.ExportMiB, "export-mib", 96, "export: size in MiB of the exported database; more than the stream's flow-control windows\n"+
		"(16 MiB per stream, 64 MiB per connection at most) and socket buffers, or the node never blocks in its send")
	fs.Float64Var(&o.ExportSeconds, "export-seconds", 3, "export: how long each writer run commits")

	// A smoke run.
	fs.BoolVar(&o.Quick, "quick", false, fmt.Sprintf("a smoke run: 1 round, %d inserts, %d reads, %d rows, %d s of lag, a %d MiB snapshot, %d s export writers,\n"+
		"a %d s backup RPO run and a %d MiB restore, unless set explicitly",
		quickInserts, quickReads, quickRows, quickLagSeconds, quickSnapshotMiB, quickExportSeconds, quickBackupSeconds, quickBackupRestoreMiB))
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	return fs
}

// usage is -h's text before the flags.
const usage = `usage: go run ./bench [flags]

Runs the same SQLite workloads (Python sqlite3, WAL mode) on a plain-disk
folder and on a pagewire mount served by a node it starts, and prints rates,
mount/disk ratios and FUSE requests and gRPC calls per transaction.
Workloads: autocommit 1-row inserts at synchronous=NORMAL and FULL, point
reads one query per transaction, one big transaction.

Then, unless -no-replication, the replication section: a primary and up to
two replicas; the primary's write rate with 0, 1 and 2 replicas, visibility
lag from commit on the primary to visible on a replica, point reads on a
replica while it applies, and a new replica's snapshot catch-up.
-replication runs that section alone; -sync only its synchronous replication
write rates (insert-normal and insert-full, sync-replicas 0, 1 and 2).

Last, unless -no-proxy, the proxy section: the example app (deploy/example)
on plain disk and behind a primary's and a replica's proxy; sequential
JSON writes through each. -proxy runs that section alone.

Last, unless -no-export, the export section: a writer on the primary's
mount, undisturbed and while a client holds an ExportDatabase stream of
the same database open without reading it. -export runs that section
alone.

-vacuum runs, alone, the VACUUM section (off otherwise): a database of
-vacuum-gib GiB on a primary with two replicas, VACUUM on the primary's
mount and on plain disk, and the peak RSS of every pagewire process (each
node and each apply worker) during the VACUUM and its replication.

-split runs, alone, the split-mode section (off otherwise): a node with its
own mount, and a node started with -external-fuse whose storage socket
` + "`pagewire fuse`" + ` mounts in its own process; point reads and NORMAL inserts on
both mounts in the same rounds, and the split/in-process ratios.

-backup runs, alone, the backup section (off otherwise): a SeaweedFS S3
server on loopback; insert-normal on plain disk and on primaries with
backup off and on (backup.delay 1s); the backup's RPO while a writer
commits 1,000 tx/s for -backup-seconds; a -backup-restore-mib MiB database
restored from the bucket to local disk.

Needs root (FUSE) and python3.

flags:
`

// applyQuick sets -quick's counts for the flags not in set.
func (o *options) applyQuick(set map[string]bool) {
	if !set["rounds"] {
		o.Rounds = 1
	}
	if !set["inserts"] {
		o.Inserts = quickInserts
	}
	if !set["reads"] {
		o.Reads = quickReads
	}
	if !set["rows"] {
		o.Rows = quickRows
	}
	if !set["lag-seconds"] {
		o.LagSeconds = quickLagSeconds
	}
	if !set["snapshot-mib"] {
		o.SnapshotMiB = quickSnapshotMiB
	}
	if !set["export-seconds"] {
		o.ExportSeconds = quickExportSeconds
	}
	if !set["backup-seconds"] {
		o.BackupSeconds = quickBackupSeconds
	}
	if !set["backup-restore-mib"] {
		o.BackupRestoreMiB = quickBackupRestoreMiB
	}
}

// check reports the first bad value or combination of flags.
func (o options) check() error {
	switch {
	case o.Rounds < 1:
		return errors.New("-rounds must be at least 1")
	case o.Inserts < 5:
		return errors.New("-inserts must be at least 5 (FULL runs a fifth of it)")
	case o.Reads < 1:
		return errors.New("-reads must be at least 1")
	case o.Rows < 1:
		return errors.New("-rows must be at least 1")
	case (o.OnlyReplication || o.OnlySync) && o.NoReplication:
		return errors.New("-replication and -sync exclude -no-replication")
	case o.OnlySync && (o.OnlyReplication || o.OnlyProxy || o.OnlyExport || o.OnlyVacuum):
		return errors.New("-sync excludes -replication, -proxy, -export and -vacuum")
	case o.OnlyProxy && (o.NoProxy || o.OnlyReplication):
		return errors.New("-proxy excludes -no-proxy and -replication")
	case o.OnlyExport && (o.NoExport || o.OnlyReplication || o.OnlyProxy):
		return errors.New("-export excludes -no-export, -replication and -proxy")
	case o.LagSeconds <= 0 || o.LagRate <= 0 || o.ApplyRate <= 0:
		return errors.New("-lag-seconds, -lag-rate and -apply-rate must be positive")
	case o.LagPollPause < 0:
		return errors.New("-lag-poll-pause must not be negative")
	case o.LagSeconds*o.LagRate < 1:
		return errors.New("-lag-seconds times -lag-rate must be at least one commit")
	case o.SnapshotMiB < 1:
		return errors.New("-snapshot-mib must be at least 1")
	case o.ExportMiB < 1 || o.ExportSeconds <= 0:
		return errors.New("-export-mib must be at least 1 and -export-seconds positive")
	case o.OnlyVacuum && (o.OnlyReplication || o.OnlyProxy):
		return errors.New("-vacuum excludes -replication and -proxy")
	case o.VacuumGiB*1024 < 1:
		return errors.New("-vacuum-gib must be at least 1/1024 (1 MiB)")
	case o.OnlyBackup && (o.OnlyReplication || o.OnlySync || o.OnlyProxy || o.OnlyExport || o.OnlyVacuum):
		return errors.New("-backup excludes -replication, -sync, -proxy, -export and -vacuum")
	case o.OnlySplit && (o.OnlyReplication || o.OnlySync || o.OnlyProxy || o.OnlyExport || o.OnlyVacuum || o.OnlyBackup):
		return errors.New("-split excludes -replication, -sync, -proxy, -export, -vacuum and -backup")
	case o.BackupSeconds*backupRPORate < 1 || o.BackupRestoreMiB < 1:
		return errors.New("-backup-seconds must be at least one commit at 1,000 tx/s and -backup-restore-mib at least 1")
	}
	return nil
}

// ops is how many ops a run of w does.
func (o options) ops(w workload) int {
	switch w.Name {
	case "insert-normal":
		return o.Inserts
	case "insert-full":
		return o.Inserts / 5
	case "point-read":
		return o.Reads
	default:
		return o.Rows
	}
}

// run parses args, runs the sections asked for and prints the report to
// stdout; progress goes to stderr. Whatever happens, every node it started
// is stopped and its mount gone when run returns.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}

	// Prepare the work folder, the binary and the plain-disk target.
	workDir, cleanupDir, err := prepareWorkDir(o.Dir)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, cleanupDir()) }()
	bin, err := pagewireBinary(ctx, o.Bin, workDir, stderr)
	if err != nil {
		return err
	}
	mach, err := machineInfo(ctx, bin, workDir)
	if err != nil {
		return err
	}
	diskDir := filepath.Join(workDir, "disk")
	if err := os.Mkdir(diskDir, 0o755); err != nil {
		return err
	}

	// Run the sections asked for.
	rep := &report{
		Machine: mach,
		Settings: settings{Rounds: o.Rounds, Inserts: o.Inserts, InsertsFull: o.Inserts / 5,
			Reads: o.Reads, Rows: o.Rows},
	}
	if o.workloads() {
		if rep.Workloads, err = runWorkloads(ctx, o, bin, workDir, diskDir, stderr); err != nil {
			return err
		}
	}
	if o.replication() {
		rep.Replication = &replicationReport{
			Settings: replicationSettings{Rounds: o.Rounds, Inserts: o.Inserts, Reads: o.Reads, LagRate: o.LagRate,
				LagSeconds: o.LagSeconds, LagPollPauseMS: float64(o.LagPollPause) / 1e6, ApplyRate: o.ApplyRate, SnapshotMiB: o.SnapshotMiB},
			Bars: replicationBars,
		}
		if err := runReplication(ctx, o, bin, workDir, diskDir, stderr, rep.Replication); err != nil {
			// Print what was measured before the failure, then fail.
			if ctx.Err() == nil {
				_ = rep.writeMarkdown(stdout)
			}
			return fmt.Errorf("replication: %w", err)
		}
	}

	if o.proxy() {
		if rep.Proxy, err = runProxy(ctx, o, bin, workDir, diskDir, stderr); err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
	}
	if o.export() {
		if rep.Export, err = runExportSection(ctx, o, bin, workDir, stderr); err != nil {
			return fmt.Errorf("export: %w", err)
		}
	}

	if o.OnlyVacuum {
		if rep.Vacuum, err = runVacuum(ctx, o, bin, workDir, diskDir, stderr); err != nil {
			return fmt.Errorf("vacuum: %w", err)
		}
	}
	if o.OnlySplit {
		if rep.Split, err = runSplit(ctx, o, bin, workDir, stderr); err != nil {
			return fmt.Errorf("split: %w", err)
		}
	}
	if o.OnlyBackup {
		rep.Backup = &backupReport{Bars: backupBars}
		if err := runBackup(ctx, o, bin, workDir, diskDir, stderr, rep.Backup); err != nil {
			// Print what was measured before the failure, then fail.
			if ctx.Err() == nil {
				_ = rep.writeMarkdown(stdout)
			}
			return fmt.Errorf("backup: %w", err)
		}
	}

	// Print the report, and write it as JSON if asked.
	if err := rep.writeMarkdown(stdout); err != nil {
		return err
	}
	if o.JSON != "" {
		if err := rep.writeJSON(o.JSON); err != nil {
			return fmt.Errorf("write -json: %w", err)
		}
	}
	return nil
}

// runWorkloads starts a node, runs every workload on both targets and
// stops the node.
func runWorkloads(ctx context.Context, o options, bin, workDir, diskDir string, stderr io.Writer) (_ []workloadReport, err error) {
	fmt.Fprintf(stderr, "bench: starting node (%s) in %s\n", bin, workDir)
	n, err := startNode(ctx, bin, nodeSpec{Name: "node", Dir: workDir})
	if err != nil {
		return nil, err
	}
	// Stopped here on every path, before cleanupDir removes the folder.
	defer func() { err = errors.Join(err, n.stop()) }()

	// Results, and the node's counters summed over the mount's runs, per
	// workload.
	client := &http.Client{Timeout: 10 * time.Second}
	scrape := func(ctx context.Context) (*counters, error) {
		return scrapeCounters(ctx, client, n.URL+"/metrics")
	}
	results := make([]workloadReport, len(workloads))
	sums := make([]*counters, len(workloads))
	dbs := make([][]string, len(workloads))
	for i, w := range workloads {
		ops := o.ops(w)
		results[i] = workloadReport{Name: w.Name, What: w.What, Unit: w.Unit, Ops: ops, Transactions: w.transactions(ops)}
		sums[i] = newCounters()
	}

	// Each round runs every workload on both targets.
	for round := 1; round <= o.Rounds; round++ {
		for i, w := range workloads {
			// Alternate which target goes first, so neither always runs
			// on a warmer (or busier) machine.
			targets := []string{"disk", "mount"}
			if round%2 == 0 {
				targets = []string{"mount", "disk"}
			}
			name := fmt.Sprintf("%s_r%d.db", w.File, round)
			for _, target := range targets {
				dir, sc := diskDir, scraper(nil)
				if target == "mount" {
					dir, sc = n.MountDir, scrape
				}
				res, err := runWorkload(ctx, w, filepath.Join(dir, name), results[i].Ops, workDir, sc)
				if err != nil {
					return nil, fmt.Errorf("round %d, %s: %w", round, target, err)
				}
				if target == "mount" {
					results[i].Mount.add(res)
					sums[i].add(res.After.sub(res.Before))
					dbs[i] = append(dbs[i], name)
				} else {
					results[i].Disk.add(res)
				}
				fmt.Fprintf(stderr, "bench: round %d/%d %-13s %-5s %s %s in %.3f s\n", round, o.Rounds, w.Name, target,
					formatRate(float64(res.Ops)/res.Seconds), w.Unit, res.Seconds)
			}
		}
	}

	// add kept the medians; fill in the ratios and per-transaction counts.
	for i, w := range workloads {
		r := &results[i]
		if r.Disk.MedianRate > 0 {
			r.Ratio = r.Mount.MedianRate / r.Disk.MedianRate
		}
		r.PerTx = perTxFrom(sums[i], dbs[i], o.Rounds*w.transactions(r.Ops))
	}

	// Stop it now: the replication section should not share the CPUs with it.
	if err := n.stop(); err != nil {
		return nil, err
	}
	return results, nil
}

// prepareWorkDir returns the absolute, symlink-free work folder and what to
// do with it at the end: remove a temp dir; keep a -dir.
func prepareWorkDir(dir string) (string, func() error, error) {
	keep := func() error { return nil }
	if dir == "" {
		tmp, err := os.MkdirTemp("", "pagewire-bench-")
		if err != nil {
			return "", nil, err
		}
		tmp, err = filepath.EvalSymlinks(tmp)
		if err != nil {
			return "", nil, err
		}
		return tmp, func() error { return os.RemoveAll(tmp) }, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", nil, err
	}
	if len(entries) > 0 {
		return "", nil, fmt.Errorf("-dir %q is not empty: remove it or choose another", dir)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", nil, err
	}
	abs, err = filepath.EvalSymlinks(abs)
	return abs, keep, err
}

// pagewireBinary returns the absolute path of bin, or of a pagewire built
// into workDir when bin is "".
func pagewireBinary(ctx context.Context, bin, workDir string, stderr io.Writer) (string, error) {
	if bin == "" {
		var err error
		if bin, err = buildPagewire(ctx, workDir, stderr); err != nil {
			return "", err
		}
	}
	return filepath.Abs(bin)
}

// buildPagewire builds ./cmd/pagewire (no -race: it would dominate the
// numbers) into dir and returns the binary's path.
func buildPagewire(ctx context.Context, dir string, stderr io.Writer) (string, error) {
	return goBuild(ctx, dir, "pagewire", "github.com/pagewire/pagewire/cmd/pagewire", stderr)
}

// goBuild builds pkg into dir/name and returns its path.
func goBuild(ctx context.Context, dir, name, pkg string, stderr io.Writer) (string, error) {
	bin := filepath.Join(dir, name)
	fmt.Fprintln(stderr, "bench: building", name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build %s (run from inside the module, or pass -bin): %w", name, err)
	}
	return bin, nil
}

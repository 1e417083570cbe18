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
		fmt.Fprintln(os.Stderr, "bench: interrupted; node stopped, nothing left mounted:", err)
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
}

// Counts -quick uses for flags not given explicitly.
const (
	quickInserts = 200
	quickReads   = 2000
	quickRows    = 5000
)

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Bin, "bin", "", "pagewire binary `path` (default: go build ./cmd/pagewire, without -race, into the work folder)")
	fs.StringVar(&o.Dir, "dir", "", "work `folder`, absent or empty, kept after the run (default: a temp dir, removed after);\n"+
		"the plain-disk target and the node's data.dir live here, so its filesystem is the one measured")
	fs.IntVar(&o.Rounds, "rounds", 3, "rounds per workload and target; the report shows the median")
	fs.IntVar(&o.Inserts, "inserts", 3000, "autocommit inserts per run at synchronous=NORMAL; FULL runs a fifth of it")
	fs.IntVar(&o.Reads, "reads", 50000, "point-read queries per run")
	fs.IntVar(&o.Rows, "rows", 100000, "rows in the big transaction")
	fs.StringVar(&o.JSON, "json", "", "also write the results as JSON to this `file`")
	fs.BoolVar(&o.Quick, "quick", false, fmt.Sprintf("a smoke run: 1 round, %d inserts, %d reads, %d rows, unless set explicitly", quickInserts, quickReads, quickRows))
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: go run ./bench [flags]

Runs the same SQLite workloads (Python sqlite3, WAL mode) on a plain-disk
folder and on a pagewire mount served by a node it starts, and prints rates,
mount/disk ratios and FUSE requests and gRPC calls per transaction.
Workloads: autocommit 1-row inserts at synchronous=NORMAL and FULL, point
reads one query per transaction, one big transaction. Needs root (FUSE) and
python3.

flags:
`)
		fs.PrintDefaults()
	}
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
	}
	switch {
	case o.Rounds < 1:
		return o, errors.New("-rounds must be at least 1")
	case o.Inserts < 5:
		return o, errors.New("-inserts must be at least 5 (FULL runs a fifth of it)")
	case o.Reads < 1:
		return o, errors.New("-reads must be at least 1")
	case o.Rows < 1:
		return o, errors.New("-rows must be at least 1")
	}
	return o, nil
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

// run parses args, starts a node, runs every workload on both targets and
// prints the report to stdout; progress goes to stderr. Whatever happens,
// the node is stopped and its mount gone when run returns.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}

	workDir, cleanupDir, err := prepareWorkDir(o.Dir)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, cleanupDir()) }()

	bin := o.Bin
	if bin == "" {
		if bin, err = buildPagewire(ctx, workDir, stderr); err != nil {
			return err
		}
	}
	if bin, err = filepath.Abs(bin); err != nil {
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

	fmt.Fprintf(stderr, "bench: starting node (%s) in %s\n", bin, workDir)
	n, err := startNode(ctx, bin, workDir)
	if err != nil {
		return err
	}
	// Stopped here on every path, before cleanupDir removes the folder.
	defer func() { err = errors.Join(err, n.stop()) }()

	rep := &report{
		Machine: mach,
		Settings: settings{Rounds: o.Rounds, Inserts: o.Inserts, InsertsFull: o.Inserts / 5,
			Reads: o.Reads, Rows: o.Rows},
	}
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
					return fmt.Errorf("round %d, %s: %w", round, target, err)
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
	for i, w := range workloads {
		r := &results[i]
		if r.Disk.MedianRate > 0 {
			r.Ratio = r.Mount.MedianRate / r.Disk.MedianRate
		}
		r.PerTx = perTxFrom(sums[i], dbs[i], o.Rounds*w.transactions(r.Ops))
	}
	rep.Workloads = results

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

// buildPagewire builds ./cmd/pagewire (no -race: it would dominate the
// numbers) into dir and returns the binary's path.
func buildPagewire(ctx context.Context, dir string, stderr io.Writer) (string, error) {
	bin := filepath.Join(dir, "pagewire")
	fmt.Fprintln(stderr, "bench: building pagewire")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/pagewire/pagewire/cmd/pagewire")
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build pagewire (run from inside the module, or pass -bin): %w", err)
	}
	return bin, nil
}

package main

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
)

// workloadScript is the Python side of every workload; see its header for
// the stdin/stdout protocol.
//
//go:embed workload.py
var workloadScript string

// workload is one SQLite workload, the same on both targets.
type workload struct {
	Name   string // as workload.py knows it, e.g. "insert-normal"
	File   string // database file name prefix, e.g. "ins_normal"
	What   string // one line for the report
	Unit   string // of the rate, e.g. "tx/s"
	Writes bool   // its transactions write
	// OneTxn: the whole timed part is one transaction (per-transaction counts
	// are per run); otherwise each op is a transaction.
	OneTxn bool
}

// workloads in report order.
var workloads = []workload{
	{Name: "insert-normal", File: "ins_normal", What: "autocommit 1-row inserts, synchronous=NORMAL", Unit: "tx/s", Writes: true},
	{Name: "insert-full", File: "ins_full", What: "autocommit 1-row inserts, synchronous=FULL", Unit: "tx/s", Writes: true},
	{Name: "point-read", File: "read", What: "point reads, one query per transaction", Unit: "q/s"},
	{Name: "big-txn", File: "big", What: "one transaction of 100-byte rows, synchronous=NORMAL", Unit: "rows/s", Writes: true, OneTxn: true},
}

// transactions is how many transactions a timed run of ops ops made.
func (w workload) transactions(ops int) int {
	if w.OneTxn {
		return 1
	}
	return ops
}

// runResult is what one timed run measured.
type runResult struct {
	Ops     int
	Seconds float64
	// Before and After are the node's counters around the timed part; nil
	// on plain disk.
	Before, After *counters
}

// scraper reads the node's counters; nil for plain-disk runs.
type scraper func(ctx context.Context) (*counters, error)

// runWorkload runs w on the fresh database path with n ops. When scrape is
// not nil it is called just before and just after the timed part.
func runWorkload(ctx context.Context, w workload, path string, n int, workDir string, scrape scraper) (res runResult, err error) {
	var before, after func(context.Context) error
	if scrape != nil {
		before = func(ctx context.Context) (err error) { res.Before, err = scrape(ctx); return err }
		after = func(ctx context.Context) (err error) { res.After, err = scrape(ctx); return err }
	}
	res.Ops, res.Seconds, err = timedRun(ctx, fmt.Sprintf("workload %s on %s", w.Name, path), workloadScript, workDir,
		[]string{w.Name, path, strconv.Itoa(n)}, n, before, after)
	return res, err
}

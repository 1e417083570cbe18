package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// workloadScript is the Python side of every workload; see its header for
// the stdin/stdout protocol.
//
//go:embed workload.py
var workloadScript string

// workloadTimeout bounds one Python run, setup and close included, so a hung
// mount ends the bench with an error instead of never.
const workloadTimeout = 10 * time.Minute

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
	ctx, cancel := context.WithTimeout(ctx, workloadTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "python3", "-c", workloadScript, w.Name, path, strconv.Itoa(n))
	cmd.Dir = workDir
	// Its own process group: a Ctrl-C reaches the harness only, which then
	// ends the workload (ctx) before it stops the node. Pdeathsig: it does
	// not outlive a killed harness.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return res, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("start python3: %w", err)
	}
	defer func() {
		stdin.Close()
		werr := cmd.Wait()
		if err == nil && werr != nil {
			err = werr
		}
		switch {
		case err != nil && ctx.Err() != nil:
			err = fmt.Errorf("workload %s on %s: %w", w.Name, path, context.Cause(ctx))
		case err != nil:
			err = fmt.Errorf("workload %s on %s: %w\n%s", w.Name, path, err, strings.TrimSpace(stderr.String()))
		}
	}()
	lines := bufio.NewScanner(stdout)
	var ready struct{ Ready bool }
	if err := readLine(lines, &ready); err != nil {
		return res, err
	}
	if !ready.Ready {
		return res, errors.New("python did not say ready")
	}
	if scrape != nil {
		if res.Before, err = scrape(ctx); err != nil {
			return res, err
		}
	}
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		return res, err
	}
	var done struct {
		Ops     int     `json:"ops"`
		Seconds float64 `json:"seconds"`
	}
	if err := readLine(lines, &done); err != nil {
		return res, err
	}
	if scrape != nil {
		if res.After, err = scrape(ctx); err != nil {
			return res, err
		}
	}
	if done.Ops != n || done.Seconds <= 0 {
		return res, fmt.Errorf("python reported ops=%d seconds=%g, want ops=%d and seconds > 0", done.Ops, done.Seconds, n)
	}
	res.Ops, res.Seconds = done.Ops, done.Seconds
	return res, nil
}

// readLine decodes the next stdout line of workload.py into v.
func readLine(lines *bufio.Scanner, v any) error {
	if !lines.Scan() {
		if err := lines.Err(); err != nil {
			return err
		}
		return errors.New("python exited early")
	}
	if err := json.Unmarshal(lines.Bytes(), v); err != nil {
		return fmt.Errorf("python printed %q: %w", lines.Text(), err)
	}
	return nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// splitReport is the split-mode section: point reads and NORMAL inserts
// through `pagewire fuse` in its own process, against a node's storage
// socket, and through a node's own in-process mount, in the same rounds.
type splitReport struct {
	Rounds    int             `json:"rounds"`
	Workloads []splitWorkload `json:"workloads"`
}

// splitWorkload is one workload on both mounts.
type splitWorkload struct {
	Name   string       `json:"name"`
	What   string       `json:"what"`
	Unit   string       `json:"unit"`
	Ops    int          `json:"ops_per_round"`
	InProc targetResult `json:"in_process"`
	Split  targetResult `json:"split"`
	Ratio  float64      `json:"ratio"` // split median rate / in-process median rate
	// Bar is the minimum Ratio, reported beside it, never asserted.
	Bar float64 `json:"bar"`
}

// splitBars are issue 17's bar: split-mode point reads at least 80% and
// NORMAL inserts at least 50% of the in-process mount's rate.
var splitBars = map[string]float64{"point-read": 0.80, "insert-normal": 0.50}

// runSplit starts a node with its own mount, and a node with
// -external-fuse plus `pagewire fuse` on its socket, and runs point reads
// and NORMAL inserts on both mounts, alternating which goes first.
func runSplit(ctx context.Context, o options, bin, workDir string, stderr io.Writer) (_ *splitReport, err error) {
	fmt.Fprintf(stderr, "bench: split: starting a node with its own mount, and one with -external-fuse and pagewire fuse\n")
	inproc, err := startNode(ctx, bin, nodeSpec{Name: "in-process node", Dir: filepath.Join(workDir, "inproc")})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, inproc.stop()) }()
	external, err := startNode(ctx, bin, nodeSpec{Name: "external-fuse node", Dir: filepath.Join(workDir, "external"), Args: []string{"-external-fuse"}})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, external.stop()) }()
	fp, err := startFuse(ctx, bin, filepath.Join(external.DataDir, "storage.sock"), filepath.Join(workDir, "external", "split"))
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, fp.stop()) }()

	// The workloads, each round alternating which mount goes first.
	rep := &splitReport{Rounds: o.Rounds}
	for _, w := range workloads {
		if _, ok := splitBars[w.Name]; ok {
			rep.Workloads = append(rep.Workloads, splitWorkload{Name: w.Name, What: w.What, Unit: w.Unit, Ops: o.ops(w), Bar: splitBars[w.Name]})
		}
	}
	for round := 1; round <= o.Rounds; round++ {
		for i := range rep.Workloads {
			sw := &rep.Workloads[i]
			w := workloadNamed(sw.Name)
			targets := []string{"in-process", "split"}
			if round%2 == 0 {
				targets = []string{"split", "in-process"}
			}
			for _, target := range targets {
				dir, tr := inproc.MountDir, &sw.InProc
				if target == "split" {
					dir, tr = fp.Dir, &sw.Split
				}
				res, err := runWorkload(ctx, w, filepath.Join(dir, fmt.Sprintf("%s_r%d.db", w.File, round)), sw.Ops, workDir, nil)
				if err != nil {
					return nil, fmt.Errorf("round %d, %s: %w", round, target, err)
				}
				tr.add(res)
				fmt.Fprintf(stderr, "bench: split round %d/%d %-13s %-10s %s %s in %.3f s\n", round, o.Rounds, w.Name, target,
					formatRate(float64(res.Ops)/res.Seconds), w.Unit, res.Seconds)
			}
		}
	}
	for i := range rep.Workloads {
		if sw := &rep.Workloads[i]; sw.InProc.MedianRate > 0 {
			sw.Ratio = sw.Split.MedianRate / sw.InProc.MedianRate
		}
	}
	return rep, nil
}

// workloadNamed is the workload called name; it must exist.
func workloadNamed(name string) workload {
	for _, w := range workloads {
		if w.Name == name {
			return w
		}
	}
	panic("no workload " + name)
}

// writeMarkdown prints the split-mode table.
func (r *splitReport) writeMarkdown(b io.Writer) {
	fmt.Fprintf(b, "## Split mode: `pagewire fuse` in its own process vs the node's own mount\n\n")
	fmt.Fprintf(b, "Each rate is the median of %d round(s); the two mounts alternate within each round, "+
		"each served by its own node on the same machine.\n\n", r.Rounds)
	fmt.Fprintf(b, "| workload | in-process mount | split mount | split/in-process | bar |\n|---|---|---|---|---|\n")
	for _, w := range r.Workloads {
		fmt.Fprintf(b, "| %s: %s, %s per run | %s %s | %s %s | %s | ≥ %s |\n", w.Name, w.What, formatInt(w.Ops),
			formatRate(w.InProc.MedianRate), w.Unit, formatRate(w.Split.MedianRate), w.Unit, formatRatio(w.Ratio), formatRatio(w.Bar))
	}
	fmt.Fprintln(b)
}

// fuseProc is `pagewire fuse` mounting a node's storage socket.
type fuseProc struct {
	Dir  string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error
}

// startFuse starts `pagewire fuse` on dir against sock and waits until
// dir is mounted. On error nothing is left running or mounted.
func startFuse(ctx context.Context, bin, sock, dir string) (*fuseProc, error) {
	logFile, err := os.Create(dir + ".log")
	if err != nil {
		return nil, err
	}
	f := &fuseProc{Dir: dir, log: logFile, done: make(chan struct{})}
	f.cmd = exec.Command(bin, "fuse", "-storage", "unix://"+sock, "-dir", dir)
	f.cmd.Stdout, f.cmd.Stderr = logFile, logFile
	f.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM} // as a node's
	if err := f.cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	go func() {
		f.err = f.cmd.Wait()
		close(f.done)
	}()

	// Wait until it has mounted.
	ctx, cancel := context.WithTimeout(ctx, nodeReadyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if mounted, err := isMounted(dir); err != nil || mounted {
			if err != nil {
				return nil, errors.Join(err, f.stop())
			}
			return f, nil
		}
		select {
		case <-f.done:
			return nil, errors.Join(fmt.Errorf("pagewire fuse exited while starting: %v (log: %s)", f.err, logFile.Name()), f.stop())
		case <-ctx.Done():
			return nil, errors.Join(fmt.Errorf("pagewire fuse did not mount %s: %w", dir, ctx.Err()), f.stop())
		case <-tick.C:
		}
	}
}

// stop sends SIGTERM, waits (SIGKILL after nodeStopTimeout) and detaches
// the mount if it was left behind.
func (f *fuseProc) stop() error {
	var errs []error
	select {
	case <-f.done:
	default:
		_ = f.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-f.done:
		case <-time.After(nodeStopTimeout):
			_ = f.cmd.Process.Kill()
			<-f.done
			errs = append(errs, fmt.Errorf("pagewire fuse did not stop within %s of SIGTERM; killed it", nodeStopTimeout))
		}
	}
	f.log.Close()
	if mounted, _ := isMounted(f.Dir); mounted {
		errs = append(errs, fmt.Errorf("pagewire fuse left %s mounted; detached it: %v", f.Dir, syscall.Unmount(f.Dir, syscall.MNT_DETACH)))
	}
	return errors.Join(errs...)
}

package main

import (
	"bufio"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// vacuumScript is the Python side of the VACUUM section.
//
//go:embed vacuum.py
var vacuumScript string

const (
	// vacuumDB is the database the VACUUM section builds and vacuums.
	vacuumDB = "vacuum.db"
	// vacuumBuildStepMiB is how much one build process adds, and
	// vacuumChunkMiB the size of each of its transactions.
	vacuumBuildStepMiB = 512
	vacuumChunkMiB     = 64
	// vacuumCatchUpTimeout bounds the replicas' catch-up after the build
	// and after the VACUUM.
	vacuumCatchUpTimeout = 20 * time.Minute
	// vacuumRSSBarMiB is the bar: the peak RSS of every pagewire
	// process during the VACUUM.
	vacuumRSSBarMiB = 256
)

// vacuumReport is the VACUUM section's result.
type vacuumReport struct {
	Bytes         int64      `json:"bytes"`           // the database's size, page_count * page_size
	BuildSeconds  float64    `json:"build_seconds"`   // writing it on the primary, in transactions of vacuumChunkMiB
	DiskSeconds   float64    `json:"disk_seconds"`    // the same VACUUM on plain disk
	MountSeconds  float64    `json:"mount_seconds"`   // VACUUM on the primary's mount
	Ratio         float64    `json:"ratio"`           // disk seconds / mount seconds: the mount's speed as a share of disk's
	CaughtUpAfter float64    `json:"caught_up_after"` // seconds from the VACUUM's start until both replicas had its position
	Processes     []procPeak `json:"processes"`
	BarMiB        int        `json:"bar_mib"`
	MaxVacuumPeak float64    `json:"max_vacuum_peak_mib"`
}

// procPeak is one pagewire process's peak resident memory.
type procPeak struct {
	Node string `json:"node"` // "primary", "replica 1", ...
	Role string `json:"role"` // "node" or "apply worker"
	PID  int    `json:"pid"`
	// BuildMiB is VmHWM when the build had replicated: the peak since the
	// process started. VacuumMiB is VmHWM after the VACUUM had replicated,
	// the peak having been reset just before the VACUUM (clear_refs 5).
	BuildMiB  float64 `json:"build_peak_mib"`
	VacuumMiB float64 `json:"vacuum_peak_mib"`
}

// runVacuum builds a database of o.VacuumGiB on plain disk and times its
// VACUUM there; then builds it on a primary with two replicas, resets the
// peak RSS of every pagewire process, runs the same VACUUM on the primary's
// mount, waits until both replicas have its position and reads every
// process's peak RSS. Every node is stopped when it returns.
func runVacuum(ctx context.Context, o options, bin, workDir, diskDir string, stderr io.Writer) (_ *vacuumReport, err error) {
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, "bench: vacuum: "+format+"\n", args...) }
	mib := int(o.VacuumGiB * 1024)
	rep := &vacuumReport{BarMiB: vacuumRSSBarMiB}

	// SQLite builds VACUUM's copy in a temporary file: keep it in the work
	// folder, not /tmp.
	tmp := filepath.Join(workDir, "sqlite-tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, err
	}
	if err := os.Setenv("SQLITE_TMPDIR", tmp); err != nil {
		return nil, err
	}

	// 1. Plain disk: build, VACUUM, remove.
	diskPath := filepath.Join(diskDir, vacuumDB)
	logf("building a %d MiB database on plain disk", mib)
	if _, _, err := buildVacuumDB(ctx, diskPath, mib, workDir); err != nil {
		return nil, fmt.Errorf("build on plain disk: %w", err)
	}
	var vac struct {
		Bytes   int64   `json:"bytes"`
		Seconds float64 `json:"seconds"`
	}
	if err := runPython(ctx, "VACUUM on plain disk", vacuumScript, workDir, &vac, "vacuum", diskPath); err != nil {
		return nil, err
	}
	rep.DiskSeconds = vac.Seconds
	logf("VACUUM on plain disk: %.1f MB in %.2f s", float64(vac.Bytes)/1e6, vac.Seconds)
	for _, suffix := range []string{"", "-wal", "-shm"} {
		_ = os.Remove(diskPath + suffix)
	}

	// 2. A primary and two replicas.
	base := filepath.Join(workDir, "vacuum")
	var nodes []*node
	defer func() { err = errors.Join(err, stopNodes(nodes...)) }()
	p, err := startNode(ctx, bin, nodeSpec{Name: "primary", Dir: filepath.Join(base, "primary")})
	if err != nil {
		return nil, err
	}
	nodes = append(nodes, p)
	for i := 1; i <= 2; i++ {
		r, err := startNode(ctx, bin, nodeSpec{Name: fmt.Sprintf("replica %d", i), Dir: filepath.Join(base, fmt.Sprintf("replica%d", i)), Primary: p})
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, r)
	}

	// 3. The database on the primary, replicated.
	logf("building a %d MiB database on the primary, in transactions of %d MiB", mib, vacuumChunkMiB)
	bytes, seconds, err := buildVacuumDB(ctx, filepath.Join(p.MountDir, vacuumDB), mib, workDir)
	if err != nil {
		return nil, fmt.Errorf("build on the primary: %w", err)
	}
	rep.Bytes, rep.BuildSeconds = bytes, seconds
	logf("built %.1f MB in %.1f s; waiting for the replicas", float64(bytes)/1e6, seconds)
	if err := waitVacuumCaughtUp(ctx, p, nodes[1:]); err != nil {
		return nil, err
	}

	// 4. Every pagewire process's peak so far, then reset.
	procs, err := pagewireProcs(bin, nodes)
	if err != nil {
		return nil, err
	}
	for i := range procs {
		if procs[i].BuildMiB, err = peakRSS(procs[i].PID); err != nil {
			return nil, err
		}
		if err := resetPeakRSS(procs[i].PID); err != nil {
			return nil, err
		}
	}

	// 5. VACUUM on the primary, and the replicas' catch-up.
	logf("VACUUM on the primary")
	start := time.Now()
	if err := runPython(ctx, "VACUUM on the primary", vacuumScript, workDir, &vac, "vacuum", filepath.Join(p.MountDir, vacuumDB)); err != nil {
		return nil, err
	}
	rep.MountSeconds = vac.Seconds
	if rep.MountSeconds > 0 {
		rep.Ratio = rep.DiskSeconds / rep.MountSeconds
	}
	logf("VACUUM on the primary: %.2f s; waiting for the replicas", vac.Seconds)
	if err := waitVacuumCaughtUp(ctx, p, nodes[1:]); err != nil {
		return nil, err
	}
	rep.CaughtUpAfter = time.Since(start).Seconds()

	// 6. The peaks during the VACUUM. A process that is gone (an apply
	// worker that was restarted) is an error: its peak is lost.
	for i := range procs {
		if procs[i].VacuumMiB, err = peakRSS(procs[i].PID); err != nil {
			return nil, fmt.Errorf("%s's %s (pid %d): %w", procs[i].Node, procs[i].Role, procs[i].PID, err)
		}
		rep.MaxVacuumPeak = max(rep.MaxVacuumPeak, procs[i].VacuumMiB)
	}
	rep.Processes = procs
	logf("replicas caught up %.1f s after the VACUUM started; largest peak RSS %.0f MiB", rep.CaughtUpAfter, rep.MaxVacuumPeak)
	return rep, nil
}

// buildVacuumDB grows the database at path to mib MiB, a step of at most
// vacuumBuildStepMiB per Python process (each one's timeout applies to a
// step), and returns its size and the seconds spent writing.
func buildVacuumDB(ctx context.Context, path string, mib int, workDir string) (int64, float64, error) {
	var bytes int64
	var seconds float64
	for target := min(mib, vacuumBuildStepMiB); ; target = min(mib, target+vacuumBuildStepMiB) {
		var made struct {
			Bytes   int64   `json:"bytes"`
			Seconds float64 `json:"seconds"`
		}
		if err := runPython(ctx, "build "+path, vacuumScript, workDir, &made, "build", path, strconv.Itoa(target), strconv.Itoa(vacuumChunkMiB)); err != nil {
			return 0, 0, err
		}
		bytes, seconds = made.Bytes, seconds+made.Seconds
		if target == mib {
			return bytes, seconds, nil
		}
	}
}

// waitVacuumCaughtUp waits until every replica's -pos of the database
// equals the primary's.
func waitVacuumCaughtUp(ctx context.Context, p *node, replicas []*node) error {
	want, err := readPos(p, vacuumDB)
	if err != nil {
		return err
	}
	for _, r := range replicas {
		if err := waitPos(ctx, r, vacuumDB, want, vacuumCatchUpTimeout); err != nil {
			return err
		}
	}
	return nil
}

// pagewireProcs lists each node's process and its pagewire children (the
// apply worker of a replica): every process whose executable is bin.
func pagewireProcs(bin string, nodes []*node) ([]procPeak, error) {
	bin, err := filepath.EvalSymlinks(bin)
	if err != nil {
		return nil, err
	}
	var out []procPeak
	for _, n := range nodes {
		pid := n.cmd.Process.Pid
		out = append(out, procPeak{Node: n.Name, Role: "node", PID: pid})
		for _, c := range descendants(pid) {
			if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", c)); err == nil && exe == bin {
				out = append(out, procPeak{Node: n.Name, Role: "apply worker", PID: c})
			}
		}
	}
	return out, nil
}

// peakRSS reads a process's VmHWM, in MiB.
func peakRSS(pid int) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmHWM %q: %w", rest, err)
			}
			return kb / 1024, nil
		}
	}
	if err := s.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// resetPeakRSS resets a process's VmHWM to its current RSS.
func resetPeakRSS(pid int) error {
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		return fmt.Errorf("reset the peak RSS of pid %d (needs root and Linux 4.0+): %w", pid, err)
	}
	return nil
}

// writeMarkdown prints the "## VACUUM" section.
func (v *vacuumReport) writeMarkdown(b io.Writer) {
	fmt.Fprintf(b, "## VACUUM of a big database\n\n"+
		"A %.1f MB database (rows of 3,500 random bytes, written in transactions of %d MiB) on a primary with two replicas; "+
		"`VACUUM` on the primary's mount rewrites every page in one transaction. Peak RSS is VmHWM: since the process started "+
		"(build), and since it was reset just before the VACUUM until both replicas had its position (VACUUM). Bar: every "+
		"pagewire process <= %d MiB during the VACUUM.\n\n", float64(v.Bytes)/1e6, vacuumChunkMiB, v.BarMiB)
	fmt.Fprintf(b, "| VACUUM | plain disk | mount | mount speed vs disk | replicas caught up after |\n|---|---|---|---|---|\n")
	fmt.Fprintf(b, "| seconds | %.2f | %.2f | %s | %.2f s |\n\n", v.DiskSeconds, v.MountSeconds, formatRatio(v.Ratio), v.CaughtUpAfter)
	fmt.Fprintf(b, "| process | pid | peak RSS, build (MiB) | peak RSS, VACUUM (MiB) |\n|---|---|---|---|\n")
	for _, p := range v.Processes {
		fmt.Fprintf(b, "| %s, %s | %d | %.0f | %.0f |\n", p.Node, p.Role, p.PID, p.BuildMiB, p.VacuumMiB)
	}
	verdict := "meets"
	if v.MaxVacuumPeak > float64(v.BarMiB) {
		verdict = "misses"
	}
	fmt.Fprintf(b, "\nLargest peak during the VACUUM: %.0f MiB (%s the bar of %d MiB).\n\n", v.MaxVacuumPeak, verdict, v.BarMiB)
}

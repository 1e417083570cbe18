//go:build integration

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

// buildPagewireBin builds cmd/pagewire (no -race: the bench measures it)
// into a temp dir and returns its path.
func buildPagewireBin(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pagewire")
	out, err := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "../cmd/pagewire").CombinedOutput()
	if err != nil {
		t.Fatalf("build pagewire: %v\n%s", err, out)
	}
	return bin
}

// runBench runs the harness in-process with args plus -bin, -dir and -json,
// and returns its stdout and JSON report. Cleanup detaches any mount the
// harness left under its work folder, before the temp dir is removed.
func runBench(t testing.TB, bin string, args ...string) (string, report) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "work")
	t.Cleanup(func() {
		mounts, _ := mountsUnder(dir)
		for _, m := range mounts {
			_ = syscall.Unmount(m, syscall.MNT_DETACH)
		}
	})
	jsonPath := filepath.Join(t.TempDir(), "bench.json")
	var stdout, stderr bytes.Buffer
	args = append(args, "-bin", bin, "-dir", dir, "-json", jsonPath)
	if err := run(t.Context(), args, &stdout, &stderr); err != nil {
		t.Fatalf("bench %q: %v\nstderr:\n%s", args, err, &stderr)
	}
	t.Logf("bench output:\n%s", &stdout)
	if mounts, err := mountsUnder(dir); err != nil || len(mounts) > 0 {
		t.Errorf("after the bench, mounts under %s: %q (err %v), want none", dir, mounts, err)
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("decode -json output: %v", err)
	}
	return stdout.String(), rep
}

// TestBench_quick runs every workload once on both targets and checks that
// each was measured. It asserts no timings.
func TestBench_quick(t *testing.T) {
	out, rep := runBench(t, buildPagewireBin(t), "-quick", "-no-replication", "-no-proxy", "-no-export")

	if rep.Replication != nil || rep.Proxy != nil || rep.Export != nil {
		t.Errorf("-no-replication -no-proxy -no-export: the report has a replication, proxy or export section")
	}
	if got, want := len(rep.Workloads), len(workloads); got != want {
		t.Fatalf("report has %d workloads, want %d", got, want)
	}
	for i, w := range workloads {
		wr := rep.Workloads[i]
		if wr.Name != w.Name {
			t.Errorf("workload %d is %q, want %q", i, wr.Name, w.Name)
			continue
		}
		if got := strings.Count(out, "| "+w.Name); got != 2 {
			t.Errorf("output has %d table rows for %s, want 2 (rates, per transaction)", got, w.Name)
		}
		for target, tr := range map[string]targetResult{"disk": wr.Disk, "mount": wr.Mount} {
			if len(tr.Rates) != 1 || tr.MedianRate <= 0 {
				t.Errorf("%s on %s: rates %v, median %g; want one positive rate", w.Name, target, tr.Rates, tr.MedianRate)
			}
		}
		if wr.Ratio <= 0 {
			t.Errorf("%s: ratio %g, want > 0", w.Name, wr.Ratio)
		}
		if !w.Writes {
			continue
		}
		p := wr.PerTx
		if p.FUSE <= 0 || p.FUSEByOp["WRITE"] <= 0 {
			t.Errorf("%s: FUSE requests/tx %g (by op %v), want WRITEs", w.Name, p.FUSE, p.FUSEByOp)
		}
		if p.GRPC <= 0 || p.GRPCByMethod["WriteFile"] <= 0 {
			t.Errorf("%s: gRPC calls/tx %g (by method %v), want WriteFile calls", w.Name, p.GRPC, p.GRPCByMethod)
		}
		if p.Commits <= 0 {
			t.Errorf("%s: commits/tx %g, want > 0", w.Name, p.Commits)
		}
	}
}

// TestBench_replicationQuick runs the replication section alone and checks
// that each of its measurements has a positive number. It asserts no
// timings.
func TestBench_replicationQuick(t *testing.T) {
	out, rep := runBench(t, buildPagewireBin(t), "-quick", "-replication")

	if len(rep.Workloads) != 0 {
		t.Errorf("-replication: the report has %d plain disk vs mount workloads, want none", len(rep.Workloads))
	}
	rr := rep.Replication
	if rr == nil {
		t.Fatal("-replication: the report has no replication section")
	}
	for _, heading := range []string{"## Replication", "### The primary's write rate", "### Visibility lag",
		"### Point reads on a replica", "### Snapshot catch-up"} {
		if !strings.Contains(out, heading) {
			t.Errorf("output lacks %q", heading)
		}
	}

	// Two placements on a machine of two CPUs or more, each with 0, 1, 2.
	placements := []string{"shared", "separate"}
	if runtime.NumCPU() < 2 {
		placements = placements[:1]
	}
	if got, want := len(rr.WriteRates), 3*len(placements); got != want {
		t.Errorf("write rates for %d placement and replica counts, want %d", got, want)
	}
	for i, wr := range rr.WriteRates {
		k, pl := i%3, placements[min(i/3, len(placements)-1)]
		if wr.Replicas != k || wr.Placement != pl || len(wr.Primary.Rates) != 1 || wr.Primary.MedianRate <= 0 || wr.Ratio <= 0 {
			t.Errorf("write rate %d: %d replicas, %q placement, rates %v, median %g, ratio %g; want %d replicas, %q and positive numbers",
				i, wr.Replicas, wr.Placement, wr.Primary.Rates, wr.Primary.MedianRate, wr.Ratio, k, pl)
		}
		if len(wr.RoundRatios) != 1 || (k == 0 && wr.RoundRatios[0] != 1) {
			t.Errorf("write rate %d: round ratios %v, want one (1 with none)", i, wr.RoundRatios)
		}
		if k > 0 && len(wr.CatchUpSeconds) != 1 {
			t.Errorf("write rate %d with %d replicas: catch-up times %v, want one", i, k, wr.CatchUpSeconds)
		}
	}
	if !strings.Contains(out, "| separate | 2 |") && len(placements) == 2 {
		t.Errorf("output lacks the separate placement's row with 2 replicas")
	}

	if got := len(rr.Lag); got != 2 {
		t.Errorf("lag measured %d ways, want 2 (pos, sql)", got)
	}
	for _, l := range rr.Lag {
		if l.Commits <= 0 || l.Seen != l.Commits || l.CommitRate <= 0 || l.Polls <= 0 {
			t.Errorf("lag by %s: %d commits, %d seen, rate %g, %d polls; want all seen and positive numbers",
				l.SeenBy, l.Commits, l.Seen, l.CommitRate, l.Polls)
		}
		if l.P50MS <= 0 || l.P90MS < l.P50MS || l.P99MS < l.P90MS || l.MaxMS < l.P99MS {
			t.Errorf("lag by %s: p50 %g, p90 %g, p99 %g, max %g ms; want positive and in order",
				l.SeenBy, l.P50MS, l.P90MS, l.P99MS, l.MaxMS)
		}
	}

	if got := len(rr.PointReads); got != 3 {
		t.Errorf("point reads on %d targets, want 3 (disk, idle replica, applying replica)", got)
	}
	for _, pr := range rr.PointReads {
		if len(pr.Reads.Rates) != 1 || pr.Reads.MedianRate <= 0 || pr.Ratio <= 0 {
			t.Errorf("point reads on %s: rates %v, ratio %g; want one positive rate", pr.Target, pr.Reads.Rates, pr.Ratio)
		}
		if pr.Target == "replica-applying" && (pr.MedianApplyRate <= 0 || pr.MedianWriterRate <= 0) {
			t.Errorf("point reads on the applying replica: apply rate %g, writer rate %g; want positive",
				pr.MedianApplyRate, pr.MedianWriterRate)
		}
	}

	sn := rr.Snapshot
	switch {
	case sn == nil:
		t.Error("no snapshot catch-up result")
	case sn.Bytes <= 0 || sn.FromStartSeconds <= 0 || sn.MBPerSecFromStart <= 0 || sn.ReadySeconds <= 0 ||
		sn.FromReadySeconds <= 0 || sn.MBPerSecFromReady <= 0:
		t.Errorf("snapshot catch-up %+v; want positive numbers", *sn)
	case !sn.ViaSnapshot:
		t.Error("the new replica's log does not say it applied a snapshot")
	}
}

// TestBench_proxyQuick runs the proxy section alone and checks that every
// path was measured. It asserts no timings.
func TestBench_proxyQuick(t *testing.T) {
	out, rep := runBench(t, buildPagewireBin(t), "-quick", "-proxy")
	if len(rep.Workloads) != 0 || rep.Replication != nil || rep.Export != nil {
		t.Errorf("-proxy: the report has other sections")
	}
	pr := rep.Proxy
	if pr == nil {
		t.Fatal("-proxy: the report has no proxy section")
	}
	if len(pr.Paths) != 4 {
		t.Fatalf("%d paths measured, want 4", len(pr.Paths))
	}
	for _, p := range pr.Paths {
		if len(p.Rates) != 1 || p.MedianRate <= 0 || p.P50MS <= 0 || p.P99MS < p.P50MS || p.VsPrimaryP50 <= 0 || p.VsPlainDiskRt <= 0 {
			t.Errorf("path %q: %+v; want one positive rate and ordered latencies", p.Name, p)
		}
		if !strings.Contains(out, "| "+p.Name+" |") {
			t.Errorf("output lacks a row for %q", p.Name)
		}
	}
	if pr.ReplicaOverPrimary <= 0 || !strings.Contains(out, "costs") {
		t.Errorf("replica over primary %g; output:\n%s", pr.ReplicaOverPrimary, out)
	}
}

// TestBench_exportQuick runs the export section alone and checks that both
// writer runs and their ratio were measured. It asserts no timings: the
// ratio is the bar's business, not the test's.
func TestBench_exportQuick(t *testing.T) {
	out, rep := runBench(t, buildPagewireBin(t), "-quick", "-export")
	if len(rep.Workloads) != 0 || rep.Replication != nil || rep.Proxy != nil {
		t.Errorf("-export: the report has other sections")
	}
	er := rep.Export
	if er == nil {
		t.Fatal("-export: the report has no export section")
	}
	if er.DatabaseBytes < 64<<20 || len(er.UndisturbedRates) != 1 || len(er.StalledRates) != 1 || er.MedianUndisturbed <= 0 {
		t.Errorf("export section %+v; want a database over 64 MiB and one positive undisturbed rate", *er)
	}
	if len(er.ReceivedBytes) != 1 || er.ReceivedBytes[0] <= 0 || len(er.RoundRatios) != 1 {
		t.Errorf("export section %+v; want one message received and one ratio", *er)
	}
	for _, s := range []string{"## Export", "| export stream open, not read |"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q", s)
		}
	}
}

// mountsUnder lists the mount points at or below dir, from
// /proc/self/mountinfo.
func mountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mounts []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) <= 4 {
			continue
		}
		if mp := unescapeMountinfo(fields[4]); mp == dir || strings.HasPrefix(mp, dir+"/") {
			mounts = append(mounts, mp)
		}
	}
	return mounts, s.Err()
}

// TestBench_backupQuick runs the backup section alone against the S3
// server and checks that every part was measured. It asserts no timings:
// the bars are the report's business, not the test's.
func TestBench_backupQuick(t *testing.T) {
	out, rep := runBench(t, buildPagewireBin(t), "-quick", "-backup")
	if len(rep.Workloads) != 0 || rep.Replication != nil || rep.Proxy != nil || rep.Export != nil {
		t.Errorf("-backup: the report has other sections")
	}
	br := rep.Backup
	if br == nil {
		t.Fatal("-backup: the report has no backup section")
	}
	if len(br.RoundRatios) != 1 || br.Off.MedianRate <= 0 || br.On.MedianRate <= 0 || br.Disk.MedianRate <= 0 {
		t.Errorf("backup write rates %+v; want one round with three positive rates", *br)
	}
	if r := br.RPO; r == nil || r.Commits == 0 || r.Samples == 0 {
		t.Errorf("backup RPO %+v; want commits and samples", r)
	}
	if r := br.Restore; r == nil || r.DatabaseBytes < quickBackupRestoreMiB<<20 || r.Objects == 0 || r.RestoredBytes != r.DatabaseBytes {
		t.Errorf("backup restore %+v; want the whole database restored", r)
	}
	for _, s := range []string{"## Backup", "| mount, backup on |", "### RPO", "### Restore"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q", s)
		}
	}
}

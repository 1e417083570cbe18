//go:build integration

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
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
// and returns its stdout and JSON report. Cleanup detaches the mount if the
// harness left one, before the temp dir is removed.
func runBench(t testing.TB, bin string, args ...string) (string, report) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "work")
	mnt := filepath.Join(dir, "mnt")
	t.Cleanup(func() {
		if mounted, _ := isMounted(mnt); mounted {
			_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	jsonPath := filepath.Join(t.TempDir(), "bench.json")
	var stdout, stderr bytes.Buffer
	args = append(args, "-bin", bin, "-dir", dir, "-json", jsonPath)
	if err := run(t.Context(), args, &stdout, &stderr); err != nil {
		t.Fatalf("bench %q: %v\nstderr:\n%s", args, err, &stderr)
	}
	t.Logf("bench output:\n%s", &stdout)
	if mounted, err := isMounted(mnt); err != nil || mounted {
		t.Errorf("after the bench, %s mounted=%v (err %v), want unmounted", mnt, mounted, err)
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
	out, rep := runBench(t, buildPagewireBin(t), "-quick")

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

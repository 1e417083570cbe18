package main

import (
	"io"
	"slices"
	"testing"
)

func TestVisibilityLags(t *testing.T) {
	// Commits 1..4 of keys 11..14; the poller saw 10 (before), then 12 (so
	// 11 and 12 at once), then 14.
	commits := []float64{1.0, 1.1, 1.2, 1.3}
	seen := [][2]float64{{10, 0.5}, {12, 1.5}, {14, 2.0}}
	got := visibilityLags(10, commits, seen)
	want := []float64{0.5, 0.4, 0.8, 0.7}
	if len(got) != len(want) {
		t.Fatalf("lags %v, want %v", got, want)
	}
	for i := range want {
		if d := got[i] - want[i]; d > 1e-9 || d < -1e-9 {
			t.Fatalf("lags %v, want %v", got, want)
		}
	}

	// The poller stopped before the last commit: it is left out.
	if got := visibilityLags(10, commits, seen[:2]); len(got) != 2 {
		t.Errorf("with commits 13 and 14 never seen: lags %v, want 2", got)
	}
}

func TestPercentile(t *testing.T) {
	xs := make([]float64, 100)
	for i := range xs {
		xs[i] = float64(i + 1)
	}
	for _, tc := range []struct{ p, want float64 }{{50, 50}, {90, 90}, {99, 99}, {100, 100}, {0, 1}} {
		if got := percentile(xs, tc.p); got != tc.want {
			t.Errorf("percentile(1..100, %g)=%g, want %g", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile(nil)=%g, want 0", got)
	}
	if got := percentile([]float64{7}, 99); got != 7 {
		t.Errorf("percentile([7], 99)=%g, want 7", got)
	}
}

func TestParseFlags_sections(t *testing.T) {
	for _, tc := range []struct {
		args                                  []string
		workloads, replication, proxy, export bool
	}{
		{nil, true, true, true, true},
		{[]string{"-replication"}, false, true, false, false},
		{[]string{"-sync"}, false, true, false, false},
		{[]string{"-no-replication"}, true, false, true, true},
		{[]string{"-proxy"}, false, false, true, false},
		{[]string{"-export"}, false, false, false, true},
		{[]string{"-no-export", "-no-proxy"}, true, true, false, false},
	} {
		o, err := parseFlags(tc.args, io.Discard)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		got := []bool{o.workloads(), o.replication(), o.proxy(), o.export()}
		if want := []bool{tc.workloads, tc.replication, tc.proxy, tc.export}; !slices.Equal(got, want) {
			t.Errorf("%q: workloads, replication, proxy, export = %v, want %v", tc.args, got, want)
		}
	}
	for _, args := range [][]string{{"-replication", "-no-replication"}, {"-export", "-no-export"}, {"-export", "-proxy"}, {"-export", "-replication"}, {"-sync", "-no-replication"}, {"-sync", "-replication"}, {"-sync", "-proxy"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%q: no error", args)
		}
	}

	o, err := parseFlags([]string{"-quick", "-snapshot-mib", "50"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := []float64{o.LagSeconds, float64(o.SnapshotMiB)}; !slices.Equal(got, []float64{quickLagSeconds, 50}) {
		t.Errorf("-quick -snapshot-mib 50: lag seconds, snapshot MiB = %v, want [%d 50]", got, quickLagSeconds)
	}
}

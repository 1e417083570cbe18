package main

import (
	"strings"
	"testing"
)

const sampleMetrics = `# HELP pagewire_fuse_requests_total FUSE requests.
# TYPE pagewire_fuse_requests_total counter
pagewire_fuse_requests_total{op="WRITE"} 336
pagewire_fuse_requests_total{op="FSYNC"} 104
# HELP grpc_server_handled_total Total number of RPCs completed on the server.
# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_code="OK",grpc_method="WriteFile",grpc_service="pagewire.storage.v1.StorageService",grpc_type="unary"} 335
grpc_server_handled_total{grpc_code="FailedPrecondition",grpc_method="WriteFile",grpc_service="pagewire.storage.v1.StorageService",grpc_type="unary"} 1
grpc_server_handled_total{grpc_code="OK",grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"} 7
# HELP litefs_db_commit_count Commits.
# TYPE litefs_db_commit_count gauge
litefs_db_commit_count{db="x.db"} 101
`

func TestParseCounters(t *testing.T) {
	c, err := parseCounters(strings.NewReader(sampleMetrics))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		got, want float64
	}{
		{"FUSE WRITE", c.FUSE["WRITE"], 336},
		{"FUSE FSYNC", c.FUSE["FSYNC"], 104},
		{"gRPC WriteFile, codes summed", c.GRPC["WriteFile"], 336},
		{"gRPC other services ignored", c.GRPC["Check"], 0},
		{"commits", c.Commits["x.db"], 101},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %g, want %g", tc.name, tc.got, tc.want)
		}
	}
}

func TestCounters_sub(t *testing.T) {
	before := &counters{FUSE: map[string]float64{"WRITE": 10, "READ": 5}, GRPC: map[string]float64{}, Commits: map[string]float64{}}
	after := &counters{FUSE: map[string]float64{"WRITE": 16, "READ": 5, "FSYNC": 2}, GRPC: map[string]float64{"WriteFile": 6}, Commits: map[string]float64{"a.db": 2}}
	d := after.sub(before)
	if got, want := len(d.FUSE), 2; got != want {
		t.Fatalf("len(FUSE)=%d, want %d (zero differences dropped): %v", got, want, d.FUSE)
	}
	if got, want := d.FUSE["WRITE"], 6.0; got != want {
		t.Errorf("WRITE=%g, want %g", got, want)
	}
	p := perTxFrom(d, []string{"a.db"}, 2)
	if got, want := p.FUSE, 4.0; got != want {
		t.Errorf("FUSE/tx=%g, want %g", got, want)
	}
	if got, want := p.GRPCByMethod["WriteFile"], 3.0; got != want {
		t.Errorf("WriteFile/tx=%g, want %g", got, want)
	}
	if got, want := p.Commits, 1.0; got != want {
		t.Errorf("commits/tx=%g, want %g", got, want)
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{9, 1, 5}, 5},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v)=%g, want %g", tc.in, got, tc.want)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{formatRate(27800.4), "27,800"},
		{formatRate(1234567), "1,234,567"},
		{formatRate(4.56), "4.6"},
		{formatRatio(0.054), "5.4%"},
		{formatRatio(0.91), "91%"},
		{formatCount(3.1666), "3.17"},
		{formatCount(0.00033), "0.00033"},
		{formatCount(414.2), "414"},
		{formatBreakdown(map[string]float64{"FSYNC": 1, "WRITE": 3}), "WRITE 3.00, FSYNC 1.00"},
		{formatBreakdown(nil), "—"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestApplyLagQuantiles(t *testing.T) {
	text := `# TYPE pagewire_replica_apply_lag_seconds histogram
pagewire_replica_apply_lag_seconds_bucket{le="0.001"} 50
pagewire_replica_apply_lag_seconds_bucket{le="0.005"} 98
pagewire_replica_apply_lag_seconds_bucket{le="0.02"} 100
pagewire_replica_apply_lag_seconds_bucket{le="+Inf"} 100
pagewire_replica_apply_lag_seconds_sum 0.3
pagewire_replica_apply_lag_seconds_count 100
`
	c, err := parseCounters(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	before := newCounters()
	d := c.sub(before)
	if b, share := d.lagQuantile(0.5, 0.005); b != 0.001 || share != 0.98 {
		t.Fatalf("p50 bound %v share %v, want 0.001 and 0.98", b, share)
	}
	if b, _ := d.lagQuantile(0.99, 0.005); b != 0.02 {
		t.Fatalf("p99 bound %v, want 0.02", b)
	}
}

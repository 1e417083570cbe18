package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics the bench reads from the node's GET /metrics.
const (
	metricFUSE    = "pagewire_fuse_requests_total" // label op: FUSE requests the kernel sent
	metricGRPC    = "grpc_server_handled_total"    // labels grpc_service, grpc_method, grpc_code
	metricCommits = "litefs_db_commit_count"       // label db
	// metricApplyLag is a replica's histogram of commit-to-visible lag.
	metricApplyLag = "pagewire_replica_apply_lag_seconds"
	storageSvc     = "pagewire.storage.v1.StorageService"
)

// counters is a snapshot (or a difference of two) of the node's counters.
type counters struct {
	FUSE    map[string]float64 // FUSE requests by op, e.g. "WRITE"
	GRPC    map[string]float64 // StorageService calls by method, all codes summed
	Commits map[string]float64 // commits by database name
	// ApplyLag is a replica's cumulative apply-lag histogram: count of
	// transactions at or under each bucket's upper bound (seconds).
	ApplyLag map[float64]float64
}

// scrapeCounters fetches and parses the node's /metrics.
func scrapeCounters(ctx context.Context, client *http.Client, url string) (*counters, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("read node metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("read node metrics: GET %s: %s", url, resp.Status)
	}
	c, err := parseCounters(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read node metrics: %w", err)
	}
	return c, nil
}

// parseCounters reads the Prometheus text format.
func parseCounters(r io.Reader) (*counters, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	c := newCounters()
	for _, m := range families[metricFUSE].GetMetric() {
		c.FUSE[label(m, "op")] += value(m)
	}
	for _, m := range families[metricGRPC].GetMetric() {
		if label(m, "grpc_service") == storageSvc {
			c.GRPC[label(m, "grpc_method")] += value(m)
		}
	}
	for _, m := range families[metricCommits].GetMetric() {
		c.Commits[label(m, "db")] += value(m)
	}
	for _, m := range families[metricApplyLag].GetMetric() {
		for _, b := range m.GetHistogram().GetBucket() {
			if !math.IsInf(b.GetUpperBound(), 1) {
				c.ApplyLag[b.GetUpperBound()] += float64(b.GetCumulativeCount())
			}
		}
		c.ApplyLag[math.Inf(1)] += float64(m.GetHistogram().GetSampleCount())
	}
	return c, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// value is a sample's value whatever the family's declared type.
func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	default:
		return m.GetUntyped().GetValue()
	}
}

// lagQuantile is the upper bound (seconds) of the first ApplyLag bucket
// holding at least q of the transactions (+Inf if none does), and the
// share of transactions at or under within.
func (c *counters) lagQuantile(q, within float64) (bound, share float64) {
	bounds := make([]float64, 0, len(c.ApplyLag))
	for b := range c.ApplyLag {
		bounds = append(bounds, b)
	}
	slices.Sort(bounds)
	if len(bounds) == 0 {
		return math.Inf(1), 0
	}
	total := c.ApplyLag[bounds[len(bounds)-1]] // the +Inf bucket
	if total == 0 {
		return math.Inf(1), 0
	}
	bound = math.Inf(1)
	for _, b := range bounds {
		if c.ApplyLag[b] >= q*total {
			bound = b
			break
		}
	}
	for _, b := range bounds {
		if b <= within {
			share = c.ApplyLag[b] / total
		}
	}
	return bound, share
}

// sub returns c minus before, keeping only keys with a non-zero difference.
func (c *counters) sub(before *counters) *counters {
	diff := func(a, b map[string]float64) map[string]float64 {
		d := map[string]float64{}
		for k := range joinKeys(a, b) {
			if v := a[k] - b[k]; v != 0 {
				d[k] = v
			}
		}
		return d
	}
	lag := map[float64]float64{}
	for k, v := range c.ApplyLag {
		lag[k] = v - before.ApplyLag[k]
	}
	return &counters{FUSE: diff(c.FUSE, before.FUSE), GRPC: diff(c.GRPC, before.GRPC), Commits: diff(c.Commits, before.Commits), ApplyLag: lag}
}

// add adds o to c in place.
func (c *counters) add(o *counters) {
	for k, v := range o.FUSE {
		c.FUSE[k] += v
	}
	for k, v := range o.GRPC {
		c.GRPC[k] += v
	}
	for k, v := range o.Commits {
		c.Commits[k] += v
	}
}

func newCounters() *counters {
	return &counters{FUSE: map[string]float64{}, GRPC: map[string]float64{}, Commits: map[string]float64{}, ApplyLag: map[float64]float64{}}
}

func joinKeys(a, b map[string]float64) map[string]struct{} {
	keys := map[string]struct{}{}
	for k := range a {
		keys[k] = struct{}{}
	}
	for k := range b {
		keys[k] = struct{}{}
	}
	return keys
}

// total sums a map's values.
func total(m map[string]float64) float64 {
	var t float64
	for _, v := range m {
		t += v
	}
	return t
}

// byCount lists a map's keys, largest value first, then by name.
func byCount(m map[string]float64) []string {
	keys := slices.Sorted(maps.Keys(m))
	slices.SortStableFunc(keys, func(a, b string) int {
		switch {
		case m[a] > m[b]:
			return -1
		case m[a] < m[b]:
			return 1
		}
		return 0
	})
	return keys
}

//go:build integration

package e2e

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dashboard is what the test reads of deploy/grafana/pagewire.json.
type dashboard struct {
	Panels []struct {
		Title      string `json:"title"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
	Templating struct {
		List []struct {
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

// metricName matches the metric names a PromQL expression of ours uses.
var metricName = regexp.MustCompile(`\b(?:litefs|pagewire|grpc)_[a-z0-9_]+\b`)

// labelParts match what in a PromQL expression names labels, not
// metrics: matchers in braces and the label lists of by, on and the like.
var labelParts = regexp.MustCompile(`\{[^}]*\}|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)

// missingMetrics returns the metric names the expressions use that are
// not among the sample names exposed.
func missingMetrics(exprs []string, exposed map[string]bool) []string {
	var missing []string
	for _, e := range exprs {
		for _, name := range metricName.FindAllString(labelParts.ReplaceAllString(e, " "), -1) {
			if !exposed[name] && !slices.Contains(missing, name) {
				missing = append(missing, name)
			}
		}
	}
	return missing
}

// sampleNames returns the names of the samples in a Prometheus text
// exposition (a histogram's X_bucket, X_sum and X_count among them).
func sampleNames(exposition string, into map[string]bool) {
	for _, line := range strings.Split(exposition, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			into[line[:i]] = true
		}
	}
}

// TestGrafanaDashboard_MetricsExported checks deploy/grafana/pagewire.json
// against a live primary and replica: every metric a panel or variable
// queries is one the nodes export, and the panels the dashboard promises
// are there.
func TestGrafanaDashboard_MetricsExported(t *testing.T) {
	raw, err := os.ReadFile("../deploy/grafana/pagewire.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("deploy/grafana/pagewire.json is not JSON Grafana can import: %v", err)
	}
	var exprs, titles []string
	for _, p := range d.Panels {
		titles = append(titles, p.Title)
		if len(p.Targets) == 0 || p.Datasource.UID != "${DS_PROMETHEUS}" {
			t.Errorf("panel %q: %d queries, datasource %q; want queries on ${DS_PROMETHEUS}", p.Title, len(p.Targets), p.Datasource.UID)
		}
		for _, tg := range p.Targets {
			if strings.Count(tg.Expr, "(") != strings.Count(tg.Expr, ")") || strings.Count(tg.Expr, "{") != strings.Count(tg.Expr, "}") {
				t.Errorf("panel %q: unbalanced query %q", p.Title, tg.Expr)
			}
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		exprs = append(exprs, v.Definition)
	}
	for _, want := range []string{"Commit rate", "Replica lag (transactions)", "Replica lag (time)", "Apply lag", "Subscribers",
		"failovers", "Halt locks", "FUSE request latency", "gRPC errors"} {
		if !slices.ContainsFunc(titles, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("no panel on %q among %q", want, titles)
		}
	}

	// Nodes that have done what the panels show: commits, a replica
	// applying them, a backup, gRPC calls.
	p := StartNode(t, NodeOptions{Config: fileBackup(t.TempDir())})
	rs := []*Node{StartNode(t, NodeOptions{ReplicaOf: p})}
	insertRows(t, p.Path("dash.db"), 20)
	waitCaughtUp(t, "dash.db", p, rs...)
	if out, code := p.CLI("status", "-url", p.URL); code != 0 {
		t.Fatalf("pagewire status: exit %d\n%s", code, out)
	}
	exposed := map[string]bool{}
	for _, n := range []*Node{p, rs[0]} {
		code, body := n.HTTPGet("/metrics")
		if code != 200 {
			t.Fatalf("%s/metrics: %d", n.URL, code)
		}
		sampleNames(body, exposed)
	}
	if missing := missingMetrics(exprs, exposed); len(missing) > 0 {
		t.Errorf("the dashboard queries metrics no node exports: %q", missing)
	}
	// The check itself finds a name no node exports.
	if got := missingMetrics([]string{`sum by (grpc_code) (rate(pagewire_no_such_metric_total{grpc_method="x"}[1m])) + litefs_is_primary`}, exposed); !slices.Equal(got, []string{"pagewire_no_such_metric_total"}) {
		t.Errorf("missingMetrics on a made-up name = %q, want just it", got)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// The proxy section: the example app (deploy/example) on plain disk, and
// behind the proxies of a primary and a replica, each path measured with
// the same sequential JSON writes from one keep-alive client.

// proxyPath is one way of sending the app's writes.
type proxyPath struct {
	Name          string    `json:"name"`
	MedianRate    float64   `json:"median_writes_per_s"`
	P50MS         float64   `json:"p50_ms"`
	P99MS         float64   `json:"p99_ms"`
	Rates         []float64 `json:"rates_per_round"`
	VsPrimaryP50  float64   `json:"p50_vs_primary_proxy"`
	VsPlainDiskRt float64   `json:"rate_vs_plain_disk"`
	latencies     []float64 // ms, every write of every round
}

// proxyReport is the proxy section's results.
type proxyReport struct {
	Rounds int         `json:"rounds"`
	Writes int         `json:"writes_per_round"`
	Paths  []proxyPath `json:"paths"`
	// ReplicaOverPrimary is the median latency of a write through a
	// replica's proxy over one through the primary's (the bar: at most 2).
	ReplicaOverPrimary float64 `json:"replica_over_primary_p50"`
}

// Path names, in report order.
const (
	pathDisk        = "app on plain disk, no proxy"
	pathPrimary     = "primary's proxy"
	pathReplica     = "replica's proxy (forwarded to the primary's)"
	pathReplicaRead = "replica's proxy: write, then read it with __txid"
)

// runProxy runs the proxy section.
func runProxy(ctx context.Context, o options, bin, workDir, diskDir string, stderr io.Writer) (_ *proxyReport, err error) {
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, "bench: proxy: "+format+"\n", args...) }
	example, err := goBuild(ctx, workDir, "example", "github.com/pagewire/pagewire/deploy/example", stderr)
	if err != nil {
		return nil, err
	}
	base := filepath.Join(workDir, "proxy")
	var nodes []*node
	defer func() { err = errors.Join(err, stopNodes(nodes...)) }()

	// The app on plain disk, started by the harness.
	diskApp, stopApp, err := startDiskApp(example, base, diskDir)
	if err != nil {
		return nil, err
	}
	defer stopApp()

	// A primary and a replica, each running the app behind its proxy.
	withApp := func(spec nodeSpec) (*node, string, error) {
		logf("starting the %s", spec.Name)
		n, url, err := startNodeWithApp(ctx, bin, example, spec)
		if n != nil {
			nodes = append(nodes, n)
		}
		return n, url, err
	}
	p, primaryURL, err := withApp(nodeSpec{Name: "primary", Dir: filepath.Join(base, "primary")})
	if err != nil {
		return nil, err
	}
	_, replicaURL, err := withApp(nodeSpec{Name: "replica", Dir: filepath.Join(base, "replica"), Primary: p})
	if err != nil {
		return nil, err
	}

	// Wait until every app answers; the replica has the table once the
	// primary's app made it.
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DialContext: (&net.Dialer{}).DialContext}, Timeout: 30 * time.Second}
	for _, u := range []string{"http://" + diskApp, primaryURL, replicaURL} {
		if err := waitHTTP(ctx, hc, u+"/healthz"); err != nil {
			return nil, err
		}
	}
	if err := waitHTTP(ctx, hc, replicaURL+"/items"); err != nil {
		return nil, err
	}

	// Time the writes on every path.
	return measureProxyPaths(ctx, o, hc, "http://"+diskApp, primaryURL, replicaURL, logf)
}

// startDiskApp starts the example app on a database in diskDir, logging to
// a file in base, and returns its address and how to stop it.
func startDiskApp(example, base, diskDir string) (addr string, stop func(), err error) {
	addr, err = freeAddr()
	if err != nil {
		return "", nil, err
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", nil, err
	}
	// Its log goes to a file: a pipe to stderr would be written from
	// another goroutine.
	appLog, err := os.Create(filepath.Join(base, "disk-app.log"))
	if err != nil {
		return "", nil, err
	}
	app := exec.Command(example, "-addr", addr, "-db", filepath.Join(diskDir, "app.db"))
	app.Stdout, app.Stderr = appLog, appLog
	app.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := app.Start(); err != nil {
		appLog.Close()
		return "", nil, err
	}
	return addr, func() {
		_ = app.Process.Signal(syscall.SIGTERM)
		_ = app.Wait()
		appLog.Close()
	}, nil
}

// startNodeWithApp starts a node as spec says, with the example app as its
// exec child behind its proxy, and returns it (even with an error, once
// started, for the caller to stop) and its proxy's URL.
func startNodeWithApp(ctx context.Context, bin, example string, spec nodeSpec) (*node, string, error) {
	proxyAddr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	appAddr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	spec.Config = fmt.Sprintf("proxy:\n  addr: %q\n  target: %q\n  db: app.db\n", proxyAddr, appAddr)
	spec.Exec = []string{example, "-addr", appAddr, "-db", filepath.Join(spec.Dir, "mnt", "app.db")}
	n, err := startNode(ctx, bin, spec)
	return n, "http://" + proxyAddr, err
}

// measureProxyPaths times o.Rounds runs of writes on each path: the app on
// plain disk at diskURL, the primary's proxy, the replica's, and the
// replica's with a read after each write.
func measureProxyPaths(ctx context.Context, o options, hc *http.Client, diskURL, primaryURL, replicaURL string, logf func(string, ...any)) (*proxyReport, error) {
	rep := &proxyReport{Rounds: o.Rounds, Writes: o.Inserts / 5}
	paths := []*proxyPath{{Name: pathDisk}, {Name: pathPrimary}, {Name: pathReplica}, {Name: pathReplicaRead}}
	urls := []string{diskURL, primaryURL, replicaURL, replicaURL}
	for round := 1; round <= o.Rounds; round++ {
		for i, pp := range paths {
			rate, lat, err := proxyWrites(ctx, hc, urls[i], rep.Writes, pp.Name == pathReplicaRead)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", pp.Name, err)
			}
			pp.Rates = append(pp.Rates, rate)
			pp.latencies = append(pp.latencies, lat...)
			logf("round %d/%d %s: %s writes/s", round, o.Rounds, pp.Name, formatRate(rate))
		}
	}
	for _, pp := range paths {
		slices.Sort(pp.latencies)
		pp.MedianRate, pp.P50MS, pp.P99MS = median(pp.Rates), percentile(pp.latencies, 50), percentile(pp.latencies, 99)
	}
	for _, pp := range paths {
		pp.VsPrimaryP50 = pp.P50MS / paths[1].P50MS
		pp.VsPlainDiskRt = pp.MedianRate / paths[0].MedianRate
		rep.Paths = append(rep.Paths, *pp)
	}
	rep.ReplicaOverPrimary = paths[2].P50MS / paths[1].P50MS
	return rep, nil
}

// proxyWrites sends n sequential POST /items to base and returns the rate
// and each write's latency in ms; with read, each write is followed by a
// GET of the item carrying the write's __txid, counted in its latency.
func proxyWrites(ctx context.Context, hc *http.Client, base string, n int, read bool) (float64, []float64, error) {
	lat := make([]float64, 0, n)
	body := []byte(`{"name": "bench", "value": "` + string(bytes.Repeat([]byte("x"), 100)) + `"}`)
	start := time.Now()
	for i := 0; i < n; i++ {
		t0 := time.Now()

		// POST an item; it must be created.
		req, _ := http.NewRequestWithContext(ctx, "POST", base+"/items", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return 0, nil, err
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return 0, nil, fmt.Errorf("POST %s/items: %d %s", base, resp.StatusCode, out)
		}

		// With read, GET it back with the __txid cookie the POST set.
		if read {
			var txid *http.Cookie
			for _, c := range resp.Cookies() {
				if c.Name == "__txid" {
					txid = c
				}
			}
			if txid == nil {
				return 0, nil, fmt.Errorf("POST %s/items set no __txid cookie", base)
			}
			id, err := itemID(out)
			if err != nil {
				return 0, nil, err
			}
			req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("%s/items/%d", base, id), nil)
			req.AddCookie(txid)
			resp, err := hc.Do(req)
			if err != nil {
				return 0, nil, err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return 0, nil, fmt.Errorf("GET %s/items/%d with __txid: %d", base, id, resp.StatusCode)
			}
		}

		// Latency in milliseconds, of the POST and any GET.
		lat = append(lat, float64(time.Since(t0))/1e6)
	}
	return float64(n) / time.Since(start).Seconds(), lat, nil
}

// itemID reads the id of the example app's item JSON.
func itemID(b []byte) (int64, error) {
	var v struct {
		ID int64 `json:"id"`
	}
	if err := json.Unmarshal(b, &v); err != nil || v.ID == 0 {
		return 0, fmt.Errorf("the app answered %q: no item id", b)
	}
	return v.ID, nil
}

// waitHTTP waits until url answers 200.
func waitHTTP(ctx context.Context, hc *http.Client, url string) error {
	deadline := time.Now().Add(nodeReadyTimeout)
	for {
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer 200 within %s (last: %v)", url, nodeReadyTimeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// writeMarkdown prints the proxy section.
func (r *proxyReport) writeMarkdown(b io.Writer) {
	fmt.Fprintf(b, "\n## Proxy: the example app's writes (%d round(s) of %d sequential POSTs, one keep-alive client)\n\n", r.Rounds, r.Writes)
	fmt.Fprintf(b, "| path | writes/s | vs plain disk | p50 | p99 | p50 vs primary's proxy |\n|---|---|---|---|---|---|\n")
	for _, p := range r.Paths {
		fmt.Fprintf(b, "| %s | %s | %.0f%% | %.2f ms | %.2f ms | %.2f× |\n", p.Name, formatRate(p.MedianRate), 100*p.VsPlainDiskRt, p.P50MS, p.P99MS, p.VsPrimaryP50)
	}
	verdict := "meets"
	if r.ReplicaOverPrimary > 2 {
		verdict = "misses"
	}
	fmt.Fprintf(b, "\nA write through a replica's proxy costs %.2f× one through the primary's (p50); the bar is ≤ 2×: %s.\n", r.ReplicaOverPrimary, verdict)
}

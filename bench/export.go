package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
)

// The export section: a writer's commit rate on the primary's mount,
// undisturbed, and while a client holds an ExportDatabase stream of the
// same database open without reading it.

// exportBar is the bar: the writer keeps at least this share of
// its undisturbed rate while an export stream is stalled.
const exportBar = 0.80

// exportSettle is how long the stalled client waits, after its one
// message, before the writer starts: time for the node to fill the
// stream's flow-control windows and block in its send.
const exportSettle = time.Second

// exportReport is what the export section measured.
type exportReport struct {
	Rounds        int     `json:"rounds"`
	DatabaseBytes int64   `json:"database_bytes"` // page_count * page_size of the exported database
	WriterSeconds float64 `json:"writer_seconds"` // how long each writer run commits
	// The writer's commit rates (tx/s), per round and their medians: alone,
	// and while the stalled export stream is open.
	UndisturbedRates  []float64 `json:"undisturbed_rates"`
	StalledRates      []float64 `json:"stalled_rates"`
	MedianUndisturbed float64   `json:"median_undisturbed_rate"`
	MedianStalled     float64   `json:"median_stalled_rate"`
	// RoundRatios: per round, the stalled rate / the undisturbed rate.
	RoundRatios []float64 `json:"round_ratios"`
	Ratio       float64   `json:"ratio"` // median of RoundRatios
	// ReceivedBytes: per round, what the stalled client read before it
	// stopped reading (its one message).
	ReceivedBytes []int64 `json:"received_bytes"`
	Bar           float64 `json:"bar_ratio_min"`
}

// runExportSection starts a primary, writes a database of o.ExportMiB on it
// and measures a writer on that database, undisturbed and with a stalled
// export stream, round by round in alternating order.
func runExportSection(ctx context.Context, o options, bin, workDir string, stderr io.Writer) (_ *exportReport, err error) {
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, "bench: export: "+format+"\n", args...) }
	logf("starting the primary")
	p, err := startNode(ctx, bin, nodeSpec{Name: "primary", Dir: filepath.Join(workDir, "export", "primary")})
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, p.stop()) }()

	// The database, larger than the stream's flow-control windows and the
	// sockets' buffers together, so that a client that stops reading
	// leaves the node blocked in its send.
	const db = "export.db"
	logf("writing a %d MiB database on the primary", o.ExportMiB)
	var made struct {
		Bytes int64 `json:"bytes"`
	}
	if err := runPython(ctx, "export database setup on the primary", replicationScript, workDir, &made,
		"setup-snapshot", filepath.Join(p.MountDir, db), strconv.Itoa(o.ExportMiB)); err != nil {
		return nil, err
	}
	rep := &exportReport{Rounds: o.Rounds, DatabaseBytes: made.Bytes, WriterSeconds: o.ExportSeconds, Bar: exportBar}

	// The stalled client: a plain gRPC client, with the library's default
	// windows, as anyone on the network could open.
	u, err := url.Parse(p.URL)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(u.Host, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	admin := adminv1.NewAdminServiceClient(conn)

	// Each round: undisturbed and stalled, in alternating order.
	for round := 1; round <= o.Rounds; round++ {
		var rates [2]float64 // undisturbed, stalled
		order := []int{0, 1}
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, stalled := range order {
			rate, received, err := exportWriterRun(ctx, o, p, db, workDir, admin, stalled == 1)
			if err != nil {
				return nil, fmt.Errorf("round %d: %w", round, err)
			}
			rates[stalled] = rate
			if stalled == 1 {
				rep.ReceivedBytes = append(rep.ReceivedBytes, received)
			}
		}
		if rates[0] <= 0 {
			return nil, fmt.Errorf("round %d: the undisturbed writer committed nothing", round)
		}
		rep.UndisturbedRates, rep.StalledRates = append(rep.UndisturbedRates, rates[0]), append(rep.StalledRates, rates[1])
		rep.MedianUndisturbed, rep.MedianStalled = median(rep.UndisturbedRates), median(rep.StalledRates)
		rep.RoundRatios = append(rep.RoundRatios, rates[1]/rates[0])
		rep.Ratio = median(rep.RoundRatios)
		logf("round %d/%d: writer %s tx/s undisturbed, %s tx/s with a stalled export: %s", round, o.Rounds,
			formatRate(rates[0]), formatRate(rates[1]), formatRatio(rates[1]/rates[0]))
	}
	return rep, nil
}

// exportWriterRun runs the writer on db for o.ExportSeconds and returns its
// commit rate. With stalled, an ExportDatabase stream of db is open
// meanwhile, read for one message and then not at all; it is cancelled
// after the writer was told to stop, and what it had received is returned.
func exportWriterRun(ctx context.Context, o options, p *node, db, workDir string, admin adminv1.AdminServiceClient, stalled bool) (rate float64, received int64, err error) {
	// The writer: unpaced autocommit 1-row inserts, until told to stop.
	w, err := startPython(ctx, "writer on the primary", replicationScript, workDir,
		"writer", filepath.Join(p.MountDir, db), posPath(p, db), "1e9", "0", "0")
	if err != nil {
		return 0, 0, err
	}
	defer func() { err = w.finish(err) }()
	var ready struct{ Ready bool }
	if err := w.read(&ready); err != nil {
		return 0, 0, err
	}

	// The stalled export: one message read, then none.
	cancel := func() {}
	if stalled {
		var sctx context.Context
		sctx, cancel = context.WithCancel(ctx)
		defer cancel()
		stream, err := admin.ExportDatabase(sctx, &adminv1.ExportDatabaseRequest{Name: db})
		if err != nil {
			return 0, 0, fmt.Errorf("export %s: %w", db, err)
		}
		msg, err := stream.Recv()
		if err != nil {
			return 0, 0, fmt.Errorf("export %s: first message: %w", db, err)
		}
		received = int64(len(msg.GetData()))
		if err := sleepCtx(ctx, exportSettle); err != nil {
			return 0, 0, err
		}
	}

	// Let the writer commit for the set time. The stream is cancelled only
	// once the writer was told to stop: a writer the export blocks commits
	// nothing meanwhile, and sees the stop once unblocked.
	if err := w.send("go"); err != nil {
		return 0, 0, err
	}
	if err := sleepCtx(ctx, time.Duration(o.ExportSeconds*float64(time.Second))); err != nil {
		return 0, 0, err
	}
	if err := w.send("stop"); err != nil {
		return 0, 0, err
	}
	cancel()
	var res struct {
		Commits int     `json:"commits"`
		Seconds float64 `json:"seconds"`
	}
	if err := w.read(&res); err != nil {
		return 0, 0, err
	}
	if res.Seconds <= 0 {
		return 0, 0, fmt.Errorf("the writer reported %d commits in %g s", res.Commits, res.Seconds)
	}
	return float64(res.Commits) / res.Seconds, received, nil
}

// writeMarkdown prints the "## Export" section.
func (er *exportReport) writeMarkdown(b io.Writer) {
	fmt.Fprintf(b, "## Export\n\n"+
		"A primary (`pagewire mount`, static lease, loopback) holding a %.1f MB database. A writer (Python sqlite3, "+
		"unpaced autocommit 1-row inserts, synchronous=NORMAL) commits to that database on the primary's mount for %s s, "+
		"undisturbed, and while a plain gRPC client (the library's default windows) holds an `ExportDatabase` stream of it "+
		"open, having read one message (%s bytes) and then nothing, from %s before the writer starts until after it stops. "+
		"Rates are medians of %d round(s), the two runs of a round in alternating order; the ratio is the median of the "+
		"rounds' ratios. The bar is the issue's target, asserted nowhere.\n\n",
		float64(er.DatabaseBytes)/1e6, fmtFloat(er.WriterSeconds), formatInt(int(median(int64s(er.ReceivedBytes)))),
		exportSettle, er.Rounds)
	fmt.Fprintf(b, "| writer | commits | vs undisturbed | bar |\n|---|---|---|---|\n")
	fmt.Fprintf(b, "| undisturbed | %s tx/s | | |\n", formatRate(er.MedianUndisturbed))
	fmt.Fprintf(b, "| export stream open, not read | %s tx/s | %s | ≥ %s |\n\n",
		formatRate(er.MedianStalled), formatRatio(er.Ratio), formatRatio(er.Bar))
}

// int64s converts to float64s, for median.
func int64s(xs []int64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = float64(x)
	}
	return out
}

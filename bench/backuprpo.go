package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// rpoSample is one reading of the node's API during the RPO run.
type rpoSample struct {
	At      float64 // Unix seconds, halfway through the request
	Primary int64   // the database's TXID on the primary
	Backup  int64   // the newest TXID in the backup
	NodeLag float64 // the node's own backup.lag_seconds
}

// measureRPO runs a writer paced at backupRPORate for o.BackupSeconds on
// the primary n, which backs up, reads the node's API every
// backupSampleInterval meanwhile, and works out from each reading how far
// behind in time the backup was.
func measureRPO(ctx context.Context, o options, n *node, api *http.Client, workDir string) (res *rpoResult, err error) {
	const db = "backup_rpo.db"
	res = &rpoResult{TargetRate: backupRPORate}

	// The writer makes the table and a warm-up row; the backup has them
	// before it starts, so the first readings find it caught up.
	w, ready, err := startRecordingWriter(ctx, "RPO writer on the primary", n, db, backupRPORate, o.BackupSeconds, workDir)
	if err != nil {
		return res, err
	}
	defer func() { err = w.finish(err) }()
	if _, err := waitBackedUp(ctx, api, n, db, backupCatchUpTimeout); err != nil {
		return res, err
	}

	// Sample the API while the writer commits.
	if err := w.send("go"); err != nil {
		return res, err
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	sampled := make(chan error, 1)
	var samples []rpoSample // the sampler's until it sends on sampled
	go func() { sampled <- sampleBackup(sctx, api, n, db, &samples) }()
	var wres lagWriterResult
	werr := w.read(&wres)
	stop()
	if serr := <-sampled; serr != nil {
		return res, serr
	}
	if werr != nil {
		return res, werr
	}
	if err := wres.check(ready.BaseTXID); err != nil {
		return res, err
	}
	res.Commits, res.WriterSeconds, res.CommitRate = wres.Commits, wres.Seconds, float64(wres.Commits)/wres.Seconds

	// How far behind the backup was at each reading.
	lags := rpoLags(samples, ready.BaseTXID, wres.CommitTimes)
	if len(lags) == 0 {
		return res, fmt.Errorf("no reading of the node's API in %.1f s", wres.Seconds)
	}
	res.Samples = len(lags)
	slices.Sort(lags)
	res.P50Seconds, res.P99Seconds, res.MaxSeconds = percentile(lags, 50), percentile(lags, 99), lags[len(lags)-1]
	for _, s := range samples {
		res.NodeLagMaxSeconds = max(res.NodeLagMaxSeconds, s.NodeLag)
	}

	// Let the backup finish, so the restore that follows runs alone.
	d, err := waitBackedUp(ctx, api, n, db, backupCatchUpTimeout)
	res.CatchUpSeconds = d.Seconds()
	return res, err
}

// sampleBackup appends a reading of db's status to *samples every
// backupSampleInterval until ctx is done, which is no error.
func sampleBackup(ctx context.Context, api *http.Client, n *node, db string, samples *[]rpoSample) error {
	tick := time.NewTicker(backupSampleInterval)
	defer tick.Stop()
	for {
		before := time.Now()
		st, err := readDBStatus(ctx, api, n, db)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if st.Backup == nil {
			return fmt.Errorf("%s does not report a backup of %s", n.Name, db)
		}
		s := rpoSample{At: float64(before.Add(time.Since(before)/2).UnixNano()) / 1e9, NodeLag: st.Backup.LagSeconds}
		if s.Primary, err = parseTXID(st.TXID); err != nil {
			return err
		}
		if s.Backup, err = parseTXID(st.Backup.TXID); err != nil {
			return err
		}
		*samples = append(*samples, s)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// rpoLags returns, for each sample, how far behind in time the backup's
// newest restorable transaction was: 0 when the backup had the primary's
// TXID, else the time since the primary committed the first transaction
// the backup lacked (what a restore at that moment would lose the
// longest). commitTimes[k] is when TXID base+1+k committed (Unix
// seconds); a TXID outside them counts as committed at the first sample
// whose Primary reached it. A lag is never negative.
func rpoLags(samples []rpoSample, base int64, commitTimes []float64) []float64 {
	lags := make([]float64, 0, len(samples))
	for _, s := range samples {
		if s.Backup >= s.Primary {
			lags = append(lags, 0)
			continue
		}
		next := s.Backup + 1
		var committed float64
		if k := next - base - 1; k >= 0 && k < int64(len(commitTimes)) {
			committed = commitTimes[k]
		} else {
			i := slices.IndexFunc(samples, func(x rpoSample) bool { return x.Primary >= next })
			committed = samples[i].At // s itself qualifies
		}
		lags = append(lags, max(0, s.At-committed))
	}
	return lags
}

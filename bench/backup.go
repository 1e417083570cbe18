package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/pagewire/pagewire/backup"
	"github.com/pagewire/pagewire/config"
	"github.com/pagewire/pagewire/internal/s3test"
)

// The backup section: continuous backup to a real S3 server (SeaweedFS's
// weed mini on loopback), measured by the bars: what it costs the
// primary's write rate, how far behind the newest restorable transaction
// is (the RPO), and how fast a restore reads it back.

const (
	// backupRPORate is the commit rate the RPO is measured at (tx/s).
	backupRPORate = 1000
	// backupDelay is backup.delay on the node: the most time a commit
	// waits before its upload starts; the config's default.
	backupDelay = config.DefaultBackupDelay
	// backupSampleInterval is how often the RPO run reads the node's API.
	backupSampleInterval = 100 * time.Millisecond
	// backupCatchUpTimeout bounds a wait for the backup to have every
	// transaction of a database (a 200 MiB one included).
	backupCatchUpTimeout = 5 * time.Minute
	// backupRestoreTxns is how many transactions the restored database
	// is written in: big blobs, few commits.
	backupRestoreTxns = 10
	// backupPrefix is the key prefix (backup.path) in the bucket.
	backupPrefix = "bench"
)

// The bars; the report prints them next to the results and
// nothing asserts them.
var backupBars = backupBarSet{
	WriteRateRatio:    0.85,
	RPOP99Seconds:     2,
	RPORate:           backupRPORate,
	RestoreMBPerSec:   100,
	RestoreDatabaseMB: 200,
}

// runBackup runs the backup section and fills br as it goes, so that on an
// error the report still holds what was measured. The S3 server and every
// node it starts are stopped, and their mounts gone, when it returns.
func runBackup(ctx context.Context, o options, bin, workDir, diskDir string, stderr io.Writer, br *backupReport) (err error) {
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, "bench: backup: "+format+"\n", args...) }
	base := filepath.Join(workDir, "backup")
	br.Settings = backupSettings{Rounds: o.Rounds, Inserts: o.Inserts, DelaySeconds: backupDelay.Seconds(),
		RPOSeconds: o.BackupSeconds, RPOSampleMS: float64(backupSampleInterval.Milliseconds()), RestoreMiB: o.BackupRestoreMiB}

	// The S3 server, with its data in the work folder.
	logf("starting the SeaweedFS S3 server")
	s3dir := filepath.Join(base, "s3")
	if err := os.MkdirAll(s3dir, 0o755); err != nil {
		return err
	}
	srv, err := s3test.StartIn(s3dir)
	if err != nil {
		return err
	}
	defer srv.Stop()
	section := s3BackupSection(srv)

	// A primary without backup and one with it, both up for the whole
	// section so the rounds can alternate between them.
	var nodes []*node
	defer func() { err = errors.Join(err, stopNodes(nodes...)) }()
	logf("starting a primary with backup off and one with backup on")
	off, err := startNode(ctx, bin, nodeSpec{Name: "primary (backup off)", Dir: filepath.Join(base, "off")})
	if err != nil {
		return err
	}
	nodes = append(nodes, off)
	on, err := startNode(ctx, bin, nodeSpec{Name: "primary (backup on)", Dir: filepath.Join(base, "on"), Config: section})
	if err != nil {
		return err
	}
	nodes = append(nodes, on)
	api := &http.Client{Timeout: 10 * time.Second}

	// 1. insert-normal on plain disk and on both primaries.
	if err := backupWriteRates(ctx, o, off, on, api, diskDir, workDir, logf, br); err != nil {
		return fmt.Errorf("write rates: %w", err)
	}

	// 2. The RPO at 1,000 tx/s.
	if br.RPO, err = measureRPO(ctx, o, on, api, workDir); err != nil {
		return fmt.Errorf("RPO: %w", err)
	}
	r := br.RPO
	logf("RPO at %s tx/s: p50 %.3f s, p99 %.3f s, max %.3f s over %d samples", formatRate(r.CommitRate), r.P50Seconds, r.P99Seconds, r.MaxSeconds, r.Samples)

	// 3. A restore of a big database from the bucket.
	if br.Restore, err = measureRestore(ctx, o, on, api, section, base, workDir, logf); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return stopNodes(nodes...)
}

// s3BackupSection is the node's backup section for the S3 server.
func s3BackupSection(s *s3test.Server) string {
	return fmt.Sprintf("backup:\n  type: s3\n  bucket: %s\n  path: %s\n  endpoint: %q\n  region: %s\n  force-path-style: true\n"+
		"  access-key-id: %s\n  secret-access-key: %s\n  delay: %s\n",
		s.Bucket, backupPrefix, s.Endpoint, s.Region, s.AccessKey, s.SecretKey, backupDelay)
}

// backupWriteRates runs insert-normal on plain disk and on the primaries
// with backup off and on, round by round in rotating order; after each run
// with backup on it waits until the backup has the run's database, so
// that the upload does not weigh on the next run.
func backupWriteRates(ctx context.Context, o options, off, on *node, api *http.Client, diskDir, workDir string, logf func(string, ...any), br *backupReport) error {
	targets := []string{"disk", "off", "on"}
	for round := 1; round <= o.Rounds; round++ {
		rates := map[string]float64{}
		order := slices.Clone(targets)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, target := range order {
			name := fmt.Sprintf("backup_ins_%s_r%d.db", target, round)
			path := filepath.Join(diskDir, name)
			switch target {
			case "off":
				path = filepath.Join(off.MountDir, name)
			case "on":
				path = filepath.Join(on.MountDir, name)
			}
			res, err := runWorkload(ctx, insertNormal, path, o.Inserts, workDir, nil)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", round, target, err)
			}
			rates[target] = float64(res.Ops) / res.Seconds
			switch target {
			case "disk":
				br.Disk.add(res)
			case "off":
				br.Off.add(res)
			case "on":
				br.On.add(res)
				d, err := waitBackedUp(ctx, api, on, name, backupCatchUpTimeout)
				if err != nil {
					return err
				}
				br.CatchUpSeconds = append(br.CatchUpSeconds, d.Seconds())
			}
		}
		br.RoundRatios = append(br.RoundRatios, rates["on"]/rates["off"])
		br.Ratio = median(br.RoundRatios)
		br.OffVsDisk, br.OnVsDisk = br.Off.MedianRate/br.Disk.MedianRate, br.On.MedianRate/br.Disk.MedianRate
		logf("round %d/%d insert-normal: disk %s tx/s, backup off %s tx/s, backup on %s tx/s: %s of off", round, o.Rounds,
			formatRate(rates["disk"]), formatRate(rates["off"]), formatRate(rates["on"]), formatRatio(rates["on"]/rates["off"]))
	}
	return nil
}

// dbStatus is the part of GET /api/v1/dbs/{db} the section reads.
type dbStatus struct {
	TXID   string `json:"txid"` // 16 hex digits, as -pos
	Backup *struct {
		TXID       string  `json:"txid"`
		LagSeconds float64 `json:"lag_seconds"`
		Error      string  `json:"error"`
	} `json:"backup"` // nil until the node uploads the database
}

// String says where the database and its backup are, for errors.
func (st dbStatus) String() string {
	if st.Backup == nil {
		return "TXID " + st.TXID + ", no backup reported"
	}
	return fmt.Sprintf("TXID %s, backup at %s, lag %.3f s, last error %q", st.TXID, st.Backup.TXID, st.Backup.LagSeconds, st.Backup.Error)
}

// readDBStatus reads a database's status from the node's API.
func readDBStatus(ctx context.Context, api *http.Client, n *node, db string) (dbStatus, error) {
	var st dbStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL+"/api/v1/dbs/"+db, nil)
	if err != nil {
		return st, err
	}
	resp, err := api.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /api/v1/dbs/%s on %s: %s", db, n.Name, resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// parseTXID parses a TXID as the API and -pos print it.
func parseTXID(s string) (int64, error) {
	v, err := strconv.ParseUint(s, 16, 64)
	return int64(v), err
}

// waitBackedUp polls the node's API until the backup of db has its TXID
// with nothing pending, and returns how long that took.
func waitBackedUp(ctx context.Context, api *http.Client, n *node, db string, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(posPollInterval * 10)
	defer tick.Stop()
	var last dbStatus
	for {
		st, err := readDBStatus(ctx, api, n, db)
		if err != nil && ctx.Err() == nil {
			return 0, err
		}
		if err == nil {
			last = st
			if st.Backup != nil && st.Backup.TXID == st.TXID && st.Backup.LagSeconds == 0 {
				return time.Since(start), nil
			}
		}
		select {
		case <-n.done:
			return 0, fmt.Errorf("%s exited while backing up %s: %v\n%s", n.Name, db, n.err, n.logTail())
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return 0, fmt.Errorf("the backup of %s on %s did not catch up within %s: %s\n%s", db, n.Name, timeout, last, n.logTail())
			}
			return 0, ctx.Err()
		case <-tick.C:
		}
	}
}

// measureRestore writes a database of o.BackupRestoreMiB on the primary n
// in a few big transactions, waits until the backup has it, and times its
// restore from the bucket (the backup section given) into a file under
// base.
func measureRestore(ctx context.Context, o options, n *node, api *http.Client, section, base, workDir string, logf func(string, ...any)) (*restoreResult, error) {
	const db = "backup_restore.db"
	logf("writing a %d MiB database on the primary in %d transactions", o.BackupRestoreMiB, min(backupRestoreTxns, o.BackupRestoreMiB))
	var made struct {
		Bytes   int64   `json:"bytes"`
		Seconds float64 `json:"seconds"`
	}
	if err := runPython(ctx, "restore database setup on the primary", replicationScript, workDir, &made,
		"setup-snapshot", filepath.Join(n.MountDir, db), fmt.Sprint(o.BackupRestoreMiB), fmt.Sprint(backupRestoreTxns)); err != nil {
		return nil, err
	}
	d, err := waitBackedUp(ctx, api, n, db, backupCatchUpTimeout)
	if err != nil {
		return nil, err
	}
	st, err := readDBStatus(ctx, api, n, db)
	if err != nil {
		return nil, err
	}
	res := &restoreResult{DatabaseBytes: made.Bytes, WriteSeconds: made.Seconds, BackedUpSeconds: d.Seconds()}
	logf("wrote %.1f MB in %.3f s, backed up %.3f s later; restoring it from the bucket", float64(made.Bytes)/1e6, made.Seconds, d.Seconds())

	// Open the bucket as `pagewire restore` does, from the node's section.
	cfg, err := config.Parse([]byte(section), "the bench's backup section", func(string) string { return "" })
	if err != nil {
		return nil, err
	}
	b, err := backup.OpenBucket(ctx, cfg.Backup)
	if err != nil {
		return nil, err
	}
	defer b.Close()

	// Restore the newest, timed, to local disk next to the nodes' data.
	out := filepath.Join(base, "restored", db)
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return nil, err
	}
	start := time.Now()
	r, err := backup.Restore(ctx, b, backup.RestoreOptions{DB: db, Output: out})
	if err != nil {
		return nil, err
	}
	res.Seconds = time.Since(start).Seconds()
	if got := r.Pos.TXID.String(); got != st.TXID {
		return nil, fmt.Errorf("the restore ended at TXID %s, the primary's is %s", got, st.TXID)
	}
	res.Objects, res.ReadBytes = r.Objects, r.Bytes
	res.RestoredBytes = int64(r.PageSize) * int64(r.PageCount)
	res.MBPerSec = float64(res.DatabaseBytes) / 1e6 / res.Seconds
	res.ReadMBPerSec = float64(res.ReadBytes) / 1e6 / res.Seconds
	logf("restored %.1f MB (%d objects, %.1f MB read) in %.3f s: %.1f MB/s", float64(res.RestoredBytes)/1e6, r.Objects, float64(r.Bytes)/1e6, res.Seconds, res.MBPerSec)
	return res, nil
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/schollz/progressbar/v3"
	"gocloud.dev/blob"
	"golang.org/x/term"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/backup"
	"github.com/pagewire/pagewire/config"
	"github.com/pagewire/pagewire/engine"
	"github.com/pagewire/pagewire/internal/logkey"
	adminv1 "github.com/pagewire/pagewire/proto/gen/go/pagewire/admin/v1"
)

// restoreArgs is what `pagewire restore` was asked to do.
type restoreArgs struct {
	name       string
	txid       pagewire.TXID // 0: the newest, or the one at at
	at         time.Time     // zero: the newest, or txid
	output     string        // "": import onto the running node instead
	configPath string
	r          *remote
}

// parseRestoreFlags parses `pagewire restore`'s flags. Flags that cannot
// go together are a usageError.
func parseRestoreFlags(args []string) (restoreArgs, error) {
	var a restoreArgs
	fset := flag.NewFlagSet("restore", flag.ContinueOnError)
	fset.SetOutput(io.Discard) // main prints the usage
	name := fset.String("name", "", "database name")
	txid := fset.String("txid", "", "the transaction to restore to: decimal (42) or 16 hex digits as pagewire prints it (000000000000002a); default: the newest")
	at := fset.String("timestamp", "", "restore to the newest transaction committed at or before this RFC 3339 time (2024-05-01T12:00:00Z)")
	fset.StringVar(&a.output, "o", "", "write the restored database to this file, offline, instead of importing it onto the node at -url")
	fset.StringVar(&a.configPath, "config", "", "the node's config file, for its backup section (default: as `pagewire mount` finds it)")
	a.r = addRemoteFlags(fset, "URL of the primary to import the restored database onto")
	if err := fset.Parse(args); err != nil {
		return restoreArgs{}, errUsage
	}
	set := map[string]bool{}
	fset.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case fset.NArg() != 0:
		return restoreArgs{}, &usageError{fmt.Sprintf("restore: unexpected argument %q: the output file goes after -o", fset.Arg(0))}
	case *name == "":
		return restoreArgs{}, &usageError{"restore: -name is required: the database to restore"}
	case set["txid"] && set["timestamp"]:
		return restoreArgs{}, &usageError{"restore: -txid and -timestamp cannot be used together: restore to a transaction or to a time"}
	case a.output != "" && (set["url"] || set["token"] || set["tls-ca"] || set["tls-cert"] || set["tls-key"]):
		return restoreArgs{}, &usageError{"restore: -o restores offline to a file and talks to no node: leave out -url, -token and -tls-*, or leave out -o to import onto the node"}
	}
	if err := pagewire.ValidateDBName(*name); err != nil {
		return restoreArgs{}, fmt.Errorf("-name: %w", err)
	}
	a.name = *name
	if set["txid"] {
		v, err := parseTXID(*txid)
		if err != nil {
			return restoreArgs{}, err
		}
		a.txid = v
	}
	if set["timestamp"] {
		t, err := time.Parse(time.RFC3339, *at)
		if err != nil {
			return restoreArgs{}, fmt.Errorf("-timestamp %q is not an RFC 3339 time: write it as 2024-05-01T12:00:00Z or 2024-05-01T14:00:00+02:00", *at)
		}
		a.at = t
	}
	return a, nil
}

// parseTXID parses -txid: 16 hex digits, as pagewire prints a TXID (in
// `pagewire status`, a -pos file, the logs), or else a decimal number.
func parseTXID(s string) (pagewire.TXID, error) {
	var v uint64
	var err error
	if len(s) == 16 {
		v, err = strconv.ParseUint(s, 16, 64)
	} else {
		v, err = strconv.ParseUint(s, 10, 64)
	}
	if err != nil || v == 0 {
		return 0, fmt.Errorf("-txid %q is not a transaction: give it in decimal (42) or as the 16 hex digits pagewire prints (000000000000002a); transactions start at 1", s)
	}
	return pagewire.TXID(v), nil
}

// runRestore restores a database from the backup: to a file with -o,
// else onto the running node as an import.
func runRestore(ctx context.Context, args []string, out io.Writer) error {
	a, err := parseRestoreFlags(args)
	if err != nil {
		return err
	}
	b, err := openBackup(ctx, a.configPath)
	if err != nil {
		return err
	}
	defer b.Close()
	opts := backup.RestoreOptions{DB: a.name, TXID: a.txid, Time: a.at, Output: a.output}

	// Offline: straight to the file.
	if a.output != "" {
		res, err := restoreWithProgress(ctx, b, opts)
		if err != nil {
			return err
		}
		printRestored(out, a.name, a.output, res)
		return nil
	}

	// Onto the node: check that it is the primary before anything is
	// downloaded, restore into a temporary file, then import it.
	conn, node, err := a.r.dialNode(ctx, *a.r.url)
	if err != nil {
		return err
	}
	defer conn.Close()
	admin := adminv1.NewAdminServiceClient(conn)
	if node.GetRole() != adminv1.Role_ROLE_PRIMARY {
		return fmt.Errorf("%s is not the primary: pass the primary's URL with -url (%s)", *a.r.url, primaryHint(node))
	}
	tmp, err := os.MkdirTemp("", "pagewire-restore-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	opts.Output = filepath.Join(tmp, a.name)
	res, err := restoreWithProgress(ctx, b, opts)
	if err != nil {
		return err
	}
	printRestored(out, a.name, "a temporary file", res)
	d, err := importFile(ctx, admin, a.name, opts.Output)
	if err != nil {
		return fmt.Errorf("import the restored %q onto %s: %w; the restored file was removed, restore with -o to keep one", a.name, *a.r.url, err)
	}
	printImported(out, d)
	return nil
}

// primaryHint says which node is the primary, as a replica names it.
func primaryHint(node *adminv1.GetNodeResponse) string {
	if u := node.GetPrimaryUrl(); u != "" {
		return fmt.Sprintf("%s, at %s", node.GetPrimary(), u)
	}
	return "it knows of none yet"
}

// openBackup opens the bucket the backup section of the node's config
// names (see loadBackupConfig). The caller closes it.
func openBackup(ctx context.Context, configPath string) (*blob.Bucket, error) {
	bcfg, err := loadBackupConfig(configPath)
	if err != nil {
		return nil, err
	}
	return backup.OpenBucket(ctx, bcfg)
}

// loadBackupConfig loads the backup section of the node's config, found
// as `pagewire mount` finds it.
func loadBackupConfig(path string) (config.BackupConfig, error) {
	cfg, source, err := loadConfig(path)
	if err != nil {
		return config.BackupConfig{}, err
	}
	switch {
	case cfg.Backup.Enabled():
		return cfg.Backup, nil
	case path == "" && source == embeddedDefault:
		return config.BackupConfig{}, errors.New("no config file found (./pagewire.yml, ./litefs.yml, /etc/pagewire.yml, /etc/litefs.yml), so no backup to read: pass the node's config with -config")
	}
	return config.BackupConfig{}, fmt.Errorf("%s configures no backup: set backup.type (file, s3, gcs or azure) and where backups go, or pass another config with -config", source)
}

// restoreWithProgress runs backup.Restore with a progress bar on stderr
// when stderr is a terminal.
func restoreWithProgress(ctx context.Context, b *blob.Bucket, opts backup.RestoreOptions) (backup.Restored, error) {
	p := newProgress(os.Stderr, "restoring "+opts.DB)
	opts.Progress = p.update
	res, err := backup.Restore(ctx, b, opts)
	p.done()
	return res, err
}

// printRestored prints what a restore wrote to where.
func printRestored(out io.Writer, name, where string, r backup.Restored) {
	fmt.Fprintf(out, "restored %s to %s\n", name, where)
	fmt.Fprintf(out, "  txid:     %s (%d)\n", r.Pos.TXID, uint64(r.Pos.TXID))
	fmt.Fprintf(out, "  position: %s\n", r.Pos)
	fmt.Fprintf(out, "  time:     %s\n", r.Time.UTC().Format(timeLayout))
	fmt.Fprintf(out, "  pages:    %d of %d bytes (%s)\n", r.PageCount, r.PageSize, humanBytes(int64(r.PageCount)*int64(r.PageSize)))
	fmt.Fprintf(out, "  read:     %d objects, %s\n", r.Objects, humanBytes(r.Bytes))
}

// progress draws a restore's progress bar, or nothing when its writer is
// no terminal. The bar is made at the first update, once the total is
// known.
type progress struct {
	w    *os.File // nil: quiet
	what string
	bar  *progressbar.ProgressBar
}

// newProgress returns a progress bar on w, quiet unless w is a terminal.
func newProgress(w *os.File, what string) *progress {
	if !term.IsTerminal(int(w.Fd())) {
		w = nil
	}
	return &progress{w: w, what: what}
}

// update is a backup.RestoreOptions.Progress.
func (p *progress) update(done, total int64) {
	if p.w == nil {
		return
	}
	if p.bar == nil {
		w := p.w
		p.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(p.what),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowTotalBytes(true),
			progressbar.OptionSetWidth(20),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		)
	}
	_ = p.bar.Set64(done)
}

// done ends the bar's line, whether or not the restore finished.
func (p *progress) done() {
	if p.bar != nil && !p.bar.IsFinished() {
		_ = p.bar.Exit()
	}
}

// humanBytes prints a size in B, KiB, MiB, GiB or TiB.
func humanBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n)/1024, 0
	for v >= 1024 && unit < 3 {
		v, unit = v/1024, unit+1
	}
	return fmt.Sprintf("%.1f %s", v, [...]string{"KiB", "MiB", "GiB", "TiB"}[unit])
}

// restoreBatch is how many pages restoreOnStart hands the store at a time.
const restoreBatch = 256

// restoreOnStart restores every database the backup has into store, when
// cfg.RestoreOnStart is set and store has none: each is restored and
// verified into a temporary file in dataDir, then given to the store at
// the position it was restored to. An empty backup starts the node empty.
// A restore that fails undoes the databases restored before it (so that
// the next start tries again from empty) and returns an error that says
// what to do: the node must not serve a part of its backup.
func restoreOnStart(ctx context.Context, log *slog.Logger, cfg config.BackupConfig, store *engine.Store, dataDir string) error {
	// A temporary folder a killed restore left behind.
	old, _ := filepath.Glob(filepath.Join(dataDir, restoreTempPrefix+"*"))
	for _, dir := range old {
		_ = os.RemoveAll(dir)
	}
	if !cfg.RestoreOnStart {
		return nil
	}
	if have := store.DatabaseNames(); len(have) > 0 {
		log.Info("restore-on-start: data.dir has databases, so nothing is restored", "databases", len(have))
		return nil
	}

	// What the backup has.
	b, err := backup.OpenBucket(ctx, cfg)
	if err != nil {
		return fmt.Errorf("restore-on-start: %w", err)
	}
	defer b.Close()
	names, err := backup.Databases(ctx, b)
	if err != nil {
		return fmt.Errorf("restore-on-start: %w; check the backup section of the config, or start without restore-on-start to begin empty", err)
	}
	if len(names) == 0 {
		log.Info("restore-on-start: the backup has no databases: starting empty")
		return nil
	}
	tmp, err := os.MkdirTemp(dataDir, restoreTempPrefix)
	if err != nil {
		return fmt.Errorf("restore-on-start: %w", err)
	}
	defer os.RemoveAll(tmp)

	// Each database in turn: restored, verified, then given to the store.
	var restored []string
	for _, name := range names {
		res, err := restoreInto(ctx, b, store, name, filepath.Join(tmp, name))
		if backup.IsNoBackup(err) {
			log.Warn("restore-on-start: the backup has no restore point of a database yet: skipped", logkey.DB, name)
			continue
		}
		if err != nil {
			for _, done := range restored {
				if derr := store.DeleteDatabase(done); derr != nil {
					log.Warn("restore-on-start: could not undo a database restored before the failure", logkey.DB, done, logkey.Error, derr)
				}
			}
			return fmt.Errorf("restore-on-start: restore %q: %w; the node did not start and restored nothing. "+
				"See the backup's restore points with `pagewire backup ls -name %s`, fix or remove what is named, or start with -restore-on-start=false to begin empty",
				name, err, name)
		}
		restored = append(restored, name)
		log.Info("restore-on-start: restored database", logkey.DB, name, logkey.Position, res.Pos.String(),
			"time", res.Time.UTC().Format(timeLayout), logkey.Pages, res.PageCount, "objects", res.Objects, "bytes", res.Bytes)
	}
	return nil
}

// restoreTempPrefix names the temporary folders restoreOnStart makes in
// data.dir.
const restoreTempPrefix = ".restore-on-start-"

// restoreInto restores name's newest state from b into the file at path,
// then creates the database in store from it and removes the file.
func restoreInto(ctx context.Context, b *blob.Bucket, store *engine.Store, name, path string) (backup.Restored, error) {
	res, err := backup.Restore(ctx, b, backup.RestoreOptions{DB: name, Output: path})
	if err != nil {
		return backup.Restored{}, err
	}
	defer os.Remove(path)
	f, err := os.Open(path)
	if err != nil {
		return backup.Restored{}, err
	}
	defer f.Close()
	if err := store.RestoreDatabase(name, res.PageSize, res.Pos, pageReader(f, res.PageSize, res.PageCount), nil); err != nil {
		return backup.Restored{}, err
	}
	return res, nil
}

// pageReader returns a RestoreDatabase next func that reads a database
// file's count pages, restoreBatch at a time, then nil.
func pageReader(r io.Reader, pageSize, count uint32) func() ([]pagewire.Page, error) {
	var pgno uint32
	return func() ([]pagewire.Page, error) {
		if pgno >= count {
			return nil, nil
		}
		n := min(restoreBatch, count-pgno)
		buf := make([]byte, int(n)*int(pageSize))
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, fmt.Errorf("read page %d of the restored file: %w", pgno+1, err)
		}
		pages := make([]pagewire.Page, n)
		for i := range pages {
			pgno++
			pages[i] = pagewire.Page{Pgno: pgno, Data: buf[i*int(pageSize) : (i+1)*int(pageSize)]}
		}
		return pages, nil
	}
}

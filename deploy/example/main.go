package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

const (
	defaultAddr     = ":8081"
	defaultDB       = "/litefs/app.db"
	envDB           = "EXAMPLE_DB"
	shutdownTimeout = 10 * time.Second
	// maxOpenConns keeps the pool small: SQLite has one writer anyway.
	maxOpenConns = 4
	// connMaxLifetime renews connections: on a replica SQLite opens the
	// database read-only (the mount refuses a writable open there) and a
	// connection keeps that mode, so after a failover the new primary's app
	// takes writes within this long.
	connMaxLifetime = time.Second
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, os.Args[1:], os.Getenv, log); err != nil {
		log.Error("example stopped", logKeyError, err)
		os.Exit(1)
	}
}

// run parses args, opens the database and serves until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, log *slog.Logger) error {
	fs := flag.NewFlagSet("example", flag.ContinueOnError)
	addr := fs.String("addr", defaultAddr, "address to listen on")
	dbPath := fs.String("db", defaultDB, "path of the SQLite database file, on the FUSE mount (default from $"+envDB+" when set)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: use -addr and -db", fs.Args())
	}

	// The -db flag wins over the environment, which wins over the default.
	dbGiven := false
	fs.Visit(func(f *flag.Flag) { dbGiven = dbGiven || f.Name == "db" })
	if v := getenv(envDB); !dbGiven && v != "" {
		*dbPath = v
	}

	db, err := openDB(*dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := ensureSchema(ctx, db, *dbPath, log); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on -addr %q: %w: free the port or pass another -addr", *addr, err)
	}
	srv := &http.Server{
		Handler:           newHandler(db, log),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("example listening", logKeyAddr, ln.Addr().String(), logKeyDB, *dbPath)

	// Serve until the server fails or ctx is done.
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	// Then shut down, giving requests shutdownTimeout to finish.
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		log.Warn("requests still running at shutdown were cut off", logKeyError, err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// openDB opens the database at path. params are extra SQLite URI
// parameters, such as "mode=ro". It sets a busy timeout and no
// journal_mode: the mount makes every database WAL.
func openDB(path string, params ...string) (*sql.DB, error) {
	// A "file:" URI, so that SQLite sees params; escape what a URI path
	// cannot hold.
	escaped := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	dsn := "file:" + escaped + "?" + strings.Join(append(params, "_pragma=busy_timeout(5000)"), "&")
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database %q: %w", path, err)
	}
	db.SetMaxOpenConns(maxOpenConns)
	db.SetMaxIdleConns(maxOpenConns)
	db.SetConnMaxLifetime(connMaxLifetime)
	return db, nil
}

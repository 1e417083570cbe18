package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

const createItems = `CREATE TABLE IF NOT EXISTS items (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	name       TEXT NOT NULL,
	value      TEXT NOT NULL,
	created_at TEXT NOT NULL
)`

// ensureSchema creates the items table when it is missing. On a replica the
// database is read-only: there it only logs, since the primary creates the
// table and it replicates.
func ensureSchema(ctx context.Context, db *sql.DB, path string, log *slog.Logger) error {
	var n int
	err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'items'`).Scan(&n)
	switch {
	case err == nil && n > 0:
		return nil
	case err == nil:
	case hasCode(err, sqlite3.SQLITE_CANTOPEN):
		// A replica cannot create a database the primary has not made yet.
		// A directory that is not there is a wrong -db, though.
		if _, serr := os.Stat(filepath.Dir(path)); serr != nil {
			return fmt.Errorf("open database %q: %w: check -db (or %s); its directory should be the mount's fuse.dir", path, err, envDB)
		}
		log.Warn("cannot open the database yet; serving anyway: on a replica, it appears once the primary creates it",
			logKeyDB, path, logKeyError, err)
		return nil
	default:
		return fmt.Errorf("look for table items in %q: %w", path, err)
	}
	if _, err := db.ExecContext(ctx, createItems); err != nil {
		if isReadOnly(err) {
			log.Warn("table items is missing and this node's database is read-only (a replica); serving anyway: the primary creates it and it replicates here",
				logKeyDB, path)
			return nil
		}
		return fmt.Errorf("create table items in %q: %w", path, err)
	}
	log.Info("created table items", logKeyDB, path)
	return nil
}

// isReadOnly reports whether err is SQLite refusing a write to a read-only
// database, as on a replica.
func isReadOnly(err error) bool {
	return hasCode(err, sqlite3.SQLITE_READONLY) || (err != nil && strings.Contains(err.Error(), "readonly"))
}

// hasCode reports whether err is a SQLite error with primary result code
// code (extended codes included).
func hasCode(err error, code int) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == code
}

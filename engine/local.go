package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/logkey"
)

// This file is the Store's side of replication on a replica: what
// replicator.Local asks of the node's own storage.

// divergedDirName is the folder under data.dir where a replica keeps the
// copies of databases it had to re-seed.
const divergedDirName = "diverged"

// Position returns a database's position; ok is false if it doesn't exist.
func (s *Store) Position(db string) (pagewire.Pos, bool) {
	di, err := s.Database(db)
	if err != nil {
		return pagewire.Pos{}, false
	}
	return di.Pos, true
}

// CreateDatabase creates an empty WAL database with the given page size, as
// a replica does before receiving a snapshot.
func (s *Store) CreateDatabase(name string, pageSize uint32) error {
	if err := pagewire.ValidateDBName(name); err != nil {
		return err
	}
	if !pagewire.ValidPageSize(pageSize) {
		return fmt.Errorf("%w: page size %d", pagewire.ErrInvalidArgument, pageSize)
	}
	s.mu.Lock()
	if s.dbs[name] != nil {
		s.mu.Unlock()
		return nil
	}
	d, err := createDatabase(filepath.Join(s.dir, "dbs", name), name, pageSize, s.dbOptions())
	if err == nil {
		err = syncDir(filepath.Join(s.dir, "dbs"))
	}
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("create database %q: %w", name, err)
	}
	s.addLocked(d)
	s.dbsChangedLocked()
	s.mu.Unlock()
	s.log.Info("created database", logkey.DB, name, "page_size", pageSize)
	// The kernel may remember that these names did not exist.
	s.notify(FileChange{Name: name, Entry: true}, FileChange{Name: pagewire.FileName(name, pagewire.FilePos), Entry: true})
	return nil
}

// RestoreDatabase creates a database from a snapshot's pages, written
// straight to a file of its own as next gives them (nil at the end): no
// app can be reading a database that did not exist, and no more than one
// of next's batches is held. The pages must lead to pos's checksum;
// only then is replace, if set, called to make room (it deletes the copy
// this node has, keeping it aside if need be) before the new one takes the
// name. An error from next, a page out of order or another checksum leaves
// nothing behind and the existing copy as it was.
func (s *Store) RestoreDatabase(name string, pageSize uint32, pos pagewire.Pos, next func() ([]pagewire.Page, error), replace func() error) error {
	if err := pagewire.ValidateDBName(name); err != nil {
		return err
	}
	if !pagewire.ValidPageSize(pageSize) {
		return fmt.Errorf("%w: snapshot of pages of %d bytes", pagewire.ErrInvalidArgument, pageSize)
	}

	// The pages, then the meta, in a folder of their own.
	tmp, err := os.MkdirTemp(filepath.Join(s.dir, "dbs"), ".restore-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	f, err := os.Create(filepath.Join(tmp, databaseFileName))
	if err != nil {
		return err
	}
	sum, err := writeSnapshotPages(f, pageSize, next)
	if err != nil {
		f.Close()
		return err
	}
	if sum != pos.Checksum {
		f.Close()
		return fmt.Errorf("%w: the snapshot's pages lead to checksum %016x, not its %016x: refused before it replaced anything", pagewire.ErrCorrupt, sum, pos.Checksum)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}

	// The meta records the snapshot's position.
	m := meta{Pos: pos, PageSize: pageSize}
	if err := writeFileSync(filepath.Join(tmp, metaFileName), m.encode()); err != nil {
		return err
	}

	// The copy this node has makes room; the folder becomes the
	// database, which must open at pos.
	if replace != nil {
		if err := replace(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dbs[name] != nil {
		return fmt.Errorf("%w: database %q appeared during its restore", pagewire.ErrBusy, name)
	}
	dir := filepath.Join(s.dir, "dbs", name)
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	if err := syncDir(filepath.Join(s.dir, "dbs")); err != nil {
		return err
	}

	// Open it, and check that it is where the snapshot says.
	d, err := openDatabase(dir, name, s.dbOptions())
	if err != nil {
		return err
	}
	if d.startupErr != nil || d.pos != pos {
		d.closeFiles()
		_ = os.RemoveAll(dir)
		return fmt.Errorf("%w: restored %q is at %s, the snapshot says %s", pagewire.ErrCorrupt, name, d.pos, pos)
	}

	// Readers and the mount learn of it.
	s.addLocked(d)
	s.dbsChangedLocked()
	s.log.Info("restored database from a snapshot", logkey.DB, name, logkey.Position, pos.String())
	s.notify(FileChange{Name: name, Entry: true}, FileChange{Name: pagewire.FileName(name, pagewire.FilePos), Entry: true})
	return nil
}

// writeSnapshotPages writes the pages next gives, 1, 2, ... in order, each
// pageSize bytes, to f, through a buffer, and returns their checksum.
func writeSnapshotPages(f *os.File, pageSize uint32, next func() ([]pagewire.Page, error)) (uint64, error) {
	bw := bufio.NewWriterSize(f, 1<<20)
	var n uint32
	var sum uint64
	for {
		pages, err := next()
		if err != nil {
			return 0, err
		}
		if pages == nil {
			break
		}
		for _, p := range pages {
			if n++; p.Pgno != n || uint32(len(p.Data)) != pageSize {
				return 0, fmt.Errorf("%w: snapshot page %d out of order or of the wrong size", pagewire.ErrInvalidArgument, p.Pgno)
			}
			sum ^= pageChecksum(p.Pgno, p.Data)
			if _, err := bw.Write(p.Data); err != nil {
				return 0, err
			}
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("%w: a snapshot of no pages", pagewire.ErrInvalidArgument)
	}
	return sum | checksumFlag, bw.Flush()
}

// ChecksumPages returns sum, a running checksum of database name that
// started at its checksum at position at, changed for pages replacing the
// database's pages and, if truncate > 0, for the pages past truncate
// dropped, as applyCommit would change it: a replica applying a
// transaction a part at a time knows the checksum it leads to before its
// commit. The database must be at position at, so that the pages replaced
// are those of at. Pages must be within truncate when it is set.
func (s *Store) ChecksumPages(name string, at pagewire.Pos, sum uint64, pages []pagewire.Page, truncate uint32) (uint64, error) {
	d, err := s.db(name)
	if err != nil {
		return 0, err
	}

	// The pages' own checksums, without the lock.
	sums := make([]uint64, len(pages))
	for i, p := range pages {
		if p.Pgno == 0 || uint32(len(p.Data)) != d.pageSize {
			return 0, fmt.Errorf("%w: page %d of %d bytes in a database of %d-byte pages", pagewire.ErrInvalidArgument, p.Pgno, len(p.Data), d.pageSize)
		}
		sums[i] = pageChecksum(p.Pgno, p.Data)
	}

	// Against the database's, at the position given.
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.pos != at {
		return 0, fmt.Errorf("%w: database %q is at %s, not %s: its pages moved on", pagewire.ErrBusy, name, d.pos, at)
	}
	old := func(pgno uint32) uint64 {
		if int(pgno) <= len(d.pages) {
			return d.pages[pgno-1]
		}
		return 0 // a new page
	}
	sum &^= checksumFlag
	for i, p := range pages {
		sum ^= old(p.Pgno) ^ sums[i]
	}
	if truncate > 0 {
		for pgno := truncate + 1; int(pgno) <= len(d.pages); pgno++ {
			sum ^= d.pages[pgno-1]
		}
	}
	return sum | checksumFlag, nil
}

// ExpectCommit announces that the next commit of a database applies the
// primary's transactions txns (consecutive, the first following the
// database's position) at once: it then advances the TXID to the last one's
// and logs each, provided it ends at the last one's checksum. done withdraws
// the announcement if that commit did not happen.
func (s *Store) ExpectCommit(name string, txns []pagewire.Txn) (done func(), err error) {
	d, err := s.db(name)
	if err != nil {
		return nil, err
	}
	if len(txns) == 0 {
		return nil, fmt.Errorf("%w: no transactions to expect", pagewire.ErrInvalidArgument)
	}

	// Check that the transactions follow on from the position.
	d.mu.Lock()
	defer d.mu.Unlock()
	prev := d.pos
	for _, t := range txns {
		if t.TXID != prev.TXID+1 || t.PreChecksum != prev.Checksum {
			return nil, fmt.Errorf("%w: transaction %d (pre-checksum %016x) does not follow position %s", pagewire.ErrInvalidArgument, t.TXID, t.PreChecksum, prev)
		}
		prev = pagewire.Pos{TXID: t.TXID, Checksum: t.PostChecksum}
	}

	return d.announce(&expectedCommit{pos: prev, txns: txns})
}

// ExpectPosition announces that the next commit of a database, which the
// apply worker writes a part at a time, takes it to pos: one transaction
// (pos.TXID the next), logged from its frames, or a snapshot (BeginSnapshot)
// of the primary at pos. A commit that ends at another checksum is refused
// before readers see it, and the copy is marked for a re-seed (Damaged).
// done withdraws the announcement if that commit did not happen.
func (s *Store) ExpectPosition(name string, pos pagewire.Pos) (done func(), err error) {
	d, err := s.db(name)
	if err != nil {
		return nil, err
	}
	if pos.TXID == 0 {
		return nil, fmt.Errorf("%w: expected position at TXID 0", pagewire.ErrInvalidArgument)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.announce(&expectedCommit{pos: pos})
}

// Damaged returns why a database takes no writes (its files were found
// damaged at startup, or an apply did not lead to the primary's checksum),
// or nil (also when it does not exist). A replica re-seeds such a copy
// from the primary, keeping it aside.
func (s *Store) Damaged(name string) error {
	d, err := s.db(name)
	if err != nil {
		return nil
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.startupErr
}

// announce makes e the announcement of the next commit. d.mu is held.
func (d *database) announce(e *expectedCommit) (done func(), err error) {
	d.expect = e
	// Recorded before the commit, so that recovery after a crash counts
	// it right.
	if err := d.saveMeta(false); err != nil {
		d.expect = nil
		return nil, err
	}

	// done withdraws the announcement if it is still the current one.
	return func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.expect == e {
			d.expect = nil
			if err := d.saveMeta(false); err != nil {
				d.log.Warn("could not withdraw an expected commit from the meta file", logkey.Error, err)
			}
		}
	}, nil
}

// DeleteDatabase deletes a database that the primary deleted.
func (s *Store) DeleteDatabase(name string) error {
	d, err := s.db(name)
	if err != nil {
		return err
	}
	return s.removeDatabase(d, true)
}

// KeepAside saves a consistent copy of a database, as a plain SQLite file,
// under data.dir/diverged, and logs where.
func (s *Store) KeepAside(name, reason string) (string, error) {
	d, err := s.db(name)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(s.dir, divergedDirName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, ".keep-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	pos, err := d.export(context.Background(), filepath.Join(s.dir, "dbs"), f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("keep a copy of %q: %w", name, err)
	}
	path := filepath.Join(dir, fmt.Sprintf("%s.%s.%s", name, pos.TXID, time.Now().UTC().Format("20060102T150405.000Z")))
	if err := os.Rename(f.Name(), path); err != nil {
		return "", err
	}
	if err := syncDir(dir); err != nil {
		return "", err
	}
	s.log.Warn("kept this node's copy of a database aside before replacing it", logkey.DB, name, "path", path, logkey.Position, pos.String(), "reason", reason)
	return path, nil
}

// BeginSnapshot stops logging commits of a database until Rebase: the next
// commit is a whole snapshot, not a transaction a replica could replay.
func (s *Store) BeginSnapshot(name string) error {
	d, err := s.db(name)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.logTxns = false
	return nil
}

// Rebase sets a database's TXID to pos.TXID once a snapshot made its
// checksum pos.Checksum. The transaction log restarts after it.
func (s *Store) Rebase(name string, pos pagewire.Pos) error {
	d, err := s.db(name)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.logTxns = true
	if d.pos.Checksum != pos.Checksum {
		return fmt.Errorf("%w: after the snapshot %q has checksum %016x, the primary's is %016x", pagewire.ErrCorrupt, name, d.pos.Checksum, pos.Checksum)
	}
	if err := d.txlog.reset(); err != nil {
		return err
	}
	d.pos.TXID = pos.TXID
	d.resetDurable()
	d.hidden = false // the snapshot was published before the rebase
	d.startupErr, d.metaLost = nil, false
	if err := d.saveMeta(true); err != nil {
		return err
	}
	if d.changed != nil {
		close(d.changed)
	}
	d.changed = make(chan struct{})
	return nil
}

// Visible returns the position local readers see of database db (what its
// -pos file says); ok is false if it does not exist.
func (s *Store) Visible(db string) (pos pagewire.Pos, ok bool) {
	d, err := s.db(db)
	if err != nil {
		return pagewire.Pos{}, false
	}
	pos, _, deleted := d.watchVisible()
	return pos, !deleted
}

// MarkVisible records that readers on this node see database db at pos
// or later: the replica's apply worker has published the transactions up
// to pos. Until then the -pos file and WaitForPosition show the position
// before them.
func (s *Store) MarkVisible(db string, pos pagewire.Pos) {
	if d, err := s.db(db); err == nil {
		d.markVisible(pos)
	}
}

// DatabaseNames lists every database, sorted.
func (s *Store) DatabaseNames() []string {
	var names []string
	for _, di := range s.Databases() {
		names = append(names, di.Name)
	}
	return names
}

// WaitForPosition waits until the database called name is at txid or past
// it, or ctx is done; a database that does not exist yet is waited for too.
// It returns the position reached. When ctx ends first, the error wraps
// ctx's and says where the database is.
func (s *Store) WaitForPosition(ctx context.Context, name string, txid pagewire.TXID) (pagewire.Pos, error) {
	if err := pagewire.ValidateDBName(name); err != nil {
		return pagewire.Pos{}, err
	}
	for {
		dbsChanged := s.DatabasesChanged()
		d, err := s.db(name)
		if errors.Is(err, pagewire.ErrNotFound) {
			select {
			case <-ctx.Done():
				return pagewire.Pos{}, fmt.Errorf("database %q does not exist on this node yet (waiting for TXID %s): %w", name, txid, ctx.Err())
			case <-dbsChanged:
				continue
			}
		}
		if err != nil {
			return pagewire.Pos{}, err
		}
		pos, changed, deleted := d.watchVisible()
		if !deleted && pos.TXID >= txid {
			return pos, nil
		}
		select {
		case <-ctx.Done():
			return pos, fmt.Errorf("database %q is at TXID %s on this node, waiting for %s: %w", name, pos.TXID, txid, ctx.Err())
		case <-changed:
		case <-dbsChanged:
		}
	}
}

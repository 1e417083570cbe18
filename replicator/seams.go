package replicator

import (
	"context"

	"github.com/pagewire/pagewire"
)

// Upstream is the primary as a replica reaches it. clients/go implements it
// over gRPC. Streams end with the context.
type Upstream interface {
	// WatchDatabases follows the primary's databases: the first event lists
	// them all.
	WatchDatabases(ctx context.Context, hostname string) (DatabaseWatch, error)
	// StreamTransactions follows one database from the replica's position
	// (TXID 0: no copy).
	StreamTransactions(ctx context.Context, db, hostname string, have pagewire.Pos) (TxnStream, error)
}

// PrimaryInfo is who sends a stream, and with which lease epoch.
type PrimaryInfo struct {
	Hostname     string
	AdvertiseURL string
	Epoch        pagewire.Epoch
	// SyncCommits is set when the primary's commits wait for replicas'
	// acknowledgements: apply durably, acknowledge at once, batch nothing.
	SyncCommits bool
}

// Acknowledger is an optional capability of Upstream: the back channel on
// which a replica tells the primary what it has applied, for synchronous
// replication and the primary's view of its replicas. clients/go's
// upstream implements it.
type Acknowledger interface {
	// AcknowledgeTransactions opens the back channel for one database; it
	// ends with ctx.
	AcknowledgeTransactions(ctx context.Context, db, hostname string) (AckStream, error)
}

// AckStream sends one database's acknowledgements.
type AckStream interface {
	// Send says the replica has applied the database up to pos, durably if
	// durable, following the primary of lease epoch. An error ends the
	// stream: pagewire.ErrInvalidArgument for a position the primary did
	// not send, a *pagewire.ReadOnlyError for another epoch, ErrNotFound
	// for a database the primary does not have, or a transport error.
	Send(epoch pagewire.Epoch, pos pagewire.Pos, durable bool) error
	// Close ends the stream without waiting for the primary.
	Close() error
}

// DatabaseState is a database on the primary.
type DatabaseState struct {
	Name string
	Pos  pagewire.Pos
}

// DatabaseEvent is one event of a DatabaseWatch: exactly one of List (the
// first event), Created, Deleted or Heartbeat is set.
type DatabaseEvent struct {
	Primary   PrimaryInfo
	List      []DatabaseState
	IsList    bool
	Created   *DatabaseState
	Deleted   string
	Heartbeat bool
}

// DatabaseWatch receives DatabaseEvents.
type DatabaseWatch interface {
	// Recv returns the next event; an error ends the watch.
	Recv() (DatabaseEvent, error)
}

// Snapshot starts a full copy of a database.
type Snapshot struct {
	Pos       pagewire.Pos
	PageSize  uint32
	PageCount uint32
	Reason    string
	Diverged  bool // the replica's copy disagrees with the primary: keep it aside
}

// TxnEvent is one event of a TxnStream: exactly one of Txn, Snapshot,
// SnapshotPages, SnapshotEnd or Heartbeat is set.
type TxnEvent struct {
	Primary PrimaryInfo
	// Txn is a transaction, or one part of a transaction too big for one
	// message: its header with the next of its pages, ascending. More is
	// set on every part but the last; the parts of one transaction come
	// one after another, with nothing between them.
	Txn           *pagewire.Txn
	More          bool
	Snapshot      *Snapshot
	SnapshotPages []pagewire.Page
	SnapshotEnd   bool
	Heartbeat     bool
}

// TxnStream receives one database's TxnEvents.
type TxnStream interface {
	// Recv returns the next event; an error ends the stream.
	Recv() (TxnEvent, error)
}

// Local is the replica's own storage engine. engine.Store implements it.
type Local interface {
	// Position returns a database's position; ok is false if it doesn't
	// exist.
	Position(db string) (pos pagewire.Pos, ok bool)
	// CreateDatabase creates an empty WAL database with the given page size.
	CreateDatabase(db string, pageSize uint32) error
	// DeleteDatabase deletes a database.
	DeleteDatabase(db string) error
	// KeepAside saves a consistent copy of a database under data.dir and
	// returns its path.
	KeepAside(db, reason string) (path string, err error)
	// BeginSnapshot says that the next commit replaces the whole database:
	// it is not logged as a transaction.
	BeginSnapshot(db string) error
	// Rebase sets a database's TXID after a snapshot was applied; it fails
	// if the database's checksum is not pos.Checksum.
	Rebase(db string, pos pagewire.Pos) error
	// ExpectCommit announces that the next commit of a database applies
	// txns (consecutive, following its position) at once, so that it
	// advances the TXID past all of them; a commit that does not end at
	// the last one's checksum is refused before local readers see it, and
	// the copy is then Damaged. done withdraws the announcement if that
	// commit did not happen.
	ExpectCommit(db string, txns []pagewire.Txn) (done func(), err error)
	// ExpectPosition announces that the next commit of db, written a part
	// at a time (a big transaction's last part, a snapshot's), takes it to
	// pos; a commit that ends at another checksum is refused before local
	// readers see it, and the copy is then Damaged. done withdraws the
	// announcement if that commit did not happen.
	ExpectPosition(db string, pos pagewire.Pos) (done func(), err error)
	// Damaged returns why db takes no writes (its files were damaged at
	// startup, or an apply did not lead to the primary's checksum), or
	// nil: such a copy is re-seeded from a snapshot and kept aside.
	Damaged(db string) error
	// RestoreDatabase creates a database from a snapshot: pages 1..n, in
	// order, which it takes from next as they come, writing them to a
	// file of its own (next returns nil at the end, or an error that ends
	// the restore with nothing created). Once the pages proved pos's
	// checksum, and only then, it calls replace, if set, to make room (the
	// copy this node has is deleted, or kept aside); it fails unless the
	// result is at pos.
	RestoreDatabase(db string, pageSize uint32, pos pagewire.Pos, next func() ([]pagewire.Page, error), replace func() error) error
	// ChecksumPages returns sum changed for pages replacing db's pages and,
	// if truncate > 0, for db's pages past truncate dropped: started from
	// db's checksum at position at, and carried from call to call, it is
	// the checksum a transaction applied a part at a time leads to, known
	// before its commit. It fails unless db is at position at.
	ChecksumPages(db string, at pagewire.Pos, sum uint64, pages []pagewire.Page, truncate uint32) (uint64, error)
	// MarkVisible says that local readers see db at pos or later: the
	// writer published the transactions up to pos.
	MarkVisible(db string, pos pagewire.Pos)
}

// Package pagewire holds the vocabulary every part of pagewire shares:
// TXIDs, positions, roles, transactions and pages, halt locks, file names
// on the mount, and the errors that cross the wire. It imports only the
// standard library.
//
// # The parts
//
//   - engine: the storage engine. It owns data.dir, detects each committed
//     WAL transaction from the writes it is handed, keeps positions and
//     transaction logs, and decides who may write.
//   - server: the engine's gRPC (StorageService, AdminService,
//     ReplicationService) and HTTP faces, on one port.
//   - fusemount: the FUSE filesystem apps open databases on; a client of
//     StorageService.
//   - replicator: a replica's side: following the primary, and appending
//     its transactions to the live WAL (WALWriter, in an apply worker).
//     replicator/upstream is its gRPC connection to the primary.
//   - wal: SQLite's WAL and wal-index file formats, and their lock bytes.
//   - leaser: the write lease seam; leaser/static and leaser/consul
//     implement it. roles runs the node's role from the lease.
//   - proxy: the HTTP proxy in front of the app (writes to the primary).
//   - config: litefs.yml-compatible configuration.
//   - clients/go: the Go client; internal/wire: the conversions and status
//     mapping it shares with the server.
//   - cmd/pagewire: the CLI, which wires a node together.
//
// # A write, from the mount to disk
//
// SQLite writes a WAL frame to <db>-wal on the mount (fusemount), which
// sends it as one StorageService.WriteFile call over the in-process
// channel (inproc) to the server (server/storage.go), which calls
// engine.Store.WriteAt. The engine writes the bytes to the -wal in
// data.dir and, when they complete a commit frame that validates, counts
// the transaction: its TXID, its checksum, and a record in the
// transaction log.
//
// # A transaction, from the primary to a replica
//
// On the primary, a replica's StreamTransactions call (server/replication.go)
// reads an engine.Feed: the transactions after the replica's position,
// from the transaction log, batched while busy, or a snapshot. On the
// replica, replicator.Replica receives them through replicator/upstream
// and hands them to its apply worker, whose WALWriter appends them to the
// replica's WAL through the replica's own mount, as the engine's Applier:
// readers there keep reading while it does.
package pagewire

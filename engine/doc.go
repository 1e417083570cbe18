// Package engine is a node's storage engine: everything that decides what
// happens to a database's bytes, apart from how requests arrive.
//
// It owns data.dir. For each database it keeps the database file and -wal
// on disk, the -shm in memory, a meta file and the transaction log
// (txlog.go). Every write the mount hands over goes through Store.WriteAt,
// which detects each committed WAL transaction (database.go: writeWAL,
// countCommit, applyCommit) and advances the database's position: a TXID
// that grows by one per commit and the rolling LTX checksum of its pages.
// Who writes (a Writer: an app through the mount, or the node's own apply
// worker) decides whether a write is allowed on a replica and what its
// commits stand for.
//
// A primary's transactions leave through Feed (what to send a replica
// next, from the transaction log or as a snapshot). Snapshots and exports
// read from views (view.go): consistent copies at one position that hold
// no lock while they are sent, kept by copy on write. A replica's arrive
// through the apply worker's writes, announced by ExpectCommit. Halts keeps
// the halt locks, reaching the primary through the HaltPrimary seam.
//
// It may import the root pagewire package, internal/* and the standard
// library; never grpc, protobuf or net/http: the server package is its
// transports' thin face.
package engine

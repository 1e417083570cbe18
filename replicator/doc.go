// Package replicator ships committed transactions from the primary to
// replicas and applies them there. The replica side follows the primary's
// databases, catches up from the primary's transaction log or a snapshot,
// and appends each transaction to the local database's WAL as a SQLite
// writer would (WALWriter), so that local readers keep reading. The WAL and
// wal-index formats it writes are package wal's; it holds the apply engine:
// locking, recovery, appends and checkpoints.
//
// It imports no transport: no grpc, generated protos, consul or go-fuse. The
// gRPC ends live in server and clients/go, behind the interfaces it declares.
package replicator

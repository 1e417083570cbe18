// Package replicator ships committed transactions from the primary to
// replicas and applies them there. The replica side follows the primary's
// databases, catches up from the primary's transaction log or a snapshot,
// and appends each transaction to the local database's WAL as a SQLite
// writer would (WALWriter), so that local readers keep reading. The WAL and
// wal-index formats it writes are package wal's; it holds the apply engine:
// locking, recovery, appends and checkpoints. A transaction too big for one
// message, and a snapshot, are applied a part at a time as they arrive and
// become visible at once at their last part (bigtxn.go, walpart.go), so a
// replica's memory does not grow with them.
//
// It imports no transport: no grpc, generated protos, consul or go-fuse. The
// gRPC ends live in server and clients/go, behind the interfaces it declares.
package replicator

// Package server is a node's storage server: it owns data.dir and serves the
// gRPC StorageService (the block protocol the FUSE mount speaks) and
// AdminService, plus the node's HTTP API, on one listener.
//
// For each database it keeps the database file and -wal on disk, the -shm in
// memory, and a small meta file. It detects every committed WAL transaction
// from the writes it is handed, and keeps the database's position: a TXID that
// grows by one per commit and the rolling LTX checksum of its pages.
//
// It may import the root pagewire package, config-free standard library,
// grpc, go-grpc-middleware and the generated protos; never go-fuse.
package server

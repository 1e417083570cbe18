// Package server is a node's network face: thin gRPC and HTTP adapters
// over the storage engine (package engine), all on one listener, plus the
// same StorageService on an in-process channel for the node's own mount.
//
//   - storage.go: StorageService, the block protocol the FUSE mount speaks;
//     each call is one engine.Store method.
//   - admin.go, http.go: AdminService and the HTTP API (LiteFS's paths),
//     one implementation with two faces.
//   - replication.go: ReplicationService, which sends each replica an
//     engine.Feed; halt_rpc.go: the halt locks' RPCs, and haltPrimary, the
//     engine.HaltPrimary a replica reaches its primary through.
//   - metrics.go: the LiteFS metric names, read from the engine at scrape
//     time; portsplit.go: gRPC and HTTP/1 on one port; limits.go: what a
//     client of that port can hold (connections, timeouts, keepalive,
//     streams).
//
// Messages are converted and errors mapped to gRPC statuses by
// internal/wire, which the Go client shares. It may import the engine, the
// root package, internal/*, grpc, go-grpc-middleware, prometheus and the
// generated protos; never clients/go or go-fuse.
package server

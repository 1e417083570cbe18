// Package fusemount is the node's FUSE filesystem (go-fuse v2). It holds no
// data: every lookup, read, write, truncate and fsync is a call to the
// storage server's StorageService through its generated gRPC client. SQLite's
// POSIX locks are left to the kernel, and file data is cached in the kernel
// page cache across opens, so a read transaction on a warm cache never
// reaches the daemon.
//
// It may import go-fuse, grpc, the generated protos, clients/go, the root
// pagewire package, internal/backoff and internal/logkey; never server.
package fusemount

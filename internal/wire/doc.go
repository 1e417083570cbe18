// Package wire is the one home of what crosses pagewire's gRPC wire in both
// directions: domain errors to gRPC statuses and back (ToStatus,
// FromStatus), the generated messages to the root package's types and back
// (positions, transactions, halt locks), and how a node dials another
// (Dial).
//
// The server package, the Go client (clients/go) and the replication
// upstream (replicator/upstream) all use it, so that a status code or a
// message's checks are chosen in one place. It imports the root package,
// the generated code, grpc and protobuf; never the engine, the server or
// the replicator.
package wire

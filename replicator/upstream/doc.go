// Package upstream is a replica's end of replication over gRPC: the
// replicator.Upstream that follows the primary's ReplicationService,
// turning its messages into the replicator's events after checking them
// (a malformed message is an error, never applied).
//
// It lives next to the replicator it serves, so that the public Go client
// (clients/go) does not compile the replicator. It may import the
// replicator's seams, internal/wire, grpc and the generated code.
package upstream

// Package client is pagewire's Go client library: it dials nodes, maps gRPC
// status errors back to pagewire's domain errors, and wraps the AdminService
// calls apps make (WaitForPosition for read-your-writes on a replica, halt
// locks to write through one).
//
// It depends only on the root vocabulary, the generated code and
// internal/wire (the conversions the server uses too): a user of the Go
// client does not compile the engine, the server or the replicator. Import
// it as
//
//	import client "github.com/pagewire/pagewire/clients/go"
package client

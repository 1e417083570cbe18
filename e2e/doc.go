// Package e2e holds pagewire's integration tests: real FUSE mounts, nodes as
// separate `pagewire` processes, and real SQLite clients (Python's sqlite3,
// the sqlite3 CLI, modernc.org/sqlite). They run with
//
//	go test -race -tags integration -p 1 ./e2e/
//
// as root on a machine with /dev/fuse. Nodes never run inside the test
// process: a process that serves a FUSE mount must not also use it
// (go-fuse "# Deadlocks"). Python scripts the tests run live in testdata/.
//
// It talks to nodes as users and apps do: their files, HTTP API and gRPC
// (clients/go, the generated protos, grpc), the pagewire CLI and SQLite
// clients. Besides those it imports only the root pagewire package, config
// and test helpers under internal/; never a node's own packages.
package e2e

// Package e2e holds pagewire's integration tests: real FUSE mounts, nodes as
// separate `pagewire` processes, and real SQLite clients (Python's sqlite3,
// the sqlite3 CLI, modernc.org/sqlite). They run with
//
//	go test -race -tags integration -p 1 ./e2e/
//
// as root on a machine with /dev/fuse. Nodes never run inside the test
// process: a process that serves a FUSE mount must not also use it
// (go-fuse "# Deadlocks").
package e2e

// Command example is a small JSON CRUD service over one SQLite database,
// written to run on every node of a pagewire (or LiteFS) cluster under the
// node's exec, with its database on the FUSE mount and the node's proxy in
// front of it. It uses modernc.org/sqlite, so it needs no cgo.
//
// It is also what pagewire's docs and tests point at as "an app": it does
// nothing cluster-specific beyond answering a write on a read-only replica
// with 503 instead of 500.
package main

// Command bench measures what the pagewire mount costs SQLite, against a
// plain-disk folder on the same filesystem, in one run.
//
// It starts one node (`pagewire mount`, a single-node static primary) as its
// own process, then runs each workload in Python 3's sqlite3 module (WAL
// mode, a fresh database per run, in its own process: a FUSE server must
// never use its own mount) on both targets, alternating them round by round:
//
//   - insert-normal: autocommit single-row inserts, synchronous=NORMAL
//   - insert-full: the same at synchronous=FULL, a fifth as many
//   - point-read: SELECT by random primary key, one query per transaction,
//     on a 10,000-row table
//   - big-txn: one transaction of many rows, synchronous=NORMAL
//
// It prints a Markdown table of median rates and mount/disk ratios, then,
// from the node's /metrics read just before and after each timed part, the
// FUSE requests (pagewire_fuse_requests_total by op) and StorageService gRPC
// calls (grpc_server_handled_total by method) per transaction. Rates depend
// on the machine and on what else it runs; the ratios and per-transaction
// counts are what to compare (DESIGN.md §9).
//
// Run it as root (FUSE) from the module root:
//
//	go run ./bench                # 3 rounds, default counts
//	go run ./bench -quick         # a smoke run
//	go run ./bench -json out.json # also machine-readable results
//	go run ./bench -h             # every flag
//
// The node is stopped with SIGTERM, and its mount detached if it is left
// behind, on every exit path including Ctrl-C. Tests never assert timings:
// the integration test (`go test -tags integration ./bench`) runs -quick and
// checks only that every number was measured.
//
// bench imports nothing of pagewire's; it drives the binary and reads its
// HTTP API, as a user would.
package main

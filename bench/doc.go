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
// Then the replication section ("## Replication"), with a primary and up to
// two replicas, each `pagewire mount` in its own process with a static lease
// on loopback (the harness stops the workloads' node first):
//
//   - the primary's insert-normal rate with 0, 1 and 2 replicas connected,
//     each replica caught up (its <db>-pos equal to the primary's) before,
//     interleaved by round, in two placements: shared (every process on
//     every CPU) and separate (the primary and its writer on half the CPUs,
//     the replicas on the other half, as on separate machines);
//   - with synchronous replication: insert-normal and insert-full on
//     primaries of their own with replication.sync-replicas 0 (the
//     asynchronous reference) and 1 with one replica, 0 and 2 with two, in
//     the separate placement, each rate over the asynchronous one of the
//     same workload with as many replicas;
//   - visibility lag at ~1,000 tx/s (-lag-rate, -lag-seconds): a paced
//     writer on the primary notes when each commit returns, a poller on a
//     replica when it first sees it, once by the replica's -pos file and
//     once by SELECT max(id) through SQLite; p50, p90, p99, max;
//   - point reads on a replica, idle and while the primary commits ~500
//     tx/s (-apply-rate), against plain disk without concurrent writes;
//   - snapshot catch-up: a fresh primary with a ~200 MiB database
//     (-snapshot-mib), a new replica with an empty data.dir, timed from its
//     process start, and from its /healthz 200, until its -pos equals the
//     primary's.
//
// Then the export section ("## Export"): a primary holding a ~96 MiB
// database (-export-mib), more than an export stream's flow-control windows
// and socket buffers; a writer on that database (unpaced autocommit 1-row
// inserts) commits for 3 s (-export-seconds) undisturbed, and while a plain
// gRPC client holds an ExportDatabase stream of it open, having read one
// message and then nothing; the ratio of the two rates, by round.
//
// -vacuum runs, alone, the VACUUM section (off otherwise; it needs about
// 7.5 times -vacuum-gib of disk): a database of -vacuum-gib GiB (2) built on
// a primary with two replicas, VACUUM on the primary's mount timed against
// the same VACUUM on plain disk, and the peak RSS (VmHWM, reset just before
// the VACUUM through /proc/PID/clear_refs) of every pagewire process, each
// node and each apply worker, until both replicas have its position.
//
// -backup runs, alone, the backup section (off otherwise; it needs the
// SeaweedFS weed binary `make seaweedfs` builds): an S3 server (weed mini,
// through internal/s3test) on loopback, and
//
//   - insert-normal on plain disk and on two primaries, one without a
//     backup section and one backing up to the S3 server (backup.delay
//     1s), round by round in rotating order; the ratio on/off;
//   - the RPO: a writer paced at 1,000 tx/s for -backup-seconds (60) on the
//     primary with backup on, the node's API (the database's TXID and
//     backup.txid) read every 100 ms, each reading's RPO the time since
//     the primary committed the first transaction the backup lacked;
//     p50, p99, max;
//   - a -backup-restore-mib (200) MiB database written in 10 transactions,
//     and, once backed up, restored from the bucket to local disk with
//     backup.Restore: MB/s, objects and bytes read.
//
// The bars are printed next to those results, never asserted.
//
// Run it as root (FUSE) from the module root:
//
//	go run ./bench                  # 3 rounds, default counts, then replication
//	go run ./bench -quick           # a smoke run of both
//	go run ./bench -replication     # the replication section alone
//	go run ./bench -sync            # its synchronous replication write rates alone
//	go run ./bench -no-replication  # skip replication
//	go run ./bench -export          # the export section alone
//	go run ./bench -json out.json   # also machine-readable results
//	go run ./bench -vacuum          # the VACUUM section alone (big disk, minutes)
//	go run ./bench -backup          # the backup section alone (S3 on loopback, minutes)
//	go run ./bench -h               # every flag
//
// Every node is stopped with SIGTERM, and its mount detached if it is left
// behind, on every exit path including Ctrl-C. Tests never assert timings:
// the integration tests (`go test -tags integration ./bench`) run -quick,
// with and without -replication, and check only that every number was
// measured.
//
// bench drives the binary, reads its HTTP API and, for the export section,
// opens a stream with a plain gRPC client, as a user (or anyone on the
// network) would. Of pagewire's packages it imports the generated gRPC
// client, and for the backup section internal/s3test (the S3 server),
// config and backup (the restore, as `pagewire restore` runs it).
package main

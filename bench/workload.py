# One bench workload on one fresh SQLite database, run by the Go harness as
#   python3 -c SCRIPT WORKLOAD DB_PATH N
#
# Protocol (one JSON object per stdout line):
#   1. set up the database (untimed), print {"ready": true}
#   2. wait for a "go" line on stdin, run the timed part,
#      print {"ops": N, "seconds": S}
#   3. wait for stdin to close, then close the database (untimed, outside the
#      harness's metrics window: the last close checkpoints the WAL) and exit.
# Errors go to stderr with a non-zero exit.

import json
import random
import sqlite3
import sys
import time

WORKLOADS = ("insert-normal", "insert-full", "point-read", "big-txn")
READ_TABLE_ROWS = 10000


def value(i):
    """A distinct 100-byte text value for row i."""
    return "%0100d" % i


def emit(obj):
    print(json.dumps(obj), flush=True)


def connect(path, synchronous):
    # isolation_level=None: the module issues no implicit BEGIN, so every
    # statement outside an explicit BEGIN is its own (autocommit) transaction.
    conn = sqlite3.connect(path, isolation_level=None)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise SystemExit("journal_mode is %r, want wal" % mode)
    conn.execute("PRAGMA synchronous=%s" % synchronous)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    return conn


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in WORKLOADS:
        raise SystemExit("usage: WORKLOAD DB_PATH N; WORKLOAD in %s" % ", ".join(WORKLOADS))
    workload, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])

    # Setup, untimed.
    conn = connect(path, "FULL" if workload == "insert-full" else "NORMAL")
    if workload == "point-read":
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t(id, v) VALUES(?, ?)",
                         ((i, value(i)) for i in range(1, READ_TABLE_ROWS + 1)))
        conn.execute("COMMIT")
        rng = random.Random(1)
        ids = [rng.randint(1, READ_TABLE_ROWS) for _ in range(n)]
    emit({"ready": True})
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected a go line on stdin")

    # Timed part.
    if workload in ("insert-normal", "insert-full"):
        start = time.perf_counter()
        for i in range(n):
            conn.execute("INSERT INTO t(v) VALUES(?)", (value(i),))
        seconds = time.perf_counter() - start
    elif workload == "point-read":
        found = 0
        start = time.perf_counter()
        for i in ids:
            # fetchall runs the statement to its end, which resets it and so
            # ends the read transaction: one transaction per query.
            found += len(conn.execute("SELECT v FROM t WHERE id=?", (i,)).fetchall())
        seconds = time.perf_counter() - start
        if found != n:
            raise SystemExit("point-read found %d rows, want %d" % (found, n))
    else:  # big-txn
        start = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t(v) VALUES(?)", ((value(i),) for i in range(n)))
        conn.execute("COMMIT")
        seconds = time.perf_counter() - start
    emit({"ops": n, "seconds": seconds})

    sys.stdin.read()  # the harness closes stdin once it has read its metrics
    conn.close()


if __name__ == "__main__":
    main()

# The Python side of the bench's VACUUM section, run by the Go harness as
#   python3 -c SCRIPT MODE ARGS...
#
# Every mode prints one JSON object on stdout and reports errors on stderr
# with a non-zero exit. Modes:
#
#   build DB MIB CHUNK_MIB
#       Grows (or creates) a WAL database of table t(id INTEGER PRIMARY KEY, v BLOB)
#       with rows of 3,500 random bytes (about one row per 4 KiB page),
#       written in transactions of about CHUNK_MIB MiB each, until it holds
#       MIB MiB. Prints {"bytes": B, "seconds": S, "transactions": N}
#       (B = page_count * page_size).
#   vacuum DB
#       Runs VACUUM on the database (one transaction rewriting every page).
#       Prints {"bytes": B, "seconds": S}: the database's size after, and
#       how long the VACUUM statement took, its automatic checkpoint
#       included.

import json
import sqlite3
import sys
import time

ROW_BYTES = 3500


def emit(obj):
    print(json.dumps(obj), flush=True)


def connect(path):
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def size(conn):
    return conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]


def build(path, mib, chunk_mib):
    conn = connect(path)
    conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
    want = mib * 1048576
    rows_per_chunk = max(1, chunk_mib * 1048576 // 4096)
    start = time.perf_counter()
    txns = 0
    while size(conn) < want:
        rows = min(rows_per_chunk, max(1, (want - size(conn)) // 4096 + 1))
        conn.execute("BEGIN")
        conn.execute(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < ?) "
            "INSERT INTO t(v) SELECT randomblob(?) FROM c",
            (rows, ROW_BYTES),
        )
        conn.execute("COMMIT")
        txns += 1
    seconds = time.perf_counter() - start
    emit({"bytes": size(conn), "seconds": seconds, "transactions": txns})
    conn.close()


def vacuum(path):
    conn = connect(path)
    start = time.perf_counter()
    conn.execute("VACUUM")
    seconds = time.perf_counter() - start
    emit({"bytes": size(conn), "seconds": seconds})
    conn.close()


def main():
    mode = sys.argv[1]
    if mode == "build":
        build(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif mode == "vacuum":
        vacuum(sys.argv[2])
    else:
        sys.exit("unknown mode " + mode)


main()

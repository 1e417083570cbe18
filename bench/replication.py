# The Python side of the bench's replication section, run by the Go harness
# as
#   python3 -c SCRIPT MODE ARGS...
#
# Every mode prints one JSON object per stdout line and reports errors on
# stderr with a non-zero exit. Modes:
#
#   setup-read DB
#       On the primary: a fresh database with the point-read table of
#       workload.py (same rows, same values). Prints {"rows": N} and exits.
#   setup-snapshot DB MIB [TXNS]
#       On the primary: a fresh database holding MIB rows of a 1 MiB random
#       blob, written in one transaction, or in TXNS of about equal size.
#       Prints {"bytes": B, "seconds": S} (B = page_count * page_size) and
#       exits.
#   writer DB POS_FILE RATE SECONDS RECORD
#       On the primary: creates table t if needed and commits one warm-up
#       row, then prints {"ready": true, "base_txid": T, "base_id": I}.
#       After a "go" line on stdin it commits autocommit 1-row inserts
#       (synchronous=NORMAL) paced at RATE per second, sleeping until each
#       one's slot, for SECONDS seconds, or, with SECONDS 0, until a "stop"
#       line. Commit k (from 1) gets row id base_id+k and, when each commit
#       is one transaction, TXID base_txid+k. It then prints {"commits": N,
#       "seconds": S, "end_txid": T, "commit_times": [...]} (commit_times,
#       only with RECORD 1: time.time() just after each commit returned)
#       and exits once stdin closes.
#   poll-pos POS_FILE PAUSE
#   poll-sql DB PAUSE
#       On a replica: reads the database's TXID from its -pos file (one
#       pread of an open descriptor per poll; the mount serves -pos
#       uncached) or SELECT max(id) FROM t through one SQLite connection, in
#       a loop that sleeps PAUSE seconds between polls (0: a tight loop;
#       each -pos poll is a request the replica's node serves, so a tight
#       loop competes with its apply for the CPUs). Prints {"ready": true}
#       once polling; after a line
#       "stop TARGET" on stdin it goes on until it has seen TARGET (or for
#       at most 30 s more), then prints {"polls": N, "seconds": S,
#       "seen": [[value, time], ...]}: every value change with the
#       time.time() of the poll that first saw it.
#   point-read DB N
#       On a replica: workload.py's point-read timed part on a table made by
#       setup-read on the primary, with its ready/go/done protocol.

import json
import os
import random
import sqlite3
import sys
import threading
import time

# As workload.py: the point-read table has this many rows of value(i).
READ_TABLE_ROWS = 10000


def value(i):
    """A distinct 100-byte text value for row i (as workload.py)."""
    return "%0100d" % i


def emit(obj):
    print(json.dumps(obj), flush=True)


def read_txid(path):
    with open(path, "rb") as f:
        return int(f.read(16), 16)


def connect(path):
    conn = sqlite3.connect(path, isolation_level=None)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise SystemExit("journal_mode is %r, want wal" % mode)
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def setup_read(path):
    conn = connect(path)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t(id, v) VALUES(?, ?)",
                     ((i, value(i)) for i in range(1, READ_TABLE_ROWS + 1)))
    conn.execute("COMMIT")
    conn.close()
    emit({"rows": READ_TABLE_ROWS})


def setup_snapshot(path, mib, txns):
    conn = connect(path)
    conn.execute("CREATE TABLE b(id INTEGER PRIMARY KEY, v BLOB)")
    txns = max(1, min(txns, mib))
    start = time.perf_counter()
    for t in range(txns):
        conn.execute("BEGIN")
        for _ in range(mib // txns + (1 if t < mib % txns else 0)):
            conn.execute("INSERT INTO b(v) VALUES(randomblob(1048576))")
        conn.execute("COMMIT")
    seconds = time.perf_counter() - start
    size = conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    emit({"bytes": size, "seconds": seconds})


class StdinLines:
    """Reads stdin lines on a thread, so a tight loop can check for them."""

    def __init__(self):
        self.line = None
        self.closed = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        for line in sys.stdin:
            self.line = line.strip()
        self.closed = True


def writer(path, pos_path, rate, seconds, record):
    conn = connect(path)
    conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t(v) VALUES(?)", (value(0),))
    base_id = conn.execute("SELECT max(id) FROM t").fetchall()[0][0]
    base_txid = read_txid(pos_path)
    emit({"ready": True, "base_txid": base_txid, "base_id": base_id})
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected a go line on stdin")
    stdin = StdinLines() if seconds == 0 else None
    n = int(rate * seconds) if seconds > 0 else None
    interval = 1.0 / rate
    times = []
    k = 0
    start = time.perf_counter()
    while True:
        if n is not None and k >= n:
            break
        if stdin is not None and (stdin.line == "stop" or stdin.closed):
            break
        delay = start + k * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        cur = conn.execute("INSERT INTO t(v) VALUES(?)", (value(base_id + k + 1),))
        t = time.time()
        k += 1
        if record:
            times.append(t)
        if cur.lastrowid != base_id + k:
            raise SystemExit("commit %d got row id %d, want %d" % (k, cur.lastrowid, base_id + k))
    elapsed = time.perf_counter() - start
    out = {"commits": k, "seconds": elapsed, "end_txid": read_txid(pos_path)}
    if record:
        out["commit_times"] = times
    emit(out)
    if stdin is None:
        sys.stdin.read()
    conn.close()


def poll(read, pause):
    """Calls read() in a loop; see the header (poll-pos, poll-sql)."""
    stdin = StdinLines()
    last = read()
    seen = [[last, time.time()]]
    emit({"ready": True})
    polls = 0
    target = None
    deadline = None
    start = time.perf_counter()
    while True:
        if pause > 0:
            time.sleep(pause)
        v = read()
        polls += 1
        if v != last:
            t = time.time()
            last = v
            seen.append([v, t])
            if target is not None and v >= target:
                break
        if polls & 255 == 0:
            if target is None and stdin.line is not None:
                words = stdin.line.split()
                if len(words) != 2 or words[0] != "stop":
                    raise SystemExit("expected a line 'stop TARGET', got %r" % stdin.line)
                target = int(words[1])
                deadline = time.perf_counter() + 30
            if stdin.closed and target is None:
                raise SystemExit("stdin closed before a stop line")
            if target is not None and (last >= target or time.perf_counter() > deadline):
                break
    emit({"polls": polls, "seconds": time.perf_counter() - start, "seen": seen})


def poll_pos(pos_path, pause):
    fd = os.open(pos_path, os.O_RDONLY)

    def read():
        b = os.pread(fd, 64, 0)
        if len(b) < 16:
            raise SystemExit("%s holds %r" % (pos_path, b))
        return int(b[:16], 16)

    poll(read, pause)
    os.close(fd)


def poll_sql(path, pause):
    conn = sqlite3.connect(path, isolation_level=None)

    def read():
        # fetchall runs the statement to its end: one read transaction each.
        return conn.execute("SELECT max(id) FROM t").fetchall()[0][0] or 0

    poll(read, pause)
    conn.close()


def point_read(path, n):
    conn = sqlite3.connect(path, isolation_level=None)
    rows = conn.execute("SELECT count(*) FROM t WHERE id <= ?", (READ_TABLE_ROWS,)).fetchall()[0][0]
    if rows != READ_TABLE_ROWS:
        raise SystemExit("the table has %d of rows 1..%d" % (rows, READ_TABLE_ROWS))
    rng = random.Random(1)
    ids = [rng.randint(1, READ_TABLE_ROWS) for _ in range(n)]
    emit({"ready": True})
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("expected a go line on stdin")
    found = 0
    start = time.perf_counter()
    for i in ids:
        found += len(conn.execute("SELECT v FROM t WHERE id=?", (i,)).fetchall())
    seconds = time.perf_counter() - start
    if found != n:
        raise SystemExit("point-read found %d rows, want %d" % (found, n))
    emit({"ops": n, "seconds": seconds})
    sys.stdin.read()
    conn.close()


def main():
    mode, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if mode == "setup-read" and len(args) == 1:
        setup_read(args[0])
    elif mode == "setup-snapshot" and len(args) in (2, 3):
        setup_snapshot(args[0], int(args[1]), int(args[2]) if len(args) == 3 else 1)
    elif mode == "writer" and len(args) == 5:
        writer(args[0], args[1], float(args[2]), float(args[3]), args[4] == "1")
    elif mode == "poll-pos" and len(args) == 2:
        poll_pos(args[0], float(args[1]))
    elif mode == "poll-sql" and len(args) == 2:
        poll_sql(args[0], float(args[1]))
    elif mode == "point-read" and len(args) == 2:
        point_read(args[0], int(args[1]))
    else:
        raise SystemExit("usage: see the header of replication.py; got %r" % sys.argv[1:])


if __name__ == "__main__":
    main()

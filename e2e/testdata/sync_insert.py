"""Inserts N rows into table t of PRIMARY_DB, one commit each, under
PRAGMA synchronous=MODE (FULL or NORMAL); after each commit returns, reads
REPLICA_DB (the same database on a replica) and requires it to have the
row already. Prints "ok", or what was missing, and exits 1.

  sync_insert.py PRIMARY_DB REPLICA_DB N MODE
"""
import sqlite3, sys
primary, replica, n, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
c = sqlite3.connect(primary, isolation_level=None)
c.execute("pragma synchronous=" + mode)
c.execute("create table if not exists t(id integer primary key, v text)")
for i in range(n):
    cur = c.execute("insert into t(v) values (?)", ("sync-%d" % i,))
    rowid = cur.lastrowid
    r = sqlite3.connect("file:%s?mode=ro" % replica, uri=True)
    got = r.execute("select count(*) from t where id = ?", (rowid,)).fetchone()[0]
    r.close()
    if got != 1:
        print("row %d (commit %d, synchronous=%s) is not on the replica when its commit returned" % (rowid, i, mode))
        sys.exit(1)
print("ok")

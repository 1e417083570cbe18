"""Issue 12's recipe: large transactions with SQLite's default settings,
whose pages spill into the WAL before their commits.

  bigtxns.py DB TXNS ROWS BLOB_BYTES
"""
import sqlite3
import sys

path, txns, rows, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
c = sqlite3.connect(path, isolation_level=None)
c.execute("pragma journal_mode=wal")
c.execute("create table t(id integer primary key, v blob)")
for _ in range(txns):
    c.execute("begin")
    for _ in range(rows):
        c.execute("insert into t(v) values (randomblob(?))", (size,))
    c.execute("commit")
print(c.execute("select count(*) from t").fetchone()[0])
c.close()

"""Creates table t in DB if it is missing and inserts N rows, one commit
each.

  insert_rows.py DB N
"""
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("create table if not exists t(id integer primary key, v text)")
for i in range(int(sys.argv[2])):
    c.execute("insert into t(v) values (?)", ("row-%d" % i,))

"""Creates table t in DB and inserts N rows PREFIX-0, PREFIX-1, ... one
commit each.

  create_rows.py DB PREFIX N
"""
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
c.execute("create table t(id integer primary key, v text)")
for i in range(int(sys.argv[3])):
    c.execute("insert into t(v) values (?)", ("%s-%d" % (sys.argv[2], i),))
c.close()

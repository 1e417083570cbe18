"""Inserts N rows halt-0, halt-1, ... into table t of DB, one commit each,
with a busy timeout of TIMEOUT seconds (default 5), then prints "ok".

  halt_insert.py DB N [TIMEOUT]
"""
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=float(sys.argv[3]) if len(sys.argv) > 3 else 5)
for i in range(int(sys.argv[2])):
    c.execute("insert into t(v) values (?)", ("halt-%d" % i,))
print("ok")

"""Prints, for the database DB: journal_mode in a fresh connection, the
count of table t's rows, their v values comma-joined in id order, and
integrity_check.

  read.py DB
"""
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
print(c.execute("pragma journal_mode").fetchone()[0])
print(c.execute("select count(*) from t").fetchone()[0])
print(c.execute("select coalesce(group_concat(v, ','), '') from (select v from t order by id)").fetchone()[0])
print(c.execute("pragma integrity_check").fetchone()[0])
c.close()

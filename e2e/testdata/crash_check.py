"""Prints, for DB: integrity_check; count(*), min(id) and max(id) of table
t's rows with ids below 1,000,000; how many rows have ids from 1,000,000
up; and journal_mode.

  crash_check.py DB
"""
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
print(c.execute("pragma integrity_check").fetchone()[0])
n, lo, hi = c.execute("select count(*), coalesce(min(id), 0), coalesce(max(id), 0) from t where id < 1000000").fetchone()
print(n, lo, hi)
print(c.execute("select count(*) from t where id >= 1000000").fetchone()[0])
print(c.execute("pragma journal_mode").fetchone()[0])

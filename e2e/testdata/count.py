"""Prints the count of table t's rows in DB, then integrity_check.

  count.py DB
"""
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
print(c.execute("select count(*) from t").fetchone()[0])
print(c.execute("pragma integrity_check").fetchone()[0])

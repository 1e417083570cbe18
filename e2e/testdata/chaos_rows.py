"""Prints "NODE SEQ" for each row of table w of DB (the chaos writers'
rows), then "ok" and the result of PRAGMA integrity_check on one line.

  chaos_rows.py DB
"""
import sqlite3, sys

c = sqlite3.connect(sys.argv[1])
for node, seq in c.execute("select node, seq from w"):
    print(node, seq)
print("check", c.execute("pragma integrity_check").fetchone()[0])

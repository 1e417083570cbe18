# Usage: backup_writer.py DB COUNT SEED
# Commits COUNT transactions of mixed kinds (inserts, updates, deletes, a
# large blob now and then, an occasional VACUUM that shrinks the file) and
# prints "pos <the -pos file>" after each, so that a test knows the
# database's checksum at every TXID.
import random
import sqlite3
import sys

path, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT, b BLOB)")


def pos():
    with open(path + "-pos") as f:
        return f.read().strip()


print("pos", pos(), flush=True)
for i in range(count):
    kind = rng.random()
    if kind < 0.02:
        db.execute("DELETE FROM t WHERE id % 3 = 0")
        db.execute("VACUUM")
        print("pos", pos(), flush=True)
        continue
    db.execute("BEGIN")
    if kind < 0.07:
        db.execute("INSERT INTO t (v, b) VALUES (?, randomblob(?))", ("big%d" % i, rng.randint(20000, 200000)))
    elif kind < 0.25:
        db.execute("UPDATE t SET v = ? WHERE id % 7 = ?", ("u%d" % i, rng.randint(0, 6)))
    elif kind < 0.35:
        db.execute("DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY random() LIMIT 3)")
    else:
        for _ in range(rng.randint(1, 20)):
            db.execute("INSERT INTO t (v, b) VALUES (?, randomblob(?))", ("r%d" % i, rng.randint(10, 900)))
    db.execute("COMMIT")
    print("pos", pos(), flush=True)
db.close()

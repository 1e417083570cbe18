"""Writes one row per attempt to table probe of DB, as node NODE, and
prints "ok T0 T1" (time.time() before and after) for each accepted write.
It reopens the database after any error: the node may have been killed and
restarted under it.

  prober.py DB NODE
"""
import sqlite3, sys, time
path, node = sys.argv[1], sys.argv[2]
c = None
while True:
    try:
        if c is None:
            c = sqlite3.connect(path, isolation_level=None, timeout=0.05)
        t0 = time.time()
        c.execute("insert into probe(node, t) values (?, ?)", (node, t0))
        t1 = time.time()
        print("ok %.6f %.6f" % (t0, t1), flush=True)
        time.sleep(0.002)
    except Exception:
        try:
            if c is not None:
                c.close()
        except Exception:
            pass
        c = None
        time.sleep(0.005)

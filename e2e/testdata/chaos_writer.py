"""The chaos suite's writer: inserts one row per commit into table w of DB
as node NODE, forever, with PRAGMA synchronous=FULL, and prints a line for
each commit SQLite reported done:

  ok SEQ T0 T1 E0 P0 E1 P1

SEQ numbers this writer's attempts (the row holds NODE and SEQ); T0 and T1
are time.time() around the commit; E0, P0 and E1, P1 are the node's lease
epoch and whether it was the primary (1 or 0), asked of URL's HTTP API just
before and just after (-1 -1 when it did not answer). While the file PAUSE
exists the writer makes no attempt and prints "paused SEQ" once. It
reopens the database after any error: the node may have been killed and
restarted under it.

  chaos_writer.py DB NODE URL PAUSE
"""
import json, os, sqlite3, sys, time, urllib.request

path, node, url, pause = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
name = os.path.basename(path)


def role():
    try:
        with urllib.request.urlopen(url + "/api/v1/dbs", timeout=2) as r:
            for d in json.load(r)["databases"]:
                if d["name"] == name:
                    return d["epoch"], 1 if d["is_primary"] else 0
    except Exception:
        pass
    return -1, -1


c = None
seq = 0
paused = False
while True:
    if os.path.exists(pause):
        if not paused:
            print("paused %d" % seq, flush=True)
            paused = True
        time.sleep(0.02)
        continue
    if paused:
        print("resumed %d" % seq, flush=True)
        paused = False
    e0, p0 = role()
    seq += 1
    try:
        if c is None:
            c = sqlite3.connect(path, isolation_level=None, timeout=1)
            c.execute("pragma synchronous=full")
        t0 = time.time()
        c.execute("insert into w(node, seq, t) values (?, ?, ?)", (node, seq, t0))
        t1 = time.time()
    except Exception:
        try:
            if c is not None:
                c.close()
        except Exception:
            pass
        c = None
        # A replica refuses at once: don't spin.
        time.sleep(0.05 if p0 != 1 else 0.01)
        continue
    e1, p1 = role()
    print("ok %d %.6f %.6f %d %d %d %d" % (seq, t0, t1, e0, p0, e1, p1), flush=True)
    time.sleep(0.01)

# This script loops over read transactions on a bank table until a
# stop file exists, checking that each sees one consistent snapshot.
import sys, sqlite3, os, json, time
path, stop, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = sqlite3.connect(path, isolation_level=None, timeout=30)
it, errs, last = 0, [], -1
def check(cond, msg):
    if not cond:
        errs.append(msg)
while True:
    stopping = os.path.exists(stop)
    try:
        c.execute("BEGIN")
        s1, = c.execute("SELECT sum(bal) FROM accounts").fetchone()
        l1, = c.execute("SELECT count(*) FROM log").fetchone()
        if it % 7 == 0:
            qc = c.execute("PRAGMA quick_check").fetchall()
            check(qc == [("ok",)], "quick_check: %r" % (qc,))
        s2, = c.execute("SELECT sum(bal) FROM accounts").fetchone()
        l2, = c.execute("SELECT count(*) FROM log").fetchone()
        c.execute("COMMIT")
        check(s1 == total and s2 == total, "sums %s, %s; want %d" % (s1, s2, total))
        check(l1 == l2, "log count %d, then %d in one transaction" % (l1, l2))
        check(l1 >= last, "log count went back from %d to %d" % (last, l1))
        last = l1
    except Exception as e:
        errs.append("%s: %s" % (type(e).__name__, e))
        try:
            c.execute("ROLLBACK")
        except Exception:
            pass
    it += 1
    if it % 4 == 0:
        time.sleep(0.001)  # pacing: leave moments with no reader, when the WAL can restart
    if it == 1:
        print("ready", flush=True)
    if stopping:
        break
print(json.dumps({"iterations": it, "errors": errs[:20], "last": last}), flush=True)

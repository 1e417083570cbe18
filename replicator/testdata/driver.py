# This script runs SQLite commands read as JSON lines from stdin, one JSON line
# of result each. Connections are in autocommit mode; BEGIN/COMMIT are
# explicit.
import sys, json, sqlite3, hashlib
conns = {}
def enc(v):
    if isinstance(v, bytes):
        return v.hex()
    return v
for line in sys.stdin:
    req = json.loads(line)
    out = {"ok": True}
    try:
        op, name = req["op"], req.get("conn") or "c"
        if op == "open":
            c = sqlite3.connect(req["path"], isolation_level=None, timeout=30)
            for p in req.get("pragmas") or []:
                c.execute(p).fetchall()
            conns[name] = c
        elif op == "exec":
            cur = conns[name].execute(req["sql"])
            out["rows"] = [[enc(v) for v in r] for r in cur.fetchall()]
        elif op == "script":
            conns[name].executescript(req["sql"])
        elif op == "digest":
            c = conns[name]
            c.execute("BEGIN")
            try:
                h, n = hashlib.sha256(), 0
                for l in c.iterdump():
                    h.update(l.encode() + b"\n")
                    n += 1
                out["digest"] = "%s/%d" % (h.hexdigest(), n)
            finally:
                c.execute("COMMIT")
        elif op == "close":
            conns.pop(name).close()
        else:
            raise ValueError("unknown op " + op)
    except Exception as e:
        out = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()

"""Workload driver for the differential suite (e2e/differential_test.go).

  differential.py drive MOUNT DB...   read commands as JSON lines on stdin,
                                      run them on MOUNT/DB, answer a JSON line each
  differential.py digest PATH...      print {PATH: {table: [rows, digest]}}

The driver keeps a model of every row it committed: per table, row id ->
digest of (id, value). A table's digest is the XOR of its rows' digests, so
the model, the primary and each replica can be compared after every step.
Values are random bytes from the driver's seeded generator, so a run is
reproducible from its seed.
"""

import hashlib
import json
import random
import sqlite3
import sys
import threading

TABLES = ("t1", "t2")


def row_digest(rowid, value):
    h = hashlib.blake2b(digest_size=8)
    h.update(rowid.to_bytes(8, "big"))
    h.update(value)
    return int.from_bytes(h.digest(), "big")


def digest_db(conn):
    out = {}
    names = [r[0] for r in conn.execute(
        "select name from sqlite_schema where type='table' and name not like 'sqlite_%' order by name")]
    for name in names:
        d, n = 0, 0
        for rowid, value in conn.execute(f"select id, v from {name} order by id"):
            d ^= row_digest(rowid, value)
            n += 1
        out[name] = [n, format(d, "016x")]
    return out


def connect(path):
    c = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    c.execute("pragma busy_timeout=30000")
    return c


class Driver:
    def __init__(self, mount, dbs):
        self.mount = mount
        self.dbs = dbs
        self.model = {db: {t: {} for t in TABLES} for db in dbs}
        self.next_id = {db: {t: 1 for t in TABLES} for db in dbs}
        # ids of rows of 50 KB or more, which delete_big removes
        self.big = {db: {t: set() for t in TABLES} for db in dbs}
        self.conns = {}
        self.lock = threading.Lock()

    def path(self, db):
        return f"{self.mount}/{db}"

    def conn(self, db):
        if db not in self.conns:
            c = connect(self.path(db))
            for t in TABLES:
                c.execute(f"create table if not exists {t}(id integer primary key, v blob)")
            self.conns[db] = c
        return self.conns[db]

    def op_close(self, cmd):
        for c in self.conns.values():
            c.close()
        self.conns = {}
        return {}

    def op_pragma(self, cmd):
        rows = self.conn(cmd["db"]).execute(f"pragma {cmd['pragma']}").fetchall()
        return {"rows": rows}

    def op_checkpoint(self, cmd):
        rows = self.conn(cmd["db"]).execute(f"pragma wal_checkpoint({cmd['mode']})").fetchall()
        return {"rows": rows}

    def op_vacuum(self, cmd):
        self.conn(cmd["db"]).execute("vacuum")
        return {}

    def op_insert(self, cmd):
        db, t, rng = cmd["db"], cmd["table"], random.Random(cmd["seed"])
        c = self.conn(db)
        if "cache_size" in cmd:
            c.execute(f"pragma cache_size={cmd['cache_size']}")
        added = {}
        c.execute("begin")
        try:
            for _ in range(cmd["rows"]):
                rowid = self.next_id[db][t]
                self.next_id[db][t] += 1
                v = rng.randbytes(rng.randint(cmd["min"], cmd["max"]))
                c.execute(f"insert into {t}(id, v) values (?, ?)", (rowid, v))
                added[rowid] = row_digest(rowid, v)
            c.execute("commit")
        except BaseException:
            if c.in_transaction:
                c.execute("rollback")
            raise
        self.model[db][t].update(added)
        if cmd["min"] >= 50000:
            self.big[db][t].update(added)
        return {"rows": len(added)}

    def op_delete_big(self, cmd):
        """Deletes every large row of a database in one transaction."""
        db = cmd["db"]
        c = self.conn(db)
        n = 0
        c.execute("begin")
        try:
            for t in TABLES:
                ids = sorted(self.big[db][t] & self.model[db][t].keys())
                c.executemany(f"delete from {t} where id=?", [(i,) for i in ids])
                n += len(ids)
            c.execute("commit")
        except BaseException:
            if c.in_transaction:
                c.execute("rollback")
            raise
        for t in TABLES:
            for i in self.big[db][t]:
                self.model[db][t].pop(i, None)
            self.big[db][t] = set()
        return {"rows": n}

    def op_update(self, cmd):
        db, t, rng = cmd["db"], cmd["table"], random.Random(cmd["seed"])
        ids = sorted(self.model[db][t])
        pick = rng.sample(ids, min(len(ids), cmd["rows"]))
        c = self.conn(db)
        changed = {}
        c.execute("begin")
        try:
            for rowid in pick:
                v = rng.randbytes(rng.randint(cmd["min"], cmd["max"]))
                c.execute(f"update {t} set v=? where id=?", (v, rowid))
                changed[rowid] = row_digest(rowid, v)
            c.execute("commit")
        except BaseException:
            if c.in_transaction:
                c.execute("rollback")
            raise
        self.model[db][t].update(changed)
        return {"rows": len(changed)}

    def op_delete(self, cmd):
        db, t, rng = cmd["db"], cmd["table"], random.Random(cmd["seed"])
        ids = sorted(self.model[db][t])
        pick = rng.sample(ids, min(len(ids), cmd["rows"]))
        c = self.conn(db)
        c.execute("begin")
        try:
            c.executemany(f"delete from {t} where id=?", [(i,) for i in pick])
            c.execute("commit")
        except BaseException:
            if c.in_transaction:
                c.execute("rollback")
            raise
        for i in pick:
            del self.model[db][t][i]
        return {"rows": len(pick)}

    def op_rollback(self, cmd):
        """A transaction that spills (a small cache) and rolls back."""
        db, t, rng = cmd["db"], cmd["table"], random.Random(cmd["seed"])
        c = self.conn(db)
        c.execute("pragma cache_size=10")
        c.execute("begin")
        for i in range(cmd["rows"]):
            c.execute(f"insert into {t}(id, v) values (?, ?)", (10**12 + i, rng.randbytes(cmd["max"])))
        c.execute("rollback")
        c.execute("pragma cache_size=-2000")
        return {}

    def op_concurrent(self, cmd):
        """Writers on their own connections, and a reader holding read
        transactions open across their commits and a checkpoint."""
        db, rng = cmd["db"], random.Random(cmd["seed"])
        errors = []
        seeds = [rng.getrandbits(32) for _ in range(cmd["writers"])]

        def writer(seed):
            r = random.Random(seed)
            c = connect(self.path(db))
            try:
                for _ in range(cmd["txns"]):
                    t = r.choice(TABLES)
                    with self.lock:
                        rowid = self.next_id[db][t]
                        self.next_id[db][t] += 1
                    v = r.randbytes(r.randint(10, cmd["max"]))
                    c.execute(f"insert into {t}(id, v) values (?, ?)", (rowid, v))
                    with self.lock:
                        self.model[db][t][rowid] = row_digest(rowid, v)
            except Exception as e:  # reported below
                errors.append(repr(e))
            finally:
                c.close()

        reader = connect(self.path(db))
        reader.execute("begin")
        before = reader.execute("select count(*) from t1").fetchone()[0]
        threads = [threading.Thread(target=writer, args=(s,)) for s in seeds]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        # The reader's snapshot did not move while the writers committed.
        still = reader.execute("select count(*) from t1").fetchone()[0]
        reader.execute("commit")
        self.conn(db).execute("pragma wal_checkpoint(PASSIVE)")
        reader.close()
        if errors:
            raise RuntimeError("writers failed: " + "; ".join(errors))
        if still != before:
            raise RuntimeError(f"a read transaction saw {still} rows after starting with {before}")
        return {}

    def op_model(self, cmd):
        out = {}
        for db in self.dbs:
            out[db] = {}
            for t in TABLES:
                d = 0
                for v in self.model[db][t].values():
                    d ^= v
                out[db][t] = [len(self.model[db][t]), format(d, "016x")]
        return {"model": out}

    def run(self):
        for line in sys.stdin:
            cmd = json.loads(line)
            try:
                res = getattr(self, "op_" + cmd["op"])(cmd)
                res["ok"] = True
            except Exception as e:
                res = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            print(json.dumps(res), flush=True)


def main():
    if sys.argv[1] == "digest":
        out = {}
        for path in sys.argv[2:]:
            c = connect(path)
            c.execute("begin")
            out[path] = digest_db(c)
            c.execute("commit")
            c.close()
        print(json.dumps(out))
    elif sys.argv[1] == "drive":
        Driver(sys.argv[2], sys.argv[3:]).run()


main()

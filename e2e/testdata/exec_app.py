"""The app TestMountExec_AppUsesMount runs with `pagewire mount --`, in the
node's folder: mnt/ is the mount and pagewire.yml the node's config. It
fails unless the mount is up, prints /healthz's status, then writes five
rows to mnt/app.db and prints their count.

  exec_app.py
"""
import os, re, sqlite3, sys, urllib.request
if not os.path.ismount("mnt"):
    sys.exit("mnt is not mounted yet")
addr = re.search(r'addr: "([^"]+)"', open("pagewire.yml").read()).group(1)
with urllib.request.urlopen("http://%s/healthz" % addr) as r:
    print("app-healthz", r.status, flush=True)
c = sqlite3.connect("mnt/app.db", isolation_level=None)
c.execute("create table t(id integer primary key, v text)")
for i in range(5):
    c.execute("insert into t(v) values (?)", ("v%d" % i,))
print("app-rows", c.execute("select count(*) from t").fetchone()[0], flush=True)
c.close()

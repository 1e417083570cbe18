# This script takes raw fcntl locks, as another process's SQLite would, on
# request: "lock PATH START LEN sh|ex" answers "ok" or "busy"; "unlock"
# closes every file, dropping every lock. It is its own process: closing a
# file drops all of a process's POSIX locks on it.
import sys, os, fcntl
fds = []
for line in sys.stdin:
    f = line.split()
    if f[0] == "lock":
        fd = os.open(f[1], os.O_RDWR)
        fds.append(fd)
        try:
            fcntl.lockf(fd, (fcntl.LOCK_SH if f[4] == "sh" else fcntl.LOCK_EX) | fcntl.LOCK_NB, int(f[3]), int(f[2]), 0)
            print("ok", flush=True)
        except OSError:
            print("busy", flush=True)
    elif f[0] == "unlock":
        for fd in fds:
            os.close(fd)
        fds = []
        print("ok", flush=True)

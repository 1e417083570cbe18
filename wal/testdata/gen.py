#!/usr/bin/env python3
"""Writes the WAL fixtures of package wal's golden tests.

Run from this directory: python3 gen.py. It has SQLite write a WAL of three
transactions (page size 512, no checkpoints) and copies the -wal before the
connection closes (the last close would checkpoint and delete it), then
derives damaged copies by editing bytes, as a crash or a stale generation
leaves them:

  valid.wal              as SQLite wrote it
  torn.wal               the last frame cut short, as by a crash mid-write
  salt-mismatch.wal      the first frame of transaction 3 carries other salts
  checksum-mismatch.wal  a byte of the page of that frame is changed

SQLite picks random salts, so each run writes other bytes but the same
frames; the .golden files hold what the Go tests decode.
"""
import os
import shutil
import sqlite3
import struct
import tempfile

PAGE_SIZE = 512
HEADER = 32
FRAME = 24 + PAGE_SIZE


def frame_offset(n):
    return HEADER + (n - 1) * FRAME


def commit_frames(wal):
    """The frame numbers whose header has a commit size, in order."""
    out = []
    for n in range(1, (len(wal) - HEADER) // FRAME + 1):
        if struct.unpack(">I", wal[frame_offset(n) + 4:frame_offset(n) + 8])[0]:
            out.append(n)
    return out


def main():
    d = tempfile.mkdtemp()
    try:
        path = os.path.join(d, "test.db")
        db = sqlite3.connect(path, isolation_level=None)
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        db.execute("INSERT INTO t(v) VALUES (?)", ("x" * 300,))
        db.execute("BEGIN")
        for i in range(4):
            db.execute("INSERT INTO t(v) VALUES (?)", (str(i) * 400,))
        db.execute("COMMIT")
        with open(path + "-wal", "rb") as f:
            wal = f.read()
        db.close()
    finally:
        shutil.rmtree(d)

    commits = commit_frames(wal)
    assert len(commits) == 3, commits
    first3 = commits[1] + 1  # the first frame of transaction 3

    def write(name, b):
        with open(name, "wb") as f:
            f.write(b)

    write("valid.wal", wal)
    write("torn.wal", wal[:len(wal) - 100])
    b = bytearray(wal)
    b[frame_offset(first3) + 8] ^= 0xff  # salt-1
    write("salt-mismatch.wal", bytes(b))
    b = bytearray(wal)
    b[frame_offset(first3) + 24 + 100] ^= 0x01  # a byte of the page
    write("checksum-mismatch.wal", bytes(b))
    print("commit frames", commits)


if __name__ == "__main__":
    main()

package replicator

// Test harness: SQLite clients in Python processes, a source database whose
// WAL yields real transactions, and replicas that a WALWriter follows.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/syncbuf"
	"github.com/pagewire/pagewire/internal/walfmt"
)

// walPyDriver runs SQLite commands read as JSON lines from stdin, one JSON line
// of result each. Connections are in autocommit mode; BEGIN/COMMIT are
// explicit.
const walPyDriver = `
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
`

// walPyLocker takes raw fcntl locks, as another process's SQLite would, on
// request: "lock PATH START LEN sh|ex" answers "ok" or "busy"; "unlock"
// closes every file, dropping every lock. It is its own process: closing a
// file drops all of a process's POSIX locks on it.
const walPyLocker = `
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
`

// walLockFromOtherProcess holds n lock bytes at start of path from another
// process (shared or exclusive) until the returned function is called.
func walLockFromOtherProcess(t testing.TB, path string, start, n int64, exclusive bool) (unlock func()) {
	t.Helper()
	walNeedPython(t)
	p := walStartPyScript(t, walPyLocker)
	mode := "sh"
	if exclusive {
		mode = "ex"
	}
	if _, err := fmt.Fprintf(p.stdin, "lock %s %d %d %s\n", path, start, n, mode); err != nil {
		t.Fatal(err)
	}
	if got := p.readLine(); got != "ok" {
		t.Fatalf("lock %d+%d of %s from another process: %s", start, n, path, got)
	}
	return func() {
		t.Helper()
		if _, err := fmt.Fprintln(p.stdin, "unlock"); err != nil {
			t.Fatal(err)
		}
		if got := p.readLine(); got != "ok" {
			t.Fatalf("unlock: %s", got)
		}
	}
}

// walPy is a Python process running walPyDriver.
type walPy struct {
	t     testing.TB
	stdin io.WriteCloser
	lines chan string
}

type walPyReq struct {
	Op      string   `json:"op"`
	Conn    string   `json:"conn,omitempty"`
	Path    string   `json:"path,omitempty"`
	SQL     string   `json:"sql,omitempty"`
	Pragmas []string `json:"pragmas,omitempty"`
}

type walPyResp struct {
	OK     bool    `json:"ok"`
	Error  string  `json:"error"`
	Rows   [][]any `json:"rows"`
	Digest string  `json:"digest"`
}

// walNeedPython skips the test if python3 with sqlite3 is missing.
func walNeedPython(t testing.TB) {
	t.Helper()
	if err := exec.Command("python3", "-c", "import sqlite3").Run(); err != nil {
		t.Skipf("python3 with sqlite3 is needed: %v", err)
	}
}

// walStartPy starts a driver process, stopped (stdin closed, then killed if it
// lingers) when the test ends.
func walStartPy(t testing.TB) *walPy {
	t.Helper()
	walNeedPython(t)
	return walStartPyScript(t, walPyDriver)
}

func walStartPyScript(t testing.TB, script string, args ...string) *walPy {
	t.Helper()
	cmd := exec.Command("python3", append([]string{"-c", script}, args...)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncbuf.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &walPy{t: t, stdin: stdin, lines: make(chan string, 16)}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if s := stderr.String(); s != "" {
			t.Logf("python stderr:\n%s", s)
		}
	})
	return p
}

// readLine returns the process's next output line, failing the test after a
// generous deadline.
func (p *walPy) readLine() string {
	p.t.Helper()
	select {
	case line, ok := <-p.lines:
		if !ok {
			p.t.Fatal("python process exited")
		}
		return line
	case <-time.After(2 * time.Minute):
		p.t.Fatal("python process did not answer within 2 minutes")
	}
	return ""
}

// send sends a request without waiting for the answer (see recv).
func (p *walPy) send(req walPyReq) {
	p.t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		p.t.Fatal(err)
	}
}

func (p *walPy) recv() walPyResp {
	p.t.Helper()
	var r walPyResp
	if err := json.Unmarshal([]byte(p.readLine()), &r); err != nil {
		p.t.Fatal(err)
	}
	return r
}

func (p *walPy) try(req walPyReq) walPyResp {
	p.t.Helper()
	p.send(req)
	return p.recv()
}

func (p *walPy) do(req walPyReq) walPyResp {
	p.t.Helper()
	r := p.try(req)
	if !r.OK {
		p.t.Fatalf("python %s %q: %s", req.Op, req.SQL, r.Error)
	}
	return r
}

func (p *walPy) open(conn, path string, pragmas ...string) {
	p.t.Helper()
	p.do(walPyReq{Op: "open", Conn: conn, Path: path, Pragmas: pragmas})
}

func (p *walPy) close(conn string) {
	p.t.Helper()
	p.do(walPyReq{Op: "close", Conn: conn})
}

func (p *walPy) exec(conn, sql string) [][]any {
	p.t.Helper()
	return p.do(walPyReq{Op: "exec", Conn: conn, SQL: sql}).Rows
}

func (p *walPy) script(conn, sql string) {
	p.t.Helper()
	p.do(walPyReq{Op: "script", Conn: conn, SQL: sql})
}

// queryInt runs a query returning one integer.
func (p *walPy) queryInt(conn, sql string) int64 {
	p.t.Helper()
	rows := p.exec(conn, sql)
	if len(rows) != 1 || len(rows[0]) != 1 {
		p.t.Fatalf("%q returned %v, want one value", sql, rows)
	}
	f, ok := rows[0][0].(float64)
	if !ok {
		p.t.Fatalf("%q returned %v, want an integer", sql, rows[0][0])
	}
	return int64(f)
}

// digest hashes the connection's iterdump, read in one transaction.
func (p *walPy) digest(conn string) string {
	p.t.Helper()
	return p.do(walPyReq{Op: "digest", Conn: conn}).Digest
}

// integrity fails the test unless PRAGMA integrity_check says ok.
func (p *walPy) integrity(conn string) {
	p.t.Helper()
	rows := p.exec(conn, "PRAGMA integrity_check")
	if len(rows) != 1 || rows[0][0] != "ok" {
		p.t.Fatalf("integrity_check: %v", rows)
	}
}

// walTestTxn is one committed transaction as the primary would ship it.
type walTestTxn struct {
	pageCount uint32
	pages     []pagewire.Page
}

// walSourceDB is a database in WAL mode, held open by a Python process with
// automatic checkpoints off, so that its WAL keeps every transaction: after
// each SQL transaction, its new frames are what a primary would ship.
type walSourceDB struct {
	t        testing.TB
	path     string
	py       *walPy
	pageSize uint32
	// WAL reading state.
	next  uint32 // next frame to read, from 1
	hdr   walHeader
	chain [2]uint32
}

// walNewSourceDB creates a database with the given page size in WAL mode, runs
// setup, and closes it (the last close checkpoints and removes the WAL, so
// the database file alone is the whole database: copy it for replicas), then
// reopens it.
func walNewSourceDB(t testing.TB, dir string, pageSize int, setup string) *walSourceDB {
	t.Helper()
	path := filepath.Join(dir, "source.db")
	py := walStartPy(t)
	py.open("init", path, fmt.Sprintf("PRAGMA page_size=%d", pageSize), "PRAGMA journal_mode=WAL")
	if setup != "" {
		py.script("init", setup)
	}
	py.close("init")
	if _, err := os.Stat(path + "-wal"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("source WAL still there after the last close: %v", err)
	}
	py.open("s", path, "PRAGMA wal_autocheckpoint=0", "PRAGMA cache_size=-262144")
	return &walSourceDB{t: t, path: path, py: py, pageSize: uint32(pageSize)}
}

// newReplicaFile copies the source's database file (the state before its
// first transaction) to dir/name.
func (s *walSourceDB) newReplicaFile(dir, name string) string {
	s.t.Helper()
	b, err := os.ReadFile(s.path)
	if err != nil {
		s.t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		s.t.Fatal(err)
	}
	return path
}

// exec runs sql (one transaction) on the source and returns the transaction
// it committed.
func (s *walSourceDB) exec(sql string) walTestTxn {
	s.t.Helper()
	s.py.script("s", sql)
	return s.readTxn()
}

// readTxn reads the source WAL's next transaction, checking every frame's
// salts and checksum as SQLite's recovery does.
func (s *walSourceDB) readTxn() walTestTxn {
	s.t.Helper()
	f, err := os.Open(s.path + "-wal")
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	if s.next == 0 {
		b := make([]byte, walHeaderSize)
		if _, err := f.ReadAt(b, 0); err != nil {
			s.t.Fatal(err)
		}
		if s.hdr, err = decodeWALHeader(b); err != nil {
			s.t.Fatalf("source WAL header: %v", err)
		}
		s.next, s.chain = 1, s.hdr.cksum
	}
	fi, err := f.Stat()
	if err != nil {
		s.t.Fatal(err)
	}
	start := walfmt.FrameOffset(s.next, s.pageSize)
	b := make([]byte, max(0, fi.Size()-start))
	if _, err := f.ReadAt(b, start); err != nil && err != io.EOF {
		s.t.Fatal(err)
	}
	fsz := int64(walFrameHdrSize) + int64(s.pageSize)
	pages := map[uint32][]byte{}
	for off := int64(0); ; off += fsz {
		if off+fsz > int64(len(b)) {
			s.t.Fatalf("source WAL: no commit frame from frame %d on", s.next)
		}
		fh, c, ok := walCheckFrame(b[off:off+fsz], s.hdr.bigEndCksum, s.chain, s.hdr.salt)
		if !ok {
			s.t.Fatalf("source WAL: frame %d is not valid", s.next)
		}
		s.chain = c
		s.next++
		pages[fh.pgno] = slices.Clone(b[off+walFrameHdrSize : off+fsz])
		if fh.commit == 0 {
			continue
		}
		if end := off + fsz; end != int64(len(b)) {
			s.t.Fatalf("source WAL: %d bytes after the commit frame: one statement list must be one transaction", int64(len(b))-end)
		}
		txn := walTestTxn{pageCount: fh.commit}
		for _, pgno := range slices.Sorted(maps.Keys(pages)) {
			txn.pages = append(txn.pages, pagewire.Page{Pgno: pgno, Data: pages[pgno]})
		}
		return txn
	}
}

// frames is how many frames the source WAL has.
func (s *walSourceDB) frames() uint32 { return s.next - 1 }

// walOpenWriter opens a WALWriter, closed when the test ends.
func walOpenWriter(t testing.TB, path string) *WALWriter {
	t.Helper()
	w, err := OpenWALWriter(path, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("OpenWALWriter: %v", err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return w
}

// walApply applies txn and checks that Frames is the published mxFrame, with
// the transaction's commit frame last.
func walApply(t testing.TB, w *WALWriter, txn walTestTxn) {
	t.Helper()
	walApplySync(t, w, txn, false)
}

// walApplySync is walApply with a choice of sync.
func walApplySync(t testing.TB, w *WALWriter, txn walTestTxn, sync bool) {
	t.Helper()
	if err := w.Apply(context.Background(), txn.pageCount, txn.pages, sync); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	hdr, _ := walReadIndex(t, w)
	if got := w.Frames(); got != hdr.mxFrame || got < uint32(len(txn.pages)) || hdr.nPage != txn.pageCount {
		t.Fatalf("after Apply of %d pages: Frames()=%d, published mxFrame %d, nPage %d (want %d)", len(txn.pages), got, hdr.mxFrame, hdr.nPage, txn.pageCount)
	}
	walCheckIndexIsFresh(t, w)
}

// walCheckIndexIsFresh checks the replica's wal-index against one built from
// scratch from its WAL: a hash block's content depends only on the frames
// it indexes, so whatever restarts, debris and recoveries came before, the
// blocks must be byte for byte what a fresh build gives.
func walCheckIndexIsFresh(t testing.TB, w *WALWriter) {
	t.Helper()
	hdr, _ := walReadIndex(t, w)
	var scanned walIndexHdr
	pgnos, err := w.scanWAL(&scanned)
	if err != nil {
		t.Fatal(err)
	}
	if scanned.mxFrame != hdr.mxFrame || scanned.salt != hdr.salt || scanned.frameCksum != hdr.frameCksum || scanned.nPage != hdr.nPage {
		t.Fatalf("wal-index header mxFrame %d, nPage %d, salts %x, checksum %x; the WAL has %d, %d, %x, %x",
			hdr.mxFrame, hdr.nPage, hdr.salt, hdr.frameCksum, scanned.mxFrame, scanned.nPage, scanned.salt, scanned.frameCksum)
	}
	shm := walReadAll(t, w.shm.f)
	for k := uint32(0); hdr.mxFrame > 0 && k <= shmBlockOf(hdr.mxFrame); k++ {
		b := newShmBlock(k, make([]byte, shmBlockSize))
		zero := shmBlockZero(k)
		for n := zero + 1; n <= min(hdr.mxFrame, zero+uint32(b.entries())); n++ {
			if err := b.add(int(n-zero), pgnos[n-1]); err != nil {
				t.Fatal(err)
			}
		}
		lo := int(k)*shmBlockSize + b.base
		hi := int(k+1) * shmBlockSize
		if len(shm) < hi {
			t.Fatalf("-shm is %d bytes, block %d needs %d", len(shm), k, hi)
		}
		if !bytes.Equal(shm[lo:hi], b.buf[b.base:]) {
			t.Fatalf("hash block %d differs from a fresh build from the WAL", k)
		}
	}
}

// walCheckSame fails unless the replica, read by conn of rp, has the source's
// content and passes integrity_check.
func walCheckSame(t testing.TB, s *walSourceDB, rp *walPy, conn string) {
	t.Helper()
	if got, want := rp.digest(conn), s.py.digest("s"); got != want {
		t.Fatalf("replica dump %s, want the source's %s", got, want)
	}
	rp.integrity(conn)
}

// The writer's files are read through its own descriptors: opening and
// closing another descriptor of them would drop its POSIX locks.

// walReadIndex returns the replica's wal-index header (which must be valid) and
// checkpoint info.
func walReadIndex(t testing.TB, w *WALWriter) (walIndexHdr, walCkptInfo) {
	t.Helper()
	hdr, ckpt, ok, err := w.shm.readHeader()
	if err != nil || !ok {
		t.Fatalf("wal-index header: ok=%v, err=%v", ok, err)
	}
	return hdr, ckpt
}

// walReadAll reads a whole file through f.
func walReadAll(t testing.TB, f *os.File) []byte {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, fi.Size())
	if _, err := f.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return b
}

// walHeaderOf reads the replica's WAL header.
func walHeaderOf(t testing.TB, w *WALWriter) walHeader {
	t.Helper()
	b := make([]byte, walHeaderSize)
	if _, err := w.wal.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	h, err := decodeWALHeader(b)
	if err != nil {
		t.Fatalf("replica WAL header: %v", err)
	}
	return h
}

// walCheckIndexMatchesSource compares the replica's wal-index with the one
// SQLite built for the source, when both WALs hold the same frames in the
// same order: the hash blocks must be byte for byte the same.
func walCheckIndexMatchesSource(t testing.TB, s *walSourceDB, w *WALWriter) {
	t.Helper()
	src, err := os.ReadFile(s.path + "-shm")
	if err != nil {
		t.Fatal(err)
	}
	sh, ok := decodeWALIndexHdr(src)
	if !ok {
		t.Fatal("source wal-index header is not valid")
	}
	rh, _ := walReadIndex(t, w)
	if sh.mxFrame != rh.mxFrame || sh.nPage != rh.nPage || sh.pageSize != rh.pageSize {
		t.Fatalf("replica wal-index mxFrame/nPage/szPage = %d/%d/%d, source's %d/%d/%d",
			rh.mxFrame, rh.nPage, rh.pageSize, sh.mxFrame, sh.nPage, sh.pageSize)
	}
	rep := walReadAll(t, w.shm.f)
	for k := uint32(0); k <= shmBlockOf(max(sh.mxFrame, 1)); k++ {
		lo, hi := int(k)*shmBlockSize, int(k+1)*shmBlockSize
		if k == 0 {
			lo = shmHdrSize
		}
		if len(src) < hi || len(rep) < hi {
			t.Fatalf("block %d: source -shm %d bytes, replica's %d", k, len(src), len(rep))
		}
		if !bytes.Equal(src[lo:hi], rep[lo:hi]) {
			t.Fatalf("hash block %d differs from the one SQLite built", k)
		}
	}
}

// walWriteFileAt writes b at off of path, which no WALWriter has open.
func walWriteFileAt(t testing.TB, path string, b []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// walFileSize is a file's size, 0 if it does not exist (stat opens nothing).
func walFileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// walSQLTxn joins statements into one transaction.
func walSQLTxn(stmts ...string) string {
	return "BEGIN;\n" + strings.Join(stmts, ";\n") + ";\nCOMMIT;"
}

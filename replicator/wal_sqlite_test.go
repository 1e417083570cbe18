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
	"github.com/pagewire/pagewire/wal"
)

// lockFromOtherProcess holds n lock bytes at start of path from another
// process (shared or exclusive) until the returned function is called.
func lockFromOtherProcess(t testing.TB, path string, start, n int64, exclusive bool) (unlock func()) {
	t.Helper()
	needPython(t)
	p := startPyScript(t, "locker.py")
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

// pyConn is a Python process running testdata/driver.py.
type pyConn struct {
	t     testing.TB
	stdin io.WriteCloser
	lines chan string
}

type pyReq struct {
	Op      string   `json:"op"`
	Conn    string   `json:"conn,omitempty"`
	Path    string   `json:"path,omitempty"`
	SQL     string   `json:"sql,omitempty"`
	Pragmas []string `json:"pragmas,omitempty"`
}

type pyResp struct {
	OK     bool    `json:"ok"`
	Error  string  `json:"error"`
	Rows   [][]any `json:"rows"`
	Digest string  `json:"digest"`
}

// needPython skips the test if python3 with sqlite3 is missing.
func needPython(t testing.TB) {
	t.Helper()
	if err := exec.Command("python3", "-c", "import sqlite3").Run(); err != nil {
		t.Skipf("python3 with sqlite3 is needed: %v", err)
	}
}

// startPy starts a driver process, stopped (stdin closed, then killed if it
// lingers) when the test ends.
func startPy(t testing.TB) *pyConn {
	t.Helper()
	needPython(t)
	return startPyScript(t, "driver.py")
}

// startPyScript starts testdata/script with args, stopped when the test
// ends.
func startPyScript(t testing.TB, script string, args ...string) *pyConn {
	t.Helper()
	cmd := exec.Command("python3", append([]string{filepath.Join("testdata", script)}, args...)...)
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
	p := &pyConn{t: t, stdin: stdin, lines: make(chan string, 16)}
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
func (p *pyConn) readLine() string {
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
func (p *pyConn) send(req pyReq) {
	p.t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		p.t.Fatal(err)
	}
}

func (p *pyConn) recv() pyResp {
	p.t.Helper()
	var r pyResp
	if err := json.Unmarshal([]byte(p.readLine()), &r); err != nil {
		p.t.Fatal(err)
	}
	return r
}

func (p *pyConn) try(req pyReq) pyResp {
	p.t.Helper()
	p.send(req)
	return p.recv()
}

func (p *pyConn) do(req pyReq) pyResp {
	p.t.Helper()
	r := p.try(req)
	if !r.OK {
		p.t.Fatalf("python %s %q: %s", req.Op, req.SQL, r.Error)
	}
	return r
}

func (p *pyConn) open(conn, path string, pragmas ...string) {
	p.t.Helper()
	p.do(pyReq{Op: "open", Conn: conn, Path: path, Pragmas: pragmas})
}

func (p *pyConn) close(conn string) {
	p.t.Helper()
	p.do(pyReq{Op: "close", Conn: conn})
}

func (p *pyConn) exec(conn, sql string) [][]any {
	p.t.Helper()
	return p.do(pyReq{Op: "exec", Conn: conn, SQL: sql}).Rows
}

func (p *pyConn) script(conn, sql string) {
	p.t.Helper()
	p.do(pyReq{Op: "script", Conn: conn, SQL: sql})
}

// queryInt runs a query returning one integer.
func (p *pyConn) queryInt(conn, sql string) int64 {
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
func (p *pyConn) digest(conn string) string {
	p.t.Helper()
	return p.do(pyReq{Op: "digest", Conn: conn}).Digest
}

// integrity fails the test unless PRAGMA integrity_check says ok.
func (p *pyConn) integrity(conn string) {
	p.t.Helper()
	rows := p.exec(conn, "PRAGMA integrity_check")
	if len(rows) != 1 || rows[0][0] != "ok" {
		p.t.Fatalf("integrity_check: %v", rows)
	}
}

// testTxn is one committed transaction as the primary would ship it.
type testTxn struct {
	pageCount uint32
	pages     []pagewire.Page
}

// sourceDB is a database in WAL mode, held open by a Python process with
// automatic checkpoints off, so that its WAL keeps every transaction: after
// each SQL transaction, its new frames are what a primary would ship.
type sourceDB struct {
	t        testing.TB
	path     string
	py       *pyConn
	pageSize uint32
	// WAL reading state.
	next  uint32 // next frame to read, from 1
	hdr   wal.Header
	chain wal.Checksum
}

// newSourceDB creates a database with the given page size in WAL mode, runs
// setup, and closes it (the last close checkpoints and removes the WAL, so
// the database file alone is the whole database: copy it for replicas), then
// reopens it.
func newSourceDB(t testing.TB, dir string, pageSize int, setup string) *sourceDB {
	t.Helper()
	path := filepath.Join(dir, "source.db")
	py := startPy(t)
	py.open("init", path, fmt.Sprintf("PRAGMA page_size=%d", pageSize), "PRAGMA journal_mode=WAL")
	if setup != "" {
		py.script("init", setup)
	}
	py.close("init")
	if _, err := os.Stat(path + "-wal"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("source WAL still there after the last close: %v", err)
	}
	py.open("s", path, "PRAGMA wal_autocheckpoint=0", "PRAGMA cache_size=-262144")
	return &sourceDB{t: t, path: path, py: py, pageSize: uint32(pageSize)}
}

// newReplicaFile copies the source's database file (the state before its
// first transaction) to dir/name.
func (s *sourceDB) newReplicaFile(dir, name string) string {
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
func (s *sourceDB) exec(sql string) testTxn {
	s.t.Helper()
	s.py.script("s", sql)
	return s.readTxn()
}

// readTxn reads the source WAL's next transaction, checking every frame's
// salts and checksum as SQLite's recovery does.
func (s *sourceDB) readTxn() testTxn {
	s.t.Helper()
	f, err := os.Open(s.path + "-wal")
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	if s.next == 0 {
		b := make([]byte, wal.HeaderSize)
		if _, err := f.ReadAt(b, 0); err != nil {
			s.t.Fatal(err)
		}
		if s.hdr, err = wal.DecodeHeader(b); err != nil {
			s.t.Fatalf("source WAL header: %v", err)
		}
		s.next, s.chain = 1, s.hdr.Checksum
	}
	fi, err := f.Stat()
	if err != nil {
		s.t.Fatal(err)
	}
	start := wal.FrameOffset(s.next, s.pageSize)
	b := make([]byte, max(0, fi.Size()-start))
	if _, err := f.ReadAt(b, start); err != nil && err != io.EOF {
		s.t.Fatal(err)
	}
	fsz := int64(wal.FrameHeaderSize) + int64(s.pageSize)
	pages := map[uint32][]byte{}
	for off := int64(0); ; off += fsz {
		if off+fsz > int64(len(b)) {
			s.t.Fatalf("source WAL: no commit frame from frame %d on", s.next)
		}
		fh, c, fault := s.hdr.CheckFrame(s.chain, b[off:off+fsz])
		if fault != wal.FaultNone {
			s.t.Fatalf("source WAL: frame %d is not valid", s.next)
		}
		s.chain = c
		s.next++
		pages[fh.Pgno] = slices.Clone(b[off+wal.FrameHeaderSize : off+fsz])
		if fh.Commit == 0 {
			continue
		}
		if end := off + fsz; end != int64(len(b)) {
			s.t.Fatalf("source WAL: %d bytes after the commit frame: one statement list must be one transaction", int64(len(b))-end)
		}
		txn := testTxn{pageCount: fh.Commit}
		for _, pgno := range slices.Sorted(maps.Keys(pages)) {
			txn.pages = append(txn.pages, pagewire.Page{Pgno: pgno, Data: pages[pgno]})
		}
		return txn
	}
}

// frames is how many frames the source WAL has.
func (s *sourceDB) frames() uint32 { return s.next - 1 }

// openWriter opens a WALWriter, closed when the test ends.
func openWriter(t testing.TB, path string) *WALWriter {
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

// mustApply applies txn and checks that Frames is the published mxFrame, with
// the transaction's commit frame last.
func mustApply(t testing.TB, w *WALWriter, txn testTxn) {
	t.Helper()
	mustApplySync(t, w, txn, false)
}

// mustApplySync is mustApply with a choice of sync.
func mustApplySync(t testing.TB, w *WALWriter, txn testTxn, sync bool) {
	t.Helper()
	if err := w.Apply(context.Background(), txn.pageCount, txn.pages, sync); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	hdr, _ := readIndex(t, w)
	if got := w.Frames(); got != hdr.MxFrame || got < uint32(len(txn.pages)) || hdr.NPage != txn.pageCount {
		t.Fatalf("after Apply of %d pages: Frames()=%d, published mxFrame %d, nPage %d (want %d)", len(txn.pages), got, hdr.MxFrame, hdr.NPage, txn.pageCount)
	}
	checkIndexIsFresh(t, w)
}

// checkIndexIsFresh checks the replica's wal-index against one built from
// scratch from its WAL: a hash block's content depends only on the frames
// it indexes, so whatever restarts, debris and recoveries came before, the
// blocks must be byte for byte what a fresh build gives.
func checkIndexIsFresh(t testing.TB, w *WALWriter) {
	t.Helper()
	hdr, _ := readIndex(t, w)
	var scanned wal.IndexHeader
	pgnos, err := w.scanWAL(&scanned)
	if err != nil {
		t.Fatal(err)
	}
	if scanned.MxFrame != hdr.MxFrame || scanned.Salt != hdr.Salt || scanned.FrameChecksum != hdr.FrameChecksum || scanned.NPage != hdr.NPage {
		t.Fatalf("wal-index header mxFrame %d, nPage %d, salts %x, checksum %x; the WAL has %d, %d, %x, %x",
			hdr.MxFrame, hdr.NPage, hdr.Salt, hdr.FrameChecksum, scanned.MxFrame, scanned.NPage, scanned.Salt, scanned.FrameChecksum)
	}
	shm := readAll(t, w.shm.f)
	for k := uint32(0); hdr.MxFrame > 0 && k <= wal.BlockOf(hdr.MxFrame); k++ {
		b := wal.NewBlock(k, make([]byte, wal.BlockSize))
		zero := wal.BlockZero(k)
		for n := zero + 1; n <= min(hdr.MxFrame, zero+uint32(b.Entries())); n++ {
			if err := b.Add(int(n-zero), pgnos[n-1]); err != nil {
				t.Fatal(err)
			}
		}
		base := 0
		if k == 0 {
			base = wal.IndexHeaderRegionSize
		}
		lo := int(k)*wal.BlockSize + base
		hi := int(k+1) * wal.BlockSize
		if len(shm) < hi {
			t.Fatalf("-shm is %d bytes, block %d needs %d", len(shm), k, hi)
		}
		if !bytes.Equal(shm[lo:hi], b.Bytes()[base:]) {
			t.Fatalf("hash block %d differs from a fresh build from the WAL", k)
		}
	}
}

// checkSame fails unless the replica, read by conn of rp, has the source's
// content and passes integrity_check.
func (s *sourceDB) checkSame(t testing.TB, rp *pyConn, conn string) {
	t.Helper()
	if got, want := rp.digest(conn), s.py.digest("s"); got != want {
		t.Fatalf("replica dump %s, want the source's %s", got, want)
	}
	rp.integrity(conn)
}

// The writer's files are read through its own descriptors: opening and
// closing another descriptor of them would drop its POSIX locks.

// readIndex returns the replica's wal-index header (which must be valid) and
// checkpoint info.
func readIndex(t testing.TB, w *WALWriter) (wal.IndexHeader, wal.CkptInfo) {
	t.Helper()
	hdr, ckpt, ok, err := w.shm.readHeader()
	if err != nil || !ok {
		t.Fatalf("wal-index header: ok=%v, err=%v", ok, err)
	}
	return hdr, ckpt
}

// readAll reads a whole file through f.
func readAll(t testing.TB, f *os.File) []byte {
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

// headerOf reads the replica's WAL header.
func headerOf(t testing.TB, w *WALWriter) wal.Header {
	t.Helper()
	b := make([]byte, wal.HeaderSize)
	if _, err := w.wal.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	h, err := wal.DecodeHeader(b)
	if err != nil {
		t.Fatalf("replica WAL header: %v", err)
	}
	return h
}

// checkIndexMatches compares the replica's wal-index with the one
// SQLite built for the source, when both WALs hold the same frames in the
// same order: the hash blocks must be byte for byte the same.
func (s *sourceDB) checkIndexMatches(t testing.TB, w *WALWriter) {
	t.Helper()
	src, err := os.ReadFile(s.path + "-shm")
	if err != nil {
		t.Fatal(err)
	}
	sh, ok := wal.DecodeIndexHeader(src)
	if !ok {
		t.Fatal("source wal-index header is not valid")
	}
	rh, _ := readIndex(t, w)
	if sh.MxFrame != rh.MxFrame || sh.NPage != rh.NPage || sh.PageSize != rh.PageSize {
		t.Fatalf("replica wal-index mxFrame/nPage/szPage = %d/%d/%d, source's %d/%d/%d",
			rh.MxFrame, rh.NPage, rh.PageSize, sh.MxFrame, sh.NPage, sh.PageSize)
	}
	rep := readAll(t, w.shm.f)
	for k := uint32(0); k <= wal.BlockOf(max(sh.MxFrame, 1)); k++ {
		lo, hi := int(k)*wal.BlockSize, int(k+1)*wal.BlockSize
		if k == 0 {
			lo = wal.IndexHeaderRegionSize
		}
		if len(src) < hi || len(rep) < hi {
			t.Fatalf("block %d: source -shm %d bytes, replica's %d", k, len(src), len(rep))
		}
		if !bytes.Equal(src[lo:hi], rep[lo:hi]) {
			t.Fatalf("hash block %d differs from the one SQLite built", k)
		}
	}
}

// writeFileAt writes b at off of path, which no WALWriter has open.
func writeFileAt(t testing.TB, path string, b []byte, off int64) {
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

// fileSize is a file's size, 0 if it does not exist (stat opens nothing).
func fileSize(t testing.TB, path string) int64 {
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

// sqlTxn joins statements into one transaction.
func sqlTxn(stmts ...string) string {
	return "BEGIN;\n" + strings.Join(stmts, ";\n") + ";\nCOMMIT;"
}

package engine

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pagewire/pagewire"
)

// txlog is a database's transaction log: every committed transaction's
// pages, appended to segment files under dbs/<name>/txlog, kept for the
// retention period so that a replica that was away can catch up. Appends
// are plain writes: a transaction costs one write() and no fsync of its
// own. The log is made durable with the WAL instead (sync, which every WAL
// fsync runs alongside its own): a transaction durable in the WAL has its
// record durable too, so that a power cut never leaves the primary unable
// to prove a replica's position, and a replica's recovery can count the
// primary's transactions a commit of its apply worker stood for.
type txlog struct {
	dir        string
	retention  time.Duration
	segmentMax int64 // roll to a new segment past this size

	// syncMu serializes sync; dirRolls counts segments created (or the log's
	// folder itself) whose folder entries sync has not made durable yet.
	syncMu    sync.Mutex
	dirRolls  uint64
	dirSynced uint64

	// mu guards segs, the tail segment's file and size, and recent.
	mu   sync.Mutex
	segs []*segment // ascending by first TXID
	tail *os.File   // append handle of the last segment

	// recent holds the newest records, consecutive TXIDs oldest first, up
	// to recentMax bytes of pages. A replica that keeps up reads each
	// transaction from here: without it, every stream read and decoded
	// every transaction from the file again. Transactions given to the log
	// are shared with its readers and must not be changed afterwards.
	recent      []recentRecord
	recentBytes int
	recentMax   int
}

// recentRecord is a record kept in memory, with where it ends in the file,
// so that a reader can go on from the file when the next one is not kept.
type recentRecord struct {
	txn pagewire.Txn
	seg *segment
	end int64
}

// segment is one txlog file.
type segment struct {
	first    pagewire.TXID // first TXID it holds
	path     string
	size     int64     // bytes of whole records; readers stop there
	lastTime time.Time // commit time of its last record
	last     pagewire.TXID
}

const (
	txlogMagic      = 0x50575458 // "PWTX"
	txlogHeaderSize = 4 + 4 + 8 + 8 + 8 + 8 + 4 + 4 + 4
	txlogTrailer    = 4 // crc32
	defaultSegment  = 64 << 20
	// defaultRecent is how many bytes of pages of the newest transactions
	// the log keeps in memory: 100 ms of 1-row inserts at 7,000 a second,
	// five times a busy stream's send interval.
	defaultRecent = 4 << 20
	// recentAge: pruning also drops kept records older than this, so that
	// an idle database holds no pages in memory for long.
	recentAge = 10 * time.Second
	// txlogWriteBuf and txlogScanBuf bound the memory a record written or
	// checked a piece at a time takes: records of any size go through
	// buffers of this size.
	txlogWriteBuf = 1 << 20
	txlogScanBuf  = 1 << 20
)

// openTxlog opens (or creates) a transaction log and checks its segments,
// cutting off a torn record at the end of the last one.
func openTxlog(dir string, retention time.Duration) (*txlog, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// The folder and its name in the database's folder are durable before
	// anything is logged in it.
	if err := syncDir(dir); err != nil {
		return nil, err
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return nil, err
	}
	l := &txlog{dir: dir, retention: retention, segmentMax: defaultSegment, recentMax: defaultRecent}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok {
			continue
		}
		first, err := strconv.ParseUint(name, 16, 64)
		if err != nil {
			continue
		}
		l.segs = append(l.segs, &segment{first: pagewire.TXID(first), path: filepath.Join(dir, e.Name())})
	}
	sort.Slice(l.segs, func(i, j int) bool { return l.segs[i].first < l.segs[j].first })
	for i, s := range l.segs {
		if err := s.scan(i == len(l.segs)-1); err != nil {
			return nil, fmt.Errorf("transaction log %s: %w", s.path, err)
		}
	}
	return l, nil
}

// scan finds the segment's valid end and last record; a torn record at the
// end of the last segment (a crash mid-append) is cut off. Each record's
// checksum is checked a buffer at a time, so that a record of any size
// costs bounded memory.
func (s *segment) scan(isLast bool) error {
	f, err := os.OpenFile(s.path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, txlogScanBuf)
	var off int64
	for {
		h, err := readRecordHeader(f, off)
		if err == nil {
			err = checkRecord(f, off, h, buf)
		}
		if err != nil {
			s.size = off
			if isLast {
				return f.Truncate(off)
			}
			return nil
		}
		s.last, s.lastTime = h.txn.TXID, h.txn.CommitTime
		off += h.size
	}
}

// append adds a transaction; it must follow the last one (a gap, after an
// import or a crash, starts a new segment so readers notice it).
func (l *txlog) append(txn pagewire.Txn) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	last, err := l.tailLocked(txn.TXID)
	if err != nil {
		return err
	}
	rec := encodeRecord(txn)
	if _, err := l.tail.WriteAt(rec, last.size); err != nil {
		return fmt.Errorf("append to transaction log: %w", err)
	}
	last.size += int64(len(rec))
	last.last, last.lastTime = txn.TXID, txn.CommitTime
	l.keepLocked(txn, last, last.size)
	return nil
}

// tailLocked returns the segment a record of txid goes to, with l.tail
// open on it: the last one, unless it is full or txid does not follow its
// last record.
func (l *txlog) tailLocked(txid pagewire.TXID) (*segment, error) {
	var last *segment
	if n := len(l.segs); n > 0 {
		last = l.segs[n-1]
	}
	if last == nil || last.size >= l.segmentMax || (last.last != 0 && txid != last.last+1) {
		if err := l.rollLocked(txid); err != nil {
			return nil, err
		}
		last = l.segs[len(l.segs)-1]
	}
	if l.tail == nil {
		f, err := os.OpenFile(last.path, os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		l.tail = f
	}
	return last, nil
}

// appendPages adds the record of a transaction too big to hold in memory:
// txn without its Pages, which has n pages that fill gives to emit, one at
// a time, ascending. The record is written through a buffer of
// txlogWriteBuf bytes and is not kept among the recent ones: readers read
// it back from the file, a part at a time.
func (l *txlog) appendPages(txn pagewire.Txn, n int, fill func(emit func(pgno uint32, data []byte) error) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	last, err := l.tailLocked(txn.TXID)
	if err != nil {
		return err
	}

	// The header, each page with its number, then the checksum of all.
	size := recordSize64(int64(n), txn.PageSize)
	w := &recordWriter{bw: bufio.NewWriterSize(io.NewOffsetWriter(l.tail, last.size), txlogWriteBuf)}
	w.write(appendRecordHeader(nil, txn, n, size))
	count := 0
	var pgnoBuf [4]byte
	if err := fill(func(pgno uint32, data []byte) error {
		if count++; count > n || len(data) != int(txn.PageSize) {
			return fmt.Errorf("transaction %d: page %d of %d bytes is not one of its %d pages of %d bytes", txn.TXID, pgno, len(data), n, txn.PageSize)
		}
		binary.BigEndian.PutUint32(pgnoBuf[:], pgno)
		w.write(pgnoBuf[:])
		w.write(data)
		return w.err
	}); err != nil {
		return fmt.Errorf("append to transaction log: %w", err)
	}
	if count != n {
		return fmt.Errorf("append to transaction log: transaction %d has %d pages, not %d", txn.TXID, count, n)
	}
	binary.BigEndian.PutUint32(pgnoBuf[:], w.crc)
	w.write(pgnoBuf[:])
	if w.err == nil {
		w.err = w.bw.Flush()
	}
	if w.err != nil {
		return fmt.Errorf("append to transaction log: %w", w.err)
	}

	// Readers see it once the segment's end moves past it.
	last.size += size
	last.last, last.lastTime = txn.TXID, txn.CommitTime
	l.forgetRecentLocked()
	return nil
}

// recordWriter writes a record through a buffer, summing its checksum; the
// first error sticks.
type recordWriter struct {
	bw  *bufio.Writer
	crc uint32
	err error
}

func (w *recordWriter) write(b []byte) {
	if w.err != nil {
		return
	}
	w.crc = crc32.Update(w.crc, crc32.IEEETable, b)
	_, w.err = w.bw.Write(b)
}

// keepLocked adds a record just written, ending at end in seg, to recent,
// and drops the oldest past recentMax. A record that does not follow the
// last kept one starts recent over.
func (l *txlog) keepLocked(txn pagewire.Txn, seg *segment, end int64) {
	if n := len(l.recent); n > 0 && l.recent[n-1].txn.TXID+1 != txn.TXID {
		l.forgetRecentLocked()
	}
	l.recent = append(l.recent, recentRecord{txn: txn, seg: seg, end: end})
	l.recentBytes += txnPageBytes(txn)
	drop := 0
	for l.recentBytes > l.recentMax && drop < len(l.recent)-1 {
		l.recentBytes -= txnPageBytes(l.recent[drop].txn)
		drop++
	}
	if drop > 0 {
		clear(l.recent[:drop]) // let their pages go
		l.recent = l.recent[drop:]
	}
}

// forgetRecentLocked empties recent.
func (l *txlog) forgetRecentLocked() {
	clear(l.recent)
	l.recent, l.recentBytes = l.recent[:0], 0
}

// recentLocked returns the kept record of txid, if it is kept.
func (l *txlog) recentLocked(txid pagewire.TXID) (recentRecord, bool) {
	if len(l.recent) == 0 || txid < l.recent[0].txn.TXID {
		return recentRecord{}, false
	}
	i := uint64(txid - l.recent[0].txn.TXID)
	if i >= uint64(len(l.recent)) {
		return recentRecord{}, false
	}
	return l.recent[i], true
}

// txnPageBytes is how many bytes of pages txn holds.
func txnPageBytes(txn pagewire.Txn) int { return len(txn.Pages) * int(txn.PageSize) }

// appendAll logs consecutive transactions with one write when they go to
// the current segment, else one by one.
func (l *txlog) appendAll(txns []pagewire.Txn) error {
	l.mu.Lock()
	var last *segment
	if n := len(l.segs); n > 0 {
		last = l.segs[n-1]
	}

	// Few transactions, or ones the tail segment cannot take, go one at a time.
	if len(txns) < 2 || last == nil || l.tail == nil || last.size >= l.segmentMax || txns[0].TXID != last.last+1 {
		l.mu.Unlock()
		for _, t := range txns {
			if err := l.append(t); err != nil {
				return err
			}
		}
		return nil
	}

	// Otherwise the records go in one write.
	defer l.mu.Unlock()
	size := 0
	for _, t := range txns {
		size += recordSize(t)
	}
	buf := make([]byte, 0, size)
	for _, t := range txns {
		buf = appendRecord(buf, t)
	}
	if _, err := l.tail.WriteAt(buf, last.size); err != nil {
		return fmt.Errorf("append to transaction log: %w", err)
	}

	// Keep each one among the recent transactions, and move the segment's end.
	end := last.size
	for _, t := range txns {
		end += int64(recordSize(t))
		l.keepLocked(t, last, end)
	}
	t := txns[len(txns)-1]
	last.size += int64(len(buf))
	last.last, last.lastTime = t.TXID, t.CommitTime
	return nil
}

// rollLocked starts a new segment whose first TXID is first, and drops
// segments past retention.
func (l *txlog) rollLocked(first pagewire.TXID) error {
	if l.tail != nil {
		// The segment's records become durable before its handle goes: a
		// sync running meanwhile finds the handle closed.
		if err := l.tail.Sync(); err != nil {
			return fmt.Errorf("sync transaction log segment: %w", err)
		}
		l.tail.Close()
		l.tail = nil
	}
	path := filepath.Join(l.dir, fmt.Sprintf("%016x.log", uint64(first)))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	l.tail = f
	l.dirRolls++ // its name is durable at the next sync
	// Segments before a gap can never be streamed past it: keep them only
	// for retention like the others.
	l.segs = append(l.segs, &segment{first: first, path: path})
	l.pruneLocked(time.Now())
	return nil
}

// pruneLocked deletes whole segments whose newest record is older than
// retention. When that is every segment, the next append starts a new one.
func (l *txlog) pruneLocked(now time.Time) {
	keep := l.segs[:0]
	for i, s := range l.segs {
		if !s.lastTime.IsZero() && now.Sub(s.lastTime) > l.retention {
			if i == len(l.segs)-1 && l.tail != nil {
				l.tail.Close()
				l.tail = nil
			}
			_ = os.Remove(s.path)
			continue
		}
		keep = append(keep, s)
	}
	l.segs = keep
	// Kept records of removed segments go too (a reader must not go on
	// from a removed file), and those older than recentAge.
	if len(l.recent) > 0 && !slices.Contains(l.segs, l.recent[len(l.recent)-1].seg) {
		l.forgetRecentLocked()
	}
	for len(l.recent) > 0 && (!slices.Contains(l.segs, l.recent[0].seg) || now.Sub(l.recent[0].txn.CommitTime) > recentAge) {
		l.recentBytes -= txnPageBytes(l.recent[0].txn)
		l.recent[0] = recentRecord{}
		l.recent = l.recent[1:]
	}
}

// sync makes every record appended so far durable: the tail segment's
// content, and the folder's entries of segments created since the last
// sync. It holds l.mu only to pick the file, so appends and readers go on
// during the fsync; a segment rolled meanwhile was synced by the roll.
func (l *txlog) sync() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	f, rolls := l.tail, l.dirRolls
	l.mu.Unlock()
	if f != nil {
		if err := f.Sync(); err != nil && !errors.Is(err, os.ErrClosed) {
			return fmt.Errorf("sync transaction log segment: %w", err)
		}
	}
	if rolls != l.dirSynced {
		if err := syncDir(l.dir); err != nil {
			return err
		}
		l.dirSynced = rolls
	}
	return nil
}

// truncateAfter drops every record after txid: a tail a power cut left
// ahead of the database's recovered position (records of commits whose WAL
// frames were lost), which must never be streamed. Segments that start
// after txid go, the one holding txid is cut after its record. The cut is
// durable when it returns. It returns how many records were dropped.
func (l *txlog) truncateAfter(txid pagewire.TXID) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	dropped := 0
	for len(l.segs) > 0 {
		s := l.segs[len(l.segs)-1]
		if s.first <= txid || (s.first == txid+1 && s.last == 0) {
			break
		}
		if s.last != 0 {
			dropped += int(s.last-s.first) + 1
		}
		if l.tail != nil {
			l.tail.Close()
			l.tail = nil
		}
		if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return dropped, err
		}
		l.segs = l.segs[:len(l.segs)-1]
		l.dirRolls++
	}
	if n := len(l.segs); n > 0 && l.segs[n-1].last > txid {
		s := l.segs[n-1]
		f, err := os.OpenFile(s.path, os.O_RDWR, 0)
		if err != nil {
			return dropped, err
		}
		defer f.Close()
		var off int64
		var lastTime time.Time
		for off < s.size {
			h, err := readRecordHeader(f, off)
			if err != nil {
				return dropped, fmt.Errorf("transaction log %s: %w", s.path, err)
			}
			if h.txn.TXID > txid {
				break
			}
			off, lastTime = off+h.size, h.txn.CommitTime
		}
		dropped += int(s.last - txid)
		if err := f.Truncate(off); err != nil {
			return dropped, err
		}
		if err := f.Sync(); err != nil {
			return dropped, err
		}
		s.size, s.last, s.lastTime = off, txid, lastTime
		if off == 0 {
			s.last = 0
		}
	}
	l.forgetRecentLocked()
	if l.dirRolls != l.dirSynced {
		if err := syncDir(l.dir); err != nil {
			return dropped, err
		}
		l.dirSynced = l.dirRolls
	}
	return dropped, nil
}

// headersAfter returns the headers (without pages) of the consecutive
// records from txid+1 on, at most max of them: what recovery counts a
// WAL's commits against.
func (l *txlog) headersAfter(txid pagewire.TXID, max int) []pagewire.Txn {
	// The segments as they are now: appends change the last one's size.
	l.mu.Lock()
	segs := make([]segment, len(l.segs))
	for i, s := range l.segs {
		segs[i] = *s
	}
	l.mu.Unlock()
	var out []pagewire.Txn
	next := txid + 1
	for i, s := range segs {
		if s.last < next || (i+1 < len(segs) && segs[i+1].first <= next) {
			continue // ends before next, or the following one holds it
		}
		if s.first > next {
			return out // a gap
		}
		f, err := os.Open(s.path)
		if err != nil {
			return out
		}
		for off := int64(0); off < s.size && len(out) < max; {
			h, err := readRecordHeader(f, off)
			if err != nil || h.txn.TXID > next {
				break
			}
			off += h.size
			if h.txn.TXID == next {
				out = append(out, h.txn)
				next++
			}
		}
		f.Close()
		if len(out) >= max {
			break
		}
	}
	return out
}

// prune drops segments past retention; the server calls it periodically.
func (l *txlog) prune(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pruneLocked(now)
}

// firstTXID is the TXID of the oldest record, or 0 for an empty log.
func (l *txlog) firstTXID() pagewire.TXID {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.segs {
		if s.last != 0 {
			return s.first
		}
	}
	return 0
}

// lastTXID is the TXID of the newest record, or 0 for an empty log.
func (l *txlog) lastTXID() pagewire.TXID {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.segs) - 1; i >= 0; i-- {
		if l.segs[i].last != 0 {
			return l.segs[i].last
		}
	}
	return 0
}

// reset forgets every record (the database was replaced or deleted).
func (l *txlog) reset() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tail != nil {
		l.tail.Close()
		l.tail = nil
	}
	for _, s := range l.segs {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	l.segs = nil
	l.forgetRecentLocked()
	return nil
}

func (l *txlog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tail != nil {
		l.tail.Close()
		l.tail = nil
	}
}

// errTxlogGap means the log does not hold the transaction asked for: it was
// pruned, lost, or never logged (the database was created or imported then).
var errTxlogGap = errors.New("transaction log does not hold that transaction")

// txlogReader reads a transaction log forward from one TXID: from the log's
// recent records while it has the next one, else from the file.
type txlogReader struct {
	l    *txlog
	next pagewire.TXID // the TXID wanted next
	seg  *segment
	f    *os.File // seg's file; nil until read from
	off  int64    // where in seg the next record to read starts (an earlier one while skipping to next)
}

// readFrom starts reading at TXID next. It returns errTxlogGap if the log
// holds nothing at or before next to start from.
func (l *txlog) readFrom(next pagewire.TXID) (*txlogReader, error) {
	l.mu.Lock()
	var seg *segment
	for _, s := range l.segs {
		if s.first <= next {
			seg = s
		}
	}
	l.mu.Unlock()
	if seg == nil {
		return nil, errTxlogGap
	}
	f, err := os.Open(seg.path)
	if err != nil {
		return nil, errTxlogGap // pruned meanwhile
	}
	return &txlogReader{l: l, next: next, seg: seg, f: f}, nil
}

// nextRecent returns the next transaction if the log keeps it in memory,
// and moves the reader's file position past it.
func (r *txlogReader) nextRecent() (pagewire.Txn, bool) {
	r.l.mu.Lock()
	rec, ok := r.l.recentLocked(r.next)
	r.l.mu.Unlock()
	if !ok {
		return pagewire.Txn{}, false
	}
	if rec.seg != r.seg {
		if r.f != nil {
			r.f.Close()
			r.f = nil
		}
		r.seg = rec.seg
	}
	r.off = rec.end
	r.next++
	return rec.txn, true
}

// Next returns the next transaction, whole, or ok=false if it is not
// logged yet. It returns errTxlogGap when the log skips the wanted TXID.
func (r *txlogReader) Next() (txn pagewire.Txn, ok bool, err error) {
	txn, pages, ok, err := r.nextRecord(math.MaxInt)
	if pages != nil {
		pages.close() // not reached: every record is whole at MaxInt
	}
	return txn, ok, err
}

// nextRecord returns the next transaction, or ok=false if it is not logged
// yet. A transaction of more than maxBytes of pages comes without its
// Pages, with pages to read them a part at a time; the caller closes it.
// It returns errTxlogGap when the log skips the wanted TXID.
func (r *txlogReader) nextRecord(maxBytes int) (txn pagewire.Txn, pages *recordPages, ok bool, err error) {
	if txn, ok := r.nextRecent(); ok {
		return txn, nil, true, nil
	}
	for {
		// Find where the current segment ends, and the one after it.
		r.l.mu.Lock()
		end := r.seg.size
		var following *segment
		for i, s := range r.l.segs {
			if s == r.seg && i+1 < len(r.l.segs) {
				following = r.l.segs[i+1]
			}
		}
		r.l.mu.Unlock()

		// At the segment's end, move on to the following one if it starts at the next TXID.
		if r.off >= end {
			if following == nil {
				return txn, nil, false, nil
			}
			if following.first != r.next {
				return txn, nil, false, errTxlogGap
			}
			f, err := os.Open(following.path)
			if err != nil {
				return txn, nil, false, errTxlogGap
			}
			if r.f != nil {
				r.f.Close()
			}
			r.seg, r.f, r.off = following, f, 0
			continue
		}

		// Read the next record's header, opening the segment if needed.
		if r.f == nil {
			if r.f, err = os.Open(r.seg.path); err != nil {
				return txn, nil, false, errTxlogGap // pruned meanwhile
			}
		}
		h, err := readRecordHeader(r.f, r.off)
		if err != nil {
			return txn, nil, false, fmt.Errorf("read transaction log: %w", err)
		}
		off := r.off
		r.off += h.size

		// Skip records before the start; a missing TXID is a gap.
		switch {
		case h.txn.TXID < r.next:
			continue // skipping to the start
		case h.txn.TXID > r.next:
			return txn, nil, false, errTxlogGap
		}

		// A big record is read a part at a time, through a file of its own.
		if h.pageBytes() > int64(maxBytes) {
			if pages, err = openRecordPages(r.seg.path, off, h); err != nil {
				return txn, nil, false, fmt.Errorf("read transaction log: %w", err)
			}
			r.next++
			return h.txn, pages, true, nil
		}
		if txn, _, err = decodeRecordAt(r.f, off, h); err != nil {
			return txn, nil, false, fmt.Errorf("read transaction log: %w", err)
		}
		r.next++
		return txn, nil, true, nil
	}
}

// Close closes the reader.
func (r *txlogReader) Close() {
	if r.f != nil {
		r.f.Close()
	}
}

// recordPages reads the pages of one record a part at a time, checking the
// record's checksum as it goes: the part with the last page comes only
// once the whole record has checked out.
type recordPages struct {
	f        *os.File
	off      int64 // where the next page's entry starts
	left     int64 // pages not read yet
	pageSize uint32
	crc      uint32 // of the record up to off
	buf      []byte // the last part's pages; reused
}

// openRecordPages opens the record at off in the segment file at path,
// whose header is h.
func openRecordPages(path string, off int64, h recordHeader) (*recordPages, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &recordPages{f: f, off: off + txlogHeaderSize, left: h.pages, pageSize: h.txn.PageSize, crc: crc32.ChecksumIEEE(h.raw[:])}, nil
}

// next returns the next pages, at most maxBytes of them but at least one,
// and whether they are the last. The pages are valid until the next call.
// A record whose checksum fails is an ErrCorrupt error at its last part.
func (p *recordPages) next(maxBytes int) (pages []pagewire.Page, last bool, err error) {
	if p.left == 0 {
		return nil, true, fmt.Errorf("%w: no pages left in the transaction log record", pagewire.ErrInvalidArgument)
	}
	entry := 4 + int64(p.pageSize)
	n := min(p.left, max(1, int64(maxBytes)/int64(p.pageSize)))
	size := n * entry
	if n == p.left {
		size += txlogTrailer // the checksum comes with the last part
	}
	if int64(cap(p.buf)) < size {
		p.buf = make([]byte, size)
	}
	b := p.buf[:size]
	if _, err := p.f.ReadAt(b, p.off); err != nil {
		return nil, false, fmt.Errorf("read transaction log: %w", err)
	}
	entries := b[:n*entry]
	p.crc = crc32.Update(p.crc, crc32.IEEETable, entries)
	p.off, p.left = p.off+n*entry, p.left-n
	if p.left == 0 && p.crc != binary.BigEndian.Uint32(b[n*entry:]) {
		return nil, true, fmt.Errorf("%w: transaction log record checksum mismatch", pagewire.ErrCorrupt)
	}
	pages = make([]pagewire.Page, n)
	for i := range pages {
		e := entries[int64(i)*entry:]
		pages[i] = pagewire.Page{Pgno: binary.BigEndian.Uint32(e), Data: e[4:entry:entry]}
	}
	return pages, p.left == 0, nil
}

// close closes the record's file.
func (p *recordPages) close() { p.f.Close() }

// recordHeader is a record's header, decoded and checked.
type recordHeader struct {
	raw   [txlogHeaderSize]byte
	txn   pagewire.Txn // without Pages
	pages int64
	size  int64 // of the whole record
}

// pageBytes is how many bytes of pages the record holds.
func (h recordHeader) pageBytes() int64 { return h.pages * int64(h.txn.PageSize) }

func encodeRecord(txn pagewire.Txn) []byte {
	return appendRecord(make([]byte, 0, recordSize(txn)), txn)
}

// recordSize is the size of txn's record.
func recordSize(txn pagewire.Txn) int {
	return int(recordSize64(int64(len(txn.Pages)), txn.PageSize))
}

// recordSize64 is the size of the record of a transaction of n pages. The
// header's size field holds its low 32 bits: a record of 4 GiB or more is
// told by its page count.
func recordSize64(n int64, pageSize uint32) int64 {
	return txlogHeaderSize + n*(4+int64(pageSize)) + txlogTrailer
}

// appendRecord appends txn's record to b.
func appendRecord(b []byte, txn pagewire.Txn) []byte {
	start := len(b)
	b = appendRecordHeader(b, txn, len(txn.Pages), int64(recordSize(txn)))
	for _, p := range txn.Pages {
		b = binary.BigEndian.AppendUint32(b, p.Pgno)
		b = append(b, p.Data...)
	}
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b[start:]))
}

// appendRecordHeader appends the header of txn's record, of n pages and
// size bytes, to b.
func appendRecordHeader(b []byte, txn pagewire.Txn, n int, size int64) []byte {
	b = binary.BigEndian.AppendUint32(b, txlogMagic)
	b = binary.BigEndian.AppendUint32(b, uint32(size))
	b = binary.BigEndian.AppendUint64(b, uint64(txn.TXID))
	b = binary.BigEndian.AppendUint64(b, txn.PreChecksum)
	b = binary.BigEndian.AppendUint64(b, txn.PostChecksum)
	b = binary.BigEndian.AppendUint64(b, uint64(txn.CommitTime.UnixNano()))
	b = binary.BigEndian.AppendUint32(b, txn.PageSize)
	b = binary.BigEndian.AppendUint32(b, txn.PageCount)
	return binary.BigEndian.AppendUint32(b, uint32(n))
}

// readRecordHeader reads and checks the header of the record at off.
func readRecordHeader(r io.ReaderAt, off int64) (recordHeader, error) {
	var h recordHeader
	if _, err := r.ReadAt(h.raw[:], off); err != nil {
		return h, err
	}
	return h, h.decode()
}

// decode checks raw and fills in the rest.
func (h *recordHeader) decode() error {
	b := h.raw[:]
	if binary.BigEndian.Uint32(b[0:]) != txlogMagic {
		return fmt.Errorf("%w: bad transaction log record magic", pagewire.ErrCorrupt)
	}
	h.txn = pagewire.Txn{
		TXID:         pagewire.TXID(binary.BigEndian.Uint64(b[8:])),
		PreChecksum:  binary.BigEndian.Uint64(b[16:]),
		PostChecksum: binary.BigEndian.Uint64(b[24:]),
		CommitTime:   time.Unix(0, int64(binary.BigEndian.Uint64(b[32:]))),
		PageSize:     binary.BigEndian.Uint32(b[40:]),
		PageCount:    binary.BigEndian.Uint32(b[44:]),
	}
	h.pages = int64(binary.BigEndian.Uint32(b[48:]))
	h.size = recordSize64(h.pages, h.txn.PageSize)
	if !pagewire.ValidPageSize(h.txn.PageSize) || binary.BigEndian.Uint32(b[4:]) != uint32(h.size) {
		return fmt.Errorf("%w: bad transaction log record size", pagewire.ErrCorrupt)
	}
	return nil
}

// checkRecord checks the checksum of the record at off, whose header is h,
// reading it through buf.
func checkRecord(r io.ReaderAt, off int64, h recordHeader, buf []byte) error {
	crc := crc32.ChecksumIEEE(h.raw[:])
	end := off + h.size - txlogTrailer
	for pos := off + txlogHeaderSize; pos < end; {
		b := buf[:min(int64(len(buf)), end-pos)]
		if _, err := r.ReadAt(b, pos); err != nil {
			return err
		}
		crc = crc32.Update(crc, crc32.IEEETable, b)
		pos += int64(len(b))
	}
	var trailer [txlogTrailer]byte
	if _, err := r.ReadAt(trailer[:], end); err != nil {
		return err
	}
	if crc != binary.BigEndian.Uint32(trailer[:]) {
		return fmt.Errorf("%w: transaction log record checksum mismatch", pagewire.ErrCorrupt)
	}
	return nil
}

// decodeRecordAt reads the whole record at off, whose header is h.
func decodeRecordAt(r io.ReaderAt, off int64, h recordHeader) (pagewire.Txn, int64, error) {
	if h.size > math.MaxInt32 {
		return pagewire.Txn{}, 0, fmt.Errorf("%w: a transaction log record of %d bytes is read a part at a time", pagewire.ErrInvalidArgument, h.size)
	}
	b := make([]byte, h.size)
	if _, err := r.ReadAt(b, off); err != nil {
		return pagewire.Txn{}, 0, err
	}
	return decodeRecord(b)
}

// decodeRecord decodes one whole record.
func decodeRecord(b []byte) (pagewire.Txn, int64, error) {
	if len(b) < txlogHeaderSize+txlogTrailer {
		return pagewire.Txn{}, 0, fmt.Errorf("%w: bad transaction log record", pagewire.ErrCorrupt)
	}
	var h recordHeader
	copy(h.raw[:], b)
	if err := h.decode(); err != nil {
		return pagewire.Txn{}, 0, err
	}
	if h.size != int64(len(b)) || crc32.ChecksumIEEE(b[:h.size-txlogTrailer]) != binary.BigEndian.Uint32(b[h.size-txlogTrailer:]) {
		return pagewire.Txn{}, 0, fmt.Errorf("%w: transaction log record checksum mismatch", pagewire.ErrCorrupt)
	}
	txn := h.txn
	txn.Pages = make([]pagewire.Page, h.pages)
	off := txlogHeaderSize
	for i := range txn.Pages {
		txn.Pages[i].Pgno = binary.BigEndian.Uint32(b[off:])
		txn.Pages[i].Data = b[off+4 : off+4+int(txn.PageSize)]
		off += 4 + int(txn.PageSize)
	}
	return txn, h.size, nil
}

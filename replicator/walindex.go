package replicator

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sync/atomic"
	"syscall"

	"github.com/pagewire/pagewire"
)

// The wal-index (-shm) format (SQLITE_NOTES §3). Unlike the WAL, the -shm is
// in the host's byte order, like the memory SQLite maps it into.
const (
	shmHdrCopySize     = 48    // one WalIndexHdr
	shmNBackfillOff    = 96    // u32, then aReadMark[0..4]
	shmReadMarkOff     = 100   // u32 aReadMark[5]
	shmNBackfillTryOff = 128   // u32 nBackfillAttempted
	shmHdrSize         = 136   // both copies and WalCkptInfo
	shmBlockSize       = 32768 // one hash block: aPgno then aHash
	shmBlockFrames     = 4096  // aPgno entries of blocks 1..
	shmBlock0Frames    = 4062  // aPgno entries of block 0, after the header
	shmHashOffset      = 16384 // aHash within a block
	shmHashSlots       = 8192  // u16 aHash entries
	shmHashMul         = 383   // walHash: (pgno*383) & (slots-1)
	shmVersion         = 3007000
	shmReadMarkUnused  = 0xffffffff
	shmReaders         = 5 // aReadMark entries: 0 (the database file only) and 1..4
	shmBlockPgnoOffset = shmHdrSize
)

var shmOrder = binary.NativeEndian

// shmBigEndian is whether the host, hence the -shm, is big-endian.
var shmBigEndian = shmOrder.Uint16([]byte{0, 1}) == 1

// walIndexHdr is SQLite's WalIndexHdr, stored twice at the start of the -shm.
type walIndexHdr struct {
	version     uint32 // iVersion, 3007000
	change      uint32 // iChange: one more per commit
	isInit      uint8
	bigEndCksum bool      // the WAL's checksum words are big-endian
	pageSize    uint32    // decoded szPage; 0 if unknown
	mxFrame     uint32    // last committed frame
	nPage       uint32    // database size in pages at mxFrame; 0: use the file size
	frameCksum  [2]uint32 // running WAL checksum at mxFrame
	salt        [8]byte   // the WAL header's salts, as stored there (big-endian)
	cksum       [2]uint32 // checksum of the first 40 bytes, native word order
}

// encode returns one copy of the header, marked initialised, with its
// checksum (which it also stores in h).
func (h *walIndexHdr) encode() [shmHdrCopySize]byte {
	var b [shmHdrCopySize]byte
	h.version, h.isInit = shmVersion, 1
	shmOrder.PutUint32(b[0:], h.version)
	shmOrder.PutUint32(b[8:], h.change)
	b[12] = h.isInit
	if h.bigEndCksum {
		b[13] = 1
	}
	shmOrder.PutUint16(b[14:], encodeShmPageSize(h.pageSize))
	shmOrder.PutUint32(b[16:], h.mxFrame)
	shmOrder.PutUint32(b[20:], h.nPage)
	shmOrder.PutUint32(b[24:], h.frameCksum[0])
	shmOrder.PutUint32(b[28:], h.frameCksum[1])
	copy(b[32:40], h.salt[:])
	h.cksum = walChecksum(shmBigEndian, [2]uint32{}, b[:40])
	shmOrder.PutUint32(b[40:], h.cksum[0])
	shmOrder.PutUint32(b[44:], h.cksum[1])
	return b
}

// encodeShmPageSize stores 65536, which does not fit in the u16, as 1.
func encodeShmPageSize(n uint32) uint16 { return uint16(n&0xff00 | n>>16) }

// decodeShmPageSize undoes encodeShmPageSize.
func decodeShmPageSize(v uint16) uint32 { return uint32(v&0xfe00) + uint32(v&1)<<16 }

// decodeWALIndexHdr parses the two header copies (b holds at least 96
// bytes) as a SQLite reader does: ok is false if they differ, isInit is 0 or
// the checksum does not match. A valid header may still have another
// version; the caller checks.
func decodeWALIndexHdr(b []byte) (h walIndexHdr, ok bool) {
	if len(b) < 2*shmHdrCopySize {
		return walIndexHdr{}, false
	}
	c0, c1 := b[:shmHdrCopySize], b[shmHdrCopySize:2*shmHdrCopySize]
	if !bytes.Equal(c0, c1) || c0[12] == 0 {
		return walIndexHdr{}, false
	}
	h = walIndexHdr{
		version:     shmOrder.Uint32(c0[0:]),
		change:      shmOrder.Uint32(c0[8:]),
		isInit:      c0[12],
		bigEndCksum: c0[13] != 0,
		pageSize:    decodeShmPageSize(shmOrder.Uint16(c0[14:])),
		mxFrame:     shmOrder.Uint32(c0[16:]),
		nPage:       shmOrder.Uint32(c0[20:]),
		frameCksum:  [2]uint32{shmOrder.Uint32(c0[24:]), shmOrder.Uint32(c0[28:])},
		cksum:       [2]uint32{shmOrder.Uint32(c0[40:]), shmOrder.Uint32(c0[44:])},
	}
	copy(h.salt[:], c0[32:40])
	if walChecksum(shmBigEndian, [2]uint32{}, c0[:40]) != h.cksum {
		return walIndexHdr{}, false
	}
	return h, true
}

// walCkptInfo is SQLite's WalCkptInfo, after the header copies.
type walCkptInfo struct {
	nBackfill          uint32 // frames 1..nBackfill are in the database file
	readMark           [shmReaders]uint32
	nBackfillAttempted uint32
}

// decodeCkptInfo parses WalCkptInfo from the first 136 bytes of the -shm.
func decodeCkptInfo(b []byte) walCkptInfo {
	var c walCkptInfo
	if len(b) < shmHdrSize {
		return c
	}
	c.nBackfill = shmOrder.Uint32(b[shmNBackfillOff:])
	for i := range c.readMark {
		c.readMark[i] = shmOrder.Uint32(b[shmReadMarkOff+4*i:])
	}
	c.nBackfillAttempted = shmOrder.Uint32(b[shmNBackfillTryOff:])
	return c
}

// shmBlockOf is the hash block that indexes frame n.
func shmBlockOf(n uint32) uint32 {
	return (n + shmBlockFrames - shmBlock0Frames - 1) / shmBlockFrames
}

// shmBlockZero is the frame before block k's first: frame = zero + idx.
func shmBlockZero(k uint32) uint32 {
	if k == 0 {
		return 0
	}
	return shmBlock0Frames + (k-1)*shmBlockFrames
}

// shmHash is where the probe for pgno starts.
func shmHash(pgno uint32) int { return int(pgno*shmHashMul) & (shmHashSlots - 1) }

// shmBlock is one 32 KiB hash block, read into memory, changed there and
// written back. Only the WAL_WRITE_LOCK holder changes blocks, so the copy
// stays current while the lock is held.
type shmBlock struct {
	k    uint32
	buf  []byte // the whole block as in the file; block 0's header bytes are never written back
	base int    // offset of aPgno[0] in buf: 136 in block 0, else 0
	// Dirty byte ranges of buf to write back, [lo, hi); hi == 0: clean.
	pgnoLo, pgnoHi int
	hashLo, hashHi int
}

func newShmBlock(k uint32, buf []byte) *shmBlock {
	b := &shmBlock{k: k, buf: buf}
	if k == 0 {
		b.base = shmBlockPgnoOffset
	}
	return b
}

// entries is how many aPgno entries the block has.
func (b *shmBlock) entries() int { return (shmHashOffset - b.base) / 4 }

// pgno is aPgno[idx-1]: the page of frame zero+idx, 0 if none.
func (b *shmBlock) pgno(idx int) uint32 { return shmOrder.Uint32(b.buf[b.base+4*(idx-1):]) }

func (b *shmBlock) slot(i int) int { return int(shmOrder.Uint16(b.buf[shmHashOffset+2*i:])) }

func (b *shmBlock) markPgno(lo, hi int) {
	if b.pgnoHi == 0 {
		b.pgnoLo, b.pgnoHi = lo, hi
		return
	}
	b.pgnoLo, b.pgnoHi = min(b.pgnoLo, lo), max(b.pgnoHi, hi)
}

func (b *shmBlock) markHash(lo, hi int) {
	if b.hashHi == 0 {
		b.hashLo, b.hashHi = lo, hi
		return
	}
	b.hashLo, b.hashHi = min(b.hashLo, lo), max(b.hashHi, hi)
}

// reset zeroes aPgno and aHash, as SQLite does before a block's first frame.
func (b *shmBlock) reset() {
	clear(b.buf[b.base:])
	b.markPgno(b.base, shmHashOffset)
	b.markHash(shmHashOffset, shmBlockSize)
}

// add indexes frame zero+idx as holding pgno: aPgno[idx-1] = pgno, and idx
// in the first free hash slot probing from shmHash(pgno).
func (b *shmBlock) add(idx int, pgno uint32) error {
	if idx < 1 || idx > b.entries() {
		return fmt.Errorf("frame index %d out of range for hash block %d", idx, b.k)
	}
	i := shmHash(pgno)
	for n := 0; b.slot(i) != 0; n++ {
		if n == shmHashSlots {
			return fmt.Errorf("hash block %d is full: %w", b.k, errShmCorrupt)
		}
		i = (i + 1) & (shmHashSlots - 1)
	}
	off := b.base + 4*(idx-1)
	shmOrder.PutUint32(b.buf[off:], pgno)
	b.markPgno(off, off+4)
	hoff := shmHashOffset + 2*i
	shmOrder.PutUint16(b.buf[hoff:], uint16(idx))
	b.markHash(hoff, hoff+2)
	return nil
}

// truncate removes the entries of frames above zero+limit, as SQLite's
// walCleanupHash does with what a crashed or rolled-back writer left. They
// were all added after the entries that stay, so removing them leaves every
// remaining probe chain intact.
func (b *shmBlock) truncate(limit int) {
	for i := range shmHashSlots {
		if b.slot(i) > limit {
			off := shmHashOffset + 2*i
			shmOrder.PutUint16(b.buf[off:], 0)
			b.markHash(off, off+2)
		}
	}
	if off := b.base + 4*limit; off < shmHashOffset {
		clear(b.buf[off:shmHashOffset])
		b.markPgno(off, shmHashOffset)
	}
}

// errShmCorrupt: the wal-index contradicts itself.
var errShmCorrupt = fmt.Errorf("the wal-index (-shm) is inconsistent: %w", pagewire.ErrCorrupt)

// shmFile does I/O on the -shm: reads with pread, writes through a shared
// mapping of the file, as SQLite's own connections do, so that changing
// the wal-index costs no round trip through a FUSE mount (pwrite on a mount
// is one request to its server per call). Reads and the mapping share the
// page cache that readers map, so all see the same bytes. The process that
// serves a FUSE mount must not map a file on it (a page fault there would
// wait on itself): a node applies to its own mount from a worker process.
type shmFile struct {
	f   *os.File
	mem []byte // the file mapped shared, as big as the file was when mapped
	// fence is the target of an atomic add after each write: a barrier, so
	// that writes reach readers in program order on any CPU.
	fence atomic.Uint32
}

// readAt reads len(b) bytes at off, zero-filling what lies past the end of
// the file (as a region SQLite has not grown yet reads).
func (s *shmFile) readAt(b []byte, off int64) error {
	n, err := s.f.ReadAt(b, off)
	if err == io.EOF {
		clear(b[n:])
		return nil
	}
	return err
}

// writeAt writes b at off, through the mapping when the file is big
// enough (else with pwrite, which grows it).
//
// Readers load some fields while they change, and SQLite stores them with
// single aligned stores. So fields a reader may load while they change
// (nBackfill, hash slots) are written inside ranges that start and end
// 8-byte aligned: Go's copy, like Linux's copy routines for pwrite, stores
// those in aligned words or wider. Header copies need no such care: a torn
// copy fails the reader's checks and it retries.
func (s *shmFile) writeAt(b []byte, off int64) error {
	end := off + int64(len(b))
	if end > int64(len(s.mem)) {
		if err := s.remap(end); err != nil {
			return err
		}
	}
	if end <= int64(len(s.mem)) && s.copyMapped(b, off) {
		s.fence.Add(1)
		return nil
	}
	_, err := s.f.WriteAt(b, off)
	return err
}

// copyMapped copies b into the mapping at off. If the file was truncated
// under the mapping (by a process that found no other user of the -shm),
// the copy faults: the mapping is dropped, and false says to write with
// pwrite instead.
func (s *shmFile) copyMapped(b []byte, off int64) (ok bool) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			_ = s.unmap()
			ok = false
		}
	}()
	copy(s.mem[off:off+int64(len(b))], b)
	return true
}

// remap maps the whole file again if it has grown past the mapping.
func (s *shmFile) remap(need int64) error {
	fi, err := s.f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() < need || fi.Size() <= int64(len(s.mem)) {
		return nil // writeAt uses pwrite
	}
	mem, err := syscall.Mmap(int(s.f.Fd()), 0, int(fi.Size()), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map the -shm: %w", err)
	}
	if err := s.unmap(); err != nil {
		_ = syscall.Munmap(mem)
		return err
	}
	s.mem = mem
	return nil
}

// unmap drops the mapping, if any.
func (s *shmFile) unmap() error {
	if s.mem == nil {
		return nil
	}
	err := syscall.Munmap(s.mem)
	s.mem = nil
	return err
}

// readHeader reads both header copies and WalCkptInfo. ok is false if the
// header is not valid (see decodeWALIndexHdr) or the -shm is shorter than it.
func (s *shmFile) readHeader() (walIndexHdr, walCkptInfo, bool, error) {
	var b [shmHdrSize]byte
	n, err := s.f.ReadAt(b[:], 0)
	if err == io.EOF {
		return walIndexHdr{}, walCkptInfo{}, false, nil
	}
	if err != nil {
		return walIndexHdr{}, walCkptInfo{}, false, err
	}
	h, ok := decodeWALIndexHdr(b[:n])
	return h, decodeCkptInfo(b[:n]), ok, nil
}

// publish writes the header as SQLite's walIndexWriteHdr does: copy 1, then
// copy 0, so that a reader (copy 0 first, then copy 1) that sees the new
// copy 0 also sees the new copy 1.
func (s *shmFile) publish(h *walIndexHdr) error {
	b := h.encode()
	if err := s.writeAt(b[:], shmHdrCopySize); err != nil {
		return err
	}
	return s.writeAt(b[:], 0)
}

// writeNBackfill stores nBackfill together with aReadMark[0] (always 0) as
// one aligned 8-byte write, so a reader never loads a torn value.
func (s *shmFile) writeNBackfill(n uint32) error {
	var b [8]byte
	shmOrder.PutUint32(b[:], n)
	return s.writeAt(b[:], shmNBackfillOff)
}

// writeReadMark stores aReadMark[i]. The caller holds READ_LOCK(i)
// exclusive, so readers only glance at it before trying that lock, and
// check it again once they hold it.
func (s *shmFile) writeReadMark(i int, v uint32) error {
	var b [4]byte
	shmOrder.PutUint32(b[:], v)
	return s.writeAt(b[:], int64(shmReadMarkOff+4*i))
}

// writeNBackfillAttempted stores nBackfillAttempted, which SQLite only
// reports.
func (s *shmFile) writeNBackfillAttempted(v uint32) error {
	var b [4]byte
	shmOrder.PutUint32(b[:], v)
	return s.writeAt(b[:], shmNBackfillTryOff)
}

// grow extends the -shm with zeros to at least size bytes (SQLite grows it
// in 32 KiB regions and never leaves holes). It never touches existing
// bytes.
func (s *shmFile) grow(size int64) error {
	fi, err := s.f.Stat()
	if err != nil {
		return err
	}
	if cur := fi.Size(); cur < size {
		return s.writeAt(make([]byte, size-cur), cur)
	}
	return nil
}

// loadBlock reads hash block k.
func (s *shmFile) loadBlock(k uint32) (*shmBlock, error) {
	buf := make([]byte, shmBlockSize)
	if err := s.readAt(buf, int64(k)*shmBlockSize); err != nil {
		return nil, err
	}
	return newShmBlock(k, buf), nil
}

// storeBlock writes back the dirty parts of b, aPgno before aHash (so a
// crash leaves no hash slot naming an unset aPgno entry), each widened to
// 8-byte boundaries. Bytes rewritten with the value they had are invisible to
// readers; only the WAL_WRITE_LOCK holder changes blocks.
func (s *shmFile) storeBlock(b *shmBlock) error {
	at := int64(b.k) * shmBlockSize
	for _, r := range [][2]int{{b.pgnoLo, b.pgnoHi}, {b.hashLo, b.hashHi}} {
		if r[1] == 0 {
			continue
		}
		lo, hi := r[0]&^7, (r[1]+7)&^7
		if lo < b.base {
			lo = b.base
		}
		if err := s.writeAt(b.buf[lo:hi], at+int64(lo)); err != nil {
			return err
		}
	}
	b.pgnoLo, b.pgnoHi, b.hashLo, b.hashHi = 0, 0, 0, 0
	return nil
}

// readPgnos returns the pages of frames from+1..to, from the aPgno arrays.
func (s *shmFile) readPgnos(from, to uint32) ([]uint32, error) {
	pgnos := make([]uint32, 0, to-from)
	for n := from + 1; n <= to; {
		k := shmBlockOf(n)
		zero := shmBlockZero(k)
		base := int64(k) * shmBlockSize
		if k == 0 {
			base += shmBlockPgnoOffset
		}
		last := min(to, zero+uint32(shmBlockEntries(k)))
		buf := make([]byte, 4*(last-n+1))
		if err := s.readAt(buf, base+4*int64(n-zero-1)); err != nil {
			return nil, err
		}
		for i := 0; i < len(buf); i += 4 {
			pgnos = append(pgnos, shmOrder.Uint32(buf[i:]))
		}
		n = last + 1
	}
	return pgnos, nil
}

// shmBlockEntries is how many frames block k indexes.
func shmBlockEntries(k uint32) int {
	if k == 0 {
		return shmBlock0Frames
	}
	return shmBlockFrames
}

package replicator

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sync/atomic"
	"syscall"

	"github.com/pagewire/pagewire/wal"
)

// indexFile does I/O on the -shm: reads with pread, writes through a shared
// mapping of the file, as SQLite's own connections do, so that changing
// the wal-index costs no round trip through a FUSE mount (pwrite on a mount
// is one request to its server per call). Reads and the mapping share the
// page cache that readers map, so all see the same bytes. The process that
// serves a FUSE mount must not map a file on it (a page fault there would
// wait on itself): a node applies to its own mount from a worker process.
type indexFile struct {
	f   *os.File
	mem []byte // the file mapped shared, as big as the file was when mapped
	// fence is the target of an atomic add after each write: a barrier, so
	// that writes reach readers in program order on any CPU.
	fence atomic.Uint32
}

// readAt reads len(b) bytes at off, zero-filling what lies past the end of
// the file (as a region SQLite has not grown yet reads).
func (s *indexFile) readAt(b []byte, off int64) error {
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
func (s *indexFile) writeAt(b []byte, off int64) error {
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
func (s *indexFile) copyMapped(b []byte, off int64) (ok bool) {
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
func (s *indexFile) remap(need int64) error {
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
func (s *indexFile) unmap() error {
	if s.mem == nil {
		return nil
	}
	err := syscall.Munmap(s.mem)
	s.mem = nil
	return err
}

// readHeader reads both header copies and WalCkptInfo. ok is false if the
// header is not valid (see wal.DecodeIndexHeader) or the -shm is shorter
// than it.
func (s *indexFile) readHeader() (wal.IndexHeader, wal.CkptInfo, bool, error) {
	var b [wal.IndexHeaderRegionSize]byte
	n, err := s.f.ReadAt(b[:], 0)
	if err == io.EOF {
		return wal.IndexHeader{}, wal.CkptInfo{}, false, nil
	}
	if err != nil {
		return wal.IndexHeader{}, wal.CkptInfo{}, false, err
	}
	h, ok := wal.DecodeIndexHeader(b[:n])
	return h, wal.DecodeCkptInfo(b[:n]), ok, nil
}

// publish writes the header as SQLite's walIndexWriteHdr does: copy 1, then
// copy 0, so that a reader (copy 0 first, then copy 1) that sees the new
// copy 0 also sees the new copy 1.
func (s *indexFile) publish(h *wal.IndexHeader) error {
	b := h.Encode()
	if err := s.writeAt(b[:], wal.IndexHeaderSize); err != nil {
		return err
	}
	return s.writeAt(b[:], 0)
}

// writeNBackfill stores nBackfill together with aReadMark[0] (always 0) as
// one aligned 8-byte write, so a reader never loads a torn value.
func (s *indexFile) writeNBackfill(n uint32) error {
	var b [8]byte
	wal.IndexOrder.PutUint32(b[:], n)
	return s.writeAt(b[:], wal.NBackfillOffset)
}

// writeReadMark stores aReadMark[i]. The caller holds READ_LOCK(i)
// exclusive, so readers only glance at it before trying that lock, and
// check it again once they hold it.
func (s *indexFile) writeReadMark(i int, v uint32) error {
	var b [4]byte
	wal.IndexOrder.PutUint32(b[:], v)
	return s.writeAt(b[:], int64(wal.ReadMarkOffset+4*i))
}

// writeNBackfillAttempted stores nBackfillAttempted, which SQLite only
// reports.
func (s *indexFile) writeNBackfillAttempted(v uint32) error {
	var b [4]byte
	wal.IndexOrder.PutUint32(b[:], v)
	return s.writeAt(b[:], wal.NBackfillTriedOffset)
}

// grow extends the -shm with zeros to at least size bytes (SQLite grows it
// in 32 KiB regions and never leaves holes). It never touches existing
// bytes.
func (s *indexFile) grow(size int64) error {
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
func (s *indexFile) loadBlock(k uint32) (*wal.Block, error) {
	buf := make([]byte, wal.BlockSize)
	if err := s.readAt(buf, int64(k)*wal.BlockSize); err != nil {
		return nil, err
	}
	return wal.NewBlock(k, buf), nil
}

// storeBlock writes back the changed parts of b (see wal.Block.Flush). Only
// the WAL_WRITE_LOCK holder changes blocks.
func (s *indexFile) storeBlock(b *wal.Block) error { return b.Flush(s.writeAt) }

// readPgnos returns the pages of frames from+1..to, from the aPgno arrays.
func (s *indexFile) readPgnos(from, to uint32) ([]uint32, error) {
	pgnos := make([]uint32, 0, to-from)
	for n := from + 1; n <= to; {
		k := wal.BlockOf(n)
		last := min(to, wal.BlockZero(k)+uint32(wal.BlockEntries(k)))
		buf := make([]byte, 4*(last-n+1))
		if err := s.readAt(buf, wal.PgnoOffset(n)); err != nil {
			return nil, err
		}
		for i := 0; i < len(buf); i += 4 {
			pgnos = append(pgnos, wal.IndexOrder.Uint32(buf[i:]))
		}
		n = last + 1
	}
	return pgnos, nil
}

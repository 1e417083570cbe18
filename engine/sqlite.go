package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc64"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/wal"
)

// SQLite file-format facts (see shared/SQLITE_NOTES.md §1–2); package wal
// has the WAL's.
const (
	dbHeaderMagic      = "SQLite format 3\x00"
	defaultPageSize    = 4096
	walHeaderSize      = wal.HeaderSize
	walFrameHeaderSize = wal.FrameHeaderSize
	checksumFlag       = uint64(1) << 63
)

var crcTable = crc64.MakeTable(crc64.ISO)

// pageChecksum is the LTX checksum of one page: CRC64-ISO of the big-endian
// page number followed by the page, with the top bit set.
func pageChecksum(pgno uint32, page []byte) uint64 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], pgno)
	h := crc64.Update(0, crcTable, b[:])
	h = crc64.Update(h, crcTable, page)
	return h | checksumFlag
}

// dbHeaderPageSize reads the page size from a database header.
func dbHeaderPageSize(hdr []byte) uint32 {
	v := uint32(binary.BigEndian.Uint16(hdr[16:18]))
	if v == 1 {
		return 65536
	}
	return v
}

// dbHeaderPageCount is the database size in pages from its header, or 0 when
// the header's count is not valid (bytes 24..27 differ from 92..95).
func dbHeaderPageCount(hdr []byte) uint32 {
	if binary.BigEndian.Uint32(hdr[24:28]) != binary.BigEndian.Uint32(hdr[92:96]) {
		return 0
	}
	return binary.BigEndian.Uint32(hdr[28:32])
}

// newDatabasePage is page 1 of an empty database in WAL mode: what
// `PRAGMA journal_mode=WAL` leaves in an empty file.
func newDatabasePage(pageSize uint32) []byte {
	p := make([]byte, pageSize)
	copy(p, dbHeaderMagic)
	if pageSize == 65536 {
		binary.BigEndian.PutUint16(p[16:], 1)
	} else {
		binary.BigEndian.PutUint16(p[16:], uint16(pageSize))
	}
	p[18], p[19] = 2, 2 // WAL write and read versions
	p[21], p[22], p[23] = 64, 32, 32
	binary.BigEndian.PutUint32(p[24:], 1) // change counter
	binary.BigEndian.PutUint32(p[28:], 1) // size in pages
	binary.BigEndian.PutUint32(p[92:], 1) // version-valid-for
	binary.BigEndian.PutUint32(p[96:], 3040001)
	p[100] = 0x0d // empty leaf table b-tree: sqlite_schema
	binary.BigEndian.PutUint16(p[105:], uint16(pageSize&0xffff))
	return p
}

// validateDBHeader checks page 1 of a database file: the magic, a valid page
// size, and WAL mode.
func validateDBHeader(hdr []byte) error {
	if len(hdr) < 100 {
		return fmt.Errorf("header is %d bytes, want at least 100", len(hdr))
	}
	if string(hdr[:16]) != dbHeaderMagic {
		return errors.New("not a SQLite database: bad magic")
	}
	if ps := dbHeaderPageSize(hdr); !pagewire.ValidPageSize(ps) {
		return fmt.Errorf("bad page size %d", ps)
	}
	return nil
}

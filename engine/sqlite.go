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

// dbFilePages is the size in pages of a database file whose first bytes are
// hdr and whose length is size, as SQLite reads it (btree.c lockBtree): the
// header's count (offset 28) when SQLite trusts it, that is when it is not
// 0 and the version-valid-for number (offset 92) equals the change counter
// (offset 24); otherwise the pages the file holds, the last one possibly
// partial. A trusted count may exceed the file by at most beyond pages
// (pages a WAL holds, and the lock page); more, and the header claims
// pages that exist nowhere: an error, before anything is allocated for
// them. The header must also pass validateDBHeader.
func dbFilePages(hdr []byte, size, beyond int64) (uint32, error) {
	if err := validateDBHeader(hdr); err != nil {
		return 0, err
	}
	ps := int64(dbHeaderPageSize(hdr))
	held := (max(size, 0) + ps - 1) / ps
	n := int64(dbHeaderPageCount(hdr))
	switch {
	case n == 0 && held > pagewire.MaxPageCount:
		return 0, fmt.Errorf("the file is %d bytes, %d pages of %d bytes: more than the %d pages a SQLite database can have", size, held, ps, int64(pagewire.MaxPageCount))
	case n == 0:
		return uint32(held), nil
	case n > pagewire.MaxPageCount:
		return 0, fmt.Errorf("the header says the database has %d pages, more than the %d a SQLite database can have", n, int64(pagewire.MaxPageCount))
	case n > held+max(beyond, 0):
		return 0, fmt.Errorf("the header says the database has %d pages of %d bytes, but the file holds %d (%d bytes)", n, ps, held, size)
	}
	return uint32(n), nil
}

// checkImport checks a database file received for an import, whose first
// bytes are hdr and whose length is size, before anything is changed or
// allocated for it: a SQLite database header with a valid page size, a
// length of whole pages, at least one, and a header page count the file
// holds (an import has no WAL). It returns the database's size in pages; its
// errors wrap ErrInvalidArgument.
func checkImport(hdr []byte, size int64) (uint32, error) {
	if err := validateDBHeader(hdr); err != nil {
		return 0, fmt.Errorf("%w: the imported file is not a SQLite database: %v", pagewire.ErrInvalidArgument, err)
	}
	if ps := int64(dbHeaderPageSize(hdr)); size < ps || size%ps != 0 {
		return 0, fmt.Errorf("%w: the imported file is %d bytes, not a whole number of its %d-byte pages: it is truncated or not a SQLite database", pagewire.ErrInvalidArgument, size, ps)
	}
	n, err := dbFilePages(hdr, size, 0)
	if err != nil {
		return 0, fmt.Errorf("%w: the imported file: %v; import a whole copy of the database (e.g. from sqlite3's .backup or pagewire export)", pagewire.ErrInvalidArgument, err)
	}
	return n, nil
}

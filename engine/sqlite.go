package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc64"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/walfmt"
)

// SQLite file-format facts (see shared/SQLITE_NOTES.md §1–2).
const (
	dbHeaderMagic      = "SQLite format 3\x00"
	defaultPageSize    = 4096
	walHeaderSize      = walfmt.HeaderSize
	walFrameHeaderSize = walfmt.FrameHeaderSize
	walMagicLE         = walfmt.Magic // checksum words little-endian
	walVersion         = walfmt.Version
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

// walHeader is the 32-byte header of a -wal file.
type walHeader struct {
	Magic    uint32
	Version  uint32
	PageSize uint32
	Seq      uint32
	Salt1    uint32
	Salt2    uint32
	Ck1, Ck2 uint32
}

// bigEndianChecksum reports whether the WAL's checksum words are big-endian.
func (h walHeader) bigEndianChecksum() bool { return h.Magic&1 == 1 }

// parseWALHeader decodes and validates a WAL header the way SQLite's recovery
// does: magic, version, page size and checksum must all hold.
func parseWALHeader(b []byte) (walHeader, error) {
	if len(b) < walHeaderSize {
		return walHeader{}, fmt.Errorf("wal header is %d bytes, want %d", len(b), walHeaderSize)
	}
	h := walHeader{
		Magic:    binary.BigEndian.Uint32(b[0:]),
		Version:  binary.BigEndian.Uint32(b[4:]),
		PageSize: binary.BigEndian.Uint32(b[8:]),
		Seq:      binary.BigEndian.Uint32(b[12:]),
		Salt1:    binary.BigEndian.Uint32(b[16:]),
		Salt2:    binary.BigEndian.Uint32(b[20:]),
		Ck1:      binary.BigEndian.Uint32(b[24:]),
		Ck2:      binary.BigEndian.Uint32(b[28:]),
	}
	if h.Magic&^1 != walMagicLE {
		return h, fmt.Errorf("bad wal magic %#x", h.Magic)
	}
	if h.Version != walVersion {
		return h, fmt.Errorf("bad wal version %d", h.Version)
	}
	if !pagewire.ValidPageSize(h.PageSize) {
		return h, fmt.Errorf("bad wal page size %d", h.PageSize)
	}
	if c1, c2 := walfmt.Checksum(h.bigEndianChecksum(), 0, 0, b[:24]); c1 != h.Ck1 || c2 != h.Ck2 {
		return h, errors.New("bad wal header checksum")
	}
	return h, nil
}

// walFrameHeader is the 24-byte header of one WAL frame.
type walFrameHeader struct {
	Pgno     uint32
	Commit   uint32 // database size in pages after commit; 0 unless the txn's last frame
	Salt1    uint32
	Salt2    uint32
	Ck1, Ck2 uint32
}

func parseWALFrameHeader(b []byte) walFrameHeader {
	return walFrameHeader{
		Pgno:   binary.BigEndian.Uint32(b[0:]),
		Commit: binary.BigEndian.Uint32(b[4:]),
		Salt1:  binary.BigEndian.Uint32(b[8:]),
		Salt2:  binary.BigEndian.Uint32(b[12:]),
		Ck1:    binary.BigEndian.Uint32(b[16:]),
		Ck2:    binary.BigEndian.Uint32(b[20:]),
	}
}

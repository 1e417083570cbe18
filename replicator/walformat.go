package replicator

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/walfmt"
)

// The WAL file format (SQLITE_NOTES §2). Everything in the file is
// big-endian except the checksum words, whose order the magic number selects.
const (
	walMagic        = walfmt.Magic // | 1: checksum words are big-endian
	walVersion      = walfmt.Version
	walHeaderSize   = walfmt.HeaderSize
	walFrameHdrSize = walfmt.FrameHeaderSize
)

var (
	// errWALNoHeader: the WAL file has no valid header, so SQLite treats it
	// as empty.
	errWALNoHeader = errors.New("the WAL has no valid header")
	// errWALVersion: the header is valid but of a WAL format SQLite does not
	// know; SQLite refuses to open such a database (SQLITE_CANTOPEN).
	errWALVersion = errors.New("the WAL header has an unknown format version")
)

// walHeader is the 32-byte header at the start of the WAL file.
type walHeader struct {
	bigEndCksum bool      // magic & 1
	pageSize    uint32    // 512..65536
	ckptSeq     uint32    // checkpoint sequence: informational
	salt        [8]byte   // salt-1, salt-2 as stored (big-endian)
	cksum       [2]uint32 // checksum of bytes 0..23
}

// encode returns the header's bytes with its checksum, which it also stores
// in h.cksum.
func (h *walHeader) encode() [walHeaderSize]byte {
	var b [walHeaderSize]byte
	magic := uint32(walMagic)
	if h.bigEndCksum {
		magic |= 1
	}
	binary.BigEndian.PutUint32(b[0:], magic)
	binary.BigEndian.PutUint32(b[4:], walVersion)
	binary.BigEndian.PutUint32(b[8:], h.pageSize)
	binary.BigEndian.PutUint32(b[12:], h.ckptSeq)
	copy(b[16:24], h.salt[:])
	h.cksum = walChecksum(h.bigEndCksum, [2]uint32{}, b[:24])
	binary.BigEndian.PutUint32(b[24:], h.cksum[0])
	binary.BigEndian.PutUint32(b[28:], h.cksum[1])
	return b
}

// decodeWALHeader parses a WAL header as SQLite's recovery does. It returns
// errWALNoHeader if b is short, the magic or page size is wrong or the
// checksum does not match, and errWALVersion for a valid header of another
// format version.
func decodeWALHeader(b []byte) (walHeader, error) {
	if len(b) < walHeaderSize {
		return walHeader{}, errWALNoHeader
	}
	magic := binary.BigEndian.Uint32(b[0:])
	h := walHeader{
		bigEndCksum: magic&1 == 1,
		pageSize:    binary.BigEndian.Uint32(b[8:]),
		ckptSeq:     binary.BigEndian.Uint32(b[12:]),
	}
	copy(h.salt[:], b[16:24])
	h.cksum = [2]uint32{binary.BigEndian.Uint32(b[24:]), binary.BigEndian.Uint32(b[28:])}
	if magic&^1 != walMagic || !pagewire.ValidPageSize(h.pageSize) {
		return walHeader{}, errWALNoHeader
	}
	if walChecksum(h.bigEndCksum, [2]uint32{}, b[:24]) != h.cksum {
		return walHeader{}, errWALNoHeader
	}
	if v := binary.BigEndian.Uint32(b[4:]); v != walVersion {
		return walHeader{}, fmt.Errorf("%w %d (want %d)", errWALVersion, v, walVersion)
	}
	return h, nil
}

// walChecksum is walfmt.Checksum on the pair of running words.
func walChecksum(bigEnd bool, s [2]uint32, b []byte) [2]uint32 {
	s1, s2 := walfmt.Checksum(bigEnd, s[0], s[1], b)
	return [2]uint32{s1, s2}
}

// walFrameHeader is the 24-byte header before each page in the WAL.
type walFrameHeader struct {
	pgno   uint32
	commit uint32 // database size in pages after the commit; 0 unless it is the transaction's last frame
	salt   [8]byte
	cksum  [2]uint32
}

// walEncodeFrame fills frame (24+pageSize bytes) with the header and page,
// chaining the checksum from prev, and returns the new running checksum.
func walEncodeFrame(frame []byte, bigEnd bool, prev [2]uint32, pgno, commit uint32, salt [8]byte, page []byte) [2]uint32 {
	binary.BigEndian.PutUint32(frame[0:], pgno)
	binary.BigEndian.PutUint32(frame[4:], commit)
	copy(frame[8:16], salt[:])
	copy(frame[walFrameHdrSize:], page)
	c := walChecksum(bigEnd, prev, frame[:8])
	c = walChecksum(bigEnd, c, frame[walFrameHdrSize:])
	binary.BigEndian.PutUint32(frame[16:], c[0])
	binary.BigEndian.PutUint32(frame[20:], c[1])
	return c
}

// walDecodeFrameHeader parses a frame header; b must hold at least 24 bytes.
func walDecodeFrameHeader(b []byte) walFrameHeader {
	h := walFrameHeader{
		pgno:   binary.BigEndian.Uint32(b[0:]),
		commit: binary.BigEndian.Uint32(b[4:]),
		cksum:  [2]uint32{binary.BigEndian.Uint32(b[16:]), binary.BigEndian.Uint32(b[20:])},
	}
	copy(h.salt[:], b[8:16])
	return h
}

// walCheckFrame verifies frame (header and page) as SQLite's recovery does:
// salts equal to the WAL header's, a page number, and the checksum chained
// from prev. It returns the new running checksum.
func walCheckFrame(frame []byte, bigEnd bool, prev [2]uint32, salt [8]byte) (walFrameHeader, [2]uint32, bool) {
	h := walDecodeFrameHeader(frame)
	if h.pgno == 0 || h.salt != salt {
		return h, prev, false
	}
	c := walChecksum(bigEnd, prev, frame[:8])
	c = walChecksum(bigEnd, c, frame[walFrameHdrSize:])
	return h, c, c == h.cksum
}

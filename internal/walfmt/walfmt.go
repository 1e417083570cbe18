// Package walfmt holds the SQLite WAL file's fixed layout and its checksum
// (SQLITE_NOTES §2), shared by the storage server, which reads the WAL that
// SQLite writes, and the replicator, which writes WALs that SQLite reads.
package walfmt

import "encoding/binary"

// Layout facts. Everything in the file is big-endian except the checksum
// words, whose order the magic number's low bit selects.
const (
	Magic           = 0x377f0682 // | 1: checksum words are big-endian
	Version         = 3007000
	HeaderSize      = 32
	FrameHeaderSize = 24
)

// Checksum continues SQLite's WAL checksum (s1, s2) over b, whose length is
// a multiple of 8: for each pair of 32-bit words x0, x1 (big-endian if
// bigEndian, else little-endian), s1 += x0 + s2; s2 += x1 + s1.
func Checksum(bigEndian bool, s1, s2 uint32, b []byte) (uint32, uint32) {
	if bigEndian {
		for ; len(b) >= 8; b = b[8:] {
			s1 += binary.BigEndian.Uint32(b) + s2
			s2 += binary.BigEndian.Uint32(b[4:]) + s1
		}
		return s1, s2
	}
	for ; len(b) >= 8; b = b[8:] {
		s1 += binary.LittleEndian.Uint32(b) + s2
		s2 += binary.LittleEndian.Uint32(b[4:]) + s1
	}
	return s1, s2
}

// FrameOffset is the byte offset of frame n (from 1) in a WAL of pageSize
// pages.
func FrameOffset(n uint32, pageSize uint32) int64 {
	return HeaderSize + int64(n-1)*(FrameHeaderSize+int64(pageSize))
}

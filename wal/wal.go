package wal

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pagewire/pagewire"
)

// Layout of the -wal file. Everything in it is big-endian except the
// checksum words, whose order the magic number's low bit selects.
const (
	Magic           = 0x377f0682 // | 1: checksum words are big-endian
	Version         = 3007000
	HeaderSize      = 32
	FrameHeaderSize = 24
)

// Errors of DecodeHeader. Every one but ErrBadVersion wraps ErrNoHeader:
// SQLite's recovery treats such a WAL as empty. A header of another version
// under a valid checksum makes SQLite refuse the database (SQLITE_CANTOPEN).
var (
	// ErrNoHeader is wrapped by each reason a WAL has no valid header.
	ErrNoHeader = errors.New("no valid wal header")
	// ErrShortHeader is returned when fewer than HeaderSize bytes are given.
	ErrShortHeader = fmt.Errorf("%w: short", ErrNoHeader)
	// ErrBadMagic is returned when the magic number is neither byte order's.
	ErrBadMagic = fmt.Errorf("%w: bad magic", ErrNoHeader)
	// ErrBadPageSize is returned for a page size SQLite does not accept.
	ErrBadPageSize = fmt.Errorf("%w: bad page size", ErrNoHeader)
	// ErrBadChecksum is returned when bytes 24..31 are not the checksum of
	// bytes 0..23.
	ErrBadChecksum = fmt.Errorf("%w: bad header checksum", ErrNoHeader)
	// ErrBadVersion is returned for a valid header of another format version.
	ErrBadVersion = errors.New("unknown wal format version")
)

// Checksum is SQLite's running WAL checksum: two 32-bit sums.
type Checksum [2]uint32

// Update continues the checksum over b, whose length is a multiple of 8: for
// each pair of 32-bit words x0, x1 (big-endian if bigEndian, else
// little-endian), s1 += x0 + s2; s2 += x1 + s1.
func (c Checksum) Update(bigEndian bool, b []byte) Checksum {
	s1, s2 := c[0], c[1]
	if bigEndian {
		for ; len(b) >= 8; b = b[8:] {
			s1 += binary.BigEndian.Uint32(b) + s2
			s2 += binary.BigEndian.Uint32(b[4:]) + s1
		}
		return Checksum{s1, s2}
	}
	for ; len(b) >= 8; b = b[8:] {
		s1 += binary.LittleEndian.Uint32(b) + s2
		s2 += binary.LittleEndian.Uint32(b[4:]) + s1
	}
	return Checksum{s1, s2}
}

// Salt is a WAL generation's pair of salts: a frame belongs to the
// generation whose header carries the same salts.
type Salt [2]uint32

// FrameOffset is the byte offset of frame n (from 1) in a WAL of pageSize
// pages.
func FrameOffset(n uint32, pageSize uint32) int64 {
	return HeaderSize + int64(n-1)*(FrameHeaderSize+int64(pageSize))
}

// Header is the 32-byte header at the start of the -wal file.
type Header struct {
	BigEndianChecksum bool   // magic & 1: the checksum words are big-endian
	PageSize          uint32 // 512..65536
	CheckpointSeq     uint32 // informational
	Salt              Salt
	Checksum          Checksum // of bytes 0..23; the frame checksums chain from it
}

// AppendTo appends the encoded header to b. It computes the checksum, which
// it also stores in h.
func (h *Header) AppendTo(b []byte) []byte {
	magic := uint32(Magic)
	if h.BigEndianChecksum {
		magic |= 1
	}
	start := len(b)
	b = binary.BigEndian.AppendUint32(b, magic)
	b = binary.BigEndian.AppendUint32(b, Version)
	b = binary.BigEndian.AppendUint32(b, h.PageSize)
	b = binary.BigEndian.AppendUint32(b, h.CheckpointSeq)
	b = binary.BigEndian.AppendUint32(b, h.Salt[0])
	b = binary.BigEndian.AppendUint32(b, h.Salt[1])
	h.Checksum = Checksum{}.Update(h.BigEndianChecksum, b[start:])
	b = binary.BigEndian.AppendUint32(b, h.Checksum[0])
	return binary.BigEndian.AppendUint32(b, h.Checksum[1])
}

// Encode returns the encoded header, computing its checksum as AppendTo.
func (h *Header) Encode() [HeaderSize]byte {
	var b [HeaderSize]byte
	h.AppendTo(b[:0])
	return b
}

// DecodeHeader parses and validates a WAL header as SQLite's recovery does,
// in its order: magic, page size, checksum, then version. The errors wrap
// ErrShortHeader, ErrBadMagic, ErrBadPageSize, ErrBadChecksum (all of them
// ErrNoHeader) or ErrBadVersion. On error the fields parsed so far are
// returned.
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: %d bytes, want %d", ErrShortHeader, len(b), HeaderSize)
	}
	magic := binary.BigEndian.Uint32(b[0:])
	h := Header{
		BigEndianChecksum: magic&1 == 1,
		PageSize:          binary.BigEndian.Uint32(b[8:]),
		CheckpointSeq:     binary.BigEndian.Uint32(b[12:]),
		Salt:              Salt{binary.BigEndian.Uint32(b[16:]), binary.BigEndian.Uint32(b[20:])},
		Checksum:          Checksum{binary.BigEndian.Uint32(b[24:]), binary.BigEndian.Uint32(b[28:])},
	}
	if magic&^1 != Magic {
		return h, fmt.Errorf("%w %#x", ErrBadMagic, magic)
	}
	if !pagewire.ValidPageSize(h.PageSize) {
		return h, fmt.Errorf("%w %d", ErrBadPageSize, h.PageSize)
	}
	if (Checksum{}).Update(h.BigEndianChecksum, b[:24]) != h.Checksum {
		return h, ErrBadChecksum
	}
	if v := binary.BigEndian.Uint32(b[4:]); v != Version {
		return h, fmt.Errorf("%w %d (want %d)", ErrBadVersion, v, Version)
	}
	return h, nil
}

// FrameHeader is the 24-byte header before each page in the WAL.
type FrameHeader struct {
	Pgno     uint32
	Commit   uint32 // database size in pages after the commit; 0 unless the transaction's last frame
	Salt     Salt
	Checksum Checksum // running checksum after this frame
}

// DecodeFrameHeader parses a frame header; b holds at least 24 bytes.
func DecodeFrameHeader(b []byte) FrameHeader {
	_ = b[FrameHeaderSize-1]
	return FrameHeader{
		Pgno:     binary.BigEndian.Uint32(b[0:]),
		Commit:   binary.BigEndian.Uint32(b[4:]),
		Salt:     Salt{binary.BigEndian.Uint32(b[8:]), binary.BigEndian.Uint32(b[12:])},
		Checksum: Checksum{binary.BigEndian.Uint32(b[16:]), binary.BigEndian.Uint32(b[20:])},
	}
}

// Fault says why SQLite's recovery stops at a frame.
type Fault uint8

// The faults of a frame, in the order CheckFrame tests them.
const (
	FaultNone     Fault = iota // the frame is valid
	FaultShort                 // the file ends inside the frame (Reader only)
	FaultSalt                  // its salts are not the header's: an older generation's frame
	FaultPgno                  // its page number is 0
	FaultChecksum              // its checksum does not chain from the previous frame's
)

// String is "" for FaultNone, else "short", "salt", "pgno" or "checksum".
func (f Fault) String() string {
	return [...]string{"", "short", "salt", "pgno", "checksum"}[f]
}

// CheckFrame verifies one whole frame (header and page) of the WAL with
// header h as SQLite's recovery does: the header's salts, a page number, and
// the checksum chained from prev. It returns the frame's header, the running
// checksum after it (valid only without a fault) and the fault, if any.
func (h Header) CheckFrame(prev Checksum, frame []byte) (FrameHeader, Checksum, Fault) {
	fh := DecodeFrameHeader(frame)
	if fh.Salt != h.Salt {
		return fh, prev, FaultSalt
	}
	if fh.Pgno == 0 {
		return fh, prev, FaultPgno
	}
	c := prev.Update(h.BigEndianChecksum, frame[:8]).Update(h.BigEndianChecksum, frame[FrameHeaderSize:])
	if c != fh.Checksum {
		return fh, c, FaultChecksum
	}
	return fh, c, FaultNone
}

// Encoder encodes the frames of one WAL generation, chaining each frame's
// checksum from the one before.
type Encoder struct {
	BigEndianChecksum bool     // the header's checksum word order
	Salt              Salt     // the header's salts
	Checksum          Checksum // the running checksum: the header's at first, then the last frame's
}

// Encoder returns an Encoder for the frames that follow h.
func (h Header) Encoder() Encoder {
	return Encoder{BigEndianChecksum: h.BigEndianChecksum, Salt: h.Salt, Checksum: h.Checksum}
}

// EncodeFrame fills frame (24 bytes plus the page) with the header of page
// pgno, commit (the database size on a transaction's last frame, else 0) and
// the page, and advances the running checksum.
func (e *Encoder) EncodeFrame(frame []byte, pgno, commit uint32, page []byte) {
	binary.BigEndian.PutUint32(frame[0:], pgno)
	binary.BigEndian.PutUint32(frame[4:], commit)
	binary.BigEndian.PutUint32(frame[8:], e.Salt[0])
	binary.BigEndian.PutUint32(frame[12:], e.Salt[1])
	copy(frame[FrameHeaderSize:], page)
	e.Checksum = e.Checksum.Update(e.BigEndianChecksum, frame[:8]).Update(e.BigEndianChecksum, frame[FrameHeaderSize:])
	binary.BigEndian.PutUint32(frame[16:], e.Checksum[0])
	binary.BigEndian.PutUint32(frame[20:], e.Checksum[1])
}

// AppendFrame appends an encoded frame to b, as EncodeFrame.
func (e *Encoder) AppendFrame(b []byte, pgno, commit uint32, page []byte) []byte {
	n := len(b)
	b = append(b, make([]byte, FrameHeaderSize+len(page))...)
	e.EncodeFrame(b[n:], pgno, commit, page)
	return b
}

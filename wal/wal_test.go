package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// The checksum of eight bytes is the two words added as SQLite adds them,
// in the byte order asked for; it chains from the given start.
func TestChecksum_Update(t *testing.T) {
	b := []byte{1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0}
	// LE words 1, 2, 3, 4: s1=1, s2=2+1=3; s1=1+3+3=7, s2=3+4+7=14.
	if got, want := (Checksum{}).Update(false, b), (Checksum{7, 14}); got != want {
		t.Fatalf("little-endian: %v, want %v", got, want)
	}
	// BE words 1<<24, 2<<24, 3<<24, 4<<24.
	if got, want := (Checksum{}).Update(true, b), (Checksum{7 << 24, 14 << 24}); got != want {
		t.Fatalf("big-endian: %v, want %v", got, want)
	}
	if got, want := (Checksum{}).Update(false, b[:8]).Update(false, b[8:]), (Checksum{7, 14}); got != want {
		t.Fatalf("chained: %v, want %v", got, want)
	}
}

func TestFrameOffset(t *testing.T) {
	if got := FrameOffset(1, 4096); got != 32 {
		t.Fatalf("frame 1 at %d, want 32", got)
	}
	if got := FrameOffset(3, 512); got != 32+2*(24+512) {
		t.Fatalf("frame 3 at %d", got)
	}
}

func TestHeader_roundTrip(t *testing.T) {
	for _, bigEnd := range []bool{false, true} {
		h := Header{BigEndianChecksum: bigEnd, PageSize: 65536, CheckpointSeq: 7, Salt: Salt{0x01020304, 0x05060708}}
		b := h.Encode()
		want := uint32(Magic)
		if bigEnd {
			want |= 1
		}
		if got := binary.BigEndian.Uint32(b[:]); got != want {
			t.Fatalf("magic %x, want %x", got, want)
		}
		got, err := DecodeHeader(b[:])
		if err != nil || got != h {
			t.Fatalf("decode: %+v, %v; want %+v", got, err, h)
		}
	}
}

// Each fault of a header gives its own error, all but the version's
// meaning "no header" to SQLite's recovery.
func TestDecodeHeader_errors(t *testing.T) {
	h := Header{PageSize: 4096, Salt: Salt{1, 2}}
	good := h.Encode()
	resum := func(b []byte) []byte {
		c := Checksum{}.Update(false, b[:24])
		binary.BigEndian.PutUint32(b[24:], c[0])
		binary.BigEndian.PutUint32(b[28:], c[1])
		return b
	}
	for _, c := range []struct {
		name string
		b    func() []byte
		want error
	}{
		{"short", func() []byte { return good[:31] }, ErrShortHeader},
		{"magic", func() []byte { b := good; b[3] = 0x80; return resum(b[:]) }, ErrBadMagic},
		{"page size", func() []byte { b := good; b[10] = 0x11; return resum(b[:]) }, ErrBadPageSize},
		{"checksum", func() []byte { b := good; b[20] ^= 1; return b[:] }, ErrBadChecksum},
		{"version", func() []byte { b := good; b[7]++; return resum(b[:]) }, ErrBadVersion},
		{"version and checksum", func() []byte { b := good; b[7]++; return b[:] }, ErrBadChecksum},
	} {
		_, err := DecodeHeader(c.b())
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if noHeader := c.want != ErrBadVersion; errors.Is(err, ErrNoHeader) != noHeader {
			t.Errorf("%s: %v is ErrNoHeader: %v, want %v", c.name, err, !noHeader, noHeader)
		}
	}
}

func TestHeader_CheckFrame(t *testing.T) {
	h := Header{PageSize: 512, Salt: Salt{0x09090909, 0x01010101}, Checksum: Checksum{5, 6}}
	page := bytes.Repeat([]byte{0xab, 0xcd}, 256)
	enc := h.Encoder()
	frame := make([]byte, FrameHeaderSize+len(page))
	enc.EncodeFrame(frame, 3, 4, page)
	fh, c, fault := h.CheckFrame(h.Checksum, frame)
	if fault != FaultNone || c != enc.Checksum || fh.Pgno != 3 || fh.Commit != 4 || fh.Checksum != c {
		t.Fatalf("CheckFrame: %+v, %v, %v", fh, c, fault)
	}
	if _, _, fault := h.CheckFrame(Checksum{5, 7}, frame); fault != FaultChecksum {
		t.Fatalf("with another running checksum: %v, want checksum", fault)
	}
	other := h
	other.Salt[1]++
	if _, _, fault := other.CheckFrame(h.Checksum, frame); fault != FaultSalt {
		t.Fatalf("with other salts: %v, want salt", fault)
	}
	zero := h.Encoder()
	zero.EncodeFrame(frame, 0, 0, page)
	if _, _, fault := h.CheckFrame(h.Checksum, frame); fault != FaultPgno {
		t.Fatalf("page 0: %v, want pgno", fault)
	}
}

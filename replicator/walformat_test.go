package replicator

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/pagewire/pagewire"
)

// TestWALChecksum checks the checksum against a hand computation, in both
// word orders.
func TestWALChecksum(t *testing.T) {
	b := []byte{1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0}
	// LE words 1, 2, 3, 4: s1=1, s2=2+1=3; s1=1+3+3=7, s2=3+4+7=14.
	if got, want := walChecksum(false, [2]uint32{}, b), [2]uint32{7, 14}; got != want {
		t.Fatalf("little-endian: %v, want %v", got, want)
	}
	// BE words 1<<24, 2<<24, 3<<24, 4<<24.
	if got, want := walChecksum(true, [2]uint32{}, b), [2]uint32{7 << 24, 14 << 24}; got != want {
		t.Fatalf("big-endian: %v, want %v", got, want)
	}
}

func TestWALHeader_roundTrip(t *testing.T) {
	for _, bigEnd := range []bool{false, true} {
		h := walHeader{bigEndCksum: bigEnd, pageSize: 65536, ckptSeq: 7, salt: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}}
		b := h.encode()
		if got, want := binary.BigEndian.Uint32(b[:]), uint32(walMagic)|map[bool]uint32{false: 0, true: 1}[bigEnd]; got != want {
			t.Fatalf("magic %x, want %x", got, want)
		}
		got, err := decodeWALHeader(b[:])
		if err != nil || got != h {
			t.Fatalf("decode: %+v, %v; want %+v", got, err, h)
		}
		b[20] ^= 1
		if _, err := decodeWALHeader(b[:]); err != errWALNoHeader {
			t.Fatalf("decode with a bad checksum: %v", err)
		}
	}
}

func TestFrame_roundTrip(t *testing.T) {
	page := bytes.Repeat([]byte{0xab, 0xcd}, 256)
	salt := [8]byte{9, 9, 9, 9, 1, 1, 1, 1}
	frame := make([]byte, walFrameHdrSize+len(page))
	c := walEncodeFrame(frame, false, [2]uint32{5, 6}, 3, 4, salt, page)
	fh, c2, ok := walCheckFrame(frame, false, [2]uint32{5, 6}, salt)
	if !ok || c2 != c || fh.pgno != 3 || fh.commit != 4 {
		t.Fatalf("walCheckFrame: %+v, %v, %v", fh, c2, ok)
	}
	if _, _, ok := walCheckFrame(frame, false, [2]uint32{5, 7}, salt); ok {
		t.Fatal("frame valid with another running checksum")
	}
}

// FuzzDecodeWALHeader: decoding never panics, and a valid header encodes
// back to the same bytes.
func FuzzDecodeWALHeader(f *testing.F) {
	h := walHeader{pageSize: 4096, salt: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}}
	b := h.encode()
	f.Add(b[:])
	h.bigEndCksum = true
	b = h.encode()
	f.Add(b[:])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeWALHeader(b)
		if err != nil {
			return
		}
		if !pagewire.ValidPageSize(h.pageSize) {
			t.Fatalf("page size %d accepted", h.pageSize)
		}
		if e := h.encode(); !bytes.Equal(e[:], b[:walHeaderSize]) {
			t.Fatalf("re-encoded %x, want %x", e, b[:walHeaderSize])
		}
	})
}

// FuzzCheckFrame: checking arbitrary frames never panics, and a frame that
// passes re-encodes to the same bytes.
func FuzzCheckFrame(f *testing.F) {
	salt := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	frame := make([]byte, walFrameHdrSize+512)
	walEncodeFrame(frame, false, [2]uint32{}, 1, 1, salt, make([]byte, 512))
	f.Add(frame, false)
	f.Fuzz(func(t *testing.T, b []byte, bigEnd bool) {
		if len(b) < walFrameHdrSize+8 || (len(b)-walFrameHdrSize)%8 != 0 {
			return
		}
		fh, c, ok := walCheckFrame(b, bigEnd, [2]uint32{}, salt)
		if !ok {
			return
		}
		e := make([]byte, len(b))
		if c2 := walEncodeFrame(e, bigEnd, [2]uint32{}, fh.pgno, fh.commit, salt, b[walFrameHdrSize:]); c2 != c || !bytes.Equal(e, b) {
			t.Fatalf("re-encoded frame differs")
		}
	})
}

package walfmt

import (
	"encoding/binary"
	"testing"
)

// The checksum of eight bytes is the two words added as SQLite adds them,
// in the byte order asked for; it chains from the given start.
func TestChecksum(t *testing.T) {
	b := make([]byte, 16)
	binary.BigEndian.PutUint32(b[0:], 1)
	binary.BigEndian.PutUint32(b[4:], 2)
	binary.BigEndian.PutUint32(b[8:], 3)
	binary.BigEndian.PutUint32(b[12:], 4)
	// s1 = 0+1+0 = 1, s2 = 0+2+1 = 3; s1 = 1+3+3 = 7, s2 = 3+4+7 = 14.
	if s1, s2 := Checksum(true, 0, 0, b); s1 != 7 || s2 != 14 {
		t.Fatalf("big-endian: %d %d, want 7 14", s1, s2)
	}
	x1, x2 := Checksum(false, 0, 0, b)
	a1, a2 := Checksum(false, 0, 0, b[:8])
	if y1, y2 := Checksum(false, a1, a2, b[8:]); y1 != x1 || y2 != x2 {
		t.Fatalf("chained %d %d differs from one pass %d %d", y1, y2, x1, x2)
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

package replicator

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestShmPageSize(t *testing.T) {
	for _, n := range []uint32{512, 1024, 4096, 32768, 65536} {
		if got := decodeShmPageSize(encodeShmPageSize(n)); got != n {
			t.Errorf("page size %d round-trips to %d", n, got)
		}
	}
	if got := encodeShmPageSize(65536); got != 1 {
		t.Errorf("65536 encodes as %d, want 1", got)
	}
}

func TestShmBlockOf(t *testing.T) {
	for _, c := range []struct{ frame, block, idx uint32 }{
		{1, 0, 1}, {4062, 0, 4062}, {4063, 1, 1}, {4062 + 4096, 1, 4096}, {4062 + 4096 + 1, 2, 1},
	} {
		k := shmBlockOf(c.frame)
		if idx := c.frame - shmBlockZero(k); k != c.block || idx != c.idx {
			t.Errorf("frame %d: block %d index %d, want %d, %d", c.frame, k, idx, c.block, c.idx)
		}
	}
}

func TestWALIndexHdr_roundTrip(t *testing.T) {
	h := walIndexHdr{change: 9, bigEndCksum: true, pageSize: 65536, mxFrame: 77, nPage: 12, frameCksum: [2]uint32{1, 2}, salt: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}}
	c := h.encode()
	got, ok := decodeWALIndexHdr(append(c[:], c[:]...))
	if !ok || got != h {
		t.Fatalf("decode: %+v, %v; want %+v", got, ok, h)
	}
	other := c
	other[16]++
	if _, ok := decodeWALIndexHdr(append(c[:], other[:]...)); ok {
		t.Fatal("copies that differ are valid")
	}
	if _, ok := decodeWALIndexHdr(append(other[:], other[:]...)); ok {
		t.Fatal("a bad checksum is valid")
	}
}

// shmLookup finds pgno's newest frame in [minFrame, mxFrame] as a SQLite
// reader does (walFindFrame): blocks from newest to oldest, the last match in
// each probe chain.
func shmLookup(blocks []*shmBlock, pgno, minFrame, mxFrame uint32) uint32 {
	for k := int(shmBlockOf(mxFrame)); k >= int(shmBlockOf(minFrame)); k-- {
		b := blocks[k]
		zero := shmBlockZero(uint32(k))
		var found uint32
		for i := shmHash(pgno); b.slot(i) != 0; i = (i + 1) & (shmHashSlots - 1) {
			v := uint32(b.slot(i))
			if f := zero + v; f >= minFrame && f <= mxFrame && b.pgno(int(v)) == pgno {
				found = f
			}
		}
		if found != 0 {
			return found
		}
	}
	return 0
}

// TestShmBlock: entries are found as a SQLite reader finds them, and
// removing the entries above a frame leaves the block a fresh build of the
// frames below it would be.
func TestShmBlock(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	const frames = shmBlock0Frames + shmBlockFrames + 100
	pgnos := make([]uint32, frames+1)
	newest := map[uint32]uint32{}
	for n := uint32(1); n <= frames; n++ {
		pgnos[n] = 1 + uint32(rnd.IntN(3000))
		newest[pgnos[n]] = n
	}
	build := func(upto uint32) []*shmBlock {
		var blocks []*shmBlock
		for n := uint32(1); n <= upto; n++ {
			k := shmBlockOf(n)
			if int(k) == len(blocks) {
				blocks = append(blocks, newShmBlock(k, make([]byte, shmBlockSize)))
			}
			if err := blocks[k].add(int(n-shmBlockZero(k)), pgnos[n]); err != nil {
				t.Fatal(err)
			}
		}
		return blocks
	}
	blocks := build(frames)
	for pgno, want := range newest {
		if got := shmLookup(blocks, pgno, 1, frames); got != want {
			t.Fatalf("page %d: frame %d, want %d", pgno, got, want)
		}
	}
	if got := shmLookup(blocks, 5000, 1, frames); got != 0 {
		t.Fatalf("absent page found at frame %d", got)
	}
	for _, limit := range []uint32{1, 100, shmBlock0Frames - 1, shmBlock0Frames + 1, shmBlock0Frames + 3000} {
		all := build(frames)
		k := shmBlockOf(limit)
		all[k].truncate(int(limit - shmBlockZero(k)))
		want := build(limit)
		if !bytes.Equal(all[k].buf, want[k].buf) {
			t.Fatalf("block %d truncated to frame %d differs from a fresh build", k, limit)
		}
	}
}

// FuzzDecodeWALIndexHdr: decoding never panics, and a valid header is a
// fixed point of encode/decode.
func FuzzDecodeWALIndexHdr(f *testing.F) {
	h := walIndexHdr{change: 3, pageSize: 4096, mxFrame: 10, nPage: 4, salt: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}}
	c := h.encode()
	f.Add(append(c[:], c[:]...))
	f.Add(make([]byte, shmHdrSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = decodeCkptInfo(b)
		h, ok := decodeWALIndexHdr(b)
		if !ok {
			return
		}
		h.version, h.isInit = shmVersion, 1
		c := h.encode()
		h2, ok := decodeWALIndexHdr(append(c[:], c[:]...))
		if !ok || h2 != h {
			t.Fatalf("re-decoded %+v, %v; want %+v", h2, ok, h)
		}
	})
}

package wal

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestIndexPageSize(t *testing.T) {
	for _, n := range []uint32{512, 1024, 4096, 32768, 65536} {
		if got := decodePageSize(encodePageSize(n)); got != n {
			t.Errorf("page size %d round-trips to %d", n, got)
		}
	}
	if got := encodePageSize(65536); got != 1 {
		t.Errorf("65536 encodes as %d, want 1", got)
	}
}

func TestBlockOf(t *testing.T) {
	for _, c := range []struct{ frame, block, idx uint32 }{
		{1, 0, 1}, {4062, 0, 4062}, {4063, 1, 1}, {4062 + 4096, 1, 4096}, {4062 + 4096 + 1, 2, 1},
	} {
		k := BlockOf(c.frame)
		if idx := c.frame - BlockZero(k); k != c.block || idx != c.idx {
			t.Errorf("frame %d: block %d index %d, want %d, %d", c.frame, k, idx, c.block, c.idx)
		}
	}
	if got, want := PgnoOffset(1), int64(IndexHeaderRegionSize); got != want {
		t.Errorf("frame 1's aPgno at %d, want %d", got, want)
	}
	if got, want := PgnoOffset(Block0+2), int64(BlockSize+4); got != want {
		t.Errorf("frame %d's aPgno at %d, want %d", Block0+2, got, want)
	}
}

func TestIndexHeader_roundTrip(t *testing.T) {
	h := IndexHeader{Change: 9, BigEndianChecksum: true, PageSize: 65536, MxFrame: 77, NPage: 12, FrameChecksum: Checksum{1, 2}, Salt: Salt{0x01020304, 0x05060708}}
	c := h.Encode()
	if !bytes.Equal(c[32:40], []byte{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Fatalf("salts stored as %x, want the WAL header's big-endian bytes", c[32:40])
	}
	got, ok := DecodeIndexHeader(append(c[:], c[:]...))
	if !ok || got != h {
		t.Fatalf("decode: %+v, %v; want %+v", got, ok, h)
	}
	other := c
	other[16]++
	if _, ok := DecodeIndexHeader(append(c[:], other[:]...)); ok {
		t.Fatal("copies that differ are valid")
	}
	if _, ok := DecodeIndexHeader(append(other[:], other[:]...)); ok {
		t.Fatal("a bad checksum is valid")
	}
}

// lookup finds pgno's newest frame in [minFrame, mxFrame] as a SQLite
// reader does (walFindFrame): blocks from newest to oldest.
func lookup(blocks []*Block, pgno, minFrame, mxFrame uint32) uint32 {
	for k := int(BlockOf(mxFrame)); k >= int(BlockOf(minFrame)); k-- {
		zero := BlockZero(uint32(k))
		idx := blocks[k].Lookup(pgno, func(v int) bool {
			f := zero + uint32(v)
			return f >= minFrame && f <= mxFrame
		})
		if idx != 0 {
			return zero + uint32(idx)
		}
	}
	return 0
}

// TestBlock: entries are found as a SQLite reader finds them, and removing
// the entries above a frame leaves the block a fresh build of the frames
// below it would be; Flush writes back what changed.
func TestBlock(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	const frames = Block0 + BlockFrames + 100
	pgnos := make([]uint32, frames+1)
	newest := map[uint32]uint32{}
	for n := uint32(1); n <= frames; n++ {
		pgnos[n] = 1 + uint32(rnd.IntN(3000))
		newest[pgnos[n]] = n
	}
	build := func(upto uint32) []*Block {
		var blocks []*Block
		for n := uint32(1); n <= upto; n++ {
			k := BlockOf(n)
			if int(k) == len(blocks) {
				blocks = append(blocks, NewBlock(k, make([]byte, BlockSize)))
			}
			if err := blocks[k].Add(int(n-BlockZero(k)), pgnos[n]); err != nil {
				t.Fatal(err)
			}
		}
		return blocks
	}
	blocks := build(frames)
	for pgno, want := range newest {
		if got := lookup(blocks, pgno, 1, frames); got != want {
			t.Fatalf("page %d: frame %d, want %d", pgno, got, want)
		}
	}
	if got := lookup(blocks, 5000, 1, frames); got != 0 {
		t.Fatalf("absent page found at frame %d", got)
	}
	for _, limit := range []uint32{1, 100, Block0 - 1, Block0 + 1, Block0 + 3000} {
		all := build(frames)
		k := BlockOf(limit)
		all[k].Truncate(int(limit - BlockZero(k)))
		want := build(limit)
		if !bytes.Equal(all[k].Bytes(), want[k].Bytes()) {
			t.Fatalf("block %d truncated to frame %d differs from a fresh build", k, limit)
		}
	}

	// Flush writes the changes, aligned, and nothing once clean.
	shm := make([]byte, 2*BlockSize)
	for _, b := range blocks[:2] {
		if err := b.Flush(func(p []byte, off int64) error {
			if off%8 != 0 || len(p)%8 != 0 {
				t.Fatalf("write of %d bytes at %d is not 8-byte aligned", len(p), off)
			}
			copy(shm[off:], p)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := b.Flush(func([]byte, int64) error { t.Fatal("clean block written"); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(shm[IndexHeaderRegionSize:BlockSize], blocks[0].Bytes()[IndexHeaderRegionSize:]) || !bytes.Equal(shm[BlockSize:], blocks[1].Bytes()) {
		t.Fatal("flushed blocks differ from the blocks")
	}
}

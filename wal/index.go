package wal

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/pagewire/pagewire"
)

// Layout of the wal-index (-shm). Unlike the WAL, it is in the host's byte
// order (IndexOrder), like the memory SQLite maps it into.
const (
	IndexHeaderSize       = 48  // one WalIndexHdr; two copies start the -shm
	NBackfillOffset       = 96  // u32 nBackfill, then aReadMark[0..4]
	ReadMarkOffset        = 100 // u32 aReadMark[Readers]
	NBackfillTriedOffset  = 128 // u32 nBackfillAttempted
	IndexHeaderRegionSize = 136 // both copies and WalCkptInfo
	IndexVersion          = 3007000
	ReadMarkUnused        = 0xffffffff
	Readers               = 5 // aReadMark entries: 0 (the database file only) and 1..4

	BlockSize   = 32768 // one hash block: aPgno, then aHash
	BlockFrames = 4096  // aPgno entries of blocks 1..
	Block0      = 4062  // aPgno entries of block 0, after the header region
	HashOffset  = 16384 // aHash within a block
	HashSlots   = 8192  // u16 aHash entries
	hashMul     = 383   // walHash: (pgno*383) & (HashSlots-1)
)

// SQLite's lock bytes in the -shm, each locked with fcntl.
const (
	LockWrite   = 120 // WAL_WRITE_LOCK: the writer, recovery, FULL checkpoints
	LockCkpt    = 121 // WAL_CKPT_LOCK: the checkpointer, recovery
	LockRecover = 122 // WAL_RECOVER_LOCK: exclusive during recovery
	LockRead0   = 123 // READ_LOCK(i) is LockRead0+i, i in 0..Readers-1
	LockDMS     = 128 // held shared by every process with the -shm open
)

// IndexOrder is the byte order of the wal-index: the host's.
var IndexOrder = binary.NativeEndian

// bigEndianHost is whether the host, hence the wal-index checksum, is
// big-endian.
var bigEndianHost = IndexOrder.Uint16([]byte{0, 1}) == 1

// ErrIndexCorrupt is returned when the wal-index contradicts itself.
var ErrIndexCorrupt = fmt.Errorf("the wal-index (-shm) is inconsistent: %w", pagewire.ErrCorrupt)

// IndexHeader is SQLite's WalIndexHdr, stored twice at the start of the -shm.
type IndexHeader struct {
	Version           uint32 // iVersion, IndexVersion
	Change            uint32 // iChange: one more per commit
	IsInit            uint8
	BigEndianChecksum bool     // the WAL's checksum words are big-endian
	PageSize          uint32   // decoded szPage; 0 if unknown
	MxFrame           uint32   // last committed frame
	NPage             uint32   // database size in pages at MxFrame; 0: use the file size
	FrameChecksum     Checksum // running WAL checksum at MxFrame
	Salt              Salt     // the WAL header's salts
	Checksum          Checksum // of the first 40 bytes, native word order
}

// Encode returns one copy of the header, marked initialised with
// IndexVersion, with its checksum (all of which it also stores in h).
func (h *IndexHeader) Encode() [IndexHeaderSize]byte {
	var b [IndexHeaderSize]byte
	h.Version, h.IsInit = IndexVersion, 1
	IndexOrder.PutUint32(b[0:], h.Version)
	IndexOrder.PutUint32(b[8:], h.Change)
	b[12] = h.IsInit
	if h.BigEndianChecksum {
		b[13] = 1
	}
	IndexOrder.PutUint16(b[14:], encodePageSize(h.PageSize))
	IndexOrder.PutUint32(b[16:], h.MxFrame)
	IndexOrder.PutUint32(b[20:], h.NPage)
	IndexOrder.PutUint32(b[24:], h.FrameChecksum[0])
	IndexOrder.PutUint32(b[28:], h.FrameChecksum[1])
	binary.BigEndian.PutUint32(b[32:], h.Salt[0]) // copied raw from the WAL header
	binary.BigEndian.PutUint32(b[36:], h.Salt[1])
	h.Checksum = Checksum{}.Update(bigEndianHost, b[:40])
	IndexOrder.PutUint32(b[40:], h.Checksum[0])
	IndexOrder.PutUint32(b[44:], h.Checksum[1])
	return b
}

// encodePageSize stores 65536, which does not fit in the u16, as 1.
func encodePageSize(n uint32) uint16 { return uint16(n&0xff00 | n>>16) }

// decodePageSize undoes encodePageSize.
func decodePageSize(v uint16) uint32 { return uint32(v&0xfe00) + uint32(v&1)<<16 }

// DecodeIndexHeader parses the two header copies (b holds at least 96
// bytes) as a SQLite reader does: ok is false if they differ, IsInit is 0
// or the checksum does not match. A valid header may still have another
// Version; the caller checks.
func DecodeIndexHeader(b []byte) (h IndexHeader, ok bool) {
	if len(b) < 2*IndexHeaderSize {
		return IndexHeader{}, false
	}
	c0, c1 := b[:IndexHeaderSize], b[IndexHeaderSize:2*IndexHeaderSize]
	if !bytes.Equal(c0, c1) || c0[12] == 0 {
		return IndexHeader{}, false
	}
	h = IndexHeader{
		Version:           IndexOrder.Uint32(c0[0:]),
		Change:            IndexOrder.Uint32(c0[8:]),
		IsInit:            c0[12],
		BigEndianChecksum: c0[13] != 0,
		PageSize:          decodePageSize(IndexOrder.Uint16(c0[14:])),
		MxFrame:           IndexOrder.Uint32(c0[16:]),
		NPage:             IndexOrder.Uint32(c0[20:]),
		FrameChecksum:     Checksum{IndexOrder.Uint32(c0[24:]), IndexOrder.Uint32(c0[28:])},
		Salt:              Salt{binary.BigEndian.Uint32(c0[32:]), binary.BigEndian.Uint32(c0[36:])},
		Checksum:          Checksum{IndexOrder.Uint32(c0[40:]), IndexOrder.Uint32(c0[44:])},
	}
	if (Checksum{}).Update(bigEndianHost, c0[:40]) != h.Checksum {
		return IndexHeader{}, false
	}
	return h, true
}

// CkptInfo is SQLite's WalCkptInfo, after the header copies.
type CkptInfo struct {
	NBackfill          uint32 // frames 1..NBackfill are in the database file
	ReadMark           [Readers]uint32
	NBackfillAttempted uint32
}

// DecodeCkptInfo parses WalCkptInfo from the first 136 bytes of the -shm;
// from fewer it returns zeros.
func DecodeCkptInfo(b []byte) CkptInfo {
	var c CkptInfo
	if len(b) < IndexHeaderRegionSize {
		return c
	}
	c.NBackfill = IndexOrder.Uint32(b[NBackfillOffset:])
	for i := range c.ReadMark {
		c.ReadMark[i] = IndexOrder.Uint32(b[ReadMarkOffset+4*i:])
	}
	c.NBackfillAttempted = IndexOrder.Uint32(b[NBackfillTriedOffset:])
	return c
}

// BlockOf is the hash block that indexes frame n.
func BlockOf(n uint32) uint32 {
	return (n + BlockFrames - Block0 - 1) / BlockFrames
}

// BlockZero is the frame before block k's first: frame = zero + idx.
func BlockZero(k uint32) uint32 {
	if k == 0 {
		return 0
	}
	return Block0 + (k-1)*BlockFrames
}

// BlockEntries is how many frames block k indexes.
func BlockEntries(k uint32) int {
	if k == 0 {
		return Block0
	}
	return BlockFrames
}

// PgnoOffset is the offset in the -shm of aPgno entry of frame n: the
// page it holds.
func PgnoOffset(n uint32) int64 {
	k := BlockOf(n)
	off := int64(k)*BlockSize + 4*int64(n-BlockZero(k)-1)
	if k == 0 {
		off += IndexHeaderRegionSize
	}
	return off
}

// hash is where the probe for pgno starts.
func hash(pgno uint32) int { return int(pgno*hashMul) & (HashSlots - 1) }

// Block is one 32 KiB hash block, held in memory, changed there and
// written back with Flush, which writes only what changed.
type Block struct {
	k    uint32
	buf  []byte // the whole block as in the file; block 0's header bytes are never written back
	base int    // offset of aPgno[0] in buf: 136 in block 0, else 0
	// Dirty byte ranges of buf to write back, [lo, hi); hi == 0: clean.
	pgnoLo, pgnoHi int
	hashLo, hashHi int
}

// NewBlock wraps buf, BlockSize bytes read from the -shm at k*BlockSize (or
// zeros), as block k.
func NewBlock(k uint32, buf []byte) *Block {
	b := &Block{k: k, buf: buf}
	if k == 0 {
		b.base = IndexHeaderRegionSize
	}
	return b
}

// K is the block's number.
func (b *Block) K() uint32 { return b.k }

// Bytes is the block as held in memory.
func (b *Block) Bytes() []byte { return b.buf }

// Entries is how many aPgno entries the block has.
func (b *Block) Entries() int { return (HashOffset - b.base) / 4 }

// Pgno is aPgno[idx-1]: the page of frame zero+idx, 0 if none.
func (b *Block) Pgno(idx int) uint32 { return IndexOrder.Uint32(b.buf[b.base+4*(idx-1):]) }

// Slot is aHash[i]: a frame index within the block, 0 if free.
func (b *Block) Slot(i int) int { return int(IndexOrder.Uint16(b.buf[HashOffset+2*i:])) }

// Lookup finds pgno's newest frame index (from 1) in the block as a SQLite
// reader does (walFindFrame): the last match in the probe chain among the
// indexes accept allows (all if accept is nil). It returns 0 if none.
func (b *Block) Lookup(pgno uint32, accept func(idx int) bool) int {
	found := 0
	for i := hash(pgno); b.Slot(i) != 0; i = (i + 1) & (HashSlots - 1) {
		v := b.Slot(i)
		if (accept == nil || accept(v)) && b.Pgno(v) == pgno {
			found = v
		}
	}
	return found
}

func (b *Block) markPgno(lo, hi int) {
	if b.pgnoHi == 0 {
		b.pgnoLo, b.pgnoHi = lo, hi
		return
	}
	b.pgnoLo, b.pgnoHi = min(b.pgnoLo, lo), max(b.pgnoHi, hi)
}

func (b *Block) markHash(lo, hi int) {
	if b.hashHi == 0 {
		b.hashLo, b.hashHi = lo, hi
		return
	}
	b.hashLo, b.hashHi = min(b.hashLo, lo), max(b.hashHi, hi)
}

// Reset zeroes aPgno and aHash, as SQLite does before a block's first frame.
func (b *Block) Reset() {
	clear(b.buf[b.base:])
	b.markPgno(b.base, HashOffset)
	b.markHash(HashOffset, BlockSize)
}

// Add indexes frame zero+idx as holding pgno: aPgno[idx-1] = pgno, and idx
// in the first free hash slot probing from pgno's hash. It returns an error
// wrapping ErrIndexCorrupt if the block is full.
func (b *Block) Add(idx int, pgno uint32) error {
	if idx < 1 || idx > b.Entries() {
		return fmt.Errorf("frame index %d out of range for hash block %d", idx, b.k)
	}
	i := hash(pgno)
	for n := 0; b.Slot(i) != 0; n++ {
		if n == HashSlots {
			return fmt.Errorf("hash block %d is full: %w", b.k, ErrIndexCorrupt)
		}
		i = (i + 1) & (HashSlots - 1)
	}
	off := b.base + 4*(idx-1)
	IndexOrder.PutUint32(b.buf[off:], pgno)
	b.markPgno(off, off+4)
	hoff := HashOffset + 2*i
	IndexOrder.PutUint16(b.buf[hoff:], uint16(idx))
	b.markHash(hoff, hoff+2)
	return nil
}

// Truncate removes the entries of frames above zero+limit, as SQLite's
// walCleanupHash does with what a crashed or rolled-back writer left. They
// were all added after the entries that stay, so removing them leaves every
// remaining probe chain intact.
func (b *Block) Truncate(limit int) {
	for i := range HashSlots {
		if b.Slot(i) > limit {
			off := HashOffset + 2*i
			IndexOrder.PutUint16(b.buf[off:], 0)
			b.markHash(off, off+2)
		}
	}
	if off := b.base + 4*limit; off < HashOffset {
		clear(b.buf[off:HashOffset])
		b.markPgno(off, HashOffset)
	}
}

// Flush writes the changed parts of the block with write, at their offsets
// in the -shm, and marks it clean: aPgno before aHash (so a crash leaves no
// hash slot naming an unset aPgno entry), each widened to 8-byte
// boundaries, so that fields a reader may load while they change are
// written in aligned words. Bytes rewritten with the value they had are
// invisible to readers.
func (b *Block) Flush(write func(p []byte, off int64) error) error {
	at := int64(b.k) * BlockSize
	for _, r := range [][2]int{{b.pgnoLo, b.pgnoHi}, {b.hashLo, b.hashHi}} {
		if r[1] == 0 {
			continue
		}
		lo, hi := r[0]&^7, (r[1]+7)&^7
		if lo < b.base {
			lo = b.base
		}
		if err := write(b.buf[lo:hi], at+int64(lo)); err != nil {
			return err
		}
	}
	b.pgnoLo, b.pgnoHi, b.hashLo, b.hashHi = 0, 0, 0, 0
	return nil
}

package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/pagewire/pagewire"
)

// meta is what a database's meta file records: its position at the last
// commit the server counted, and where in the WAL that commit ends. The WAL
// after that frame is re-scanned at startup, so the file is written on every
// commit without an fsync.
//
// The meta file and the WAL are two files, and a power cut can leave either
// one at any of its recent durable states. So that every combination counts
// right, the meta file is fsync'd, recording the end of the current WAL
// generation, before that generation can disappear from disk (before a new
// WAL header, a truncation below the counted commit or an unlink of the
// WAL), and it records where the current generation began (Prev): recovery
// then knows the position whichever generation the WAL on disk holds, or
// none (recoverWAL).
type meta struct {
	Pos         pagewire.Pos
	Salt1       uint32 // salts of the WAL generation CommitFrame belongs to; kept after that WAL is emptied or deleted
	Salt2       uint32
	CommitFrame uint32 // last counted commit frame in that generation
	Ck1, Ck2    uint32 // WAL running checksum at CommitFrame
	PageSize    uint32
	// Next, when set, is what the next commit after CommitFrame stands
	// for: a replica applies several of the primary's transactions as one
	// WAL commit, which then advances the TXID to Next.TXID, provided the
	// checksum after it is Next.Checksum.
	Next pagewire.Pos
	// Prev is where the generation Salt1/Salt2 began: the end of the one
	// before it (zero: not known). A WAL still holding that generation (the
	// new header never became durable) is counted from there.
	Prev walMark
}

// walMark marks the end of a WAL generation: frame Frame of the generation
// with salts Salt1/Salt2 is its last counted commit, after which the
// database is at Pos. A zero Pos.TXID means no mark.
type walMark struct {
	Salt1, Salt2, Frame uint32
	Pos                 pagewire.Pos
}

// known reports whether m marks a generation's end.
func (m walMark) known() bool { return m.Pos.TXID != 0 }

// end is the mark of the meta's own generation at its counted commit.
func (m meta) end() walMark {
	return walMark{Salt1: m.Salt1, Salt2: m.Salt2, Frame: m.CommitFrame, Pos: m.Pos}
}

// Meta files are version 3; versions 1 (no Next) and 2 (no Prev) are
// still read.
const (
	metaMagic   = "PWMETA03"
	metaMagicV2 = "PWMETA02"
	metaMagicV1 = "PWMETA01"
	metaSize    = 104
	metaSizeV2  = 72
	metaSizeV1  = 64
)

func (m meta) encode() []byte {
	b := make([]byte, metaSize)
	copy(b, metaMagic)
	binary.BigEndian.PutUint64(b[8:], uint64(m.Pos.TXID))
	binary.BigEndian.PutUint64(b[16:], m.Pos.Checksum)
	binary.BigEndian.PutUint32(b[24:], m.Salt1)
	binary.BigEndian.PutUint32(b[28:], m.Salt2)
	binary.BigEndian.PutUint32(b[32:], m.CommitFrame)
	binary.BigEndian.PutUint32(b[36:], m.Ck1)
	binary.BigEndian.PutUint32(b[40:], m.Ck2)
	binary.BigEndian.PutUint32(b[44:], m.PageSize)
	binary.BigEndian.PutUint32(b[48:], crc32.ChecksumIEEE(b[:48]))
	binary.BigEndian.PutUint64(b[52:], uint64(m.Next.TXID))
	binary.BigEndian.PutUint64(b[60:], m.Next.Checksum)
	binary.BigEndian.PutUint32(b[68:], crc32.ChecksumIEEE(b[:68]))
	binary.BigEndian.PutUint32(b[72:], m.Prev.Salt1)
	binary.BigEndian.PutUint32(b[76:], m.Prev.Salt2)
	binary.BigEndian.PutUint32(b[80:], m.Prev.Frame)
	binary.BigEndian.PutUint64(b[84:], uint64(m.Prev.Pos.TXID))
	binary.BigEndian.PutUint64(b[92:], m.Prev.Pos.Checksum)
	binary.BigEndian.PutUint32(b[100:], crc32.ChecksumIEEE(b[:100]))
	return b
}

func decodeMeta(b []byte) (meta, error) {
	version, size := 3, metaSize
	switch {
	case len(b) >= 8 && string(b[:8]) == metaMagicV1:
		version, size = 1, metaSizeV1
	case len(b) >= 8 && string(b[:8]) == metaMagicV2:
		version, size = 2, metaSizeV2
	}
	switch {
	case len(b) < size:
		return meta{}, fmt.Errorf("%w: meta file is %d bytes, want %d", pagewire.ErrCorrupt, len(b), size)
	case version == 3 && string(b[:8]) != metaMagic:
		return meta{}, fmt.Errorf("%w: meta file has a bad magic", pagewire.ErrCorrupt)
	case crc32.ChecksumIEEE(b[:48]) != binary.BigEndian.Uint32(b[48:]),
		version >= 2 && crc32.ChecksumIEEE(b[:68]) != binary.BigEndian.Uint32(b[68:]),
		version >= 3 && crc32.ChecksumIEEE(b[:100]) != binary.BigEndian.Uint32(b[100:]):
		return meta{}, errors.Join(pagewire.ErrCorrupt, errors.New("meta file checksum mismatch"))
	}
	m := meta{
		Pos: pagewire.Pos{
			TXID:     pagewire.TXID(binary.BigEndian.Uint64(b[8:])),
			Checksum: binary.BigEndian.Uint64(b[16:]),
		},
		Salt1:       binary.BigEndian.Uint32(b[24:]),
		Salt2:       binary.BigEndian.Uint32(b[28:]),
		CommitFrame: binary.BigEndian.Uint32(b[32:]),
		Ck1:         binary.BigEndian.Uint32(b[36:]),
		Ck2:         binary.BigEndian.Uint32(b[40:]),
		PageSize:    binary.BigEndian.Uint32(b[44:]),
	}
	if version >= 2 {
		m.Next = pagewire.Pos{TXID: pagewire.TXID(binary.BigEndian.Uint64(b[52:])), Checksum: binary.BigEndian.Uint64(b[60:])}
	}
	if version >= 3 {
		m.Prev = walMark{
			Salt1: binary.BigEndian.Uint32(b[72:]),
			Salt2: binary.BigEndian.Uint32(b[76:]),
			Frame: binary.BigEndian.Uint32(b[80:]),
			Pos:   pagewire.Pos{TXID: pagewire.TXID(binary.BigEndian.Uint64(b[84:])), Checksum: binary.BigEndian.Uint64(b[92:])},
		}
	}
	if m.Pos.TXID == 0 {
		return meta{}, fmt.Errorf("%w: meta file records TXID 0", pagewire.ErrCorrupt)
	}
	return m, nil
}

// pageSums is the pages file: every page's checksum at a position,
// written when the node stops cleanly. A checksum mismatch at the next
// start then names the pages that changed; without it (after a crash, or
// once the file is behind the meta) only the whole-database checksum can
// be compared.
type pageSums struct {
	Pos   pagewire.Pos
	Pages []uint64
}

const (
	pageSumsFileName = "pages"
	pageSumsMagic    = "PWPAGES1"
	pageSumsHdrSize  = 28 // magic, TXID, checksum, count; the file's size is checked against the count before anything is allocated
)

func (p pageSums) encode() []byte {
	b := make([]byte, pageSumsHdrSize, pageSumsHdrSize+8*len(p.Pages)+4)
	copy(b, pageSumsMagic)
	binary.BigEndian.PutUint64(b[8:], uint64(p.Pos.TXID))
	binary.BigEndian.PutUint64(b[16:], p.Pos.Checksum)
	binary.BigEndian.PutUint32(b[24:], uint32(len(p.Pages)))
	for _, c := range p.Pages {
		b = binary.BigEndian.AppendUint64(b, c)
	}
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
}

func decodePageSums(b []byte) (pageSums, error) {
	if len(b) < pageSumsHdrSize+4 || string(b[:8]) != pageSumsMagic {
		return pageSums{}, fmt.Errorf("%w: pages file has a bad header", pagewire.ErrCorrupt)
	}
	n := binary.BigEndian.Uint32(b[24:])
	if want := pageSumsHdrSize + 8*int64(n) + 4; int64(len(b)) != want {
		return pageSums{}, fmt.Errorf("%w: pages file is %d bytes, its count says %d", pagewire.ErrCorrupt, len(b), want)
	}
	body := b[:len(b)-4]
	if crc32.ChecksumIEEE(body) != binary.BigEndian.Uint32(b[len(body):]) {
		return pageSums{}, fmt.Errorf("%w: pages file checksum mismatch", pagewire.ErrCorrupt)
	}
	p := pageSums{
		Pos:   pagewire.Pos{TXID: pagewire.TXID(binary.BigEndian.Uint64(b[8:])), Checksum: binary.BigEndian.Uint64(b[16:])},
		Pages: make([]uint64, n),
	}
	for i := range p.Pages {
		p.Pages[i] = binary.BigEndian.Uint64(body[pageSumsHdrSize+8*i:])
	}
	return p, nil
}

// differingPages lists (up to limit) the pages whose checksums differ
// between two page checksum lists, counting a page present in one only.
func differingPages(a, b []uint64, limit int) (list []uint32, count int) {
	for i := range max(len(a), len(b)) {
		var x, y uint64
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			count++
			if len(list) < limit {
				list = append(list, uint32(i+1))
			}
		}
	}
	return list, count
}

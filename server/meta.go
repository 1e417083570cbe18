package server

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
// commit but fsync'd only when SQLite starts a new WAL generation.
type meta struct {
	Pos         pagewire.Pos
	Salt1       uint32 // salts of the WAL generation CommitFrame belongs to; 0 with no WAL
	Salt2       uint32
	CommitFrame uint32 // last counted commit frame in that generation
	Ck1, Ck2    uint32 // WAL running checksum at CommitFrame
	PageSize    uint32
	// Next, when set, is what the next commit after CommitFrame stands
	// for: a replica applies several of the primary's transactions as one
	// WAL commit, which then advances the TXID to Next.TXID, provided the
	// checksum after it is Next.Checksum.
	Next pagewire.Pos
}

// Meta files are version 2; version 1 (no Next) is still read.
const (
	metaMagic   = "PWMETA02"
	metaMagicV1 = "PWMETA01"
	metaSize    = 72
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
	return b
}

func decodeMeta(b []byte) (meta, error) {
	v1 := len(b) >= 8 && string(b[:8]) == metaMagicV1
	size := metaSize
	if v1 {
		size = metaSizeV1
	}
	switch {
	case len(b) < size:
		return meta{}, fmt.Errorf("%w: meta file is %d bytes, want %d", pagewire.ErrCorrupt, len(b), size)
	case !v1 && string(b[:8]) != metaMagic:
		return meta{}, fmt.Errorf("%w: meta file has a bad magic", pagewire.ErrCorrupt)
	case crc32.ChecksumIEEE(b[:48]) != binary.BigEndian.Uint32(b[48:]),
		!v1 && crc32.ChecksumIEEE(b[:68]) != binary.BigEndian.Uint32(b[68:]):
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
	if !v1 {
		m.Next = pagewire.Pos{TXID: pagewire.TXID(binary.BigEndian.Uint64(b[52:])), Checksum: binary.BigEndian.Uint64(b[60:])}
	}
	return m, nil
}

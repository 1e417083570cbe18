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
}

const (
	metaMagic = "PWMETA01"
	metaSize  = 64
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
	return b
}

func decodeMeta(b []byte) (meta, error) {
	if len(b) < metaSize {
		return meta{}, fmt.Errorf("%w: meta file is %d bytes, want %d", pagewire.ErrCorrupt, len(b), metaSize)
	}
	if string(b[:8]) != metaMagic {
		return meta{}, fmt.Errorf("%w: meta file has a bad magic", pagewire.ErrCorrupt)
	}
	if crc32.ChecksumIEEE(b[:48]) != binary.BigEndian.Uint32(b[48:]) {
		return meta{}, errors.Join(pagewire.ErrCorrupt, errors.New("meta file checksum mismatch"))
	}
	return meta{
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
	}, nil
}

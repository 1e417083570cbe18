package engine

import (
	"bytes"
	"encoding/binary"

	"github.com/pagewire/pagewire/internal/walfmt"
)

// CommitTestTransaction commits one transaction to db as SQLite would: a
// new WAL (header), then one commit frame for page 2. For tests outside the
// package.
func CommitTestTransaction(s *Store, db string) error {
	wal, err := s.Create(db+"-wal", App)
	if err != nil {
		return err
	}
	hdr := make([]byte, walHeaderSize)
	binary.BigEndian.PutUint32(hdr[0:], walMagicLE)
	binary.BigEndian.PutUint32(hdr[4:], walVersion)
	binary.BigEndian.PutUint32(hdr[8:], defaultPageSize)
	binary.BigEndian.PutUint32(hdr[16:], 77)
	binary.BigEndian.PutUint32(hdr[20:], 78)
	c1, c2 := walfmt.Checksum(false, 0, 0, hdr[:24])
	binary.BigEndian.PutUint32(hdr[24:], c1)
	binary.BigEndian.PutUint32(hdr[28:], c2)
	if _, _, err := s.WriteAt(wal.ID, hdr, 0, App); err != nil {
		return err
	}
	page := bytes.Repeat([]byte{7}, defaultPageSize)
	fh := make([]byte, walFrameHeaderSize)
	binary.BigEndian.PutUint32(fh[0:], 2)
	binary.BigEndian.PutUint32(fh[4:], 2)
	binary.BigEndian.PutUint32(fh[8:], 77)
	binary.BigEndian.PutUint32(fh[12:], 78)
	c1, c2 = walfmt.Checksum(false, c1, c2, fh[:8])
	c1, c2 = walfmt.Checksum(false, c1, c2, page)
	binary.BigEndian.PutUint32(fh[16:], c1)
	binary.BigEndian.PutUint32(fh[20:], c2)
	if _, _, err := s.WriteAt(wal.ID, fh, walHeaderSize, App); err != nil {
		return err
	}
	_, _, err = s.WriteAt(wal.ID, page, walHeaderSize+walFrameHeaderSize, App)
	return err
}

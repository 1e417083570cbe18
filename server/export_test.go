package server

import (
	"bytes"

	"github.com/pagewire/pagewire/wal"
)

// CommitTestTransaction commits one transaction to db as SQLite would: a
// new WAL (header), then one commit frame for page 2. For tests outside the
// package.
func CommitTestTransaction(s *Store, db string) error {
	walFile, err := s.Create(db+"-wal", false)
	if err != nil {
		return err
	}
	h := wal.Header{PageSize: defaultPageSize, Salt: wal.Salt{77, 78}}
	hdr := h.AppendTo(nil)
	enc := h.Encoder()
	if _, _, err := s.WriteAt(walFile.ID, hdr, 0, false); err != nil {
		return err
	}
	page := bytes.Repeat([]byte{7}, defaultPageSize)
	fh := enc.AppendFrame(nil, 2, 2, page)[:walFrameHeaderSize]
	if _, _, err := s.WriteAt(walFile.ID, fh, walHeaderSize, false); err != nil {
		return err
	}
	_, _, err = s.WriteAt(walFile.ID, page, walHeaderSize+walFrameHeaderSize, false)
	return err
}

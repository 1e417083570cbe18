package backup

import (
	"fmt"
	"io"
	"os"

	"github.com/superfly/ltx"

	"github.com/pagewire/pagewire"
)

// image is a database being rebuilt from LTX files, in a file of its own,
// with every page's checksum kept so that each file's pre- and post-apply
// checksums are checked as it is applied.
type image struct {
	f        *os.File
	pageSize uint32
	commit   uint32
	sums     []uint64 // LTX checksum (flag cleared) of page i+1; 0 for the lock page
	sum      uint64   // XOR of sums, flag cleared
	pos      pagewire.TXID
	time     int64 // the newest applied transaction's commit time, Unix ms
	buf      []byte
	zero     []byte // a page of zeros
}

func newImage(f *os.File) *image { return &image{f: f} }

// checksum is the image's LTX checksum.
func (im *image) checksum() ltx.Checksum { return ltx.Checksum(im.sum) | ltx.ChecksumFlag }

// pagewirePos is the image's position as pagewire writes it.
func (im *image) pagewirePos() pagewire.Pos {
	return pagewire.Pos{TXID: im.pos, Checksum: pagewireChecksum(im.checksum(), im.pageSize, im.commit)}
}

// applyLTX applies one LTX file read from r, unless it ends at or before
// the image's TXID. It fails, naming what, if the file does not start at
// the image's TXID and checksum, if it does not end at its trailer's
// checksum, or if the file's own checksum is wrong; the image is then
// unusable.
func (im *image) applyLTX(r io.Reader) error {
	dec, h, err := decodeLTX(r)
	if err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		return fmt.Errorf("%w: LTX header: %v", pagewire.ErrCorrupt, err)
	}
	snapshot := h.IsSnapshot()
	switch {
	case snapshot:
		// A snapshot replaces whatever the image had.
		if err := im.reset(h.PageSize); err != nil {
			return err
		}
	case im.pageSize == 0:
		return fmt.Errorf("transactions %d to %d come before any snapshot", h.MinTXID, h.MaxTXID)
	case pagewire.TXID(h.MinTXID) != im.pos+1:
		return fmt.Errorf("transactions %d to %d do not follow transaction %d", h.MinTXID, h.MaxTXID, im.pos)
	case h.PageSize != im.pageSize:
		return fmt.Errorf("%w: pages of %d bytes in a database of %d", pagewire.ErrCorrupt, h.PageSize, im.pageSize)
	case h.PreApplyChecksum != im.checksum():
		return fmt.Errorf("%w: transaction %d starts from checksum %s, the database is at %s", pagewire.ErrCorrupt, h.MinTXID, h.PreApplyChecksum, im.checksum())
	}

	// Pages past the new size go first, so that their checksums leave the
	// sum, and from the file, so that a later transaction that grows the
	// database without writing them reads zeros there, as its checksum
	// says, not the dropped pages.
	if h.Commit < im.commit {
		if err := im.f.Truncate(int64(h.Commit) * int64(h.PageSize)); err != nil {
			return err
		}
	}
	im.truncate(h.Commit)
	if len(im.buf) != int(h.PageSize) {
		im.buf = make([]byte, h.PageSize)
	}
	err = decodePages(dec, h, im.buf, func(pgno uint32) error {
		if _, err := im.f.WriteAt(im.buf, int64(pgno-1)*int64(h.PageSize)); err != nil {
			return err
		}
		c := uint64(ltx.ChecksumPage(pgno, im.buf)) &^ uint64(ltx.ChecksumFlag)
		im.sum ^= im.sums[pgno-1] ^ c
		im.sums[pgno-1] = c
		return nil
	})
	if err != nil {
		return err
	}
	if got := dec.Trailer().PostApplyChecksum; got != im.checksum() {
		return fmt.Errorf("%w: transactions %d to %d lead to checksum %s, their trailer says %s", pagewire.ErrCorrupt, h.MinTXID, h.MaxTXID, im.checksum(), got)
	}
	im.pos, im.time = pagewire.TXID(h.MaxTXID), h.Timestamp
	return nil
}

// reset empties the image for a snapshot of pages of pageSize bytes.
func (im *image) reset(pageSize uint32) error {
	if !pagewire.ValidPageSize(pageSize) {
		return fmt.Errorf("%w: page size %d", pagewire.ErrCorrupt, pageSize)
	}
	if err := im.f.Truncate(0); err != nil {
		return err
	}
	im.pageSize, im.commit, im.sums, im.sum, im.pos = pageSize, 0, nil, 0, 0
	im.zero = make([]byte, pageSize)
	return nil
}

// truncate sets the image's size to commit pages.
func (im *image) truncate(commit uint32) {
	for int(commit) < len(im.sums) {
		im.sum ^= im.sums[len(im.sums)-1]
		im.sums = im.sums[:len(im.sums)-1]
	}
	// Pages up to commit that no file wrote yet read as zeros: their
	// checksum is that of a zero page, which a valid file then replaces.
	for uint32(len(im.sums)) < commit {
		pgno := uint32(len(im.sums)) + 1
		var c uint64
		if pgno != ltx.LockPgno(im.pageSize) {
			c = uint64(ltx.ChecksumPage(pgno, im.zero)) &^ uint64(ltx.ChecksumFlag)
		}
		im.sums = append(im.sums, c)
		im.sum ^= c
	}
	im.commit = commit
}

// finish sets the file's size to the image's and syncs it.
func (im *image) finish() error {
	if err := im.f.Truncate(int64(im.commit) * int64(im.pageSize)); err != nil {
		return err
	}
	return im.f.Sync()
}

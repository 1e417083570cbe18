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
	run      pageRun
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
	grown := im.truncate(h.Commit)
	if len(im.buf) != int(h.PageSize) {
		im.buf = make([]byte, h.PageSize)
	}
	// Pages go out in runs of consecutive ones, one write per run. The
	// image grows as pages past its size come, never further than the
	// file's pages allow (growthGuard).
	run := &im.run
	run.reset(im.f, h.PageSize)
	guard := growthGuard{from: grown.from, pageSize: h.PageSize}
	err = decodePages(dec, h, im.buf, func(pgno uint32) error {
		if err := guard.page(pgno); err != nil {
			return err
		}
		if err := run.add(pgno, im.buf); err != nil {
			return err
		}
		im.extend(pgno, &grown)
		c := uint64(ltx.ChecksumPage(pgno, im.buf)) &^ uint64(ltx.ChecksumFlag)
		im.sum ^= im.sums[pgno-1] ^ c
		im.sums[pgno-1] = c
		if pgno > grown.from {
			grown.written[pgno-grown.from-1] = true
		}
		return nil
	})
	if err == nil {
		err = run.flush()
	}
	if err == nil {
		err = guard.done(h.Commit)
	}
	if err != nil {
		return err
	}
	im.extend(h.Commit, &grown)
	im.commit = h.Commit
	im.sumZeros(grown)
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

// growth is the pages a file added past the image's old size: from+1 on,
// and which of them the file wrote.
type growth struct {
	from    uint32
	written []bool
}

// truncate drops the image's pages past commit, and returns where a file
// that sets the size to commit grows it from (extend grows it).
func (im *image) truncate(commit uint32) growth {
	for int(commit) < len(im.sums) {
		im.sum ^= im.sums[len(im.sums)-1]
		im.sums = im.sums[:len(im.sums)-1]
	}
	im.commit = min(im.commit, commit)
	return growth{from: uint32(len(im.sums))}
}

// extend grows the image to n pages, if smaller. Pages it adds count as
// unwritten until sumZeros: most are written by the file that adds them,
// and a zero page's checksum would be computed for nothing.
func (im *image) extend(n uint32, g *growth) {
	if add := int(n) - len(im.sums); add > 0 {
		im.sums = append(im.sums, make([]uint64, add)...)
		g.written = append(g.written, make([]bool, add)...)
	}
}

// sumZeros adds the checksums of the grown pages no file wrote: they read
// as zeros, and a valid file's trailer counts them so.
func (im *image) sumZeros(g growth) {
	lock := ltx.LockPgno(im.pageSize)
	for i, w := range g.written {
		pgno := g.from + uint32(i) + 1
		if w || pgno == lock {
			continue
		}
		c := uint64(ltx.ChecksumPage(pgno, im.zero)) &^ uint64(ltx.ChecksumFlag)
		im.sums[pgno-1] = c
		im.sum ^= c
	}
}

// pageRun gathers consecutive pages for one write.
type pageRun struct {
	f        *os.File
	pageSize int64
	first    uint32 // the run's first page; 0: empty
	buf      []byte
}

// maxRun bounds a run's bytes.
const maxRun = 1 << 20

func (r *pageRun) reset(f *os.File, pageSize uint32) {
	r.f, r.pageSize, r.first, r.buf = f, int64(pageSize), 0, r.buf[:0]
}

// add appends page pgno, writing the run first if pgno does not follow it
// or it is full.
func (r *pageRun) add(pgno uint32, page []byte) error {
	next := r.first + uint32(int64(len(r.buf))/r.pageSize)
	if r.first != 0 && (pgno != next || len(r.buf)+len(page) > maxRun) {
		if err := r.flush(); err != nil {
			return err
		}
	}
	if r.first == 0 {
		r.first = pgno
	}
	r.buf = append(r.buf, page...)
	return nil
}

// flush writes the run.
func (r *pageRun) flush() error {
	if r.first == 0 {
		return nil
	}
	_, err := r.f.WriteAt(r.buf, int64(r.first-1)*r.pageSize)
	r.first, r.buf = 0, r.buf[:0]
	return err
}

// finish sets the file's size to the image's and syncs it.
func (im *image) finish() error {
	if err := im.f.Truncate(int64(im.commit) * int64(im.pageSize)); err != nil {
		return err
	}
	return im.f.Sync()
}

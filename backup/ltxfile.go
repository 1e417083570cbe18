package backup

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/pierrec/lz4/v4"
	"github.com/superfly/ltx"

	"github.com/pagewire/pagewire"
)

// Every object is LTX (github.com/superfly/ltx, the format of LiteFS and
// Litestream): a header with the TXID range, the database's size and its
// checksum before; LZ4-compressed pages; a trailer with the checksum after
// and the file's own. A pack (level 0) is several LTX files, one per
// transaction, behind a directory of their lengths, so that a restore can
// stop at any of them.
//
// pagewire's checksum is LTX's, but for one page: pagewire counts SQLite's
// lock page (all zeros, at 1 GiB) in a database that large, and LTX never
// holds it. ltxChecksum and pagewireChecksum convert.

var lockPageSums = map[uint32]uint64{}

// lockPageSum is the checksum of a zero-filled lock page of pageSize bytes.
func lockPageSum(pageSize uint32) uint64 {
	if s, ok := lockPageSums[pageSize]; ok {
		return s
	}
	return uint64(ltx.ChecksumPage(pagewire.LockPage(pageSize), make([]byte, pageSize))) &^ uint64(ltx.ChecksumFlag)
}

func init() {
	for size := uint32(512); size <= 65536; size *= 2 {
		lockPageSums[size] = lockPageSum(size)
	}
}

// ltxChecksum converts pagewire's checksum of a database of commit pages.
func ltxChecksum(sum uint64, pageSize, commit uint32) ltx.Checksum {
	if commit >= pagewire.LockPage(pageSize) {
		sum ^= lockPageSum(pageSize)
	}
	return ltx.Checksum(sum) | ltx.ChecksumFlag
}

// pagewireChecksum is ltxChecksum's inverse.
func pagewireChecksum(sum ltx.Checksum, pageSize, commit uint32) uint64 {
	return uint64(ltxChecksum(uint64(sum), pageSize, commit))
}

// txnEncoder writes one transaction, perhaps a part at a time, as an LTX file.
type txnEncoder struct {
	enc  *ltx.Encoder
	txn  pagewire.Txn // the header
	lock uint32
}

func newTxnEncoder(w io.Writer, t pagewire.Txn) (*txnEncoder, error) {
	enc, err := ltx.NewEncoder(w)
	if err != nil {
		return nil, err
	}
	hdr := ltx.Header{
		Version:   ltx.Version,
		PageSize:  t.PageSize,
		Commit:    t.PageCount,
		MinTXID:   ltx.TXID(t.TXID),
		MaxTXID:   ltx.TXID(t.TXID),
		Timestamp: t.CommitTime.UnixMilli(),
		// The size before t is not in t: taken to be t's own, which is
		// wrong only for a transaction that takes the database across
		// the lock page (1 GiB at 4 KiB pages), whose restore then
		// fails its checksum check rather than restore anything wrong.
		PreApplyChecksum: ltxChecksum(t.PreChecksum, t.PageSize, t.PageCount),
	}
	if err := enc.EncodeHeader(hdr); err != nil {
		return nil, fmt.Errorf("transaction %d: %w", t.TXID, err)
	}
	return &txnEncoder{enc: enc, txn: t, lock: pagewire.LockPage(t.PageSize)}, nil
}

// add encodes pages, ascending, after those added before.
func (e *txnEncoder) add(pages []pagewire.Page) error {
	for _, p := range pages {
		if p.Pgno == e.lock {
			continue
		}
		if err := e.enc.EncodePage(ltx.PageHeader{Pgno: p.Pgno}, p.Data); err != nil {
			return fmt.Errorf("transaction %d, page %d: %w", e.txn.TXID, p.Pgno, err)
		}
	}
	return nil
}

// finish writes the trailer.
func (e *txnEncoder) finish() error {
	e.enc.SetPostApplyChecksum(ltxChecksum(e.txn.PostChecksum, e.txn.PageSize, e.txn.PageCount))
	if err := e.enc.Close(); err != nil {
		return fmt.Errorf("transaction %d: %w", e.txn.TXID, err)
	}
	return nil
}

// packMagic starts a pack; the directory follows: the count of LTX files
// (uint32), then each one's length (uint64), big-endian.
const packMagic = "PWPACK01"

// maxPackFiles bounds a pack's directory as it is read.
const maxPackFiles = 1 << 20

// packWriter gathers the LTX files of a pack in a spool file.
type packWriter struct {
	f       *os.File
	lengths []int64
	size    int64
	first   pagewire.Txn  // the first transaction's header
	last    pagewire.Txn  // the last one's
	cur     *txnEncoder   // the transaction being written, if any
	bw      *bufio.Writer // buffers the spool's writes
	w       *countWriter
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func newPackWriter(dir string) (*packWriter, error) {
	f, err := spoolFile(dir)
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(f, 256<<10)
	return &packWriter{f: f, bw: bw, w: &countWriter{w: bw}}, nil
}

// add writes txn (or, with more, the first or a further part of it:
// pages after the last part's).
func (p *packWriter) add(t pagewire.Txn, more bool) error {
	if p.cur != nil && p.cur.txn.TXID != t.TXID {
		return fmt.Errorf("transaction %d began before transaction %d ended", t.TXID, p.cur.txn.TXID)
	}
	if p.cur == nil {
		if len(p.lengths) > 0 && t.TXID != p.last.TXID+1 {
			return fmt.Errorf("transaction %d follows transaction %d", t.TXID, p.last.TXID)
		}
		enc, err := newTxnEncoder(p.w, t)
		if err != nil {
			return err
		}
		p.cur = enc
	}
	if err := p.cur.add(t.Pages); err != nil {
		return err
	}
	if more {
		return nil
	}
	if err := p.cur.finish(); err != nil {
		return err
	}
	p.cur = nil
	hdr := t
	hdr.Pages = nil
	if len(p.lengths) == 0 {
		p.first = hdr
	}
	p.last = hdr
	p.lengths = append(p.lengths, p.w.n-p.size)
	p.size = p.w.n
	return nil
}

// reader returns the pack as one stream and its length; reading it fails
// if the spool could not be written.
func (p *packWriter) reader() (io.Reader, int64) {
	if err := p.bw.Flush(); err != nil {
		return &errReader{fmt.Errorf("spool the pack: %w", err)}, 0
	}
	dir := make([]byte, len(packMagic)+4+8*len(p.lengths))
	copy(dir, packMagic)
	binary.BigEndian.PutUint32(dir[len(packMagic):], uint32(len(p.lengths)))
	for i, n := range p.lengths {
		binary.BigEndian.PutUint64(dir[len(packMagic)+4+8*i:], uint64(n))
	}
	return io.MultiReader(bytes.NewReader(dir), io.NewSectionReader(p.f, 0, p.size)), int64(len(dir)) + p.size
}

func (p *packWriter) close() { p.f.Close() }

// readPackDir reads a pack's directory from r, of an object of size
// bytes, and returns the LTX files' lengths. Every count and length is
// bounded by the object's size before anything is allocated for it.
func readPackDir(r io.Reader, size int64) ([]int64, error) {
	head := make([]byte, len(packMagic)+4)
	if _, err := io.ReadFull(r, head); err != nil {
		return nil, fmt.Errorf("%w: pack directory: %v", pagewire.ErrCorrupt, err)
	}
	if string(head[:len(packMagic)]) != packMagic {
		return nil, fmt.Errorf("%w: not a pack (magic %q)", pagewire.ErrCorrupt, head[:len(packMagic)])
	}
	n := int64(binary.BigEndian.Uint32(head[len(packMagic):]))
	rest := size - int64(len(head))
	if n == 0 || n > maxPackFiles || 8*n > rest {
		return nil, fmt.Errorf("%w: a pack of %d bytes cannot hold %d files", pagewire.ErrCorrupt, size, n)
	}
	dir := make([]byte, 8*n)
	if _, err := io.ReadFull(r, dir); err != nil {
		return nil, fmt.Errorf("%w: pack directory: %v", pagewire.ErrCorrupt, err)
	}
	rest -= 8 * n
	lengths := make([]int64, n)
	var total int64
	for i := range lengths {
		l := int64(binary.BigEndian.Uint64(dir[8*i:]))
		if l < ltx.HeaderSize+ltx.TrailerSize || l > rest-total {
			return nil, fmt.Errorf("%w: file %d of a pack is %d bytes, which the pack's %d cannot hold", pagewire.ErrCorrupt, i, l, size)
		}
		lengths[i] = l
		total += l
	}
	if total != rest {
		return nil, fmt.Errorf("%w: a pack's files add up to %d bytes, not its %d", pagewire.ErrCorrupt, total, rest)
	}
	return lengths, nil
}

// frameGuard passes an LTX file through, checking each page frame's
// compressed size before the decoder allocates for it: an object that says
// its next page is gigabytes long is refused, not believed.
type frameGuard struct {
	r        *bufio.Reader
	pageSize uint32
	maxFrame uint32
	state    int   // 0 header, 1 page header, 2 size, 3 data, 4 trailing
	left     int64 // bytes left in the current state
	buf      []byte
	err      error
}

const (
	guardHeader = iota
	guardPageHeader
	guardSize
	guardData
	guardTail
)

func newFrameGuard(r io.Reader) *frameGuard {
	return &frameGuard{r: bufio.NewReaderSize(r, 64<<10), state: guardHeader, left: ltx.HeaderSize}
}

func (g *frameGuard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	if g.state == guardTail {
		return g.r.Read(p)
	}
	// A state's bytes are checked whole before any is passed on.
	if len(g.buf) == 0 {
		if err := g.fill(); err != nil {
			g.err = err
			return 0, err
		}
	}
	n := copy(p, g.buf)
	g.buf = g.buf[n:]
	return n, nil
}

// fill reads the next state's bytes into buf and checks them.
func (g *frameGuard) fill() error {
	switch g.state {
	case guardHeader:
		b := make([]byte, ltx.HeaderSize)
		if _, err := io.ReadFull(g.r, b); err != nil {
			return err
		}
		var h ltx.Header
		if err := h.UnmarshalBinary(b); err != nil {
			return err
		}
		if !pagewire.ValidPageSize(h.PageSize) {
			return fmt.Errorf("%w: LTX header: page size %d", pagewire.ErrCorrupt, h.PageSize)
		}
		g.pageSize, g.maxFrame = h.PageSize, uint32(lz4.CompressBlockBound(int(h.PageSize)))
		g.buf, g.state = b, guardPageHeader
	case guardPageHeader:
		b := make([]byte, ltx.PageHeaderSize)
		if _, err := io.ReadFull(g.r, b); err != nil {
			return err
		}
		var ph ltx.PageHeader
		if err := ph.UnmarshalBinary(b); err != nil {
			return err
		}
		switch {
		case ph.IsZero():
			g.state = guardTail
		case ph.Flags&ltx.PageHeaderFlagSize == 0:
			return fmt.Errorf("%w: LTX page %d in the old frame format, which pagewire never writes", pagewire.ErrCorrupt, ph.Pgno)
		default:
			g.state = guardSize
		}
		g.buf = b
	case guardSize:
		b := make([]byte, 4)
		if _, err := io.ReadFull(g.r, b); err != nil {
			return err
		}
		n := binary.BigEndian.Uint32(b)
		if n == 0 || n > g.maxFrame {
			return fmt.Errorf("%w: an LTX page frame of %d bytes, for pages of %d", pagewire.ErrCorrupt, n, g.pageSize)
		}
		g.buf, g.state, g.left = b, guardData, int64(n)
	case guardData:
		b := make([]byte, g.left)
		if _, err := io.ReadFull(g.r, b); err != nil {
			return err
		}
		g.buf, g.state = b, guardPageHeader
	}
	return nil
}

// encodeSnapshot writes the database at pos, count pages of pageSize bytes
// read from r in order from page 1, as a snapshot LTX file taken at t.
func encodeSnapshot(w io.Writer, r io.Reader, pos pagewire.Pos, pageSize, count uint32, t time.Time) error {
	enc, err := ltx.NewEncoder(w)
	if err != nil {
		return err
	}
	hdr := ltx.Header{Version: ltx.Version, PageSize: pageSize, Commit: count, MinTXID: 1, MaxTXID: ltx.TXID(pos.TXID), Timestamp: t.UnixMilli()}
	if err := enc.EncodeHeader(hdr); err != nil {
		return err
	}
	buf := make([]byte, pageSize)
	lock := pagewire.LockPage(pageSize)
	for pgno := uint32(1); pgno <= count; pgno++ {
		if _, err := io.ReadFull(r, buf); err != nil {
			return fmt.Errorf("page %d of %d: %w", pgno, count, err)
		}
		if pgno == lock {
			continue
		}
		if err := enc.EncodePage(ltx.PageHeader{Pgno: pgno}, buf); err != nil {
			return err
		}
	}
	enc.SetPostApplyChecksum(ltxChecksum(pos.Checksum, pageSize, count))
	return enc.Close()
}

// decodeLTX starts decoding one LTX file read from r, its page frames
// bounded by frameGuard, and returns its header.
func decodeLTX(r io.Reader) (*ltx.Decoder, ltx.Header, error) {
	dec := ltx.NewDecoder(newFrameGuard(r))
	dec.SetRetainPageIndex(false) // pages are streamed; no index is kept
	if err := dec.DecodeHeader(); err != nil {
		return nil, ltx.Header{}, fmt.Errorf("%w: LTX header: %v", pagewire.ErrCorrupt, err)
	}
	return dec, dec.Header(), nil
}

// decodePages reads the pages of dec's file, whose header is h, each into
// buf, and calls fn with each one's number; then it checks the file's own
// checksum.
func decodePages(dec *ltx.Decoder, h ltx.Header, buf []byte, fn func(pgno uint32) error) error {
	var ph ltx.PageHeader
	for {
		err := dec.DecodePage(&ph, buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: transactions %d to %d: %v", pagewire.ErrCorrupt, h.MinTXID, h.MaxTXID, err)
		}
		if ph.Pgno > h.Commit {
			return fmt.Errorf("%w: page %d of a database of %d pages", pagewire.ErrCorrupt, ph.Pgno, h.Commit)
		}
		if err := fn(ph.Pgno); err != nil {
			return err
		}
	}
	if err := dec.Close(); err != nil {
		return fmt.Errorf("%w: transactions %d to %d: %v", pagewire.ErrCorrupt, h.MinTXID, h.MaxTXID, err)
	}
	return nil
}

// errReader fails every read with err.
type errReader struct{ err error }

func (r *errReader) Read([]byte) (int, error) { return 0, r.err }

// growthGuard checks, page by page as an LTX file is read, that the file
// adds to a database of from pages only pages it holds (as
// pagewire.MaxPagesAfter allows: the lock page aside, every added page is
// written), so that a file of a few bytes cannot make its reader allocate
// for billions of pages it claims.
type growthGuard struct {
	from     uint32
	pageSize uint32
	written  int // pages of the file so far
	grown    int // of them, past from
}

// page checks page pgno, the file's next.
func (g *growthGuard) page(pgno uint32) error {
	g.written++
	if pgno <= g.from {
		return nil
	}
	g.grown++
	if limit := pagewire.MaxPagesAfter(g.from, g.grown, g.pageSize); pgno > limit {
		return fmt.Errorf("%w: page %d of a file that grows a database of %d pages holds only %d pages past it: a file adds only pages it holds", pagewire.ErrCorrupt, pgno, g.from, g.grown)
	}
	return nil
}

// done checks the file's size in pages, commit, once every page is read.
func (g *growthGuard) done(commit uint32) error {
	if err := pagewire.CheckGrowth(g.from, commit, g.written, g.pageSize); err != nil {
		return fmt.Errorf("%w: %v", pagewire.ErrCorrupt, err)
	}
	return nil
}

// spoolFile creates an unlinked temporary file in dir ("": the system's
// temporary directory): nothing is left behind, even on a crash.
func spoolFile(dir string) (*os.File, error) {
	f, err := os.CreateTemp(dir, "pagewire-spool-*")
	if err != nil {
		return nil, fmt.Errorf("spool in %s: %w", cmp.Or(dir, os.TempDir()), err)
	}
	_ = os.Remove(f.Name())
	return f, nil
}

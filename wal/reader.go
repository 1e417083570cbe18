package wal

import (
	"errors"
	"fmt"
	"io"
)

// maxRead bounds one read of frames by a Reader; each read ends on a frame.
const maxRead = 1 << 20

// Reader walks a WAL's valid frames in order as SQLite's recovery does:
// each must carry the header's salts and a page number, and chain the
// checksum; the walk ends at the first frame that does not (debris of an
// older generation or a torn write), or at the end of the file. It reads
// up to 1 MiB of frames at a time.
type Reader struct {
	r     io.ReaderAt
	hdr   Header
	fsz   int64
	chunk []byte // the read buffer, reused
	buf   []byte // frames read ahead, from frame next: the rest of chunk
	next  uint32 // the number of the frame at buf[0]
	frame []byte // the frame Next returned last
	n     uint32 // its number; 0 before the first
	sum   Checksum
	fault Fault
	ended bool // no frames past buf: the file ended
}

// NewReader reads and validates the header of the WAL in r. Its errors are
// DecodeHeader's (a file shorter than a header gives ErrShortHeader) or the
// read's.
func NewReader(r io.ReaderAt) (*Reader, error) {
	var b [HeaderSize]byte
	n, err := r.ReadAt(b[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read the wal header: %w", err)
	}
	h, err := DecodeHeader(b[:n])
	if err != nil {
		return nil, err
	}
	return &Reader{r: r, hdr: h, fsz: FrameHeaderSize + int64(h.PageSize), next: 1, sum: h.Checksum}, nil
}

// Header is the WAL's header.
func (r *Reader) Header() Header { return r.hdr }

// Next reads the next frame and returns its header. It returns io.EOF at
// the first invalid frame or the end of the file (Fault says which), or a
// read error.
func (r *Reader) Next() (FrameHeader, error) {
	if r.fault != FaultNone {
		return FrameHeader{}, io.EOF
	}
	if len(r.buf) == 0 {
		if err := r.fill(); err != nil {
			return FrameHeader{}, err
		}
		if len(r.buf) == 0 {
			r.fault = FaultShort
			return FrameHeader{}, io.EOF
		}
	}
	frame := r.buf[:r.fsz]
	fh, sum, fault := r.hdr.CheckFrame(r.sum, frame)
	if fault != FaultNone {
		r.fault = fault
		return FrameHeader{}, io.EOF
	}
	r.buf, r.frame, r.n, r.next, r.sum = r.buf[r.fsz:], frame, r.next, r.next+1, sum
	return fh, nil
}

// fill reads the next whole frames into buf.
func (r *Reader) fill() error {
	if r.ended {
		return nil
	}
	if r.chunk == nil {
		r.chunk = make([]byte, max(1, maxRead/r.fsz)*r.fsz)
	}
	n, err := r.r.ReadAt(r.chunk, FrameOffset(r.next, r.hdr.PageSize))
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read wal frame %d: %w", r.next, err)
	}
	if n < len(r.chunk) {
		r.ended = true
	}
	r.buf = r.chunk[:int64(n)/r.fsz*r.fsz]
	return nil
}

// Frame is the number (from 1) of the frame Next returned last; 0 before
// the first.
func (r *Reader) Frame() uint32 { return r.n }

// Page is the page of the frame Next returned last. It is valid until the
// next call to Next.
func (r *Reader) Page() []byte { return r.frame[FrameHeaderSize:] }

// Checksum is the running checksum after the frame Next returned last: the
// header's before the first.
func (r *Reader) Checksum() Checksum { return r.sum }

// Fault is why Next returned io.EOF: FaultShort at the end of the file, the
// invalid frame's fault otherwise; FaultNone before that.
func (r *Reader) Fault() Fault { return r.fault }

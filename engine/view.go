package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/pagewire/pagewire"
	"github.com/pagewire/pagewire/internal/logkey"
	"github.com/pagewire/pagewire/wal"
)

// This file holds read views: consistent copies of a database at one
// position, read page by page while writers go on. Exports and replicas'
// snapshots read from them, so that no lock is held while their bytes go
// to a client, however slowly it reads.
//
// A view's pages are where they were when it was opened: each in its
// newest committed WAL frame, else in the database file. The view reads
// them through handles of its own, so that a file renamed over or deleted
// (an import, a deleted -wal, a deleted database) stays readable as it
// was. Only writes into those same files change its pages: a checkpoint
// writing the database file, SQLite writing a new WAL generation over old
// frames, a truncation. Each such write first saves, for every open view,
// the bytes it overwrites that the view has yet to read (copy on write) to
// a sparse spill file of the view's in data.dir/dbs, named .snapshot-* so
// that a crash's leftover is removed at the next start.
//
// A view reads a chunk of pages at a time with the database's lock held
// shared, so that no write lands in the middle of a chunk; it holds
// nothing between chunks, nor while a chunk goes to the client.

const (
	// viewChunkBytes is how many bytes of pages a view reads per hold of
	// the database's lock: an export's message.
	viewChunkBytes = 1 << 20
	// maxExports bounds the exports a node runs at once; one more is
	// refused with ErrTooMany.
	maxExports = 4
	// maxSnapshots bounds the replicas' snapshots a node sends at once;
	// one more waits for a slot.
	maxSnapshots = 4
)

// view is a consistent read-only copy of a database at one position, read
// once, in page order.
type view struct {
	d        *database
	pos      pagewire.Pos
	pageSize uint32
	count    uint32 // pages in the copy

	// The pages read from the WAL, as pgno<<32|frame sorted (frames) and
	// as frame<<32|pgno sorted (byFrame).
	frames, byFrame []uint64

	// The view's own handles on the files its pages are read from (wal
	// is nil when no page is), and d's handles on the same files when
	// the view was opened: a write through those may overwrite its pages.
	db, wal     *os.File
	dbOf, walOf *os.File
	spillDir    string // where the spill file goes

	// next is the next page to read: pages before it are the reader's
	// already and need no saving. The view's one reader writes it, and
	// fi (its place in frames), with d.mu held shared; writers read it
	// with d.mu held exclusively.
	next uint32
	fi   int

	// Written by writers, with d.mu held exclusively.
	saved []uint64 // bit pgno-1 set: page pgno is in spill, at (pgno-1)*pageSize
	spill *os.File // nil until a page is saved
	page  []byte   // scratch for one saved page
	err   error    // a page could not be saved: the view is broken
}

// openView opens a view of the database at its current position and
// registers it, so that writes save what they overwrite of it. The caller
// must close it.
func (d *database) openView(spillDir string) (*view, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.deleted {
		return nil, fmt.Errorf("%w: database %q", pagewire.ErrNotFound, d.name)
	}
	v := &view{d: d, pos: d.pos, pageSize: d.pageSize, count: uint32(len(d.pages)), next: 1,
		dbOf: d.db, walOf: d.wal, spillDir: spillDir}

	// The pages in the WAL, by page and by frame.
	for i, f := range d.w.index[:min(len(d.w.index), int(v.count))] {
		if f != 0 { // 0: the page is not in the WAL
			pgno := uint32(i + 1)
			v.frames = append(v.frames, uint64(pgno)<<32|uint64(f)) // in page order
			v.byFrame = append(v.byFrame, uint64(f)<<32|uint64(pgno))
		}
	}
	slices.Sort(v.byFrame)

	// Handles of its own on the files.
	var err error
	if v.db, err = os.Open(d.db.Name()); err != nil {
		return nil, fmt.Errorf("open a copy of %q: %w", d.name, err)
	}
	if len(v.frames) > 0 {
		if d.wal == nil {
			v.db.Close()
			return nil, fmt.Errorf("open a copy of %q: its committed pages are in a -wal that is gone", d.name)
		}
		if v.wal, err = os.Open(d.wal.Name()); err != nil {
			v.db.Close()
			return nil, fmt.Errorf("open a copy of %q: %w", d.name, err)
		}
	}
	d.views = append(d.views, v)
	return v, nil
}

// chunk returns a buffer for one chunk of the view's pages.
func (v *view) chunk() []byte {
	return make([]byte, max(1, viewChunkBytes/int(v.pageSize))*int(v.pageSize))
}

// read reads the view's next pages into p, as many as p holds whole, and
// returns how many bytes it read; io.EOF once every page was read. A view
// whose pages could not be kept returns the error that broke it.
func (v *view) read(p []byte) (int, error) {
	ps := int(v.pageSize)
	v.d.mu.RLock()
	defer v.d.mu.RUnlock()
	switch {
	case v.err != nil:
		return 0, v.err
	case v.next > v.count:
		return 0, io.EOF
	case len(p) < ps:
		return 0, io.ErrShortBuffer
	}

	// Read each page from where the view has it; a run of pages in the
	// database file is one read.
	k := min(len(p)/ps, int(v.count-v.next+1))
	for i := 0; i < k; {
		f, off := v.source(v.next + uint32(i))
		j := i + 1
		for f == v.db && j < k {
			if g, _ := v.source(v.next + uint32(j)); g != v.db {
				break
			}
			j++
		}
		n, err := f.ReadAt(p[i*ps:j*ps], off)
		switch {
		case n == (j-i)*ps:
		case f == v.db && (err == nil || errors.Is(err, io.EOF)):
			clear(p[i*ps+n : j*ps]) // past the end of the database file: zeros, as SQLite reads them
		case err == nil || errors.Is(err, io.EOF):
			return 0, fmt.Errorf("read page %d of the copy of %q: %d bytes of %d", v.next+uint32(i), v.d.name, n, (j-i)*ps)
		default:
			return 0, fmt.Errorf("read page %d of the copy of %q: %w", v.next+uint32(i), v.d.name, err)
		}
		i = j
	}
	v.next += uint32(k)
	return k * ps, nil
}

// source is the file and offset the view reads page pgno from: the spill
// file if the page was saved, else its WAL frame, else the database file.
// Pages are asked for in order. d.mu must be held.
func (v *view) source(pgno uint32) (*os.File, int64) {
	ps := int64(v.pageSize)
	if v.isSaved(pgno) {
		return v.spill, int64(pgno-1) * ps
	}
	for v.fi < len(v.frames) && uint32(v.frames[v.fi]>>32) < pgno {
		v.fi++
	}
	if v.fi < len(v.frames) && uint32(v.frames[v.fi]>>32) == pgno {
		return v.wal, wal.FrameOffset(uint32(v.frames[v.fi]), v.pageSize) + walFrameHeaderSize
	}
	return v.db, int64(pgno-1) * ps
}

func (v *view) isSaved(pgno uint32) bool {
	i := (pgno - 1) / 64
	return int(i) < len(v.saved) && v.saved[i]&(1<<((pgno-1)%64)) != 0
}

// inWAL reports whether the view reads page pgno from the WAL.
func (v *view) inWAL(pgno uint32) bool {
	i, _ := slices.BinarySearch(v.frames, uint64(pgno)<<32)
	return i < len(v.frames) && uint32(v.frames[i]>>32) == pgno
}

// close unregisters the view and releases its files.
func (v *view) close() {
	v.d.mu.Lock()
	v.d.views = slices.DeleteFunc(v.d.views, func(x *view) bool { return x == v })
	v.d.mu.Unlock()
	v.db.Close()
	if v.wal != nil {
		v.wal.Close()
	}
	if v.spill != nil {
		v.spill.Close()
		os.Remove(v.spill.Name())
	}
}

// keepForViews saves, for every open view, what a write to f over
// [off, off+n) is about to overwrite of the pages the view has yet to
// read; n < 0 means to the end of the file (a truncation to off). A view
// whose pages cannot be saved is broken and dropped: its reader fails, the
// write goes on. d.mu must be held exclusively.
func (d *database) keepForViews(f *os.File, off int64, n int) {
	if len(d.views) == 0 || f == nil {
		return
	}
	end := int64(math.MaxInt64)
	if n >= 0 && off <= math.MaxInt64-int64(n) {
		end = off + int64(n)
	}
	for _, v := range d.views {
		switch f {
		case v.dbOf:
			v.keepDB(off, end)
		case v.walOf:
			v.keepWAL(off, end)
		}
	}
	d.views = slices.DeleteFunc(d.views, func(v *view) bool { return v.err != nil })
}

// keepDB saves the pages the view reads from the database file in
// [off, end) and has yet to read.
func (v *view) keepDB(off, end int64) {
	ps := int64(v.pageSize)
	size := int64(v.count) * ps
	if end <= off || off >= size {
		return
	}
	first := max(uint32(off/ps)+1, v.next)
	last := uint32((min(end, size)-1)/ps) + 1
	for pgno := first; pgno <= last && v.err == nil; pgno++ {
		if !v.isSaved(pgno) && !v.inWAL(pgno) {
			v.save(pgno, v.db, int64(pgno-1)*ps, true)
		}
	}
}

// keepWAL saves the pages the view reads from WAL frames whose page data
// lies in [off, end), and has yet to read.
func (v *view) keepWAL(off, end int64) {
	if end <= off || len(v.byFrame) == 0 {
		return
	}

	// The first frame whose page ends past off.
	frameSize := int64(walFrameHeaderSize) + int64(v.pageSize)
	first := int64(1)
	if off >= walHeaderSize {
		first = (off-walHeaderSize)/frameSize + 1
	}
	if first > int64(v.byFrame[len(v.byFrame)-1]>>32) {
		return
	}

	// Each of the view's frames from there whose page starts before end.
	i, _ := slices.BinarySearch(v.byFrame, uint64(first)<<32)
	for ; i < len(v.byFrame) && v.err == nil; i++ {
		frame, pgno := uint32(v.byFrame[i]>>32), uint32(v.byFrame[i])
		start := wal.FrameOffset(frame, v.pageSize) + walFrameHeaderSize
		if start >= end {
			break
		}
		if pgno >= v.next && !v.isSaved(pgno) {
			v.save(pgno, v.wal, start, false)
		}
	}
}

// save copies page pgno, at off in src, to the spill file. zeros: a short
// read is the end of the file, which reads as zeros.
func (v *view) save(pgno uint32, src *os.File, off int64, zeros bool) {
	if v.page == nil {
		v.page = make([]byte, v.pageSize)
	}
	n, err := src.ReadAt(v.page, off)
	if n < len(v.page) {
		if !zeros || (err != nil && !errors.Is(err, io.EOF)) {
			v.fail(pgno, fmt.Errorf("read it: %d bytes: %v", n, err))
			return
		}
		clear(v.page[n:])
	}
	if v.spill == nil {
		if v.spill, err = os.CreateTemp(v.spillDir, ".snapshot-*"); err != nil {
			v.fail(pgno, err)
			return
		}
	}
	if _, err := v.spill.WriteAt(v.page, int64(pgno-1)*int64(v.pageSize)); err != nil {
		v.fail(pgno, err)
		return
	}
	if v.saved == nil {
		v.saved = make([]uint64, (v.count+63)/64)
	}
	v.saved[(pgno-1)/64] |= 1 << ((pgno - 1) % 64)
}

func (v *view) fail(pgno uint32, err error) {
	v.err = fmt.Errorf("the copy of %q at %s could not keep page %d while it was overwritten (is %s full?): %w",
		v.d.name, v.pos, pgno, v.spillDir, err)
	v.d.log.Warn("a copy (export or snapshot) of the database failed", logkey.Error, v.err)
}

// export writes a consistent copy of the committed database to w, in
// rollback-journal mode so that any SQLite opens it as a plain file. It
// reads from a view, so writers go on meanwhile and no lock is held while
// w is written to; it stops when ctx is done.
func (d *database) export(ctx context.Context, spillDir string, w io.Writer) (pagewire.Pos, error) {
	v, err := d.openView(spillDir)
	if err != nil {
		return pagewire.Pos{}, err
	}
	defer v.close()
	buf := v.chunk()
	for first := true; ; first = false {
		if err := ctx.Err(); err != nil {
			return pagewire.Pos{}, err
		}
		n, err := v.read(buf)
		if errors.Is(err, io.EOF) {
			return v.pos, nil
		} else if err != nil {
			return pagewire.Pos{}, err
		}
		if first {
			buf[18], buf[19] = 1, 1 // page 1: rollback-journal mode
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return pagewire.Pos{}, err
		}
	}
}

// Export writes a consistent copy of a database, as a plain SQLite file in
// rollback-journal mode, to w, and returns the position it is a copy of.
// Writers go on meanwhile and no lock is held while w is written to, so a
// slow w slows nothing else. It stops when ctx is done. A node runs
// maxExports at once; one more is refused with ErrTooMany.
func (s *Store) Export(ctx context.Context, name string, w io.Writer) (pagewire.Pos, error) {
	d, err := s.db(name)
	if err != nil {
		return pagewire.Pos{}, err
	}
	select {
	case s.exports <- struct{}{}:
		defer func() { <-s.exports }()
	default:
		return pagewire.Pos{}, fmt.Errorf("%w: %d exports are running on this node, the most it runs at once; try again when one has finished",
			pagewire.ErrTooMany, maxExports)
	}
	return d.export(ctx, filepath.Join(s.dir, "dbs"), w)
}

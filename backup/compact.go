package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"time"

	"github.com/superfly/ltx"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/pagewire/pagewire"
)

// Compaction merges a segment's objects of one level into fewer, larger
// ones of the next: level 1 from the packs whose newest transaction falls
// in one window of levels[0], level 2 from level 1 objects in one window of
// levels[1], and so on. A merged object is one LTX file that takes the
// database from the state before its first transaction to the state after
// its last, so that a restore applies it whole (restore.go plans the
// coarsest objects first). The objects it was merged from stay until Prune
// finds no restore within the retention needs them.

// CompactStats says what a Compact did.
type CompactStats struct {
	Objects int64 // compacted objects written
	Bytes   int64 // their size
	Sources int64 // objects read to write them
	// Existing counts merges another compactor had already written under
	// the same name; they are left as they are and count as done.
	Existing int64
}

// Compact merges db's objects, level by level, in every segment: for
// level n (1 to len(levels)), each run of consecutive level n-1 objects
// (packs for level 1) whose commit times fall in one window of
// levels[n-1] (times truncated to it) that has ended by now, all within
// what the segment serves, becomes one level n object, unless one at
// level n already covers the run. Every source is decoded and its file
// checksum, its chain of checksums and TXIDs checked; one that fails
// stops Compact with an error naming it, and the merge it was part of
// writes nothing. Objects are written only if absent (IfNotExist), so two
// compactors never replace each other's; Compact run twice writes nothing
// the second time.
func Compact(ctx context.Context, b *blob.Bucket, db string, levels []time.Duration, now time.Time) (CompactStats, error) {
	var st CompactStats
	if err := pagewire.ValidateDBName(db); err != nil {
		return st, err
	}
	if len(levels) > maxLevels {
		return st, fmt.Errorf("compact %q: %d levels, at most %d", db, len(levels), maxLevels)
	}
	for i, d := range levels {
		if d <= 0 || (i > 0 && d <= levels[i-1]) {
			return st, fmt.Errorf("compact %q: levels %v: each must be positive and longer than the one before", db, levels)
		}
	}
	tl, err := loadTimeline(ctx, b, db)
	if err != nil {
		return st, err
	}

	for _, s := range tl.Segments {
		for n := 1; n <= len(levels); n++ {
			for _, run := range compactionRuns(s, n, levels[n-1], now) {
				o, created, err := mergeRun(ctx, b, db, s.ID, n, run)
				if err != nil {
					return st, err
				}
				st.Sources += int64(len(run))
				if created {
					st.Objects++
					st.Bytes += o.Size
				} else {
					st.Existing++
				}
				// The next level merges it in turn.
				s.Objects = append(s.Objects, o)
			}
		}
	}
	return st, nil
}

// compactionRuns lists the runs of segment s's objects one level below
// level to merge into one object at level each: a run lies in one window
// of d that has ended, its objects are consecutive and within s.End, and
// no object at level covers it yet.
func compactionRuns(s *segment, level int, d time.Duration, now time.Time) [][]object {
	var sources []object
	for _, o := range s.Objects {
		// A file from TXID 1 is a snapshot to LTX: not merged.
		if o.Level == level-1 && o.Min > 1 && o.Max <= s.End && !o.Time.Truncate(d).Add(d).After(now) {
			sources = append(sources, o)
		}
	}
	// By window, then Min, the longest first: overlapping objects (two
	// merges of one window, one with a late upload) give way to the longest.
	slices.SortFunc(sources, func(a, b object) int {
		if c := a.Time.Truncate(d).Compare(b.Time.Truncate(d)); c != 0 {
			return c
		}
		if c := cmpTXID(a.Min, b.Min); c != 0 {
			return c
		}
		return cmpTXID(b.Max, a.Max)
	})

	var runs [][]object
	var run []object
	flush := func() {
		if len(run) > 0 && !coveredAt(s, level, run[0].Min, run[len(run)-1].Max) {
			runs = append(runs, run)
		}
		run = nil
	}
	for _, o := range sources {
		if len(run) > 0 {
			last := run[len(run)-1]
			sameWindow := o.Time.Truncate(d).Equal(last.Time.Truncate(d))
			if sameWindow && o.Min <= last.Max {
				continue // overlaps the run: a shorter merge of it
			}
			if !sameWindow || o.Min != last.Max+1 {
				flush()
			}
		}
		run = append(run, o)
	}
	flush()
	return runs
}

// coveredAt reports whether one of s's objects at level holds min to max.
func coveredAt(s *segment, level int, min, max pagewire.TXID) bool {
	for _, o := range s.Objects {
		if o.Level == level && o.Min <= min && o.Max >= max {
			return true
		}
	}
	return false
}

// mergeRun merges run into one object at level and writes it unless it
// exists; created says whether this call wrote it.
func mergeRun(ctx context.Context, b *blob.Bucket, db string, seg segmentID, level int, run []object) (object, bool, error) {
	first, last := run[0], run[len(run)-1]
	key := objectKey(db, seg, level, first.Min, last.Max, last.Time)
	o := object{Key: key, Segment: seg, Level: level, Min: first.Min, Max: last.Max, Time: last.Time}

	m, err := newMerger()
	if err != nil {
		return o, false, fmt.Errorf("compact %s: %w", key, err)
	}
	defer m.close()
	for _, src := range run {
		if err := ctx.Err(); err != nil {
			return o, false, err
		}
		if err := m.addObject(ctx, b, src); err != nil {
			return o, false, fmt.Errorf("compact %s: read %s: %w", key, src.Key, err)
		}
	}

	// The merged file goes to a spool first: nothing is written to the
	// bucket unless every source was read whole and verified.
	spool, err := spoolFile("")
	if err != nil {
		return o, false, fmt.Errorf("compact %s: %w", key, err)
	}
	defer spool.Close()
	cw := &countWriter{w: spool}
	if err := m.encode(cw); err != nil {
		return o, false, fmt.Errorf("compact %s: %w", key, err)
	}
	o.Size = cw.n
	created, err := putIfAbsent(ctx, b, key, io.NewSectionReader(spool, 0, cw.n))
	if err != nil {
		return o, false, fmt.Errorf("compact %s: write: %w", key, err)
	}
	return o, created, nil
}

// putIfAbsent writes r to key unless key exists, and reports whether it
// wrote it. The write is conditional (IfNotExist) where the driver can do
// it; where it cannot, an existence check comes first, which two
// compactors can race past, but the two would write the same merge.
func putIfAbsent(ctx context.Context, b *blob.Bucket, key string, r io.ReadSeeker) (bool, error) {
	opts := &blob.WriterOptions{IfNotExist: true, ContentType: "application/octet-stream"}
	for {
		wctx, cancel := context.WithCancel(ctx)
		err := writeBlob(wctx, cancel, b, key, r, opts)
		cancel()
		switch gcerrors.Code(err) {
		case gcerrors.OK:
			return true, nil
		case gcerrors.FailedPrecondition:
			return false, nil // written by another compactor first
		case gcerrors.Unimplemented:
			if !opts.IfNotExist {
				return false, err
			}
			if ok, err := b.Exists(ctx, key); err != nil || ok {
				return false, err
			}
			if _, err := r.Seek(0, io.SeekStart); err != nil {
				return false, err
			}
			opts.IfNotExist = false
			continue
		}
		return false, err
	}
}

// writeBlob copies r to key; a failed copy cancels the write, so that
// nothing is published.
func writeBlob(ctx context.Context, cancel context.CancelFunc, b *blob.Bucket, key string, r io.Reader, opts *blob.WriterOptions) error {
	w, err := b.NewWriter(ctx, key, opts)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		cancel()
		_ = w.Close()
		return err
	}
	return w.Close()
}

// merger folds LTX files, oldest first, into one: for each page the newest
// version, in a sparse spool file (page n at (n-1)*pageSize) so that
// memory holds no page beyond the one being copied, whatever the database's
// size; a bitmap says which pages the spool holds.
//
// A transaction that shrinks the database drops every page past its size
// from the merge, and the merged file writes zeros for pages that come
// back (a later transaction grows the database) without being written:
// applying it then gives what applying its sources one by one gives.
type merger struct {
	pages *os.File
	has   []uint64 // bit pgno-1: the spool holds page pgno
	n     int      // files folded in
	first ltx.Header
	last  ltx.Header
	post  ltx.Checksum // the last file's post-apply checksum
	low   uint32       // the smallest size any file gave the database
	buf   []byte
}

func newMerger() (*merger, error) {
	f, err := spoolFile("")
	if err != nil {
		return nil, err
	}
	return &merger{pages: f, low: math.MaxUint32}, nil
}

func (m *merger) close() { m.pages.Close() }

// addObject folds in every LTX file of o, which must hold exactly the
// transactions its name says.
func (m *merger) addObject(ctx context.Context, b *blob.Bucket, o object) error {
	r, err := b.NewReader(ctx, o.Key, nil)
	if err != nil {
		return err
	}
	defer r.Close()
	before := m.n
	if o.Level != 0 {
		if err := m.addLTX(io.LimitReader(r, o.Size)); err != nil {
			return err
		}
	} else {
		lengths, err := readPackDir(r, o.Size)
		if err != nil {
			return err
		}
		for _, n := range lengths {
			if err := m.addLTX(io.LimitReader(r, n)); err != nil {
				return err
			}
		}
	}
	if got, want := m.last.MaxTXID, ltx.TXID(o.Max); got != want {
		return fmt.Errorf("%w: it ends at transaction %d, its name says %d", pagewire.ErrCorrupt, got, want)
	}
	if before == 0 && m.first.MinTXID != ltx.TXID(o.Min) {
		return fmt.Errorf("%w: it starts at transaction %d, its name says %d", pagewire.ErrCorrupt, m.first.MinTXID, o.Min)
	}
	return nil
}

// addLTX folds in one LTX file, read whole from r: its frames are bounded
// (frameGuard), its file checksum checked (the decoder's Close), and it
// must follow the file before by TXID, page size and checksum.
func (m *merger) addLTX(r io.Reader) error {
	dec, h, err := decodeLTX(r)
	if err != nil {
		return err
	}
	switch {
	case h.IsSnapshot() || h.NoChecksum():
		return fmt.Errorf("%w: transactions %d to %d: a snapshot or a file without checksums, which no pack or level holds", pagewire.ErrCorrupt, h.MinTXID, h.MaxTXID)
	case m.n > 0 && h.MinTXID != m.last.MaxTXID+1:
		return fmt.Errorf("%w: transactions %d to %d do not follow transaction %d", pagewire.ErrCorrupt, h.MinTXID, h.MaxTXID, m.last.MaxTXID)
	case m.n > 0 && h.PageSize != m.first.PageSize:
		return fmt.Errorf("%w: pages of %d bytes after pages of %d", pagewire.ErrCorrupt, h.PageSize, m.first.PageSize)
	case m.n > 0 && h.PreApplyChecksum != m.post:
		return fmt.Errorf("%w: transaction %d starts from checksum %s, transaction %d ended at %s", pagewire.ErrCorrupt, h.MinTXID, h.PreApplyChecksum, m.last.MaxTXID, m.post)
	}

	// Pages past the new size leave the merge before its pages come in.
	// After the first file, each adds only pages it holds (growthGuard);
	// the bitmap grows with the pages written, never with a claimed size.
	m.truncate(h.Commit)
	if len(m.buf) != int(h.PageSize) {
		m.buf = make([]byte, h.PageSize)
	}
	guard := growthGuard{from: pagewire.MaxPageCount, pageSize: h.PageSize}
	if m.n > 0 {
		guard.from = m.last.Commit
	}
	err = decodePages(dec, h, m.buf, func(pgno uint32) error {
		if err := guard.page(pgno); err != nil {
			return err
		}
		if _, err := m.pages.WriteAt(m.buf, int64(pgno-1)*int64(h.PageSize)); err != nil {
			return err
		}
		for int(pgno-1)/64 >= len(m.has) {
			m.has = append(m.has, 0)
		}
		m.has[(pgno-1)/64] |= 1 << ((pgno - 1) % 64)
		return nil
	})
	if err == nil && m.n > 0 {
		err = guard.done(h.Commit)
	}
	if err != nil {
		return err
	}
	tr := dec.Trailer()
	if err := tr.Validate(h); err != nil {
		return fmt.Errorf("%w: transactions %d to %d: trailer: %v", pagewire.ErrCorrupt, h.MinTXID, h.MaxTXID, err)
	}

	if m.n == 0 {
		m.first = h
	}
	m.last, m.post = h, tr.PostApplyChecksum
	m.n++
	return nil
}

// truncate drops the pages past commit from the bitmap.
func (m *merger) truncate(commit uint32) {
	m.low = min(m.low, commit)
	words := int((uint64(commit) + 63) / 64)
	if words < len(m.has) {
		clear(m.has[words:])
		m.has = m.has[:words]
	}
	if r := commit % 64; r != 0 && words <= len(m.has) {
		m.has[words-1] &= 1<<r - 1
	}
}

// holds reports whether the merge has a page pgno.
func (m *merger) holds(pgno uint32) bool {
	w := int(pgno-1) / 64
	return w < len(m.has) && m.has[w]&(1<<((pgno-1)%64)) != 0
}

// encode writes the merged LTX file.
func (m *merger) encode(w io.Writer) error {
	if m.n == 0 {
		return errors.New("nothing to merge")
	}
	enc, err := ltx.NewEncoder(w)
	if err != nil {
		return err
	}
	enc.SetSpillDir(os.TempDir()) // a large database's page index goes to disk
	defer func() { _ = enc.Cleanup() }()
	hdr := ltx.Header{
		Version:          ltx.Version,
		PageSize:         m.first.PageSize,
		Commit:           m.last.Commit,
		MinTXID:          m.first.MinTXID,
		MaxTXID:          m.last.MaxTXID,
		Timestamp:        m.last.Timestamp,
		PreApplyChecksum: m.first.PreApplyChecksum,
	}
	if err := enc.EncodeHeader(hdr); err != nil {
		return err
	}
	lock := ltx.LockPgno(hdr.PageSize)
	zero := make([]byte, hdr.PageSize)
	for pgno := uint32(1); pgno <= hdr.Commit && pgno != 0; pgno++ {
		if pgno == lock {
			continue
		}
		data := zero
		switch {
		case m.holds(pgno):
			if _, err := m.pages.ReadAt(m.buf, int64(pgno-1)*int64(hdr.PageSize)); err != nil {
				return err
			}
			data = m.buf
		case pgno <= m.low:
			continue // neither written nor dropped in the run: the base's page stands
		}
		if err := enc.EncodePage(ltx.PageHeader{Pgno: pgno}, data); err != nil {
			return err
		}
	}
	enc.SetPostApplyChecksum(m.post)
	return enc.Close()
}

// PruneStats says what a Prune deleted.
type PruneStats struct {
	Deleted int   // objects and begin records deleted
	Bytes   int64 // the objects' size
}

// Prune deletes what no restore to a point in [now-retention, now] needs.
// The oldest such point is the state at now-retention, transaction from;
// kept are the objects that restore from and the head, and every object
// of a segment that serves past from that holds a transaction past it.
// The rest is deleted, and the begin records of the oldest segments left
// without objects (never the newest segment's). Prune first plans from and
// the head on what would be left; if either cannot be planned, before or
// after, it deletes nothing and says why. A backup younger than the
// retention is left whole.
func Prune(ctx context.Context, b *blob.Bucket, db string, retention time.Duration, now time.Time) (PruneStats, error) {
	var st PruneStats
	if err := pagewire.ValidateDBName(db); err != nil {
		return st, err
	}
	if retention <= 0 {
		return st, fmt.Errorf("prune %q: a retention of %s: it must be positive", db, retention)
	}
	tl, err := loadTimeline(ctx, b, db)
	if err != nil {
		return st, err
	}
	head, _ := tl.head()
	if head == 0 {
		return st, fmt.Errorf("prune %q: %w", db, errNoBackup)
	}
	from, err := tl.txidAt(ctx, b, now.Add(-retention))
	if errors.Is(err, pagewire.ErrNotFound) {
		return st, nil // nothing is as old as the retention
	}
	if err != nil {
		return st, fmt.Errorf("prune %q: %w", db, err)
	}
	from = min(from, head)

	// What restores from and the head, and whatever serves after from.
	keep := map[string]bool{}
	for _, x := range []pagewire.TXID{from, head} {
		steps, err := tl.plan(x)
		if err != nil {
			return st, fmt.Errorf("prune %q: nothing deleted: the backup cannot restore transaction %d as it is: %w", db, x, err)
		}
		for _, o := range steps {
			keep[o.Key] = true
		}
	}
	for _, s := range tl.Segments {
		for _, o := range s.Objects {
			if s.End >= from && o.Max > from {
				keep[o.Key] = true
			}
		}
	}

	// Prove what is left restores as much, before deleting anything.
	rest, drop, begins := tl.without(keep)
	if err := rest.restores(from, head); err != nil {
		return st, fmt.Errorf("prune %q: nothing deleted: what would be left cannot be shown to restore: %w", db, err)
	}

	for _, o := range drop {
		if err := deleteKey(ctx, b, o.Key); err != nil {
			return st, fmt.Errorf("prune %q: %w", db, err)
		}
		st.Deleted++
		st.Bytes += o.Size
	}
	for _, key := range begins {
		if err := deleteKey(ctx, b, key); err != nil {
			return st, fmt.Errorf("prune %q: %w", db, err)
		}
		st.Deleted++
	}
	return st, nil
}

// deleteKey deletes key; one already gone (another Prune) is no error.
func deleteKey(ctx context.Context, b *blob.Bucket, key string) error {
	if err := b.Delete(ctx, key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// without returns the timeline left once every object not in keep is
// deleted, the objects to delete, and the begin records to delete: those
// of the oldest segments left with no objects, not the newest segment's.
// A begin record of a later segment stays, since it fences the older
// ones (their End).
func (tl *timeline) without(keep map[string]bool) (*timeline, []object, []string) {
	rest := &timeline{DB: tl.DB}
	var drop []object
	var begins []string
	emptied := true // every segment so far is left with nothing
	for i, s := range tl.Segments {
		left := &segment{ID: s.ID, Begin: s.Begin}
		for _, o := range s.Objects {
			if keep[o.Key] {
				left.Objects = append(left.Objects, o)
			} else {
				drop = append(drop, o)
			}
		}
		emptied = emptied && len(left.Objects) == 0
		if emptied && i < len(tl.Segments)-1 {
			begins = append(begins, beginKey(tl.DB, s.ID))
			continue
		}
		rest.Segments = append(rest.Segments, left)
	}
	rest.fence()
	return rest, drop, begins
}

// restores checks that tl plans from, head, and each segment's end
// between them, and that its head is head.
func (tl *timeline) restores(from, head pagewire.TXID) error {
	if got, _ := tl.head(); got != head {
		return fmt.Errorf("its newest transaction would be %d, not %d", got, head)
	}
	points := []pagewire.TXID{from, head}
	for _, s := range tl.Segments {
		if s.End > from && s.End < head {
			points = append(points, s.End)
		}
	}
	for _, x := range points {
		if _, err := tl.plan(x); err != nil {
			return err
		}
	}
	return nil
}

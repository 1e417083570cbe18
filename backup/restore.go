package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/superfly/ltx"
	"gocloud.dev/blob"

	"github.com/pagewire/pagewire"
)

// RestoreOptions says what to restore and where.
type RestoreOptions struct {
	DB string
	// TXID is the transaction to restore to; 0 with Time zero: the newest.
	TXID pagewire.TXID
	// Time, when set (and TXID is 0), restores to the newest transaction
	// committed at or before it.
	Time time.Time
	// Output is the file to write; it is replaced only once the restored
	// database is verified.
	Output string
	// Progress, if set, is called as objects are read, with the bytes read
	// so far and the total to read.
	Progress func(done, total int64)
}

// Restored describes a restored database.
type Restored struct {
	Pos       pagewire.Pos // as pagewire records it
	PageSize  uint32
	PageCount uint32
	Time      time.Time // the commit time of its newest transaction
	Objects   int       // how many objects were read
	Bytes     int64     // and their size
}

// Restore rebuilds opts.DB as of opts.TXID (or opts.Time, or the newest)
// into opts.Output. Every object's checksums are checked as it is applied:
// each must start where the one before ended and end at its recorded
// checksum. A restore that cannot be verified fails, naming the object,
// and leaves Output as it was.
func Restore(ctx context.Context, b *blob.Bucket, opts RestoreOptions) (Restored, error) {
	if err := pagewire.ValidateDBName(opts.DB); err != nil {
		return Restored{}, err
	}
	tl, err := loadTimeline(ctx, b, opts.DB)
	if err != nil {
		return Restored{}, err
	}
	head, _ := tl.head()
	if head == 0 {
		return Restored{}, fmt.Errorf("%w of %q in the bucket: check backup.path (or bucket) and that a primary with this backup configured has run", errNoBackup, opts.DB)
	}
	target := opts.TXID
	switch {
	case target == 0 && !opts.Time.IsZero():
		if target, err = tl.txidAt(ctx, b, opts.Time); err != nil {
			return Restored{}, err
		}
	case target == 0:
		target = head
	case target > head:
		return Restored{}, fmt.Errorf("%w: transaction %d is past the backup's newest, %d", pagewire.ErrNotFound, target, head)
	}
	steps, err := tl.plan(target)
	if err != nil {
		return Restored{}, err
	}

	dir := filepath.Dir(opts.Output)
	f, err := os.CreateTemp(dir, "."+filepath.Base(opts.Output)+".restore-*")
	if err != nil {
		return Restored{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	im := newImage(f)
	var total, done int64
	for _, o := range steps {
		total += o.Size
	}
	for _, o := range steps {
		n, err := im.applyObject(ctx, b, o, target)
		done += n
		if opts.Progress != nil {
			opts.Progress(done, total)
		}
		if err != nil {
			return Restored{}, fmt.Errorf("restore %q from %s: %w", opts.DB, o.Key, err)
		}
	}
	if im.pos != target {
		return Restored{}, fmt.Errorf("restore %q: the backup's objects end at transaction %d, not %d", opts.DB, im.pos, target)
	}
	if err := im.finish(); err != nil {
		return Restored{}, err
	}
	if err := f.Close(); err != nil {
		return Restored{}, err
	}
	if err := os.Rename(f.Name(), opts.Output); err != nil {
		return Restored{}, err
	}
	return Restored{Pos: im.pagewirePos(), PageSize: im.pageSize, PageCount: im.commit, Time: time.UnixMilli(im.time).UTC(), Objects: len(steps), Bytes: done}, nil
}

// applyObject applies o to the image, a pack only up to target, and
// returns the bytes it read.
func (im *image) applyObject(ctx context.Context, b *blob.Bucket, o object, target pagewire.TXID) (int64, error) {
	r, err := b.NewReader(ctx, o.Key, nil)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	cr := &countReader{r: r}
	if o.Level != 0 {
		err := im.applyLTX(io.LimitReader(cr, o.Size))
		return cr.n, err
	}
	lengths, err := readPackDir(cr, o.Size)
	if err != nil {
		return cr.n, err
	}
	for _, n := range lengths {
		if im.pos >= target {
			break
		}
		lr := io.LimitReader(cr, n)
		hdr, rest, err := ltx.PeekHeader(lr)
		if err != nil {
			return cr.n, fmt.Errorf("%w: LTX header: %v", pagewire.ErrCorrupt, err)
		}
		if pagewire.TXID(hdr.MaxTXID) <= im.pos {
			if _, err := io.Copy(io.Discard, rest); err != nil {
				return cr.n, err
			}
			continue
		}
		if err := im.applyLTX(rest); err != nil {
			return cr.n, err
		}
	}
	return cr.n, nil
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// covers reports whether segment i can give the state at x: x is within
// what it serves, and it has a snapshot at or before x, or transactions
// that start at or before x+1 (their base then comes from an older
// segment).
func (tl *timeline) covers(i int, x pagewire.TXID) bool {
	s := tl.Segments[i]
	if x > s.End {
		return false
	}
	for _, o := range s.Objects {
		if (o.Level == levelSnap && o.Max <= x) || (o.Level >= 0 && o.Min <= x+1) {
			return true
		}
	}
	return false
}

// plan returns the objects that rebuild the state at x, in order.
func (tl *timeline) plan(x pagewire.TXID) ([]object, error) {
	for i := len(tl.Segments) - 1; i >= 0; i-- {
		if tl.covers(i, x) {
			return tl.planIn(i, x)
		}
	}
	return nil, fmt.Errorf("%w: no restore point of %q reaches transaction %d: `pagewire backup ls -name %s` lists them (older ones are past backup.retention)", pagewire.ErrNotFound, tl.DB, x, tl.DB)
}

// planIn plans the state at x from segment i: its newest snapshot at or
// before x, else the state an older segment gives where i's transactions
// begin; then the fewest objects from there to x, the coarsest first.
func (tl *timeline) planIn(i int, x pagewire.TXID) ([]object, error) {
	s := tl.Segments[i]
	var steps []object
	var cur pagewire.TXID
	for _, o := range s.Objects {
		if o.Level == levelSnap && o.Max <= x && o.Max >= cur {
			steps, cur = []object{o}, o.Max
		}
	}
	if steps == nil {
		first := pagewire.TXID(0)
		for _, o := range s.Objects {
			if o.Level >= 0 && (first == 0 || o.Min < first) {
				first = o.Min
			}
		}
		if first < 2 {
			return nil, fmt.Errorf("%w: segment %s of %q has no snapshot", pagewire.ErrNotFound, s.ID, tl.DB)
		}
		j := -1
		for k := i - 1; k >= 0; k-- {
			if tl.covers(k, first-1) {
				j = k
				break
			}
		}
		if j < 0 {
			return nil, fmt.Errorf("%w: the backup of %q has no snapshot from which to reach transaction %d (segment %s starts after %d)", pagewire.ErrNotFound, tl.DB, x, s.ID, first-1)
		}
		base, err := tl.planIn(j, first-1)
		if err != nil {
			return nil, err
		}
		steps, cur = base, first-1
	}
	for cur < x {
		var best object
		found := false
		for _, o := range s.Objects {
			if o.Level < 0 || o.Min != cur+1 || o.Max > x {
				continue
			}
			if !found || o.Max > best.Max || (o.Max == best.Max && o.Level > best.Level) {
				best, found = o, true
			}
		}
		if !found {
			// A pack that holds cur+1, applied in part.
			for _, o := range s.Objects {
				if o.Level == 0 && o.Min <= cur+1 && cur+1 <= o.Max {
					best, found = o, true
					break
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("%w: the backup of %q lacks transaction %d (segment %s)", pagewire.ErrNotFound, tl.DB, cur+1, s.ID)
		}
		steps = append(steps, best)
		cur = min(best.Max, x)
	}
	return steps, nil
}

// txidAt is the newest transaction committed at or before t.
func (tl *timeline) txidAt(ctx context.Context, b *blob.Bucket, t time.Time) (pagewire.TXID, error) {
	var best pagewire.TXID
	var next *object // the first pack past t, whose early transactions may be before it
	for _, s := range tl.Segments {
		for _, o := range s.Objects {
			if o.Max > s.End {
				continue
			}
			// A compacted object counts too: once Prune has deleted the
			// packs it was merged from, it may be all there is.
			if !o.Time.After(t) {
				best = max(best, o.Max)
			} else if o.Level == 0 && (next == nil || o.Min < next.Min) {
				next = &o
			}
		}
	}
	if next != nil && next.Min <= best+1 {
		times, err := packTimes(ctx, b, *next)
		if err != nil {
			return 0, err
		}
		for i, ms := range times {
			if txid := next.Min + pagewire.TXID(i); txid > best && ms <= t.UnixMilli() {
				best = txid
			}
		}
	}
	if best == 0 {
		return 0, fmt.Errorf("%w: the backup of %q has nothing as old as %s", pagewire.ErrNotFound, tl.DB, t.UTC().Format(time.RFC3339))
	}
	return best, nil
}

// packTimes reads the commit times of a pack's transactions.
func packTimes(ctx context.Context, b *blob.Bucket, o object) ([]int64, error) {
	r, err := b.NewReader(ctx, o.Key, nil)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	lengths, err := readPackDir(r, o.Size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Key, err)
	}
	times := make([]int64, 0, len(lengths))
	for _, n := range lengths {
		hdr, rest, err := ltx.PeekHeader(io.LimitReader(r, n))
		if err != nil {
			return nil, fmt.Errorf("%s: %w: %v", o.Key, pagewire.ErrCorrupt, err)
		}
		if _, err := io.Copy(io.Discard, rest); err != nil {
			return nil, err
		}
		times = append(times, hdr.Timestamp)
	}
	return times, nil
}

// Point is a span of restorable transactions: a snapshot, or the
// transactions a segment's uploads hold.
type Point struct {
	Segment  string
	Kind     string // "snapshot" or "transactions"
	Min, Max pagewire.TXID
	From, To time.Time // commit times (a snapshot's: when it was taken)
	Objects  int
	Size     int64
}

// List lists db's restore points, oldest first.
func List(ctx context.Context, b *blob.Bucket, db string) ([]Point, error) {
	if err := pagewire.ValidateDBName(db); err != nil {
		return nil, err
	}
	tl, err := loadTimeline(ctx, b, db)
	if err != nil {
		return nil, err
	}
	var points []Point
	for _, s := range tl.Segments {
		var txns *Point
		for _, o := range s.Objects {
			if o.Min > s.End {
				continue
			}
			switch o.Level {
			case levelSnap:
				points = append(points, Point{Segment: s.ID.String(), Kind: "snapshot", Min: o.Max, Max: o.Max, From: o.Time, To: o.Time, Objects: 1, Size: o.Size})
			case 0:
				if txns == nil {
					txns = &Point{Segment: s.ID.String(), Kind: "transactions", Min: o.Min, From: o.Time}
				}
				txns.Max, txns.To = min(o.Max, s.End), o.Time
				txns.Objects++
				txns.Size += o.Size
			}
		}
		if txns != nil {
			points = append(points, *txns)
		}
	}
	if len(points) == 0 {
		return nil, fmt.Errorf("%w of %q in the bucket", errNoBackup, db)
	}
	return points, nil
}

// IsNoBackup reports whether err says the bucket has no backup of the database.
func IsNoBackup(err error) bool { return errors.Is(err, errNoBackup) }

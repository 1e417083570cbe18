package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/superfly/ltx"
	"gocloud.dev/blob"

	"github.com/pagewire/pagewire"
)

// A backup is a tree of objects per database, under the bucket's prefix:
//
//	<db>/<epoch>-<seq>/begin.json                       the segment's start
//	<db>/<epoch>-<seq>/snap/<min>-<max>-<ms>.ltx        a snapshot (min 1)
//	<db>/<epoch>-<seq>/l0/<min>-<max>-<ms>.pack         uploaded transactions
//	<db>/<epoch>-<seq>/l<n>/<min>-<max>-<ms>.ltx        compacted, level n
//
// TXIDs are 16 hex digits, epoch 16 and seq 8, so that names sort as
// numbers; ms is the newest transaction's commit time in Unix
// milliseconds. A segment is what one primary uploaded in one run, in
// the lease epoch it held: a deposed primary's objects are in its own
// segment, and the next segment's begin.json says where the history it
// continues ends (PrevHead), so a restore never reads past it.

// Level names.
const (
	levelSnapshot = "snap"
	levelL0       = "l0"
	beginName     = "begin.json"
)

// maxLevels bounds the compacted levels a name may have (l1 to l8).
const maxLevels = 8

// segmentID names a segment: the lease epoch of the primary that
// uploaded it, and its order among that epoch's segments.
type segmentID struct {
	Epoch pagewire.Epoch
	Seq   uint32
}

func (s segmentID) String() string { return fmt.Sprintf("%016x-%08x", uint64(s.Epoch), s.Seq) }

func (s segmentID) less(o segmentID) bool {
	return s.Epoch < o.Epoch || (s.Epoch == o.Epoch && s.Seq < o.Seq)
}

func parseSegmentID(s string) (segmentID, bool) {
	e, q, ok := strings.Cut(s, "-")
	if !ok || len(e) != 16 || len(q) != 8 {
		return segmentID{}, false
	}
	ev, err1 := strconv.ParseUint(e, 16, 64)
	qv, err2 := strconv.ParseUint(q, 16, 32)
	if err1 != nil || err2 != nil {
		return segmentID{}, false
	}
	return segmentID{Epoch: pagewire.Epoch(ev), Seq: uint32(qv)}, true
}

// Begin is a segment's begin.json.
type Begin struct {
	// PrevHead is the newest transaction of the backup's history this
	// segment continues, as its primary found it (0: none). Older
	// segments are read up to it and no further.
	PrevHead pagewire.TXID `json:"prev_head"`
	// Node is the hostname of the primary that uploads the segment.
	Node string    `json:"node"`
	Time time.Time `json:"time"`
}

// object is one uploaded file of a segment.
type object struct {
	Key      string
	Segment  segmentID
	Level    int // -1 snapshot, 0 pack, n compacted level n
	Min, Max pagewire.TXID
	Time     time.Time // the newest transaction's commit time
	Size     int64
}

const levelSnap = -1

func levelDirName(level int) string {
	switch level {
	case levelSnap:
		return levelSnapshot
	case 0:
		return levelL0
	}
	return "l" + strconv.Itoa(level)
}

// objectKey is the key of an object of db.
func objectKey(db string, seg segmentID, level int, min, max pagewire.TXID, t time.Time) string {
	ext := ".ltx"
	if level == 0 {
		ext = ".pack"
	}
	return fmt.Sprintf("%s/%s/%s/%s-%s-%013d%s", db, seg, levelDirName(level), min, max, t.UnixMilli(), ext)
}

func beginKey(db string, seg segmentID) string { return db + "/" + seg.String() + "/" + beginName }

// parseObjectKey parses the key of db's object; ok is false for any other
// key (begin.json, a stranger's file).
func parseObjectKey(db, key string) (object, bool) {
	rest, ok := strings.CutPrefix(key, db+"/")
	if !ok {
		return object{}, false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 {
		return object{}, false
	}
	seg, ok := parseSegmentID(parts[0])
	if !ok {
		return object{}, false
	}
	o := object{Key: key, Segment: seg}
	ext := ".ltx"
	switch {
	case parts[1] == levelSnapshot:
		o.Level = levelSnap
	case parts[1] == levelL0:
		o.Level, ext = 0, ".pack"
	case len(parts[1]) == 2 && parts[1][0] == 'l' && parts[1][1] >= '1' && parts[1][1] <= '0'+maxLevels:
		o.Level = int(parts[1][1] - '0')
	default:
		return object{}, false
	}
	name, ok := strings.CutSuffix(parts[2], ext)
	if !ok {
		return object{}, false
	}
	f := strings.Split(name, "-")
	if len(f) != 3 || len(f[0]) != 16 || len(f[1]) != 16 || len(f[2]) != 13 {
		return object{}, false
	}
	minv, err1 := strconv.ParseUint(f[0], 16, 64)
	maxv, err2 := strconv.ParseUint(f[1], 16, 64)
	ms, err3 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || minv == 0 || minv > maxv {
		return object{}, false
	}
	if o.Level == levelSnap && minv != 1 {
		return object{}, false
	}
	o.Min, o.Max, o.Time = pagewire.TXID(minv), pagewire.TXID(maxv), time.UnixMilli(ms).UTC()
	return o, true
}

// segment is one segment of a database's backup, as listed.
type segment struct {
	ID      segmentID
	Begin   Begin
	Objects []object // by level, then Min, then Max
	// End is the newest TXID the segment may serve: its own newest, or
	// less when a later segment's PrevHead says the history moved on
	// (a deposed primary's uploads beyond it are ignored).
	End pagewire.TXID
}

// head is the newest TXID of the segment's objects (0 if none).
func (s *segment) head() pagewire.TXID {
	var h pagewire.TXID
	for _, o := range s.Objects {
		if o.Max > h {
			h = o.Max
		}
	}
	return h
}

// timeline is a database's backup: its segments, oldest first.
type timeline struct {
	DB       string
	Segments []*segment
}

// errNoBackup: the bucket holds no backup of the database.
var errNoBackup = errors.New("no backup")

// maxBeginSize bounds a begin.json read.
const maxBeginSize = 64 << 10

// loadTimeline lists db's backup.
func loadTimeline(ctx context.Context, b *blob.Bucket, db string) (*timeline, error) {
	tl := &timeline{DB: db}
	byID := map[segmentID]*segment{}
	it := b.List(&blob.ListOptions{Prefix: db + "/"})
	for {
		attr, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("list the backup of %q: %w", db, err)
		}
		if attr.IsDir {
			continue
		}
		var seg segmentID
		o, isObject := parseObjectKey(db, attr.Key)
		if isObject {
			seg = o.Segment
			o.Size = attr.Size
		} else {
			rest, _ := strings.CutPrefix(attr.Key, db+"/")
			id, name, _ := strings.Cut(rest, "/")
			var ok bool
			if seg, ok = parseSegmentID(id); !ok || name != beginName {
				continue // not ours
			}
		}
		s := byID[seg]
		if s == nil {
			s = &segment{ID: seg}
			byID[seg] = s
		}
		if isObject {
			s.Objects = append(s.Objects, o)
			continue
		}
		if attr.Size > maxBeginSize {
			return nil, fmt.Errorf("%w: %s is %d bytes, more than a begin record can be", pagewire.ErrCorrupt, attr.Key, attr.Size)
		}
		data, err := b.ReadAll(ctx, attr.Key)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", attr.Key, err)
		}
		if err := json.Unmarshal(data, &s.Begin); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", pagewire.ErrCorrupt, attr.Key, err)
		}
	}
	for _, s := range byID {
		slices.SortFunc(s.Objects, func(a, b object) int {
			if a.Level != b.Level {
				return a.Level - b.Level
			}
			if a.Min != b.Min {
				return cmpTXID(a.Min, b.Min)
			}
			return cmpTXID(a.Max, b.Max)
		})
		tl.Segments = append(tl.Segments, s)
	}
	slices.SortFunc(tl.Segments, func(a, b *segment) int {
		switch {
		case a.ID.less(b.ID):
			return -1
		case b.ID.less(a.ID):
			return 1
		}
		return 0
	})
	tl.fence()
	return tl, nil
}

// fence sets each segment's End: it serves up to the next ones' PrevHead,
// at most.
func (tl *timeline) fence() {
	for i, s := range tl.Segments {
		s.End = s.head()
		for _, later := range tl.Segments[i+1:] {
			s.End = min(s.End, later.Begin.PrevHead)
		}
	}
}

func cmpTXID(a, b pagewire.TXID) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// head is the newest restorable TXID of the backup, and its segment.
func (tl *timeline) head() (pagewire.TXID, *segment) {
	for i := len(tl.Segments) - 1; i >= 0; i-- {
		if s := tl.Segments[i]; s.End > 0 {
			return s.End, s
		}
	}
	return 0, nil
}

// Databases lists the databases the bucket has backups of.
func Databases(ctx context.Context, b *blob.Bucket) ([]string, error) {
	var names []string
	it := b.List(&blob.ListOptions{Delimiter: "/"})
	for {
		attr, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("list the backup: %w", err)
		}
		name := strings.TrimSuffix(attr.Key, "/")
		if attr.IsDir && pagewire.ValidateDBName(name) == nil {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// headPos reads where the backup ends: the position after transaction h
// (the timeline's head, in segment s) and its commit time, from the
// header and trailer of the LTX file that ends at h.
func headPos(ctx context.Context, b *blob.Bucket, s *segment, h pagewire.TXID) (pagewire.Pos, time.Time, error) {
	var o *object
	for i := range s.Objects {
		if s.Objects[i].Max == h {
			o = &s.Objects[i]
		}
	}
	if o == nil {
		return pagewire.Pos{}, time.Time{}, fmt.Errorf("%w: segment %s has no object that ends at transaction %d", pagewire.ErrNotFound, s.ID, h)
	}
	var off int64 // where the last LTX file starts
	if o.Level == 0 {
		r, err := b.NewRangeReader(ctx, o.Key, 0, -1, nil)
		if err != nil {
			return pagewire.Pos{}, time.Time{}, err
		}
		lengths, err := readPackDir(r, o.Size)
		r.Close()
		if err != nil {
			return pagewire.Pos{}, time.Time{}, fmt.Errorf("%s: %w", o.Key, err)
		}
		off = o.Size - lengths[len(lengths)-1]
	}
	hb, err := readRange(ctx, b, o.Key, off, ltx.HeaderSize)
	if err != nil {
		return pagewire.Pos{}, time.Time{}, err
	}
	tb, err := readRange(ctx, b, o.Key, o.Size-ltx.TrailerSize, ltx.TrailerSize)
	if err != nil {
		return pagewire.Pos{}, time.Time{}, err
	}
	var hdr ltx.Header
	var tr ltx.Trailer
	if err := hdr.UnmarshalBinary(hb); err != nil {
		return pagewire.Pos{}, time.Time{}, fmt.Errorf("%w: %s: LTX header: %v", pagewire.ErrCorrupt, o.Key, err)
	}
	if err := tr.UnmarshalBinary(tb); err != nil {
		return pagewire.Pos{}, time.Time{}, fmt.Errorf("%w: %s: LTX trailer: %v", pagewire.ErrCorrupt, o.Key, err)
	}
	if err := hdr.Validate(); err != nil || pagewire.TXID(hdr.MaxTXID) != h {
		return pagewire.Pos{}, time.Time{}, fmt.Errorf("%w: %s: its last LTX file does not end at transaction %d", pagewire.ErrCorrupt, o.Key, h)
	}
	pos := pagewire.Pos{TXID: h, Checksum: pagewireChecksum(tr.PostApplyChecksum, hdr.PageSize, hdr.Commit)}
	return pos, time.UnixMilli(hdr.Timestamp).UTC(), nil
}

// readRange reads n bytes of key from off.
func readRange(ctx context.Context, b *blob.Bucket, key string, off, n int64) ([]byte, error) {
	if off < 0 {
		return nil, fmt.Errorf("%w: %s is too small", pagewire.ErrCorrupt, key)
	}
	r, err := b.NewRangeReader(ctx, key, off, n, nil)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	return buf, nil
}

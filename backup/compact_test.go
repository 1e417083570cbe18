package backup

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"gocloud.dev/blob"

	"github.com/pagewire/pagewire"
)

// testLevels are short, so that a history of two minutes has windows at
// every level.
var testLevels = []time.Duration{10 * time.Second, 30 * time.Second, time.Minute}

// commitSome makes n transactions, among them shrinks and regrowths
// without writes, in and across packs.
func (h *history) commitSome(n int) {
	for range n {
		switch len(h.txns) % 9 {
		case 4:
			h.commitResize(max(2, len(h.pages)-5), 0)
		case 5:
			h.commitResize(len(h.pages)+6, 1)
		case 7:
			h.commitResize(max(1, len(h.pages)-3))
		default:
			h.commit()
		}
	}
}

// snapshotTXID is where the second segment's snapshot is taken.
const snapshotTXID = 90

// backUpHistory builds a backup of 121 transactions in two segments, as
// TestRestoreEveryPoint does, but with shrinks and regrowths, packs of 5
// in the second segment and a snapshot there at snapshotTXID.
func backUpHistory(t *testing.T, b *blob.Bucket) *history {
	h := newHistory(11)
	backUpTwoSegments(t, b, h, h.commitSome, 5)
	seg2 := segmentID{Epoch: 4}
	putSnapshot(t, b, "db", seg2, h.pagesAt(t, b, snapshotTXID), h.pos[snapshotTXID-1], h.times[snapshotTXID-1])
	return h
}

// newTestBackup makes backUpHistory's backup in a new bucket and returns
// it, its directory, its history, head, and a time an hour past the head,
// when every compaction window has ended.
func newTestBackup(t *testing.T) (*blob.Bucket, string, *history, pagewire.TXID, time.Time) {
	b, dir := openTestBucket(t)
	h := backUpHistory(t, b)
	head := pagewire.TXID(len(h.pos))
	return b, dir, h, head, h.times[head-1].Add(time.Hour)
}

// pagesAt restores x from b and returns its pages.
func (h *history) pagesAt(t *testing.T, b *blob.Bucket, x pagewire.TXID) [][]byte {
	out := filepath.Join(t.TempDir(), "at.db")
	h.restoreTo(t, b, x, out)
	return filePages(t, out)
}

// restoreEach restores every TXID from first to last and checks each
// against the history; it returns how many objects each read.
func restoreEach(t *testing.T, b *blob.Bucket, h *history, first, last pagewire.TXID) map[pagewire.TXID]int {
	t.Helper()
	out := filepath.Join(t.TempDir(), "restored.db")
	objects := map[pagewire.TXID]int{}
	for x := first; x <= last; x++ {
		got := h.restoreTo(t, b, x, out)
		objects[x] = got.Objects
	}
	return objects
}

// bucketKeys lists every key in b.
func bucketKeys(t *testing.T, b *blob.Bucket) []string {
	t.Helper()
	var keys []string
	it := b.List(nil)
	for {
		attr, err := it.Next(context.Background())
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, attr.Key)
	}
	return keys
}

func TestCompact(t *testing.T) {
	ctx := context.Background()
	b, _, h, head, now := newTestBackup(t)
	before := restoreEach(t, b, h, 1, head)

	st, err := Compact(ctx, b, "db", testLevels, now)
	if err != nil {
		t.Fatal(err)
	}
	if st.Objects == 0 || st.Bytes == 0 || st.Existing != 0 {
		t.Fatalf("compact: %+v, want objects written", st)
	}
	tl, err := loadTimeline(ctx, b, "db")
	if err != nil {
		t.Fatal(err)
	}
	levels := map[int]int{}
	for _, s := range tl.Segments {
		for _, o := range s.Objects {
			levels[o.Level]++
			if o.Level > 0 && o.Max > s.End {
				t.Errorf("%s: compacted past the segment's end, %d", o.Key, s.End)
			}
		}
	}
	for n := 1; n <= len(testLevels); n++ {
		if levels[n] == 0 {
			t.Errorf("no level %d objects: %v", n, levels)
		}
	}

	after := restoreEach(t, b, h, 1, head)
	var fewer int
	for x, n := range after {
		if n > before[x] {
			t.Errorf("restore to %d reads %d objects, %d before compaction", x, n, before[x])
		}
		if n < before[x] {
			fewer++
		}
	}
	if fewer < int(head)/2 || after[head] >= before[head] || after[snapshotTXID-1] >= before[snapshotTXID-1] {
		t.Errorf("compaction spared objects for %d of %d restores (head %d -> %d)", fewer, head, before[head], after[head])
	}

	t.Run("Idempotent", func(t *testing.T) {
		keys := bucketKeys(t, b)
		st, err := Compact(ctx, b, "db", testLevels, now)
		if err != nil {
			t.Fatal(err)
		}
		if st != (CompactStats{}) {
			t.Fatalf("a second compact: %+v, want nothing done", st)
		}
		if got := bucketKeys(t, b); !slices.Equal(got, keys) {
			t.Fatalf("a second compact changed the bucket: %d keys, %d before", len(got), len(keys))
		}
	})
}

// TestCompact_Windows: only ended windows are merged, and a later Compact
// merges the rest.
func TestCompact_Windows(t *testing.T) {
	ctx := context.Background()
	b, _, h, head, _ := newTestBackup(t)
	mid := h.times[40]
	if _, err := Compact(ctx, b, "db", testLevels, mid); err != nil {
		t.Fatal(err)
	}
	tl, err := loadTimeline(ctx, b, "db")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range tl.Segments {
		for _, o := range s.Objects {
			if d := testLevels[max(o.Level, 1)-1]; o.Level > 0 && o.Time.Truncate(d).Add(d).After(mid) {
				t.Errorf("%s: compacted a window that ends after %s", o.Key, mid)
			}
		}
	}
	if _, err := Compact(ctx, b, "db", testLevels, h.times[head-1].Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	restoreEach(t, b, h, 1, head)
}

// TestCompact_Concurrent: two compactors at once write each merge once
// between them.
func TestCompact_Concurrent(t *testing.T) {
	ctx := context.Background()
	b, _, h, head, now := newTestBackup(t)
	var wg sync.WaitGroup
	stats := make([]CompactStats, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() { stats[i], errs[i] = Compact(ctx, b, "db", testLevels, now) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	b2, _ := openTestBucket(t)
	backUpHistory(t, b2)
	alone, err := Compact(ctx, b2, "db", testLevels, now)
	if err != nil {
		t.Fatal(err)
	}
	if got := stats[0].Objects + stats[1].Objects; got != alone.Objects {
		t.Fatalf("two compactors wrote %d objects (%+v), one alone %d", got, stats, alone.Objects)
	}
	restoreEach(t, b, h, 1, head)
}

// TestCompact_CorruptSource: a flipped byte in a pack fails Compact, naming
// the pack, and nothing is written.
func TestCompact_CorruptSource(t *testing.T) {
	ctx := context.Background()
	b, dir := openTestBucket(t)
	h := newHistory(4)
	seg := startBackup(t, b, h)
	h.commitSome(30)
	putPack(t, b, "db", seg, h.txns[:10])
	bad := putPack(t, b, "db", seg, h.txns[10:20])
	putPack(t, b, "db", seg, h.txns[20:])

	path := filepath.Join(dir, filepath.FromSlash(bad))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys := bucketKeys(t, b)
	now := h.times[len(h.times)-1].Add(2 * time.Hour)
	for _, off := range []int{len(data) / 2, len(data) - 3, 40, 12} {
		corrupt := bytes.Clone(data)
		corrupt[off] ^= 0x40
		if err := os.WriteFile(path, corrupt, 0o644); err != nil {
			t.Fatal(err)
		}
		// One window of an hour holds every pack: one merge, which fails.
		_, err := Compact(ctx, b, "db", []time.Duration{time.Hour}, now)
		if err == nil || !strings.Contains(err.Error(), bad) {
			t.Fatalf("byte %d flipped: compact returned %v, want an error naming %s", off, err, bad)
		}
		if got := bucketKeys(t, b); !slices.Equal(got, keys) {
			t.Fatalf("byte %d flipped: compact changed the bucket: %v", off, got)
		}
	}
}

// TestCompact_HostileLevel: a compacted object whose pages do not match
// its checksums, though its file checksum is right, is refused on restore.
func TestCompact_HostileLevel(t *testing.T) {
	ctx := context.Background()
	b, dir, _, _, now := newTestBackup(t)
	if _, err := Compact(ctx, b, "db", testLevels, now); err != nil {
		t.Fatal(err)
	}
	tl, err := loadTimeline(ctx, b, "db")
	if err != nil {
		t.Fatal(err)
	}
	steps, err := tl.plan(snapshotTXID - 1)
	if err != nil {
		t.Fatal(err)
	}
	var victim object
	for _, o := range steps {
		if o.Level > 0 {
			victim = o
		}
	}
	if victim.Key == "" {
		t.Fatalf("no compacted object in the plan: %v", steps)
	}

	// Re-encode it with one page changed: a valid file that lies.
	path := filepath.Join(dir, filepath.FromSlash(victim.Key))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := ltx.NewDecoder(bytes.NewReader(data))
	if err := dec.DecodeHeader(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	enc, _ := ltx.NewEncoder(&out)
	if err := enc.EncodeHeader(dec.Header()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, testPageSize)
	for i := 0; ; i++ {
		var ph ltx.PageHeader
		if err := dec.DecodePage(&ph, buf); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			buf[100] ^= 1
		}
		if err := enc.EncodePage(ltx.PageHeader{Pgno: ph.Pgno}, buf); err != nil {
			t.Fatal(err)
		}
	}
	if err := dec.Close(); err != nil {
		t.Fatal(err)
	}
	enc.SetPostApplyChecksum(dec.Trailer().PostApplyChecksum)
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	_, err = Restore(ctx, b, RestoreOptions{DB: "db", TXID: snapshotTXID - 1, Output: filepath.Join(t.TempDir(), "out.db")})
	if !errors.Is(err, pagewire.ErrCorrupt) || !strings.Contains(err.Error(), victim.Key) {
		t.Fatalf("restore through a lying %s: %v, want ErrCorrupt naming it", victim.Key, err)
	}
}

func TestPrune(t *testing.T) {
	ctx := context.Background()
	b, _, h, head, now := newTestBackup(t)
	if _, err := Compact(ctx, b, "db", testLevels, now); err != nil {
		t.Fatal(err)
	}

	// The retention starts between transactions 110 and 111: its plan
	// goes through a compacted object (97 to 106) whose packs go.
	const from = 110
	cutoff := h.times[from-1].Add(500 * time.Millisecond)
	retention := now.Sub(cutoff)
	keys := len(bucketKeys(t, b))
	st, err := Prune(ctx, b, "db", retention, now)
	if err != nil {
		t.Fatal(err)
	}
	if st.Deleted == 0 || st.Bytes == 0 {
		t.Fatalf("prune: %+v, want objects deleted", st)
	}
	if got := len(bucketKeys(t, b)); got != keys-st.Deleted {
		t.Fatalf("prune said %d deleted, the bucket went from %d keys to %d", st.Deleted, keys, got)
	}

	// Every point of the retention restores, by TXID and by time.
	restoreEach(t, b, h, from, head)
	out := filepath.Join(t.TempDir(), "out.db")
	for _, x := range []pagewire.TXID{from, from + 1, 115, head} {
		at := h.times[x-1].Add(500 * time.Millisecond)
		if x == from {
			at = cutoff
		}
		got, err := Restore(ctx, b, RestoreOptions{DB: "db", Time: at, Output: out})
		if err != nil || got.Pos != h.pos[x-1] {
			t.Fatalf("restore to %s (transaction %d): %v at %s, want %s", at, x, err, got.Pos, h.pos[x-1])
		}
	}

	// What only older points needed is gone: the first segment, begin
	// record and all; the snapshot the retention's plan starts from stays.
	if _, err := Restore(ctx, b, RestoreOptions{DB: "db", TXID: 50, Output: out}); !errors.Is(err, pagewire.ErrNotFound) {
		t.Fatalf("restore to 50, before the retention: %v, want ErrNotFound", err)
	}
	tl, err := loadTimeline(ctx, b, "db")
	if err != nil {
		t.Fatal(err)
	}
	if len(tl.Segments) != 1 || tl.Segments[0].ID != (segmentID{Epoch: 4}) {
		t.Fatalf("segments left: %+v", tl.Segments)
	}
	for _, o := range tl.Segments[0].Objects {
		if o.Max < snapshotTXID {
			t.Errorf("%s kept: no restore from %d needs it", o.Key, from)
		}
	}

	t.Run("Again", func(t *testing.T) {
		if st, err := Prune(ctx, b, "db", retention, now); err != nil || st != (PruneStats{}) {
			t.Fatalf("a second prune: %+v, %v; want nothing deleted", st, err)
		}
	})
	t.Run("Young", func(t *testing.T) {
		if st, err := Prune(ctx, b, "db", 100*time.Hour, now); err != nil || st != (PruneStats{}) {
			t.Fatalf("a retention longer than the backup: %+v, %v; want nothing deleted", st, err)
		}
	})
}

// TestPrune_Refuses: a backup that cannot restore a point of the
// retention, or its head, is left whole.
func TestPrune_Refuses(t *testing.T) {
	ctx := context.Background()
	for name, tc := range map[string]struct {
		lose func(tl *timeline) string // the key of an object to remove
		from pagewire.TXID
	}{
		"a pack after the retention's start": {from: 100, lose: func(tl *timeline) string {
			return objectHolding(t, tl, 110, 0)
		}},
		"the snapshot the retention starts from": {from: 30, lose: func(tl *timeline) string {
			return objectHolding(t, tl, 1, levelSnap)
		}},
	} {
		t.Run(name, func(t *testing.T) {
			b, _ := openTestBucket(t)
			h := backUpHistory(t, b)
			tl, err := loadTimeline(ctx, b, "db")
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Delete(ctx, tc.lose(tl)); err != nil {
				t.Fatal(err)
			}
			keys := bucketKeys(t, b)
			now := h.times[len(h.times)-1].Add(time.Hour)
			st, err := Prune(ctx, b, "db", now.Sub(h.times[tc.from-1]), now)
			if err == nil || !strings.Contains(err.Error(), "nothing deleted") {
				t.Fatalf("prune: %+v, %v; want a refusal", st, err)
			}
			if got := bucketKeys(t, b); !slices.Equal(got, keys) {
				t.Fatalf("a refused prune changed the bucket: %d keys, %d before", len(got), len(keys))
			}
		})
	}
}

// objectHolding is the key of tl's object at level that holds x.
func objectHolding(t *testing.T, tl *timeline, x pagewire.TXID, level int) string {
	for _, s := range tl.Segments {
		for _, o := range s.Objects {
			if o.Level == level && o.Min <= x && x <= o.Max && x <= s.End {
				return o.Key
			}
		}
	}
	t.Fatalf("no object at level %d holds %d", level, x)
	return ""
}

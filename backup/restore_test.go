package backup

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/superfly/ltx"
	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"

	"github.com/pagewire/pagewire"
)

const testPageSize = 4096

// history is a database's evolution, kept in memory: the pages and the
// position after every transaction.
type history struct {
	pages [][]byte // current pages, page i+1 at i
	pos   []pagewire.Pos
	times []time.Time
	txns  []pagewire.Txn // txns[i] has TXID i+2 (TXID 1 is the first state)
	rnd   *rand.Rand
	t0    time.Time
}

func checksumOf(pages [][]byte) uint64 {
	var sum uint64
	for i, p := range pages {
		sum ^= uint64(ltx.ChecksumPage(uint32(i+1), p))
	}
	return sum | uint64(ltx.ChecksumFlag)
}

func newHistory(seed uint64) *history {
	h := &history{rnd: rand.New(rand.NewPCG(seed, 1)), t0: time.UnixMilli(1_700_000_000_000)}
	for range 8 {
		h.pages = append(h.pages, h.page())
	}
	h.pos = []pagewire.Pos{{TXID: 1, Checksum: checksumOf(h.pages)}}
	h.times = []time.Time{h.t0}
	return h
}

func (h *history) page() []byte {
	p := make([]byte, testPageSize)
	for i := 0; i < len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], h.rnd.Uint64()&0x0f0f0f0f00000000) // compressible
	}
	return p
}

// next is the header of the next transaction, which leaves count pages.
func (h *history) next(count int) pagewire.Txn {
	prev := h.pos[len(h.pos)-1]
	return pagewire.Txn{TXID: prev.TXID + 1, PreChecksum: prev.Checksum, PageSize: testPageSize, PageCount: uint32(count), CommitTime: h.t0.Add(time.Duration(len(h.pos)) * time.Second)}
}

// record adds t, made of h's pages as they now are, to the history.
func (h *history) record(t pagewire.Txn) pagewire.Txn {
	t.PostChecksum = checksumOf(h.pages)
	h.pos = append(h.pos, pagewire.Pos{TXID: t.TXID, Checksum: t.PostChecksum})
	h.times = append(h.times, t.CommitTime)
	h.txns = append(h.txns, t)
	return t
}

// commit makes the next transaction: some pages change, the database may
// grow or shrink.
func (h *history) commit() pagewire.Txn {
	count := len(h.pages)
	grownFrom := count // pages from here on are new: written too
	switch h.rnd.IntN(6) {
	case 0:
		count += 1 + h.rnd.IntN(4)
	case 1:
		count = max(1, count-1-h.rnd.IntN(3))
	}
	for len(h.pages) < count {
		h.pages = append(h.pages, h.page())
	}
	h.pages = h.pages[:count]
	changed := map[int]bool{}
	for range 1 + h.rnd.IntN(4) {
		changed[h.rnd.IntN(count)] = true
	}
	t := h.next(count)
	for i := range count {
		if changed[i] {
			h.pages[i] = h.page()
		}
	}
	for i := range count {
		if changed[i] || i >= grownFrom {
			t.Pages = append(t.Pages, pagewire.Page{Pgno: uint32(i + 1), Data: h.pages[i]})
		}
	}
	return h.record(t)
}

// commitResize makes a transaction that sets the database to count pages
// and writes the pages in write (0-based, ascending) with new content; the
// pages it adds past the old size and does not name in write it writes as
// zeros, as pagewire's engine requires of every transaction (a
// transaction adds only pages it writes), as after a VACUUM-like shrink
// and regrowth.
func (h *history) commitResize(count int, write ...int) pagewire.Txn {
	old := min(count, len(h.pages))
	h.pages = h.pages[:old]
	for len(h.pages) < count {
		h.pages = append(h.pages, make([]byte, testPageSize))
	}
	t := h.next(count)
	for i := range count {
		switch {
		case slices.Contains(write, i):
			h.pages[i] = h.page()
		case i < old:
			continue
		}
		t.Pages = append(t.Pages, pagewire.Page{Pgno: uint32(i + 1), Data: h.pages[i]})
	}
	return h.record(t)
}

// restoreTo restores b to x into out and checks it against the history,
// by its position and by the checksum of the file written.
func (h *history) restoreTo(t testing.TB, b *blob.Bucket, x pagewire.TXID, out string) Restored {
	t.Helper()
	got, err := Restore(context.Background(), b, RestoreOptions{DB: "db", TXID: x, Output: out})
	if err != nil {
		t.Fatalf("restore to %d: %v", x, err)
	}
	want := h.pos[x-1]
	if got.Pos != want {
		t.Fatalf("restore to %d: at %s, want %s", x, got.Pos, want)
	}
	if sum := fileChecksum(t, out); sum != want.Checksum {
		t.Fatalf("restore to %d: the file's checksum is %016x, want %016x", x, sum, want.Checksum)
	}
	return got
}

// TestRestoreRegrowth: a transaction that grows the database back after
// one that shrank it, without writing the pages it adds, restores them as
// zeros, as its checksum says, not as the pages the shrink dropped.
func TestRestoreRegrowth(t *testing.T) {
	b, _ := openTestBucket(t)
	h := newHistory(6)
	seg := startBackup(t, b, h)
	h.commitResize(3, 0)
	h.commitResize(10, 1)
	h.commitResize(2)
	h.commitResize(9)
	putPack(t, b, "db", seg, h.txns[:1])
	putPack(t, b, "db", seg, h.txns[1:])
	out := filepath.Join(t.TempDir(), "restored.db")
	for x := pagewire.TXID(1); x <= 5; x++ {
		h.restoreTo(t, b, x, out)
	}
}

func openTestBucket(t *testing.T) (*blob.Bucket, string) {
	dir := t.TempDir()
	b, err := fileblob.OpenBucket(dir, &fileblob.Options{Metadata: fileblob.MetadataDontWrite})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, dir
}

func putBegin(t *testing.T, b *blob.Bucket, db string, seg segmentID, prev pagewire.TXID) {
	data, _ := json.Marshal(Begin{PrevHead: prev, Node: "test", Time: time.Now()})
	if err := b.WriteAll(context.Background(), beginKey(db, seg), data, nil); err != nil {
		t.Fatal(err)
	}
}

func putSnapshot(t *testing.T, b *blob.Bucket, db string, seg segmentID, pages [][]byte, pos pagewire.Pos, at time.Time) {
	var img, out bytes.Buffer
	for _, p := range pages {
		img.Write(p)
	}
	if err := encodeSnapshot(&out, &img, pos, testPageSize, uint32(len(pages)), at); err != nil {
		t.Fatal(err)
	}
	if err := b.WriteAll(context.Background(), objectKey(db, seg, levelSnap, 1, pos.TXID, at), out.Bytes(), nil); err != nil {
		t.Fatal(err)
	}
}

// putPack uploads txns as one pack and returns its key.
func putPack(t *testing.T, b *blob.Bucket, db string, seg segmentID, txns []pagewire.Txn) string {
	pw, err := newPackWriter(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer pw.close()
	for _, tx := range txns {
		// Large transactions arrive in parts: send every other one as two.
		if len(tx.Pages) > 1 && tx.TXID%2 == 0 {
			first, second := tx, tx
			first.Pages, second.Pages = tx.Pages[:1], tx.Pages[1:]
			if err := pw.add(first, true); err != nil {
				t.Fatal(err)
			}
			tx = second
		}
		if err := pw.add(tx, false); err != nil {
			t.Fatal(err)
		}
	}
	r, n := pw.reader()
	var buf bytes.Buffer
	if m, err := buf.ReadFrom(r); err != nil || m != n {
		t.Fatalf("pack: read %d of %d bytes: %v", m, n, err)
	}
	key := objectKey(db, seg, 0, txns[0].TXID, txns[len(txns)-1].TXID, txns[len(txns)-1].CommitTime)
	if err := b.WriteAll(context.Background(), key, buf.Bytes(), nil); err != nil {
		t.Fatal(err)
	}
	return key
}

// startBackup begins segment 1 of a backup of h with a snapshot of its
// first state.
func startBackup(t *testing.T, b *blob.Bucket, h *history) segmentID {
	seg := segmentID{Epoch: 1}
	putBegin(t, b, "db", seg, 0)
	putSnapshot(t, b, "db", seg, h.pages, h.pos[0], h.t0)
	return seg
}

// fileChecksum is pagewire's checksum of a database file.
func fileChecksum(t testing.TB, path string) uint64 { return checksumOf(filePages(t, path)) }

// filePages reads a database file's pages.
func filePages(t testing.TB, path string) [][]byte {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pages [][]byte
	for i := 0; i < len(data); i += testPageSize {
		pages = append(pages, data[i:i+testPageSize])
	}
	return pages
}

// backUpTwoSegments backs up h's first state and 120 transactions, which
// commit makes n at a time: 60 in a segment, as packs of 7, and 60 in the
// next, as packs of per; the first segment's deposed primary uploads a
// transaction 62 of another history, which must never be read.
func backUpTwoSegments(t *testing.T, b *blob.Bucket, h *history, commit func(n int), per int) {
	seg1, seg2 := segmentID{Epoch: 3}, segmentID{Epoch: 4}
	putBegin(t, b, "db", seg1, 0)
	putSnapshot(t, b, "db", seg1, h.pages, h.pos[0], h.t0)
	commit(60)
	for i := 0; i < 60; i += 7 {
		putPack(t, b, "db", seg1, h.txns[i:min(i+7, 60)])
	}
	// The next primary continues at 61.
	putBegin(t, b, "db", seg2, 61)
	fork := newHistory(99)
	for range 61 {
		fork.commit()
	}
	putPack(t, b, "db", seg1, fork.txns[60:61])
	commit(60)
	for i := 60; i < 120; i += per {
		putPack(t, b, "db", seg2, h.txns[i:min(i+per, 120)])
	}
}

// TestRestoreEveryPoint backs a history up as a snapshot and packs across
// two segments, a deposed primary's later uploads among them, and
// restores it to random TXIDs: each restore must equal the history at
// that TXID, by its position and by the checksum of the file written.
func TestRestoreEveryPoint(t *testing.T) {
	ctx := context.Background()
	b, _ := openTestBucket(t)
	h := newHistory(1)
	backUpTwoSegments(t, b, h, func(n int) {
		for range n {
			h.commit()
		}
	}, 11)

	out := filepath.Join(t.TempDir(), "restored.db")
	rnd := rand.New(rand.NewPCG(7, 7))
	for n := range 40 {
		x := pagewire.TXID(1 + rnd.IntN(121))
		if n == 0 {
			x = 121
		}
		h.restoreTo(t, b, x, out)
	}

	// The newest, by default; and by time.
	got, err := Restore(ctx, b, RestoreOptions{DB: "db", Output: out})
	if err != nil || got.Pos != h.pos[120] {
		t.Fatalf("restore the newest: %v at %s, want %s", err, got.Pos, h.pos[120])
	}
	for _, x := range []pagewire.TXID{1, 2, 30, 61, 62, 100, 121} {
		got, err := Restore(ctx, b, RestoreOptions{DB: "db", Time: h.times[x-1].Add(500 * time.Millisecond), Output: out})
		if err != nil || got.Pos != h.pos[x-1] {
			t.Fatalf("restore to the time of %d: %v at %s, want %s", x, err, got.Pos, h.pos[x-1])
		}
	}

	// Past the newest: refused.
	if _, err := Restore(ctx, b, RestoreOptions{DB: "db", TXID: 122, Output: out}); !errors.Is(err, pagewire.ErrNotFound) {
		t.Fatalf("restore past the newest: %v, want ErrNotFound", err)
	}

	points, err := List(ctx, b, "db")
	if err != nil {
		t.Fatal(err)
	}
	if len(points) != 3 || points[0].Kind != "snapshot" || points[1].Max != 61 || points[2].Min != 62 || points[2].Max != 121 {
		t.Fatalf("restore points: %+v", points)
	}
}

// TestRestoreRefusesCorruptObject flips one byte of a pack: a restore
// through it fails, names the object, and leaves the output file as it was.
func TestRestoreRefusesCorruptObject(t *testing.T) {
	ctx := context.Background()
	b, dir := openTestBucket(t)
	h := newHistory(2)
	seg := startBackup(t, b, h)
	for range 20 {
		h.commit()
	}
	putPack(t, b, "db", seg, h.txns[:10])
	bad := putPack(t, b, "db", seg, h.txns[10:])

	path := filepath.Join(dir, filepath.FromSlash(bad))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int{len(data) / 2, len(data) - 3, 40} {
		corrupt := bytes.Clone(data)
		corrupt[off] ^= 0x40
		if err := os.WriteFile(path, corrupt, 0o644); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "out.db")
		if err := os.WriteFile(out, []byte("before"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Restore(ctx, b, RestoreOptions{DB: "db", Output: out})
		if err == nil || !strings.Contains(err.Error(), bad) {
			t.Fatalf("byte %d flipped: restore returned %v, want an error naming %s", off, err, bad)
		}
		if got, _ := os.ReadFile(out); string(got) != "before" {
			t.Fatalf("byte %d flipped: the output file changed", off)
		}
		// Up to the intact pack, the restore still works.
		if got, err := Restore(ctx, b, RestoreOptions{DB: "db", TXID: 11, Output: out}); err != nil || got.Pos != h.pos[10] {
			t.Fatalf("restore before the corrupt object: %v at %s", err, got.Pos)
		}
	}
}

// TestHostileObjects: counts and lengths are bounded by the object's size
// before anything is allocated for them.
func TestHostileObjects(t *testing.T) {
	dir := func(n uint32, lengths ...uint64) []byte {
		b := append([]byte(packMagic), 0, 0, 0, 0)
		binary.BigEndian.PutUint32(b[len(packMagic):], n)
		for _, l := range lengths {
			b = binary.BigEndian.AppendUint64(b, l)
		}
		return b
	}
	for name, data := range map[string][]byte{
		"bad magic":       []byte("PWPACK99\x00\x00\x00\x01"),
		"no files":        dir(0),
		"huge count":      dir(0xffffffff),
		"huge length":     dir(1, 1<<62),
		"lengths too few": append(dir(1, 200), make([]byte, 100)...),
		"short":           []byte("PWP"),
	} {
		if _, err := readPackDir(bytes.NewReader(data), int64(len(data))); !errors.Is(err, pagewire.ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}

	// An LTX page frame that claims 2 GiB is refused before it is read.
	var out bytes.Buffer
	h := newHistory(3)
	if err := encodeSnapshot(&out, bytes.NewReader(bytes.Join(h.pages, nil)), h.pos[0], testPageSize, uint32(len(h.pages)), h.t0); err != nil {
		t.Fatal(err)
	}
	b := out.Bytes()
	binary.BigEndian.PutUint32(b[ltx.HeaderSize+ltx.PageHeaderSize:], 1<<31)
	f, err := os.CreateTemp(t.TempDir(), "img")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := newImage(f).applyLTX(bytes.NewReader(b)); !errors.Is(err, pagewire.ErrCorrupt) || !strings.Contains(err.Error(), "frame") {
		t.Fatalf("a 2 GiB page frame: %v, want ErrCorrupt about the frame", err)
	}
}

// TestObjectKeys: names round-trip, and strangers' keys are not objects.
func TestObjectKeys(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_123).UTC()
	for _, level := range []int{levelSnap, 0, 1, 3} {
		min := pagewire.TXID(5)
		if level == levelSnap {
			min = 1
		}
		key := objectKey("app.db", segmentID{Epoch: 7, Seq: 2}, level, min, 900, at)
		o, ok := parseObjectKey("app.db", key)
		if !ok || o.Level != level || o.Min != min || o.Max != 900 || !o.Time.Equal(at) || o.Segment != (segmentID{Epoch: 7, Seq: 2}) {
			t.Fatalf("%s parsed as %+v, %v", key, o, ok)
		}
	}
	for _, key := range []string{
		"app.db/0000000000000007-00000002/begin.json",
		"app.db/0000000000000007-00000002/l9/0000000000000005-0000000000000009-1700000000123.ltx",
		"app.db/0000000000000007-00000002/snap/0000000000000002-0000000000000009-1700000000123.ltx",
		"app.db/0000000000000007-00000002/l0/0000000000000009-0000000000000005-1700000000123.pack",
		"app.db/zz/l0/0000000000000005-0000000000000009-1700000000123.pack",
		"other.db/0000000000000007-00000002/l0/0000000000000005-0000000000000009-1700000000123.pack",
	} {
		if o, ok := parseObjectKey("app.db", key); ok {
			t.Errorf("%s parsed as %+v", key, o)
		}
	}
}

// TestRestoreRefusesGrowthWithoutPages: a transaction that claims a
// database of a billion pages while holding one is refused, naming its
// object, before the restore allocates anything for the pages it claims.
func TestRestoreRefusesGrowthWithoutPages(t *testing.T) {
	b, _ := openTestBucket(t)
	h := newHistory(4)
	seg := startBackup(t, b, h)
	huge := h.next(1 << 30)
	huge.PostChecksum = h.pos[0].Checksum
	huge.Pages = []pagewire.Page{{Pgno: 1, Data: h.page()}}
	key := putPack(t, b, "db", seg, []pagewire.Txn{huge})
	_, err := Restore(context.Background(), b, RestoreOptions{DB: "db", TXID: huge.TXID, Output: filepath.Join(t.TempDir(), "out.db")})
	if !errors.Is(err, pagewire.ErrCorrupt) || !strings.Contains(err.Error(), key) {
		t.Fatalf("restore through a transaction that claims pages it lacks: %v, want ErrCorrupt naming %s", err, key)
	}
}

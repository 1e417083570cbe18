package backup

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/pagewire/pagewire"
)

// FuzzApplyPack feeds arbitrary bytes to a restore as a pack object, after
// a valid snapshot: whatever they are, the restore returns an error or
// ends at a checksum it verified, and never allocates what the bytes claim
// beyond the object's size.
func FuzzApplyPack(f *testing.F) {
	h := newHistory(5)
	var snap bytes.Buffer
	if err := encodeSnapshot(&snap, bytes.NewReader(bytes.Join(h.pages, nil)), h.pos[0], testPageSize, uint32(len(h.pages)), h.t0); err != nil {
		f.Fatal(err)
	}
	for range 4 {
		h.commit()
	}
	pw, err := newPackWriter(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	for _, t := range h.txns {
		if err := pw.add(t, false); err != nil {
			f.Fatal(err)
		}
	}
	r, _ := pw.reader()
	var pack bytes.Buffer
	if _, err := pack.ReadFrom(r); err != nil {
		f.Fatal(err)
	}
	pw.close()
	f.Add(pack.Bytes())
	f.Add(pack.Bytes()[:len(pack.Bytes())/2])
	f.Add([]byte(packMagic + "\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x74"))

	f.Fuzz(func(t *testing.T, data []byte) {
		b, _ := openTestBucket(t)
		ctx := context.Background()
		seg := segmentID{Epoch: 1}
		snapKey := objectKey("db", seg, levelSnap, 1, 1, h.t0)
		packKey := objectKey("db", seg, 0, 2, 5, h.times[4])
		if err := b.WriteAll(ctx, snapKey, snap.Bytes(), nil); err != nil {
			t.Fatal(err)
		}
		if err := b.WriteAll(ctx, packKey, data, nil); err != nil {
			t.Fatal(err)
		}
		out := t.TempDir() + "/out.db"
		got, err := Restore(ctx, b, RestoreOptions{DB: "db", TXID: 5, Output: out})
		if err != nil {
			if _, serr := os.Stat(out); serr == nil {
				t.Fatalf("a failed restore (%v) left its output", err)
			}
			return
		}
		// A pack that restores must be the history's, by its checksums.
		if got.Pos != (pagewire.Pos{TXID: 5, Checksum: h.pos[4].Checksum}) || fileChecksum(t, out) != h.pos[4].Checksum {
			t.Fatalf("restored %s from fuzzed bytes, want %s", got.Pos, h.pos[4])
		}
	})
}

package engine

import (
	"testing"

	"github.com/pagewire/pagewire"
)

// FuzzDecodeMeta: any bytes decode without panicking; what decodes
// round-trips.
func FuzzDecodeMeta(f *testing.F) {
	f.Add(meta{CommitFrame: 3, Salt1: 1, PageSize: 4096}.encode())
	f.Add([]byte("PWMETA01"))
	f.Add(meta{Pos: pagewire.Pos{TXID: 9, Checksum: 1<<63 | 5}, Salt1: 2, Salt2: 3, CommitFrame: 4, PageSize: 4096,
		Prev: walMark{Salt1: 1, Salt2: 7, Frame: 12, Pos: pagewire.Pos{TXID: 8, Checksum: 1<<63 | 6}}}.encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		if got, _ := decodeMeta(m.encode()); got != m {
			t.Fatalf("round trip: %+v != %+v", got, m)
		}
	})
}

func FuzzDecodePageSums(f *testing.F) {
	f.Add(pageSums{Pos: pagewire.Pos{TXID: 2, Checksum: 7}, Pages: []uint64{1, 2}}.encode())
	f.Add([]byte(pageSumsMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodePageSums(b)
		if err != nil {
			return
		}
		if got, err := decodePageSums(p.encode()); err != nil || got.Pos != p.Pos || len(got.Pages) != len(p.Pages) {
			t.Fatalf("round trip: %+v, %v", got, err)
		}
	})
}

// FuzzStore_WALWrites: arbitrary writes to a -wal never panic, never make
// the TXID go backwards, and leave a position that a restart agrees with.
func FuzzStore_WALWrites(f *testing.F) {
	f.Add(uint16(0), []byte("x"), uint16(32), []byte("yy"))
	f.Fuzz(func(t *testing.T, off1 uint16, data1 []byte, off2 uint16, data2 []byte) {
		dir := t.TempDir()
		s, err := OpenStore(storeConfig(dir))
		if err != nil {
			t.Fatal(err)
		}
		s.Create("app.db", App)
		wal, err := s.Create("app.db-wal", App)
		if err != nil {
			t.Fatal(err)
		}
		w := &walBuilder{t: t, s: s, id: wal.ID, pageSize: defaultPageSize}
		w.restart(5)
		w.frame(2, testPage(1), 2)
		s.WriteAt(wal.ID, data1, int64(off1), App)
		s.WriteAt(wal.ID, data2, int64(off2), App)
		di, _ := s.Database("app.db")
		if di.Pos.TXID < 2 {
			t.Fatalf("TXID went back to %d", di.Pos.TXID)
		}
		// Whatever was accepted, the position matches the content.
		if r, err := s.Verify("app.db", false); err != nil || !r.OK() {
			t.Fatalf("verify: %v, %v", r, err)
		}
		s.Close()
		s2, err := OpenStore(storeConfig(dir))
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		di2, _ := s2.Database("app.db")
		if di2.Pos != di.Pos {
			t.Fatalf("after restart %v, before %v", di2.Pos, di.Pos)
		}
	})
}

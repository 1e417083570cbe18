package replicator

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/pagewire/pagewire"
)

// pageState models what the storage server tracks per commit: one value per
// page of the database, pages beyond a commit's size dropped, pages a commit
// grows the database by and does not write zero.
type pageState []byte

func (s pageState) apply(pageCount uint32, pages []pagewire.Page) pageState {
	s = slices.Clone(s)
	for uint32(len(s)) < pageCount {
		s = append(s, 0)
	}
	for _, p := range pages {
		if p.Pgno <= pageCount {
			s[p.Pgno-1] = p.Data[0]
		}
	}
	return s[:pageCount]
}

// randomTxns makes n transactions of random sizes (growing, shrinking)
// writing random pages, some beyond their own size.
func randomTxns(r *rand.Rand, n int) []pagewire.Txn {
	var txns []pagewire.Txn
	for i := range n {
		t := pagewire.Txn{TXID: pagewire.TXID(i + 2), PageCount: uint32(1 + r.IntN(12))}
		seen := map[uint32]bool{}
		for range 1 + r.IntN(4) {
			pgno := uint32(1 + r.IntN(14))
			if !seen[pgno] {
				seen[pgno] = true
				t.Pages = append(t.Pages, pagewire.Page{Pgno: pgno, Data: []byte{byte(1 + r.IntN(250))}})
			}
		}
		slices.SortFunc(t.Pages, func(a, b pagewire.Page) int { return int(a.Pgno) - int(b.Pgno) })
		txns = append(txns, t)
	}
	return txns
}

// Applying the groups one commit each ends in the state that applying every
// transaction one by one does, and after each group in the state the
// primary had after that group's last transaction.
func TestCoalesce_SameStateAsOneByOne(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 2000 {
		start := pageState{9, 8, 7, 6, 5}[:1+r.IntN(5)]
		txns := randomTxns(r, 1+r.IntN(8))
		prevCount := uint32(len(start))
		if round%3 == 0 {
			prevCount = 0 // unknown
		}
		var want []pageState // after each transaction
		s := start
		for _, tx := range txns {
			s = s.apply(tx.PageCount, tx.Pages)
			want = append(want, s)
		}
		got := start
		applied := 0
		for _, g := range coalesce(prevCount, txns) {
			if g.txns[0].TXID != txns[applied].TXID {
				t.Fatalf("round %d: a group starts at transaction %d, want %d", round, g.txns[0].TXID, txns[applied].TXID)
			}
			if !slices.IsSortedFunc(g.pages, func(a, b pagewire.Page) int { return int(a.Pgno) - int(b.Pgno) }) {
				t.Fatalf("round %d: group pages not ascending", round)
			}
			got = got.apply(g.pageCount, g.pages)
			applied += len(g.txns)
			if !slices.Equal(got, want[applied-1]) {
				t.Fatalf("round %d: after transactions up to %d got %v, want %v (start %v, txns %+v)", round, g.txns[len(g.txns)-1].TXID, got, want[applied-1], start, txns)
			}
		}
		if applied != len(txns) {
			t.Fatalf("round %d: groups hold %d transactions, want %d", round, applied, len(txns))
		}
	}
}

func TestCoalesce_GroupsGrowingTransactions(t *testing.T) {
	page := func(pgno uint32, v byte) pagewire.Page { return pagewire.Page{Pgno: pgno, Data: []byte{v}} }
	txns := []pagewire.Txn{
		{TXID: 2, PageCount: 3, Pages: []pagewire.Page{page(2, 1), page(3, 1)}},
		{TXID: 3, PageCount: 3, Pages: []pagewire.Page{page(2, 2)}},
		{TXID: 4, PageCount: 4, Pages: []pagewire.Page{page(2, 3), page(4, 3)}},
		{TXID: 5, PageCount: 2, Pages: []pagewire.Page{page(1, 4)}}, // shrinks: ends the group
		{TXID: 6, PageCount: 3, Pages: []pagewire.Page{page(3, 5)}},
	}
	groups := coalesce(3, txns)
	if len(groups) != 2 || len(groups[0].txns) != 4 || len(groups[1].txns) != 1 {
		t.Fatalf("groups of %d, want 4 then 1 transactions", len(groups))
	}
	want := []pagewire.Page{page(1, 4), page(2, 3)}
	if g := groups[0]; g.pageCount != 2 || !slices.EqualFunc(g.pages, want, func(a, b pagewire.Page) bool { return a.Pgno == b.Pgno && a.Data[0] == b.Data[0] }) {
		t.Fatalf("first group: size %d pages %v, want size 2 pages %v", g.pageCount, g.pages, want)
	}
}

// Real SQLite transactions applied coalesced make the database that
// applying them one by one does.
func TestCoalesce_RealTransactions(t *testing.T) {
	dir := t.TempDir()
	src := newSourceDB(t, dir, 4096, "PRAGMA auto_vacuum=FULL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);")
	one := src.newReplicaFile(dir, "one.db")
	grouped := src.newReplicaFile(dir, "grouped.db")
	var txns []pagewire.Txn
	add := func(sql string) {
		tx := src.exec(sql)
		txns = append(txns, pagewire.Txn{TXID: pagewire.TXID(len(txns) + 2), PageCount: tx.pageCount, Pages: tx.pages})
	}
	for range 5 {
		add("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 20) INSERT INTO t(v) SELECT hex(randomblob(1500)) FROM n;")
	}
	add("DELETE FROM t WHERE id % 2 = 0;") // auto_vacuum: the file shrinks
	add("UPDATE t SET v = 'x' WHERE id < 10;")
	add("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 30) INSERT INTO t(v) SELECT hex(randomblob(3000)) FROM n;")
	add("DELETE FROM t WHERE id > 40;")
	ctx := context.Background()
	w1 := openWriter(t, one)
	for _, tx := range txns {
		if err := w1.Apply(ctx, tx.PageCount, tx.Pages, false); err != nil {
			t.Fatal(err)
		}
	}
	w2 := openWriter(t, grouped)
	groups := coalesce(0, txns)
	if len(groups) >= len(txns) {
		t.Fatalf("%d groups for %d transactions: nothing coalesced", len(groups), len(txns))
	}
	for _, g := range groups {
		if err := w2.Apply(ctx, g.pageCount, g.pages, false); err != nil {
			t.Fatal(err)
		}
	}
	py := startPy(t)
	py.open("one", one)
	py.open("grouped", grouped)
	py.open("src", src.path)
	py.integrity("grouped")
	if a, b, c := py.digest("one"), py.digest("grouped"), py.digest("src"); a != b || b != c {
		t.Fatalf("digests: one by one %s, coalesced %s, source %s", a, b, c)
	}
}

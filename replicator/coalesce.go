package replicator

import (
	"cmp"
	"slices"

	"github.com/pagewire/pagewire"
)

// A replica applies transactions that arrive together as one WAL commit
// holding the newest version of each page they changed: a page that the
// primary's transactions rewrote many times is written once, and the
// replica's storage server handles one commit instead of many. Readers on
// the replica move from the first transaction's predecessor straight to the
// last one's state, which is a state the primary had.

// txnGroup is transactions applied as one commit.
type txnGroup struct {
	txns      []pagewire.Txn
	pageCount uint32          // the database size after the last
	pages     []pagewire.Page // the newest version of each changed page, ascending
}

// coalesce groups consecutive transactions; prevCount is the database's
// size before the first (0 if unknown). Within a group the size never
// shrinks but at its last transaction: a transaction that shrinks the
// database (or follows an unknown size) ends its group, so that pages
// beyond the smaller size are dropped exactly where the primary dropped
// them and the storage server's page checksums follow the primary's. A
// page is kept only if its own transaction's size covers it.
func coalesce(prevCount uint32, txns []pagewire.Txn) []txnGroup {
	if len(txns) == 1 {
		return []txnGroup{{txns: txns, pageCount: txns[0].PageCount, pages: txns[0].Pages}}
	}
	var groups []txnGroup
	var cur txnGroup
	newest := map[uint32][]byte{}
	for i, t := range txns {
		cur.txns = append(cur.txns, t)
		cur.pageCount = t.PageCount
		for _, p := range t.Pages {
			if p.Pgno <= t.PageCount {
				newest[p.Pgno] = p.Data
			}
		}
		if prevCount == 0 || t.PageCount < prevCount || i == len(txns)-1 {
			for pgno, data := range newest {
				if pgno <= cur.pageCount {
					cur.pages = append(cur.pages, pagewire.Page{Pgno: pgno, Data: data})
				}
			}
			slices.SortFunc(cur.pages, func(a, b pagewire.Page) int { return cmp.Compare(a.Pgno, b.Pgno) })
			groups = append(groups, cur)
			cur = txnGroup{}
			clear(newest)
		}
		prevCount = t.PageCount
	}
	return groups
}

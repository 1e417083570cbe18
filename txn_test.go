package pagewire_test

import (
	"errors"
	"testing"

	"github.com/pagewire/pagewire"
)

func TestMaxPagesAfter(t *testing.T) {
	lock := pagewire.LockPage(4096) // 262145
	for _, tc := range []struct {
		name     string
		cur      uint32
		written  int
		pageSize uint32
		want     uint32
	}{
		{name: "no pages written", cur: 3, written: 0, pageSize: 4096, want: 3},
		{name: "as many as written", cur: 3, written: 2, pageSize: 4096, want: 5},
		{name: "over the lock page, which is never written", cur: lock - 1, written: 2, pageSize: 4096, want: lock + 2},
		{name: "the lock page left behind", cur: lock, written: 2, pageSize: 4096, want: lock + 2},
		{name: "up to SQLite's most pages", cur: pagewire.MaxPageCount - 1, written: 10, pageSize: 65536, want: pagewire.MaxPageCount},
		{name: "a negative count is none", cur: 3, written: -5, pageSize: 4096, want: 3},
	} {
		if got := pagewire.MaxPagesAfter(tc.cur, tc.written, tc.pageSize); got != tc.want {
			t.Errorf("%s: pagewire.MaxPagesAfter(%d, %d) = %d, want %d", tc.name, tc.cur, tc.written, got, tc.want)
		}
	}
	if err := pagewire.CheckGrowth(1, 0xFFFFFFFF, 1, 4096); !errors.Is(err, pagewire.ErrInvalidArgument) {
		t.Errorf("2^32-1 pages after writing one: %v, want pagewire.ErrInvalidArgument", err)
	}
	if err := pagewire.CheckGrowth(1, 2, 1, 4096); err != nil {
		t.Errorf("one page more after writing one: %v", err)
	}
	if err := pagewire.CheckGrowth(10, 4, 1, 4096); err != nil {
		t.Errorf("shrinking: %v", err)
	}
}

func TestTxn_Check(t *testing.T) {
	page := func(pgno uint32, n int) pagewire.Page { return pagewire.Page{Pgno: pgno, Data: make([]byte, n)} }
	good := pagewire.Txn{TXID: 2, PageSize: 4096, PageCount: 3, Pages: []pagewire.Page{page(1, 4096), page(3, 4096)}}
	if err := good.Check(4096, 1); err != nil {
		t.Fatalf("good transaction: %v", err)
	}
	for name, txn := range map[string]pagewire.Txn{
		"2^32-1 pages":           {PageSize: 4096, PageCount: 0xFFFFFFFF, Pages: []pagewire.Page{page(1, 4096)}},
		"more than it adds":      {PageSize: 4096, PageCount: 5, Pages: []pagewire.Page{page(1, 4096), page(3, 4096)}},
		"a page past the count":  {PageSize: 4096, PageCount: 2, Pages: []pagewire.Page{page(3, 4096)}},
		"a page twice":           {PageSize: 4096, PageCount: 2, Pages: []pagewire.Page{page(2, 4096), page(2, 4096)}},
		"out of order":           {PageSize: 4096, PageCount: 3, Pages: []pagewire.Page{page(3, 4096), page(2, 4096)}},
		"page 0":                 {PageSize: 4096, PageCount: 1, Pages: []pagewire.Page{page(0, 4096)}},
		"the lock page":          {PageSize: 4096, PageCount: pagewire.LockPage(4096), Pages: []pagewire.Page{page(pagewire.LockPage(4096), 4096)}},
		"a short page":           {PageSize: 4096, PageCount: 2, Pages: []pagewire.Page{page(2, 100)}},
		"another page size":      {PageSize: 512, PageCount: 2, Pages: []pagewire.Page{page(2, 512)}},
		"no pages":               {PageSize: 4096, PageCount: 1},
		"a database of no pages": {PageSize: 4096, PageCount: 0, Pages: []pagewire.Page{page(1, 4096)}},
	} {
		cur := uint32(1)
		if name == "the lock page" {
			cur = pagewire.LockPage(4096)
		}
		if err := txn.Check(4096, cur); !errors.Is(err, pagewire.ErrInvalidArgument) {
			t.Errorf("%s: %v, want pagewire.ErrInvalidArgument", name, err)
		}
	}
}

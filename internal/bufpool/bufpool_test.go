package bufpool

import "testing"

func TestGetLengthAndCapacity(t *testing.T) {
	p := New()
	for _, n := range []int{0, 1, 4095, 4096, 4097, 100 << 10, 1 << 20, 64 << 20, 64<<20 + 1} {
		bp := p.Get(n)
		if len(*bp) != n {
			t.Fatalf("Get(%d): len %d", n, len(*bp))
		}
		if c := cap(*bp); c < n || (n <= 64<<20 && c&(c-1) != 0) {
			t.Fatalf("Get(%d): cap %d, want a power of two >= n", n, c)
		}
		p.Put(bp)
	}
}

func TestReuseKeepsTier(t *testing.T) {
	p := New()
	bp := p.Get(5000) // tier 8 KiB
	(*bp)[0] = 7
	p.Put(bp)
	// sync.Pool may drop it; whatever comes back must still fit the ask.
	got := p.Get(8192)
	if len(*got) != 8192 || cap(*got) != 8192 {
		t.Fatalf("len %d cap %d, want 8192/8192", len(*got), cap(*got))
	}
}

func TestPutForeignBufferIgnored(t *testing.T) {
	p := New()
	b := make([]byte, 10, 5000) // not a tier capacity
	p.Put(&b)
	if got := p.Get(4097); cap(*got) != 8192 {
		t.Fatalf("a foreign buffer came back: cap %d", cap(*got))
	}
}

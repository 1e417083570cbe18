package bufpool

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

const (
	minShift = 12 // 4 KiB, the smallest pooled capacity
	maxShift = 26 // 64 MiB, the largest; bigger buffers are not pooled
)

// Pool keeps buffers in power-of-two tiers.
type Pool struct {
	tiers [maxShift - minShift + 1]sync.Pool
}

var _ mem.BufferPool = (*Pool)(nil)

// New returns an empty Pool.
func New() *Pool { return &Pool{} }

// tier returns the index of the smallest tier holding n bytes, and false
// if n is too big to pool.
func tier(n int) (int, bool) {
	if n <= 1<<minShift {
		return 0, true
	}
	shift := bits.Len(uint(n - 1)) // 1<<shift >= n
	if shift > maxShift {
		return 0, false
	}
	return shift - minShift, true
}

// Get returns a buffer of length n whose contents are unspecified.
func (p *Pool) Get(n int) *[]byte {
	i, ok := tier(n)
	if !ok {
		b := make([]byte, n)
		return &b
	}
	if bp, _ := p.tiers[i].Get().(*[]byte); bp != nil {
		*bp = (*bp)[:n]
		return bp
	}
	b := make([]byte, n, 1<<(i+minShift))
	return &b
}

// Put returns a buffer from Get to the pool.
func (p *Pool) Put(bp *[]byte) {
	c := cap(*bp)
	i, ok := tier(c)
	if !ok || c != 1<<(i+minShift) {
		return // not one of ours (or too big): let the GC have it
	}
	p.tiers[i].Put(bp)
}

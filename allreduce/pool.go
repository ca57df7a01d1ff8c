package allreduce

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc/mem"
)

// dirtyPool is a mem.BufferPool that, unlike gRPC's default pool, does not
// zero buffers on Get. gRPC's default clears the whole capacity of every
// buffer it hands out (a 1 MiB tier for a 512 KiB chunk), which cost about a
// sixth of the CPU of an all-reduce. Every user here overwrites what it
// gets: the codec writes the whole frame, the transport reads exactly the
// bytes it asked for.
type dirtyPool struct {
	tiers [maxTier + 1]sync.Pool // tier i holds buffers of capacity 1<<i
}

const (
	minTier = 8
	maxTier = 26 // 64 MiB, above maxMsgSize
)

var bufferPool = &dirtyPool{}

func tierOf(size int) int {
	if size <= 1<<minTier {
		return minTier
	}
	return bits.Len(uint(size - 1))
}

func (p *dirtyPool) Get(size int) *[]byte {
	t := tierOf(size)
	if t > maxTier {
		b := make([]byte, size)
		return &b
	}
	if bp, ok := p.tiers[t].Get().(*[]byte); ok {
		*bp = (*bp)[:size]
		return bp
	}
	b := make([]byte, size, 1<<t)
	return &b
}

func (p *dirtyPool) Put(bp *[]byte) {
	c := cap(*bp)
	if c < 1<<minTier || c&(c-1) != 0 || bits.Len(uint(c))-1 > maxTier {
		return // not one of ours
	}
	p.tiers[bits.Len(uint(c))-1].Put(bp)
}

var _ mem.BufferPool = (*dirtyPool)(nil)

package allreduce

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The fast (memmove / unsafe view) float conversions against their
// value-by-value twins, on many lengths and on a misaligned input.
func TestFloatsMatchSlowTwin(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 2, 3, 7, 16, 1000, 4097} {
		src := make([]float32, n)
		for i := range src {
			src[i] = float32(r.NormFloat64())
		}
		raw := make([]byte, 4*n+1)
		for _, b := range [][]byte{raw[:4*n], raw[1 : 4*n+1]} { // aligned, misaligned
			encodeFloats(b, src)
			dec := make([]float32, n)
			copyFloats(dec, b)
			for i := range src {
				if math.Float32bits(dec[i]) != math.Float32bits(src[i]) {
					t.Fatalf("n=%d: round trip of element %d: %v != %v", n, i, dec[i], src[i])
				}
			}
			fast, slow := make([]float32, n), make([]float32, n)
			for i := range fast {
				fast[i] = float32(i) * 0.25
				slow[i] = fast[i]
			}
			addFloats(fast, b)
			addFloatsSlow(slow, b)
			for i := range fast {
				if math.Float32bits(fast[i]) != math.Float32bits(slow[i]) {
					t.Fatalf("n=%d: add element %d: %v != %v", n, i, fast[i], slow[i])
				}
			}
		}
	}
}

func TestDirtyPool(t *testing.T) {
	for _, size := range []int{0, 1, 255, 256, 257, 1 << 20, 1<<20 + 1} {
		bp := bufferPool.Get(size)
		if len(*bp) != size || cap(*bp) < size {
			t.Fatalf("Get(%d): len %d cap %d", size, len(*bp), cap(*bp))
		}
		bufferPool.Put(bp)
	}
	bufferPool.Put(&[]byte{1, 2, 3}) // foreign buffer: ignored
}

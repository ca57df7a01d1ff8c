package optim

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Every length around the vector block, a NaN, +Inf or -Inf at every
// position is found, in the tensor it is in; finite extremes are not.
func TestFirstNonFinite(t *testing.T) {
	bad := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), math.Float32frombits(0x7fc00001), math.Float32frombits(0xff800001)}
	edge := []float32{math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32, float32(math.Copysign(0, -1)), 0}
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 7, 31, 32, 33, 63, 64, 65, 127, 128, 200} {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64())
			if r.IntN(4) == 0 {
				x[i] = edge[r.IntN(len(edge))]
			}
		}
		other := []float32{1, 2, 3}
		if got := FirstNonFinite([][]float32{other, x}); got != -1 {
			t.Fatalf("n=%d finite: got %d", n, got)
		}
		for i := range x {
			for _, b := range bad {
				keep := x[i]
				x[i] = b
				if got := FirstNonFinite([][]float32{other, x, other}); got != 1 {
					t.Fatalf("n=%d, %v at %d: got %d, want 1", n, b, i, got)
				}
				if n >= 32 {
					if got := finiteVector(x); got != -1 && got > i {
						t.Fatalf("n=%d, %v at %d: the vector path checked %d values and missed it", n, b, i, got)
					}
				}
				x[i] = keep
			}
		}
	}
}

// BenchmarkFirstNonFinite: the VAE's 652,824 gradient values.
func BenchmarkFirstNonFinite(b *testing.B) {
	x := make([]float32, 652824)
	for i := range x {
		x[i] = float32(i) * 1e-3
	}
	ts := [][]float32{x}
	b.SetBytes(int64(4 * len(x)))
	for range b.N {
		if FirstNonFinite(ts) != -1 {
			b.Fatal("non-finite")
		}
	}
}

// The Go loop alone, for comparison.
func BenchmarkFiniteScalar(b *testing.B) {
	x := make([]float32, 652824)
	b.SetBytes(int64(4 * len(x)))
	for range b.N {
		if !finiteScalar(x) {
			b.Fatal("non-finite")
		}
	}
}

package kernels

import (
	"math/rand"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// BenchmarkSgemmGonum runs gonum's pure-Go BLAS (blas/gonum, the engine
// gorgonia's CPU backend calls) on the shapes of BenchmarkSgemm: the
// measured reason the models use Sgemm (docs/ARCHITECTURE.md, "Hand-written
// where a library exists"). gonum parallelises over GOMAXPROCS itself;
// compare with BenchmarkSgemm's t2 on two cores.
func BenchmarkSgemmGonum(b *testing.B) {
	rng := rand.New(rand.NewSource(8))
	tr := func(t bool) blas.Transpose {
		if t {
			return blas.Trans
		}
		return blas.NoTrans
	}
	for _, sh := range benchShapes {
		b.Run(sh.name, func(b *testing.B) {
			ar, ac := stored(sh.ta, sh.m, sh.k)
			br, bc := stored(sh.tb, sh.k, sh.n)
			a := randMatrix(rng, ar, ac, ac)
			bm := randMatrix(rng, br, bc, bc)
			c := make([]float32, sh.m*sh.n)
			var impl gonum.Implementation
			for b.Loop() {
				impl.Sgemm(tr(sh.ta), tr(sh.tb), sh.m, sh.n, sh.k, 1, a, ac, bm, bc, 0, c, sh.n)
			}
			flops := 2 * float64(sh.m) * float64(sh.n) * float64(sh.k) * float64(b.N)
			b.ReportMetric(flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

package kernels

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
)

// testKernels returns every micro-kernel this machine can run, each with its
// real blocking and with a tiny blocking that forces many k blocks, row
// blocks and column panels even on small matrices.
func testKernels() []*sgemmKernel {
	var ks []*sgemmKernel
	for _, k := range sgemmKernels {
		ks = append(ks, k)
		tiny := *k
		tiny.name += "/tiny"
		tiny.kc = 5
		tiny.aBudget = 5 * 2 * k.mr
		tiny.bBudget = 5 * 3 * k.nr
		ks = append(ks, &tiny)
	}
	return ks
}

// stored returns the stored shape of op(X) (rows x cols) given trans.
func stored(trans bool, rows, cols int) (int, int) {
	if trans {
		return cols, rows
	}
	return rows, cols
}

// randMatrix returns a rows x cols matrix with row stride ld; the padding
// between cols and ld holds NaN, so any read of it shows up in the result.
func randMatrix(rng *rand.Rand, rows, cols, ld int) []float32 {
	x := make([]float32, max(0, (rows-1)*ld+cols))
	for i := range x {
		if i%ld < cols {
			x[i] = rng.Float32()*2 - 1
		} else {
			x[i] = float32(math.NaN())
		}
	}
	return x
}

type gemmCase struct {
	ta, tb           bool
	m, n, k          int
	alpha, beta      float32
	padA, padB, padC int // extra stride beyond the stored width
	nanC             bool
}

func (tc gemmCase) String() string {
	t := func(b bool) string {
		if b {
			return "T"
		}
		return "N"
	}
	return fmt.Sprintf("%s%s m=%d n=%d k=%d alpha=%g beta=%g pad=%d,%d,%d", t(tc.ta), t(tc.tb), tc.m, tc.n, tc.k, tc.alpha, tc.beta, tc.padA, tc.padB, tc.padC)
}

// checkCase runs one case through sgemm with kern on p and through SgemmRef
// and compares them within a float32 error bound.
func checkCase(t *testing.T, rng *rand.Rand, kern *sgemmKernel, p *Pool, tc gemmCase) {
	t.Helper()
	ar, ac := stored(tc.ta, tc.m, tc.k)
	br, bc := stored(tc.tb, tc.k, tc.n)
	lda, ldb, ldc := ac+tc.padA, bc+tc.padB, tc.n+tc.padC
	a := randMatrix(rng, ar, ac, lda)
	b := randMatrix(rng, br, bc, ldb)
	c := randMatrix(rng, tc.m, tc.n, ldc)
	if tc.nanC {
		for i := range c {
			c[i] = float32(math.NaN())
		}
	}
	want := append([]float32(nil), c...)
	got := append([]float32(nil), c...)
	SgemmRef(tc.ta, tc.tb, tc.m, tc.n, tc.k, tc.alpha, a, lda, b, ldb, tc.beta, want, ldc)
	sgemm(p, kern, tc.ta, tc.tb, tc.m, tc.n, tc.k, tc.alpha, a, lda, b, ldb, tc.beta, got, ldc)
	const eps = 1.0 / (1 << 23)
	for i := 0; i < tc.m; i++ {
		for j := 0; j < tc.n; j++ {
			// Bound: both results are within about k ulps of sum |a||b|.
			var s float64
			for l := 0; l < tc.k; l++ {
				var av, bv float32
				if tc.ta {
					av = a[l*lda+i]
				} else {
					av = a[i*lda+l]
				}
				if tc.tb {
					bv = b[j*ldb+l]
				} else {
					bv = b[l*ldb+j]
				}
				s += math.Abs(float64(av) * float64(bv))
			}
			s *= math.Abs(float64(tc.alpha))
			if tc.beta != 0 {
				s += math.Abs(float64(tc.beta) * float64(c[i*ldc+j]))
			}
			tol := 2 * float64(tc.k+4) * eps * s
			g, w := got[i*ldc+j], want[i*ldc+j]
			if math.IsNaN(float64(g)) || math.Abs(float64(g)-float64(w)) > tol {
				t.Fatalf("%s, %s, %d threads: C[%d,%d] = %g, want %g (tol %g)", kern.name, tc, p.Threads(), i, j, g, w, tol)
			}
		}
		// The padding of C must be untouched.
		for j := tc.n; j < ldc && i*ldc+j < len(c); j++ {
			if math.Float32bits(got[i*ldc+j]) != math.Float32bits(c[i*ldc+j]) {
				t.Fatalf("%s, %s: padding C[%d,%d] written", kern.name, tc, i, j)
			}
		}
	}
}

var alphaBetas = [][2]float32{{1, 0}, {1, 1}, {2, 0.5}, {2, 0}, {1, 0.5}, {2, 1}}

func testPools() []*Pool {
	return []*Pool{nil, NewPool(1), NewPool(2), NewPool(3)}
}

func closePools(ps []*Pool) {
	for _, p := range ps {
		p.Close()
	}
}

func TestSgemmSmall(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	pools := testPools()
	defer closePools(pools)
	sizes := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 15, 16, 17, 24, 31, 32, 33, 37}
	ks := []int{1, 2, 7, 24, 37}
	if testing.Short() {
		sizes = []int{1, 3, 6, 7, 16, 17, 33}
		ks = []int{1, 7, 37}
	}
	for _, kern := range testKernels() {
		i := 0
		for _, m := range sizes {
			for _, n := range sizes {
				for _, k := range ks {
					for tr := 0; tr < 4; tr++ {
						ab := alphaBetas[i%len(alphaBetas)]
						tc := gemmCase{ta: tr&1 != 0, tb: tr&2 != 0, m: m, n: n, k: k, alpha: ab[0], beta: ab[1]}
						if i%3 == 1 {
							tc.padA, tc.padB, tc.padC = 3, 1, 5
						}
						checkCase(t, rng, kern, pools[i%len(pools)], tc)
						i++
					}
				}
			}
		}
	}
}

// TestSgemmLarger covers sizes with many tiles, edges in both directions and
// (with the real blocking) several k blocks, on every pool.
func TestSgemmLarger(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	pools := testPools()
	defer closePools(pools)
	shapes := [][3]int{{65, 129, 257}, {64, 100, 320}, {20, 401, 33}, {130, 70, 600}, {1, 300, 64}, {300, 1, 40}, {45, 37, 24}}
	for _, kern := range testKernels() {
		for si, sh := range shapes {
			for tr := 0; tr < 4; tr++ {
				for pi, p := range pools {
					ab := alphaBetas[(si+tr+pi)%len(alphaBetas)]
					tc := gemmCase{ta: tr&1 != 0, tb: tr&2 != 0, m: sh[0], n: sh[1], k: sh[2], alpha: ab[0], beta: ab[1]}
					if (tr+pi)%2 == 1 {
						tc.padA, tc.padB, tc.padC = 7, 2, 9
					}
					checkCase(t, rng, kern, p, tc)
				}
			}
		}
	}
}

// TestSgemmAlphaBeta runs every (alpha, beta) pair on every transpose case.
func TestSgemmAlphaBeta(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	p := NewPool(2)
	defer p.Close()
	for _, kern := range testKernels() {
		for _, ab := range alphaBetas {
			for tr := 0; tr < 4; tr++ {
				tc := gemmCase{ta: tr&1 != 0, tb: tr&2 != 0, m: 23, n: 41, k: 300, alpha: ab[0], beta: ab[1], padA: 1, padB: 2, padC: 3}
				checkCase(t, rng, kern, p, tc)
			}
		}
	}
}

// TestSgemmBetaZeroNaN: beta == 0 must overwrite whatever C holds, NaN too.
func TestSgemmBetaZeroNaN(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	pools := testPools()
	defer closePools(pools)
	for _, kern := range testKernels() {
		for _, p := range pools {
			for tr := 0; tr < 4; tr++ {
				for _, sh := range [][3]int{{7, 9, 11}, {64, 130, 50}, {13, 300, 600}} {
					tc := gemmCase{ta: tr&1 != 0, tb: tr&2 != 0, m: sh[0], n: sh[1], k: sh[2], alpha: 1, beta: 0, nanC: true, padC: 2}
					checkCase(t, rng, kern, p, tc)
					tc.alpha = 2
					checkCase(t, rng, kern, p, tc)
				}
			}
		}
	}
}

// TestSgemmDegenerate: k == 0 and alpha == 0 only scale C; empty C is a no-op.
func TestSgemmDegenerate(t *testing.T) {
	for _, kern := range testKernels() {
		c := []float32{1, 2, float32(math.NaN()), 4}
		sgemm(nil, kern, false, false, 2, 2, 0, 1, nil, 1, nil, 2, 0.5, c, 2)
		if c[0] != 0.5 || c[1] != 1 || c[3] != 2 {
			t.Fatalf("%s: k=0 beta=0.5 gave %v", kern.name, c)
		}
		sgemm(nil, kern, false, false, 2, 2, 0, 1, nil, 1, nil, 2, 0, c, 2)
		for _, v := range c {
			if v != 0 {
				t.Fatalf("%s: k=0 beta=0 gave %v", kern.name, c)
			}
		}
		a := []float32{float32(math.Inf(1)), 1, 1, 1}
		c = []float32{1, 2, 3, 4}
		sgemm(nil, kern, false, false, 2, 2, 2, 0, a, 2, a, 2, 1, c, 2)
		if c[0] != 1 || c[3] != 4 {
			t.Fatalf("%s: alpha=0 beta=1 gave %v", kern.name, c)
		}
		sgemm(nil, kern, false, false, 0, 2, 2, 1, nil, 2, a, 2, 1, nil, 2)
	}
}

// TestSgemmDeterministic: the result is bit-identical whatever the number of
// threads, for splits over rows and over columns, edge tiles included.
func TestSgemmDeterministic(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	threads := []int{1, 2, 3, 4, 7}
	pools := []*Pool{nil}
	for _, n := range threads {
		pools = append(pools, NewPool(n))
	}
	defer closePools(pools)
	shapes := [][3]int{
		{64, 1000, 320}, // split over columns
		{301, 70, 500},  // split over rows
		{37, 999, 130},
		{128, 20, 400},
		{13, 13, 3000}, // long k, serial and parallel threshold
		{64, 320, 2600},
	}
	for _, kern := range testKernels() {
		for _, sh := range shapes {
			for tr := 0; tr < 4; tr++ {
				ta, tb := tr&1 != 0, tr&2 != 0
				m, n, k := sh[0], sh[1], sh[2]
				ar, ac := stored(ta, m, k)
				br, bc := stored(tb, k, n)
				a := randMatrix(rng, ar, ac, ac)
				b := randMatrix(rng, br, bc, bc)
				c0 := randMatrix(rng, m, n, n)
				var ref []float32
				for _, p := range pools {
					for _, beta := range []float32{0, 0.5} {
						c := append([]float32(nil), c0...)
						sgemm(p, kern, ta, tb, m, n, k, 1.5, a, ac, b, bc, beta, c, n)
						if beta == 0 {
							continue
						}
						if ref == nil {
							ref = c
							continue
						}
						for i := range c {
							if math.Float32bits(c[i]) != math.Float32bits(ref[i]) {
								t.Fatalf("%s tr=%d %v: %d threads differ from 1 thread at %d: %g vs %g", kern.name, tr, sh, p.Threads(), i, c[i], ref[i])
							}
						}
					}
				}
			}
		}
	}
}

// TestSgemmEdgeMatchesFull: an element computes the same bits whether it
// falls in a full tile or an edge tile (so row/column offsets of a
// sub-matrix view do not change results either).
func TestSgemmEdgeMatchesFull(t *testing.T) {
	rng := rand.New(rand.NewSource(6))
	for _, kern := range testKernels() {
		m, n, k := 3*kern.mr, 3*kern.nr, 70
		a := randMatrix(rng, m, k, k)
		b := randMatrix(rng, k, n, n)
		c0 := randMatrix(rng, m, n, n)
		full := append([]float32(nil), c0...)
		sgemm(nil, kern, false, false, m, n, k, 1.3, a, k, b, n, 0.7, full, n)
		// The bottom-right (m-1) x (n-1) corner as its own product: every
		// tile of it is an edge tile.
		part := append([]float32(nil), c0...)
		sgemm(nil, kern, false, false, m-1, n-1, k, 1.3, a[k:], k, b[1:], n, 0.7, part[n+1:], n)
		for i := 1; i < m; i++ {
			for j := 1; j < n; j++ {
				if math.Float32bits(part[i*n+j]) != math.Float32bits(full[i*n+j]) {
					t.Fatalf("%s: C[%d,%d] = %g in edge tile, %g in full tile", kern.name, i, j, part[i*n+j], full[i*n+j])
				}
			}
		}
	}
}

// TestSgemmNoAllocs: with a warm Pool, Sgemm allocates nothing, serial or
// parallel.
func TestSgemmNoAllocs(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for _, threads := range []int{1, 2, 3} {
		p := NewPool(threads)
		for _, sh := range [][5]int{{64, 2000, 320, 0, 0}, {320, 700, 64, 1, 0}, {64, 320, 3000, 0, 1}, {5, 7, 9, 1, 1}, {128, 20, 400, 0, 1}} {
			m, n, k := sh[0], sh[1], sh[2]
			ta, tb := sh[3] == 1, sh[4] == 1
			ar, ac := stored(ta, m, k)
			br, bc := stored(tb, k, n)
			a := randMatrix(rng, ar, ac, ac)
			b := randMatrix(rng, br, bc, bc)
			c := make([]float32, m*n)
			Sgemm(p, ta, tb, m, n, k, 1, a, ac, b, bc, 0, c, n)
			allocs := testing.AllocsPerRun(5, func() {
				Sgemm(p, ta, tb, m, n, k, 1, a, ac, b, bc, 0.5, c, n)
			})
			if allocs != 0 {
				t.Errorf("%d threads, %v: %v allocations per call", threads, sh, allocs)
			}
		}
		p.Close()
	}
}

func TestPoolRunNoAllocs(t *testing.T) {
	p := NewPool(3)
	defer p.Close()
	var hits [3]int
	fn := func(part, parts int) { hits[part]++ }
	p.Run(3, fn)
	if allocs := testing.AllocsPerRun(20, func() { p.Run(3, fn) }); allocs != 0 {
		t.Errorf("Pool.Run: %v allocations per call", allocs)
	}
	for i, h := range hits {
		if h != 22 {
			t.Errorf("part %d ran %d times, want 22", i, h)
		}
	}
}

func TestSgemmKernelChoice(t *testing.T) {
	t.Logf("kernels available: %d; Sgemm uses %s", len(sgemmKernels), sgemmBest.name)
	for _, k := range sgemmKernels {
		t.Logf("  %s (%dx%d, kc %d)", k.name, k.mr, k.nr, k.kc)
	}
}

type benchShape struct {
	name    string
	ta, tb  bool
	m, n, k int
}

var benchShapes = []benchShape{
	{"pixelcnn/NN_64x25088x320", false, false, 64, 25088, 320},
	{"pixelcnn/NN_64x25088x64", false, false, 64, 25088, 64},
	{"pixelcnn/NN_64x25088x24", false, false, 64, 25088, 24},
	{"pixelcnn/NN_1x25088x64", false, false, 1, 25088, 64},
	{"pixelcnn/NT_64x320x25088", false, true, 64, 320, 25088},
	{"pixelcnn/TN_320x25088x64", true, false, 320, 25088, 64},
	{"pixelcnn/TN_64x25088x64", true, false, 64, 25088, 64},
	{"vae/NT_128x400x784", false, true, 128, 400, 784},
	{"vae/NT_128x784x400", false, true, 128, 784, 400},
	{"vae/NT_128x20x400", false, true, 128, 20, 400},
	{"vae/TN_400x784x128", true, false, 400, 784, 128},
	{"vae/TN_784x400x128", true, false, 784, 400, 128},
	{"vae/NN_128x784x400", false, false, 128, 784, 400},
	{"vae/NN_128x400x20", false, false, 128, 400, 20},
}

// BenchmarkSgemm reports GFLOP/s for the shapes the models use, on 1 and 2
// threads, for every micro-kernel this machine runs (the first listed is the
// one Sgemm uses).
func BenchmarkSgemm(b *testing.B) {
	rng := rand.New(rand.NewSource(8))
	for _, kern := range sgemmKernels {
		for _, sh := range benchShapes {
			for _, threads := range []int{1, 2} {
				b.Run(fmt.Sprintf("%s/%s/t%d", kern.name, sh.name, threads), func(b *testing.B) {
					ar, ac := stored(sh.ta, sh.m, sh.k)
					br, bc := stored(sh.tb, sh.k, sh.n)
					a := randMatrix(rng, ar, ac, ac)
					bm := randMatrix(rng, br, bc, bc)
					c := make([]float32, sh.m*sh.n)
					p := NewPool(threads)
					defer p.Close()
					sgemm(p, kern, sh.ta, sh.tb, sh.m, sh.n, sh.k, 1, a, ac, bm, bc, 0, c, sh.n)
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						sgemm(p, kern, sh.ta, sh.tb, sh.m, sh.n, sh.k, 1, a, ac, bm, bc, 0, c, sh.n)
					}
					flops := 2 * float64(sh.m) * float64(sh.n) * float64(sh.k) * float64(b.N)
					b.ReportMetric(flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
	}
}

// BenchmarkSgemmRef is the naive baseline, on the shapes under 50M
// multiply-adds (the larger ones take seconds per call).
func BenchmarkSgemmRef(b *testing.B) {
	rng := rand.New(rand.NewSource(9))
	for _, sh := range benchShapes {
		if sh.m*sh.n*sh.k > 50e6 {
			continue
		}
		b.Run(sh.name, func(b *testing.B) {
			ar, ac := stored(sh.ta, sh.m, sh.k)
			br, bc := stored(sh.tb, sh.k, sh.n)
			a := randMatrix(rng, ar, ac, ac)
			bm := randMatrix(rng, br, bc, bc)
			c := make([]float32, sh.m*sh.n)
			for i := 0; i < b.N; i++ {
				SgemmRef(sh.ta, sh.tb, sh.m, sh.n, sh.k, 1, a, ac, bm, bc, 0, c, sh.n)
			}
			flops := 2 * float64(sh.m) * float64(sh.n) * float64(sh.k) * float64(b.N)
			b.ReportMetric(flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

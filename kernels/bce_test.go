package kernels

import (
	"flag"
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"sync"
	"testing"
)

// Error bounds the kernels are held to (documented on BCEWithLogits).
const (
	// bceTermTol bounds the relative error of each loss term (and so of a
	// sum of terms, all >= 0 for targets in [0,1]).
	bceTermTol = 3e-7
	// bceTiny bounds the loss of a term whose exp(-|l|) is flushed to 0
	// (exp(-bceCutoff) = 1.1832e-38).
	bceTiny = 1.2e-38
	// bceGradTol bounds the absolute error of a gradient: 2 ulp of 1.
	bceGradTol = 0x1p-22
)

// bceRef64 is one element's term and gradient in float64 with math.Exp and
// math.Log1p (the formula models used before the kernel).
func bceRef64(l, x float32) (term, grad float64) {
	lf, t := float64(l), float64(x)
	e := math.Exp(-math.Abs(lf))
	term = math.Max(lf, 0) - lf*t + math.Log1p(e)
	sig := 1 / (1 + e)
	if lf < 0 {
		sig *= e
	}
	return term, sig - t
}

func bceRef64Sum(logits, x []float32) float64 {
	var s float64
	for i, l := range logits {
		v, _ := bceRef64(l, x[i])
		s += v
	}
	return s
}

// bceSpecial are the logits of the edge cases (each also negated).
var bceSpecial = []float32{
	0, 0x1p-149, 1e-40, 0x1p-126, 1e-30, 1e-7, 0.5, 1, 2, 15, 16.5, 20,
	80, 87, 87.3, bceCutoff, math.Nextafter32(bceCutoff, 100), 87.34, 88, 89,
	103, 104, 200, 1e10, math.MaxFloat32,
}

var bceTargets = []float32{0, 1, 0.3}

// bceInputs returns n logits drawn from a mix of scales (and some special
// values) and n targets (0, 1, 0.3 or uniform in [0,1]).
func bceInputs(rng *rand.Rand, n int) (l, x []float32) {
	l = make([]float32, n)
	x = make([]float32, n)
	for i := range l {
		switch rng.Intn(6) {
		case 0:
			l[i] = float32(rng.NormFloat64())
		case 1:
			l[i] = float32(rng.NormFloat64() * 8)
		case 2:
			l[i] = float32(rng.Float64()*200 - 100)
		case 3:
			l[i] = float32(math.Exp(rng.Float64()*60-50)) * float32(1-2*rng.Intn(2))
		case 4:
			l[i] = bceSpecial[rng.Intn(len(bceSpecial))] * float32(1-2*rng.Intn(2))
		default:
			l[i] = float32(rng.NormFloat64() * 30)
		}
		if k := rng.Intn(4); k < 3 {
			x[i] = bceTargets[k]
		} else {
			x[i] = rng.Float32()
		}
	}
	return l, x
}

// checkBCE runs kern on logits and x (copied into buffers at offset off, so
// slices start unaligned) and checks the sum and every gradient against
// the float64 reference.
func checkBCE(t *testing.T, kern *bceKernel, logits, x []float32, off int) {
	t.Helper()
	n := len(logits)
	lb := make([]float32, n+off+5)
	xb := make([]float32, n+off+5)
	gb := make([]float32, n+off+5)
	for i := range gb {
		gb[i] = -7 // sentinel: must survive outside [off, off+n)
	}
	copy(lb[off:], logits)
	copy(xb[off:], x)
	lsl, xsl, gsl := lb[off:off+n], xb[off:off+n], gb[off:off+n]
	var got float64
	if n == 0 {
		got = BCEWithLogits(lsl, xsl, gsl)
	} else {
		got = kern.run(lsl, xsl, gsl)
	}
	want := bceRef64Sum(logits, x)
	if d := math.Abs(got - want); !(d <= bceTermTol*math.Abs(want)+float64(n)*bceTiny) {
		t.Errorf("%s n=%d off=%d: sum %.17g, want %.17g (rel err %.3g)", kern.name, n, off, got, want, d/math.Abs(want))
	}
	for i := range gb {
		if i < off || i >= off+n {
			if gb[i] != -7 {
				t.Fatalf("%s n=%d off=%d: grad buffer[%d] written (%g)", kern.name, n, off, i, gb[i])
			}
			continue
		}
		_, wg := bceRef64(logits[i-off], x[i-off])
		if d := math.Abs(float64(gb[i]) - wg); !(d <= bceGradTol) {
			t.Errorf("%s n=%d off=%d: grad[%d] (l=%g x=%g) = %.9g, want %.9g", kern.name, n, off, i-off, logits[i-off], x[i-off], gb[i], wg)
		}
	}
	if n > 0 {
		// The loss alone: the same arithmetic, so the same bits.
		if g2 := kern.run(lsl, xsl, nil); math.Float64bits(g2) != math.Float64bits(got) {
			t.Errorf("%s n=%d: loss alone %.17g, with gradient %.17g", kern.name, n, g2, got)
		}
	}
}

// Every kernel, every length 0..67 (all tails) and 784, unaligned slices.
func TestBCEKernelsRandom(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, kern := range bceKernels {
		for n := 0; n <= 67; n++ {
			for rep := 0; rep < 4; rep++ {
				l, x := bceInputs(rng, n)
				checkBCE(t, kern, l, x, rep)
			}
		}
		for rep := 0; rep < 50; rep++ {
			l, x := bceInputs(rng, 784)
			checkBCE(t, kern, l, x, rep%4)
		}
	}
}

// Each special logit with each target, as the only value of a vector (so
// the sum is n times the term and its relative error that of the term),
// through the full-vector loop and the tail.
func TestBCEEdgeCases(t *testing.T) {
	for _, kern := range bceKernels {
		for _, v := range bceSpecial {
			for _, l := range []float32{v, -v} {
				for _, x := range bceTargets {
					for _, n := range []int{1, 7, 16, 37} {
						ls := make([]float32, n)
						xs := make([]float32, n)
						for i := range ls {
							ls[i], xs[i] = l, x
						}
						checkBCE(t, kern, ls, xs, 1)
					}
				}
			}
		}
	}
}

// Each loss term alone (n = 1) for many random logits: relative error
// bound per element, not only for sums.
func TestBCETerms(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	l, x := bceInputs(rng, 20000)
	for _, kern := range bceKernels {
		var worst float64
		for i := range l {
			got := kern.run(l[i:i+1], x[i:i+1], nil)
			want, _ := bceRef64(l[i], x[i])
			d := math.Abs(got - want)
			if !(d <= bceTermTol*math.Abs(want)+bceTiny) {
				t.Errorf("%s: term(l=%g, x=%g) = %.17g, want %.17g", kern.name, l[i], x[i], got, want)
			}
			if want > 1e-37 {
				worst = max(worst, d/want)
			}
		}
		t.Logf("%s: max relative error of a term %.3g", kern.name, worst)
	}
}

func TestBCENonFinite(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	class := func(v float64) string {
		switch {
		case math.IsNaN(v):
			return "NaN"
		case math.IsInf(v, 1):
			return "+Inf"
		case math.IsInf(v, -1):
			return "-Inf"
		}
		return "finite"
	}
	for _, kern := range bceKernels {
		for _, n := range []int{1, 16, 21} {
			for _, c := range []struct {
				l, x float32
			}{
				{nan, 0}, {nan, 1}, {-nan, 0.3}, {1, nan}, {-3, nan},
				{inf, 0}, {inf, 1}, {inf, 0.3}, {-inf, 0}, {-inf, 1}, {-inf, 0.3},
				{2, inf}, {-2, inf}, {0, inf}, {2, -inf},
			} {
				ls := make([]float32, n)
				xs := make([]float32, n)
				for i := range ls {
					ls[i], xs[i] = float32(i%5)-2, 1
				}
				k := n / 2
				ls[k], xs[k] = c.l, c.x
				g := make([]float32, n)
				got := kern.run(ls, xs, g)
				want := bceRef64Sum(ls, xs)
				if class(got) != class(want) || class(got) == "finite" {
					t.Errorf("%s n=%d l=%g x=%g: sum %g, want %s like the float64 formula (%g)", kern.name, n, c.l, c.x, got, class(want), want)
				}
				var wg float64
				switch {
				case c.l != c.l:
					wg = math.NaN()
				case c.l > 0:
					wg = 1 - float64(c.x)
				default:
					wg = -float64(c.x)
				}
				if gk := float64(g[k]); !(gk == wg || gk != gk && wg != wg) {
					t.Errorf("%s n=%d l=%g x=%g: grad %g, want %g", kern.name, n, c.l, c.x, gk, wg)
				}
				for i := range g {
					if i == k {
						continue
					}
					if _, w := bceRef64(ls[i], xs[i]); math.Abs(float64(g[i])-w) > bceGradTol {
						t.Errorf("%s: a non-finite input changed grad[%d]: %g, want %g", kern.name, i, g[i], w)
					}
				}
			}
		}
	}
}

func TestBCEBadLengths(t *testing.T) {
	l := []float32{1, 2, 3}
	g := []float32{9, 9, 9}
	if v := BCEWithLogits(l, []float32{0, 1}, g); !math.IsNaN(v) || g[0] != 9 {
		t.Errorf("short x: %g, grad %v", v, g)
	}
	if v := BCEWithLogits(l, []float32{0, 1, 1}, g[:2]); !math.IsNaN(v) || g[0] != 9 {
		t.Errorf("short grad: %g, grad %v", v, g)
	}
	if v := BCEWithLogits(l, []float32{0, 1, 1}, []float32{}); !math.IsNaN(v) {
		t.Errorf("empty non-nil grad: %g", v)
	}
	if v := BCEWithLogits(nil, nil, nil); v != 0 {
		t.Errorf("empty: %g", v)
	}
	// Longer x and grad: only the first len(logits) are used.
	x := []float32{0, 1, 1, 5}
	g = []float32{9, 9, 9, 9}
	want := bceRef64Sum(l, x[:3])
	if v := BCEWithLogits(l, x, g); math.Abs(v-want) > 1e-6*want || g[3] != 9 || g[0] == 9 {
		t.Errorf("long x, grad: %g (want %g), grad %v", v, want, g)
	}
}

// The sum depends only on the values: the same bits on every call, from
// any alignment, from goroutines running at once.
func TestBCEDeterministic(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	for _, kern := range bceKernels {
		for _, n := range []int{5, 784, 1000} {
			l, x := bceInputs(rng, n)
			g := make([]float32, n)
			ref := kern.run(l, x, g)
			for off := 1; off < 4; off++ {
				lb := append(make([]float32, off), l...)[off:]
				xb := append(make([]float32, off+1), x...)[off+1:]
				if v := kern.run(lb, xb, nil); math.Float64bits(v) != math.Float64bits(ref) {
					t.Fatalf("%s n=%d: offset %d gives %.17g, want %.17g", kern.name, n, off, v, ref)
				}
			}
			var wg sync.WaitGroup
			errs := make(chan string, 64)
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					g2 := make([]float32, n)
					for range 50 {
						if v := kern.run(l, x, g2); math.Float64bits(v) != math.Float64bits(ref) {
							errs <- fmt.Sprintf("%s n=%d: %.17g, want %.17g", kern.name, n, v, ref)
							return
						}
					}
					for i := range g2 {
						if math.Float32bits(g2[i]) != math.Float32bits(g[i]) {
							errs <- fmt.Sprintf("%s n=%d: grad[%d] %g, want %g", kern.name, n, i, g2[i], g[i])
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for e := range errs {
				t.Fatal(e)
			}
		}
	}
}

// TestBCEKernelsListed: every kernel the CPU supports is listed (so the
// tests above run it), the Go twin last, and BCEWithLogits uses the first.
func TestBCEKernelsListed(t *testing.T) {
	var names []string
	for _, k := range bceKernels {
		names = append(names, k.name)
	}
	checkKernelsListed(t, "BCE", names, bceKernels[len(bceKernels)-1] == bceGoKernel, bceBest == bceKernels[0], bceHasAsm, true)
}

// TestBCEVsGo measures how far each SIMD kernel is from the Go twin (they
// need not be bit-identical: FMAs through float64 in Go round twice in
// rare cases, and the partial sums differ).
func TestBCEVsGo(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	l, x := bceInputs(rng, 1<<16)
	for i := range l[:len(l)/2] { // sums not dominated by a few huge terms
		l[i] = float32(rng.NormFloat64() * 6)
	}
	gGo := make([]float32, len(l))
	bceGo(l, x, gGo)
	half := len(l) / 2
	sGo := bceGo(l[:half], x[:half], nil)
	for _, kern := range bceKernels {
		if kern == bceGoKernel {
			continue
		}
		g := make([]float32, len(l))
		kern.run(l, x, g)
		s := kern.run(l[:half], x[:half], nil)
		same := 0
		var worst float64
		for i := range g {
			if math.Float32bits(g[i]) == math.Float32bits(gGo[i]) {
				same++
			}
			worst = max(worst, math.Abs(float64(g[i])-float64(gGo[i])))
		}
		if worst > bceGradTol {
			t.Errorf("%s: a gradient %.3g from the Go twin's", kern.name, worst)
		}
		if d := math.Abs(s-sGo) / math.Abs(sGo); !(d <= 1e-12) {
			t.Errorf("%s: sum %.17g, the Go twin's %.17g", kern.name, s, sGo)
		}
		t.Logf("%s vs go: %d of %d gradients bit-identical, max difference %.3g; sums differ by %.3g relative",
			kern.name, same, len(g), worst, math.Abs(s-sGo)/math.Abs(sGo))
	}
}

func BenchmarkBCE(b *testing.B) {
	rng := rand.New(rand.NewSource(5))
	const n = 784
	l, x := bceInputs(rng, n)
	for i := range l { // trained-model-like logits
		l[i] = float32(rng.NormFloat64() * 6)
	}
	g := make([]float32, n)
	report := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/elem")
	}
	for _, kern := range bceKernels {
		b.Run(kern.name+"/grad", func(b *testing.B) {
			for b.Loop() {
				kern.run(l, x, g)
			}
			report(b)
		})
		b.Run(kern.name+"/loss", func(b *testing.B) {
			for b.Loop() {
				kern.run(l, x, nil)
			}
			report(b)
		})
	}
	b.Run("float64-scalar/grad", func(b *testing.B) {
		for b.Loop() {
			for i := range l {
				_, v := bceRef64(l[i], x[i])
				g[i] = float32(v)
			}
		}
		report(b)
	})
}

var bceExhaustive = flag.Bool("bce.exhaustive", false, "TestBCEExhaustive: check every float32 logit in [-90, 90] (minutes)")

// TestBCEExhaustive (with -bce.exhaustive) runs every kernel on every
// float32 |l| <= 90, one element a call, with x = 0 and l = ±|l| and x = 1
// and l = |l|, and reports the worst relative error of the term log1p(e)
// (the whole term there), the worst absolute error of the gradient
// (sigmoid(l) or sigmoid(l) - 1), and, for the SIMD kernels, how many
// terms and gradients differ in any bit from the Go twin's.
func TestBCEExhaustive(t *testing.T) {
	if !*bceExhaustive {
		t.Skip("needs -bce.exhaustive")
	}
	top := math.Float32bits(90)
	for _, kern := range bceKernels {
		type worst struct {
			term, termAt, grad, gradAt float64
			diffTerm, diffGrad         int
		}
		parts := runtime.GOMAXPROCS(0)
		res := make([]worst, parts)
		var wg sync.WaitGroup
		for p := range parts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w := &res[p]
				l := make([]float32, 1)
				x := make([]float32, 1)
				g := make([]float32, 1)
				gGo := make([]float32, 1)
				for b := uint32(p); b <= top; b += uint32(parts) {
					a := math.Float32frombits(b)
					for _, c := range [][2]float32{{-a, 0}, {a, 1}, {a, 0}} {
						l[0], x[0] = c[0], c[1]
						got := kern.run(l, x, g)
						if kern != bceGoKernel {
							if v := bceGo(l, x, gGo); math.Float64bits(v) != math.Float64bits(got) {
								w.diffTerm++
							}
							if math.Float32bits(gGo[0]) != math.Float32bits(g[0]) {
								w.diffGrad++
							}
						}
						want, wg := bceRef64(c[0], c[1])
						if want >= bceTiny {
							if d := math.Abs(got-want) / want; d > w.term {
								w.term, w.termAt = d, float64(c[0])
							}
						} else if math.Abs(got-want) > bceTiny {
							w.term, w.termAt = math.Inf(1), float64(c[0])
						}
						if d := math.Abs(float64(g[0]) - wg); d > w.grad {
							w.grad, w.gradAt = d, float64(c[0])
						}
					}
				}
			}()
		}
		wg.Wait()
		var all worst
		for _, w := range res {
			if w.term > all.term {
				all.term, all.termAt = w.term, w.termAt
			}
			if w.grad > all.grad {
				all.grad, all.gradAt = w.grad, w.gradAt
			}
			all.diffTerm += w.diffTerm
			all.diffGrad += w.diffGrad
		}
		t.Logf("%s: term rel err max %.3g (%.2f x 2^-24) at l=%g; grad abs err max %.3g (%.2f ulp of 1) at l=%g; differ from go: %d terms, %d grads of %d",
			kern.name, all.term, all.term/0x1p-24, all.termAt, all.grad, all.grad/0x1p-23, all.gradAt, all.diffTerm, all.diffGrad, 3*(int(top)+1))
		if all.term > bceTermTol || all.grad > bceGradTol {
			t.Errorf("%s: over the bounds (%g, %g)", kern.name, bceTermTol, bceGradTol)
		}
	}
}

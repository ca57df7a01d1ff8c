package kernels

import (
	"math"
	"math/rand"
	"slices"
	"testing"
)

// lstmCase is the inputs of one position: z and bias (5n), the
// neighbours' cells, and the gradients arriving in the backward pass.
type lstmCase struct {
	z, bias, cl, cu        []float32
	dh, dhR, dhD, dcR, dcD []float32
	n                      int
	zScale, cScale         float64
	special                bool
}

func newLSTMCase(rng *rand.Rand, n int, zScale, cScale float64, special bool) *lstmCase {
	v := func(k int, scale float64) []float32 {
		x := make([]float32, k)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * scale)
			if special && rng.Intn(8) == 0 {
				x[i] = actSpecial[rng.Intn(len(actSpecial))] * float32(1-2*rng.Intn(2))
				x[i] = min(max(x[i], -1e6), 1e6) // finite products
			}
		}
		return x
	}
	return &lstmCase{
		z: v(5*n, zScale), bias: v(5*n, 0.5), cl: v(n, cScale), cu: v(n, cScale),
		dh: v(n, 1), dhR: v(n, 1), dhD: v(n, 1), dcR: v(n, 1), dcD: v(n, 1),
		n: n,
	}
}

// lstmRun runs kern's forward then backward pass on c, the slices at
// offset off, and returns every output.
func lstmRun(t *testing.T, kern *lstmKernel, c *lstmCase, off int) (gates, cell, tc, h, dz, dcOut []float32) {
	t.Helper()
	n := c.n
	zb, z := guarded(c.z, off)
	cb, cell := guarded(make([]float32, n), off)
	tb, tc := guarded(make([]float32, n), off+1)
	hb, h := guarded(make([]float32, n), off+2)
	kern.fwd(z, c.bias, c.cl, c.cu, cell, tc, h)
	gates = slices.Clone(z)
	db, dcOut := guarded(make([]float32, 2*n), off+3)
	kern.bwd(z, tc, c.cl, c.cu, c.dh, c.dhR, c.dhD, c.dcR, c.dcD, dcOut)
	what := kern.name
	checkGuards(t, what+" z", zb, off, 5*n)
	checkGuards(t, what+" c", cb, off, n)
	checkGuards(t, what+" tc", tb, off+1, n)
	checkGuards(t, what+" h", hb, off+2, n)
	checkGuards(t, what+" dcOut", db, off+3, 2*n)
	return gates, cell, tc, h, z, dcOut
}

// Every kernel gives the Go twin's bits: unit counts with and without a
// tail past the vectors, unaligned slices, moderate and saturating
// pre-activations, special values.
func TestLSTMKernelsMatchGo(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	for _, kern := range lstmKernels {
		if kern == lstmGoKernel {
			continue
		}
		for _, n := range []int{1, 3, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 48, 64, 67, 100} {
			for _, sc := range []struct {
				z, c    float64
				special bool
			}{{1, 1, false}, {6, 3, false}, {3, 2, true}} {
				c := newLSTMCase(rng, n, sc.z, sc.c, sc.special)
				off := rng.Intn(4)
				got := [6][]float32{}
				got[0], got[1], got[2], got[3], got[4], got[5] = lstmRun(t, kern, c, off)
				want := [6][]float32{}
				want[0], want[1], want[2], want[3], want[4], want[5] = lstmRun(t, lstmGoKernel, c, 0)
				for k, name := range []string{"gates", "c", "tanh c", "h", "dz", "dcOut"} {
					for i := range want[k] {
						if math.Float32bits(got[k][i]) != math.Float32bits(want[k][i]) {
							t.Fatalf("%s n=%d scale %v: %s[%d] = %g, the Go twin's %g", kern.name, n, sc, name, i, got[k][i], want[k][i])
						}
					}
				}
			}
		}
	}
}

// The Go twin against the formulas in float64.
func TestLSTMGoMatchesFloat64(t *testing.T) {
	rng := rand.New(rand.NewSource(12))
	sig := func(v float64) float64 { return 1 / (1 + math.Exp(-v)) }
	for _, n := range []int{1, 5, 64} {
		for _, scale := range []float64{1, 6} {
			c := newLSTMCase(rng, n, scale, 2, false)
			gates, cell, tc, h, dz, dcOut := lstmRun(t, lstmGoKernel, c, 1)
			near := func(what string, j int, got float32, want float64) {
				t.Helper()
				if math.Abs(float64(got)-want) > 2e-6*math.Max(1, math.Abs(want)) {
					t.Errorf("n=%d %s[%d] = %.8g, float64 %.8g", n, what, j, got, want)
				}
			}
			for j := 0; j < n; j++ {
				var g [5]float64
				for k := range g {
					v := float64(c.z[k*n+j]) + float64(c.bias[k*n+j])
					if k == 4 {
						g[k] = math.Tanh(v)
					} else {
						g[k] = sig(v)
					}
					near("gate", k*n+j, gates[k*n+j], g[k])
				}
				i, f, u, o, gg := g[0], g[1], g[2], g[3], g[4]
				cv := f*float64(c.cl[j]) + u*float64(c.cu[j]) + i*gg
				near("c", j, cell[j], cv)
				near("tanh c", j, tc[j], math.Tanh(cv))
				near("h", j, h[j], o*math.Tanh(cv))
				// Backward, from the kernel's own gates and tanh(c).
				i, f, u, o, gg = float64(gates[j]), float64(gates[n+j]), float64(gates[2*n+j]), float64(gates[3*n+j]), float64(gates[4*n+j])
				tt := float64(tc[j])
				dH := float64(c.dh[j]) + float64(c.dhR[j]) + float64(c.dhD[j])
				dC := float64(c.dcR[j]) + float64(c.dcD[j]) + dH*o*(1-tt*tt)
				near("dz i", j, dz[j], dC*gg*i*(1-i))
				near("dz f_left", j, dz[n+j], dC*float64(c.cl[j])*f*(1-f))
				near("dz f_up", j, dz[2*n+j], dC*float64(c.cu[j])*u*(1-u))
				near("dz o", j, dz[3*n+j], dH*tt*o*(1-o))
				near("dz g", j, dz[4*n+j], dC*i*(1-gg*gg))
				near("dc_left", j, dcOut[j], dC*f)
				near("dc_up", j, dcOut[n+j], dC*u)
			}
		}
	}
}

// The exported functions: errors for short slices (nothing written),
// nothing to do for no units, the best kernel otherwise.
func TestLSTMExported(t *testing.T) {
	rng := rand.New(rand.NewSource(13))
	const n = 37
	c := newLSTMCase(rng, n, 2, 1, false)
	z := slices.Clone(c.z)
	cell, tc, h := make([]float32, n), make([]float32, n), make([]float32, n)
	if err := LSTMCell2D(z, c.bias[:5*n-1], c.cl, c.cu, cell, tc, h); err == nil || !slices.Equal(z, c.z) {
		t.Error("short bias accepted, or z written")
	}
	if err := LSTMCell2D(z, c.bias, c.cl, c.cu, cell, tc, h[:n-1]); err == nil || !slices.Equal(z, c.z) {
		t.Error("short h accepted, or z written")
	}
	if err := LSTMCell2D(nil, nil, nil, nil, nil, nil, nil); err != nil {
		t.Errorf("no units: %v", err)
	}
	if err := LSTMCell2D(z, c.bias, c.cl, c.cu, cell, tc, h); err != nil {
		t.Fatal(err)
	}
	gates, wc, wtc, wh, wdz, wdc := lstmRun(t, lstmBest, c, 0)
	if !slices.Equal(z, gates) || !slices.Equal(cell, wc) || !slices.Equal(tc, wtc) || !slices.Equal(h, wh) {
		t.Error("LSTMCell2D differs from the best kernel")
	}
	dc := make([]float32, 2*n)
	if err := LSTMCell2DGrad(z, tc, c.cl, c.cu, c.dh, c.dhR, c.dhD, c.dcR, c.dcD, dc[:2*n-1]); err == nil || !slices.Equal(z, gates) {
		t.Error("short dcOut accepted, or a written")
	}
	if err := LSTMCell2DGrad(z, tc, c.cl, c.cu, c.dh, c.dhR[:3], c.dhD, c.dcR, c.dcD, dc); err == nil || !slices.Equal(z, gates) {
		t.Error("short dhR accepted, or a written")
	}
	if err := LSTMCell2DGrad(nil, nil, nil, nil, nil, nil, nil, nil, nil, nil); err != nil {
		t.Errorf("no units: %v", err)
	}
	if err := LSTMCell2DGrad(z, tc, c.cl, c.cu, c.dh, c.dhR, c.dhD, c.dcR, c.dcD, dc); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(z, wdz) || !slices.Equal(dc, wdc) {
		t.Error("LSTMCell2DGrad differs from the best kernel")
	}
}

// TestLSTMKernelsListed: the Go twin last, the exported functions use the
// first, and a kernel for each vector extension the CPU has.
func TestLSTMKernelsListed(t *testing.T) {
	names := map[string]bool{}
	for _, k := range lstmKernels {
		names[k.name] = true
	}
	if lstmKernels[len(lstmKernels)-1] != lstmGoKernel || lstmBest != lstmKernels[0] {
		t.Fatal("the Go twin is not last, or the best kernel not first")
	}
	for _, k := range actKernels { // the same extensions as Sigmoid and Tanh
		if !names[k.name] {
			t.Errorf("no %s LSTM kernel", k.name)
		}
	}
	if lstmHasAsm != actHasAsm {
		t.Error("assembly for one and not the other")
	}
}

func BenchmarkLSTM(b *testing.B) {
	rng := rand.New(rand.NewSource(14))
	const n = 64
	c := newLSTMCase(rng, n, 3, 1, false)
	z := make([]float32, 5*n)
	cell, tc, h, dc := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, 2*n)
	for _, kern := range lstmKernels {
		b.Run(kern.name+"/forward", func(b *testing.B) {
			for b.Loop() {
				copy(z, c.z)
				kern.fwd(z, c.bias, c.cl, c.cu, cell, tc, h)
			}
		})
		b.Run(kern.name+"/backward", func(b *testing.B) {
			copy(z, c.z)
			kern.fwd(z, c.bias, c.cl, c.cu, cell, tc, h)
			a := slices.Clone(z)
			for b.Loop() {
				copy(z, a)
				kern.bwd(z, tc, c.cl, c.cu, c.dh, c.dhR, c.dhD, c.dcR, c.dcD, dc)
			}
		})
	}
}

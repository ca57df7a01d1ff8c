package kernels

import (
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"slices"
	"testing"

	"golang.org/x/sys/cpu"
)

// The plain references the kernels are held to, bit for bit.

func reluRef(v float32) float32 {
	if v < 0 {
		return 0
	}
	return v
}

func reluGradRef(d, y float32) float32 {
	if y <= 0 {
		return 0
	}
	return d
}

// maskSumRef is ReLUGradSum's documented order, written out plainly.
func maskSumRef(g, act []float32) (float32, []float32) {
	m := append([]float32(nil), g...)
	var s [64]float32
	for i := range m {
		if act != nil {
			m[i] = reluGradRef(m[i], act[i])
		}
		s[i%64] += m[i]
	}
	var t [16]float32
	for l := range t {
		t[l] = (s[l] + s[16+l]) + (s[32+l] + s[48+l])
	}
	var u [8]float32
	for l := range u {
		u[l] = t[l] + t[l+8]
	}
	var v [4]float32
	for l := range v {
		v[l] = u[l] + u[l+4]
	}
	return (v[0] + v[2]) + (v[1] + v[3]), m
}

var eltSpecial = []float32{
	0, float32(math.Copysign(0, -1)), 1, -1, 0x1p-149, -0x1p-149, 0x1p-126, -0x1p-126,
	float32(math.Inf(1)), float32(math.Inf(-1)), math.MaxFloat32, -math.MaxFloat32,
	float32(math.NaN()), math.Float32frombits(0xffc00001), math.Float32frombits(0x7f800001),
}

// eltValues returns n values: mostly N(0,1) (half of them negative),
// some special (±0, NaN of both signs, ±Inf, subnormals) when special.
func eltValues(rng *rand.Rand, n int, special bool) []float32 {
	x := make([]float32, n)
	for i := range x {
		if special && rng.Intn(5) == 0 {
			x[i] = eltSpecial[rng.Intn(len(eltSpecial))]
		} else {
			x[i] = float32(rng.NormFloat64())
		}
	}
	return x
}

func firstDiff(a, b []float32) int {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

// eltLengths: 0..70, odd lengths around the unrolled blocks, and long ones.
func eltLengths() []int {
	var ns []int
	for n := 0; n <= 70; n++ {
		ns = append(ns, n)
	}
	return append(ns, 127, 128, 129, 191, 255, 1000, 4099, 25088)
}

// forEltCase runs f for every kernel, length and offset (0..3 floats into
// a buffer with guard values around the slice).
func forEltCase(t *testing.T, f func(t *testing.T, k *eltKernel, n, off int, rng *rand.Rand)) {
	for _, k := range eltKernels {
		rng := rand.New(rand.NewSource(1))
		for _, n := range eltLengths() {
			for off := 0; off < 4; off++ {
				f(t, k, n, off, rng)
				if t.Failed() {
					t.Fatalf("kernel %s, n = %d, offset %d", k.name, n, off)
				}
			}
		}
	}
}

// guarded returns buf (with guard values) and buf[off:off+n] holding x.
func guarded(x []float32, off int) (buf, s []float32) {
	buf = make([]float32, len(x)+off+20)
	for i := range buf {
		buf[i] = 12345
	}
	s = buf[off : off+len(x)]
	copy(s, x)
	return buf, s
}

// checkGuards fails t if the kernel named by what wrote into buf outside
// the slice of length n at off (guarded).
func checkGuards(t *testing.T, what string, buf []float32, off, n int) {
	t.Helper()
	for i, v := range buf {
		if (i < off || i >= off+n) && v != 12345 {
			t.Errorf("%s: wrote outside the slice at %d", what, i-off)
			return
		}
	}
}

func TestReLUKernels(t *testing.T) {
	forEltCase(t, func(t *testing.T, k *eltKernel, n, off int, rng *rand.Rand) {
		x := eltValues(rng, n, true)
		buf, s := guarded(x, off)
		if n > 0 {
			k.relu(s)
		}
		want := make([]float32, n)
		for i, v := range x {
			want[i] = reluRef(v)
		}
		if i := firstDiff(s, want); i >= 0 {
			t.Errorf("ReLU(%g) = %g (%#x), want %g", x[i], s[i], math.Float32bits(s[i]), want[i])
		}
		checkGuards(t, k.name, buf, off, n)
	})
}

// TestReLUSemantics pins the documented special cases on every kernel.
func TestReLUSemantics(t *testing.T) {
	negZero := float32(math.Copysign(0, -1))
	nan := float32(math.NaN())
	negNaN := math.Float32frombits(0xffc00000)
	for _, k := range eltKernels {
		x := []float32{negZero, nan, negNaN, -1, float32(math.Inf(-1)), 0, 2}
		k.relu(x)
		want := []uint32{0x80000000, math.Float32bits(nan), 0xffc00000, 0, 0, 0, math.Float32bits(2)}
		for i := range x {
			if math.Float32bits(x[i]) != want[i] {
				t.Errorf("%s: ReLU element %d = %#x, want %#x", k.name, i, math.Float32bits(x[i]), want[i])
			}
		}
		y := []float32{negZero, 0, nan, negNaN, -1, 0x1p-149, float32(math.Inf(1))}
		d := []float32{1, 2, 3, 4, 5, 6, 7}
		k.reluGrad(d, y)
		wantD := []float32{0, 0, 3, 4, 0, 6, 7}
		if i := firstDiff(d, wantD); i >= 0 {
			t.Errorf("%s: ReLUGrad = %v, want %v", k.name, d, wantD)
		}
	}
}

func TestReLUGradKernels(t *testing.T) {
	forEltCase(t, func(t *testing.T, k *eltKernel, n, off int, rng *rand.Rand) {
		d := eltValues(rng, n, true)
		y := eltValues(rng, n, true)
		buf, s := guarded(d, off)
		_, ys := guarded(y, 3-off) // a different alignment
		if n > 0 {
			k.reluGrad(s, ys)
		}
		want := make([]float32, n)
		for i := range d {
			want[i] = reluGradRef(d[i], y[i])
		}
		if i := firstDiff(s, want); i >= 0 {
			t.Errorf("element %d: d %g, y %g: got %g, want %g", i, d[i], y[i], s[i], want[i])
		}
		checkGuards(t, k.name, buf, off, n)
	})
}

func TestAddBiasKernels(t *testing.T) {
	forEltCase(t, func(t *testing.T, k *eltKernel, n, off int, rng *rand.Rand) {
		x := eltValues(rng, n, true)
		b := float32(rng.NormFloat64())
		if off == 3 {
			b = float32(math.Copysign(0, -1)) // -0 + -0 stays -0, and ReLU keeps it
		}
		for _, relu := range []bool{false, true} {
			buf, s := guarded(x, off)
			if n > 0 {
				k.addBias(s, b, relu)
			}
			want := make([]float32, n)
			for i, v := range x {
				want[i] = v + b
				if relu {
					want[i] = reluRef(want[i])
				}
			}
			if i := firstDiff(s, want); i >= 0 {
				t.Errorf("relu %v: %g + %g: got %g, want %g", relu, x[i], b, s[i], want[i])
			}
			checkGuards(t, k.name, buf, off, n)
		}
	})
}

func TestAddBiasRowsKernels(t *testing.T) {
	for _, k := range eltKernels {
		rng := rand.New(rand.NewSource(2))
		for _, cols := range []int{1, 3, 7, 8, 15, 16, 17, 20, 33, 64, 400, 784} {
			for _, rows := range []int{0, 1, 2, 5} {
				for _, relu := range []bool{false, true} {
					off := rng.Intn(4)
					x := eltValues(rng, rows*cols, true)
					b := eltValues(rng, cols, false)
					buf, s := guarded(x, off)
					if err := addBiasRows(k, s, b, relu); err != nil {
						t.Fatal(err)
					}
					for i, v := range x {
						w := v + b[i%cols]
						if relu {
							w = reluRef(w)
						}
						if math.Float32bits(s[i]) != math.Float32bits(w) {
							t.Fatalf("%s cols %d rows %d relu %v: element %d = %g, want %g", k.name, cols, rows, relu, i, s[i], w)
						}
					}
					checkGuards(t, k.name, buf, off, len(x))
				}
			}
		}
	}
}

func TestReLUGradSumKernels(t *testing.T) {
	forEltCase(t, func(t *testing.T, k *eltKernel, n, off int, rng *rand.Rand) {
		g := eltValues(rng, n, false)
		act := eltValues(rng, n, false)
		for i := range act {
			switch rng.Intn(8) {
			case 0:
				act[i] = float32(math.Copysign(0, -1))
			case 1:
				act[i] = 0
			}
		}
		// plain sum (act nil): g only read
		buf, s := guarded(g, off)
		want, _ := maskSumRef(g, nil)
		var got float32
		if n > 0 {
			got = k.maskSum(s, nil)
		}
		if math.Float32bits(got) != math.Float32bits(want) {
			t.Errorf("sum = %g, want %g", got, want)
		}
		if i := firstDiff(s, g); i >= 0 {
			t.Errorf("sum without act wrote g[%d]", i)
		}
		// masked
		_, as := guarded(act, 3-off)
		want, wantG := maskSumRef(g, act)
		if n > 0 {
			got = k.maskSum(s, as)
		}
		if math.Float32bits(got) != math.Float32bits(want) {
			t.Errorf("masked sum = %g, want %g", got, want)
		}
		if i := firstDiff(s, wantG); i >= 0 {
			t.Errorf("masked g[%d] = %g, want %g", i, s[i], wantG[i])
		}
		checkGuards(t, k.name, buf, off, n)
		// and the sum is a sum
		var s64 float64
		for _, v := range wantG {
			s64 += float64(v)
		}
		if math.Abs(float64(got)-s64) > 1e-5*float64(n+1) {
			t.Errorf("masked sum %g, float64 sum %g", got, s64)
		}
	})
}

func TestReLUGradSumRowsKernels(t *testing.T) {
	for _, k := range eltKernels {
		rng := rand.New(rand.NewSource(3))
		for _, cols := range []int{1, 3, 7, 8, 15, 16, 17, 20, 33, 64, 400, 784} {
			for _, rows := range []int{0, 1, 2, 5, 128} {
				for _, withAct := range []bool{false, true} {
					off := rng.Intn(4)
					g := eltValues(rng, rows*cols, false)
					var act []float32
					if withAct {
						act = eltValues(rng, rows*cols, true)
					}
					buf, s := guarded(g, off)
					dst := make([]float32, cols)
					for i := range dst {
						dst[i] = 99 // overwritten
					}
					if err := reluGradSumRows(k, dst, s, act); err != nil {
						t.Fatal(err)
					}
					want := make([]float32, cols)
					for i, v := range g {
						if act != nil {
							v = reluGradRef(v, act[i])
							if math.Float32bits(s[i]) != math.Float32bits(v) {
								t.Fatalf("%s: masked g[%d] = %g, want %g", k.name, i, s[i], v)
							}
						}
						want[i%cols] += v
					}
					if i := firstDiff(dst, want); i >= 0 {
						t.Fatalf("%s cols %d rows %d act %v: dst[%d] = %g, want %g", k.name, cols, rows, withAct, i, dst[i], want[i])
					}
					checkGuards(t, k.name, buf, off, len(g))
				}
			}
		}
	}
}

// TestReLUGradSumNonFinite: NaN and Inf propagate (every kernel).
func TestReLUGradSumNonFinite(t *testing.T) {
	for _, k := range eltKernels {
		for _, n := range []int{1, 17, 100} {
			for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1))} {
				g := make([]float32, n)
				g[n-1] = bad
				got := k.maskSum(g, nil)
				if math.Float32bits(got) != math.Float32bits(bad) && !(math.IsNaN(float64(got)) && math.IsNaN(float64(bad))) {
					t.Errorf("%s n %d: sum with %g = %g", k.name, n, bad, got)
				}
			}
		}
	}
}

func TestEltBadLengths(t *testing.T) {
	if err := ReLUGrad(make([]float32, 3), make([]float32, 2)); err == nil {
		t.Error("ReLUGrad: no error for short y")
	}
	if err := ReLUGrad(nil, nil); err != nil {
		t.Error(err)
	}
	if v := ReLUGradSum(make([]float32, 3), make([]float32, 2)); !math.IsNaN(float64(v)) {
		t.Errorf("ReLUGradSum: %g for a short act", v)
	}
	if v := ReLUGradSum(nil, nil); v != 0 {
		t.Errorf("ReLUGradSum(nil) = %g", v)
	}
	x := []float32{1, 2, 3}
	if err := AddBiasRows(x, []float32{1, 1}, false); err == nil || x[0] != 1 {
		t.Error("AddBiasRows: no error, or wrote, for 3 values in rows of 2")
	}
	if err := AddBiasRows(x, nil, false); err == nil {
		t.Error("AddBiasRows: no error for empty b")
	}
	if err := AddBiasRows(nil, nil, true); err != nil {
		t.Error(err)
	}
	dst := []float32{7, 7}
	if err := ReLUGradSumRows(dst, x, nil); err == nil || dst[0] != 7 {
		t.Error("ReLUGradSumRows: no error, or wrote, for 3 values in rows of 2")
	}
	if err := ReLUGradSumRows(dst, []float32{1, 2}, []float32{1}); err == nil || dst[0] != 7 {
		t.Error("ReLUGradSumRows: no error, or wrote, for a short act")
	}
	if err := ReLUGradSumRows(nil, x, nil); err == nil {
		t.Error("ReLUGradSumRows: no error for empty dst")
	}
	ReLU(nil)
	AddBias(nil, 1, true)
}

// TestEltKernelsListed: every kernel the CPU supports is listed, the Go
// twin last, and the exported functions use the first.
func TestEltKernelsListed(t *testing.T) {
	var names []string
	for _, k := range eltKernels {
		names = append(names, k.name)
	}
	checkKernelsListed(t, "elementwise", names, eltKernels[len(eltKernels)-1] == eltGoKernel, eltBest == eltKernels[0], eltHasAsm, false)
}

// checkKernelsListed checks a family's kernel list (names, best first):
// the Go twin is last (goLast), the exported functions use the first
// (bestFirst), and where the build has assembly (hasAsm) every extension
// the CPU has is listed (avx2 only with FMA too when avx2NeedsFMA).
func checkKernelsListed(t *testing.T, family string, names []string, goLast, bestFirst, hasAsm, avx2NeedsFMA bool) {
	t.Helper()
	if !goLast {
		t.Fatalf("%s: the Go twin is not the last kernel", family)
	}
	if !bestFirst {
		t.Fatalf("%s: the exported functions do not use the first kernel", family)
	}
	if hasAsm && cpu.X86.HasAVX2 && (cpu.X86.HasFMA || !avx2NeedsFMA) && !slices.Contains(names, "avx2") {
		t.Errorf("%s: the CPU has AVX2 (and FMA), but no avx2 kernel is listed", family)
	}
	if hasAsm && cpu.X86.HasAVX512F && !slices.Contains(names, "avx512") {
		t.Errorf("%s: the CPU has AVX-512F, but no avx512 kernel is listed", family)
	}
	t.Logf("%s kernels: %v (%s/%s)", family, names, runtime.GOOS, runtime.GOARCH)
}

func BenchmarkElt(b *testing.B) {
	const n = 25088
	rng := rand.New(rand.NewSource(5))
	x := eltValues(rng, n, false)
	y := eltValues(rng, n, false)
	for _, k := range eltKernels {
		reluGradRef := func(d, y []float32) {
			for i, v := range y {
				if v <= 0 {
					d[i] = 0
				}
			}
		}
		for _, c := range []struct {
			name string
			f    func()
		}{
			{"relu", func() { copy(y, x); k.relu(y) }},
			{"addbias-relu", func() { copy(y, x); k.addBias(y, 0.1, true) }},
			{"relugrad", func() { copy(y, x); k.reluGrad(y, x) }},
			{"relugradsum", func() { copy(y, x); k.maskSum(y, x) }},
			{"copy-only", func() { copy(y, x) }},
			{"branchy-relugrad", func() { copy(y, x); reluGradRef(y, x) }},
		} {
			b.Run(fmt.Sprintf("%s/%s", k.name, c.name), func(b *testing.B) {
				b.SetBytes(n * 4)
				for b.Loop() {
					c.f()
				}
			})
		}
	}
}

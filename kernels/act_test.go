package kernels

import (
	"flag"
	"fmt"
	"math"
	"math/rand"
	"testing"
)

var actExhaustive = flag.Bool("act.exhaustive", false, "run Sigmoid and Tanh of every kernel on every float32 (minutes)")

// Error bounds the kernels are held to (documented on Sigmoid and Tanh).
const (
	// sigmoidAbsTol bounds |Sigmoid(x) - sigmoid(x)|.
	sigmoidAbsTol = 1e-7
	// sigmoidRelTol bounds the relative error where exp(-|x|) is not
	// flushed (|x| <= bceCutoff).
	sigmoidRelTol = 2.5e-7
	// tanhRelTol bounds the relative (and so the absolute) error of Tanh.
	tanhRelTol = 2.5e-7
)

func sigmoidRef(x float32) float64 { return 1 / (1 + math.Exp(-float64(x))) }

func tanhRef(x float32) float64 { return math.Tanh(float64(x)) }

// actCheck holds the worst errors seen against the float64 references.
type actCheck struct {
	sigAbs, sigRel, tanhRel float64
	sigAbsAt, sigRelAt      float32
	tanhRelAt               float32
}

// add records the errors of sig = Sigmoid(x) and th = Tanh(x).
func (c *actCheck) add(x, sig, th float32) {
	if x != x {
		return
	}
	ws, g := sigmoidRef(x), float64(sig)
	if d := math.Abs(g - ws); !(d <= c.sigAbs) {
		c.sigAbs, c.sigAbsAt = d, x
	}
	if math.Abs(float64(x)) <= float64(bceCutoff) {
		if d := math.Abs(g-ws) / ws; !(d <= c.sigRel) {
			c.sigRel, c.sigRelAt = d, x
		}
	}
	wt, g := tanhRef(x), float64(th)
	d := math.Abs(g - wt)
	if wt != 0 {
		d /= math.Abs(wt)
	}
	if !(d <= c.tanhRel) {
		c.tanhRel, c.tanhRelAt = d, x
	}
}

// verdict fails t if a bound is exceeded.
func (c *actCheck) verdict(t *testing.T, name string) {
	t.Helper()
	if !(c.sigAbs <= sigmoidAbsTol) || !(c.sigRel <= sigmoidRelTol) {
		t.Errorf("%s: sigmoid error %.3g absolute (x = %g), %.3g relative (x = %g)", name, c.sigAbs, c.sigAbsAt, c.sigRel, c.sigRelAt)
	}
	if !(c.tanhRel <= tanhRelTol) {
		t.Errorf("%s: tanh relative error %.3g (x = %g)", name, c.tanhRel, c.tanhRelAt)
	}
	t.Logf("%s: sigmoid error %.3g absolute (x = %g), %.3g relative (x = %g); tanh %.3g relative (x = %g)",
		name, c.sigAbs, c.sigAbsAt, c.sigRel, c.sigRelAt, c.tanhRel, c.tanhRelAt)
}

var actSpecial = []float32{
	0, 0x1p-149, 1e-40, 0x1p-126, 1e-30, 1e-7, 1e-4, 0.1, 0.17, 0.1733, 0.18, 0.3466, 0.35, 0.5, 1, 2, 4.5,
	9, 9.01, 9.011, 9.02, 9.03, actTanhClamp, 9.6, 15, 16.5, 20,
	80, 87, 87.3, bceCutoff, math.Nextafter32(bceCutoff, 100), 87.34, 88, 89, 103, 104, 200, 1e10, math.MaxFloat32,
}

// actInputs returns n values from a mix of scales and the special ones,
// both signs.
func actInputs(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		switch rng.Intn(5) {
		case 0:
			x[i] = float32(rng.NormFloat64())
		case 1:
			x[i] = float32(rng.NormFloat64() * 8)
		case 2:
			x[i] = float32(rng.Float64()*200 - 100)
		case 3:
			x[i] = float32(math.Exp(rng.Float64()*60-50)) * float32(1-2*rng.Intn(2))
		default:
			x[i] = actSpecial[rng.Intn(len(actSpecial))] * float32(1-2*rng.Intn(2))
		}
	}
	return x
}

// runAct runs fn on a copy of x placed at offset off of a guarded buffer,
// checks that nothing around it was written, and returns the result.
func runAct(t *testing.T, name string, fn func([]float32), x []float32, off int) []float32 {
	t.Helper()
	buf, s := guarded(x, off)
	if len(x) > 0 {
		fn(s)
	}
	checkGuards(t, fmt.Sprintf("%s n=%d off=%d", name, len(x), off), buf, off, len(x))
	return s
}

// Every kernel on every length 0..67 (all tails) and 1000, unaligned:
// the Go twin's bits, and within the bounds of the float64 references.
func TestActKernels(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, kern := range actKernels {
		var c actCheck
		for _, n := range append(seq(0, 67), 1000, 4099) {
			for off := 0; off < 4; off++ {
				x := actInputs(rng, n)
				sig := runAct(t, kern.name+" sigmoid", kern.sigmoid, x, off)
				th := runAct(t, kern.name+" tanh", kern.tanh, x, off)
				for i, v := range x {
					if ws := sigmoid32(v); math.Float32bits(sig[i]) != math.Float32bits(ws) {
						t.Fatalf("%s n=%d off=%d: Sigmoid(%g) = %g, the Go twin's %g", kern.name, n, off, v, sig[i], ws)
					}
					if wt := tanh32(v); math.Float32bits(th[i]) != math.Float32bits(wt) {
						t.Fatalf("%s n=%d off=%d: Tanh(%g) = %g, the Go twin's %g", kern.name, n, off, v, th[i], wt)
					}
					c.add(v, sig[i], th[i])
				}
			}
		}
		c.verdict(t, kern.name)
	}
}

func seq(a, b int) []int {
	var s []int
	for i := a; i <= b; i++ {
		s = append(s, i)
	}
	return s
}

// A sweep of the float32 values with |x| in [2^-30, 128) (every 61st bit
// pattern, both signs, a million values) through every kernel: the Go
// twin's bits and the error bounds. -act.exhaustive takes every float32.
func TestActSweep(t *testing.T) {
	for _, kern := range actKernels {
		var c actCheck
		sig, th := make([]float32, actSweepChunk), make([]float32, actSweepChunk)
		actSweep(func(x []float32) {
			copy(sig, x)
			copy(th, x)
			kern.sigmoid(sig[:len(x)])
			kern.tanh(th[:len(x)])
			for i, v := range x {
				if kern != actGoKernel {
					if ws := sigmoid32(v); math.Float32bits(sig[i]) != math.Float32bits(ws) {
						t.Fatalf("%s: Sigmoid(%g) = %g, the Go twin's %g", kern.name, v, sig[i], ws)
					}
					if wt := tanh32(v); math.Float32bits(th[i]) != math.Float32bits(wt) {
						t.Fatalf("%s: Tanh(%g) = %g, the Go twin's %g", kern.name, v, th[i], wt)
					}
				}
				c.add(v, sig[i], th[i])
			}
		})
		c.verdict(t, kern.name)
	}
}

// actSweepChunk is the most values actSweep hands over at a time.
const actSweepChunk = 1 << 17

// actSweep calls fn with the float32 values with |x| in [2^-30, 128),
// every 61st bit pattern, both signs (a million values), or with
// -act.exhaustive every float32, at most actSweepChunk at a time.
func actSweep(fn func(x []float32)) {
	lo, hi := math.Float32bits(0x1p-30), math.Float32bits(128)
	step := uint32(61)
	if *actExhaustive {
		lo, hi, step = 0, 0x7f800000, 1
	}
	x := make([]float32, 0, actSweepChunk)
	for b := lo; b < hi; {
		x = x[:0]
		for ; b < hi && len(x) < actSweepChunk; b += step {
			x = append(x, math.Float32frombits(b), math.Float32frombits(b|actSignBit))
		}
		fn(x)
		if b < lo { // wrapped
			break
		}
	}
}

// Signed zeros, infinities, NaN, and the saturation of both functions.
func TestActSpecialValues(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	negZero := float32(math.Copysign(0, -1))
	for _, kern := range actKernels {
		for _, n := range []int{1, 16, 21} {
			// sig -1: not checked here (TestActKernels bounds it).
			for _, c := range []struct{ x, sig, th float32 }{
				{0, 0.5, 0}, {negZero, 0.5, negZero},
				{inf, 1, 1}, {-inf, 0, -1},
				{nan, nan, nan}, {-nan, nan, nan},
				{20, 1, 1}, {-20, -1, -1}, {9.02, -1, 1}, {-9.02, -1, -1}, {-200, 0, -1},
				{1e-30, 0.5, 1e-30}, {-1e-30, 0.5, -1e-30}, {0x1p-149, 0.5, 0x1p-149},
			} {
				x := make([]float32, n)
				for i := range x {
					x[i] = float32(i%5) - 2
				}
				k := n / 2
				x[k] = c.x
				sig := runAct(t, kern.name, kern.sigmoid, x, 1)
				th := runAct(t, kern.name, kern.tanh, x, 1)
				same := func(a, b float32) bool {
					return math.Float32bits(a) == math.Float32bits(b) || a != a && b != b
				}
				if !(same(sig[k], c.sig) || c.sig == -1) || !same(th[k], c.th) {
					t.Errorf("%s n=%d: Sigmoid(%g) = %g (want %g), Tanh = %g (want %g)", kern.name, n, c.x, sig[k], c.sig, th[k], c.th)
				}
				for i, v := range x {
					if i != k && (sig[i] != sigmoid32(v) || th[i] != tanh32(v)) {
						t.Errorf("%s: a special value changed element %d", kern.name, i)
					}
				}
			}
		}
	}
}

// The exported functions: no-ops on empty slices, the best kernel
// otherwise.
func TestActExported(t *testing.T) {
	Sigmoid(nil)
	Tanh([]float32{})
	ExpNegAbs(nil)
	e := actInputs(rand.New(rand.NewSource(5)), 100)
	want := append([]float32(nil), e...)
	ExpNegAbs(e)
	for i, v := range want {
		if e[i] != expNeg32(v) {
			t.Fatalf("ExpNegAbs(%g) = %g, want %g", v, e[i], expNeg32(v))
		}
	}
	x := actInputs(rand.New(rand.NewSource(2)), 100)
	s, th := append([]float32(nil), x...), append([]float32(nil), x...)
	Sigmoid(s)
	Tanh(th)
	for i, v := range x {
		if s[i] != sigmoid32(v) || th[i] != tanh32(v) {
			t.Fatalf("Sigmoid/Tanh(%g) = %g, %g; want %g, %g", v, s[i], th[i], sigmoid32(v), tanh32(v))
		}
	}
}

// TestActKernelsListed: every kernel the CPU supports is listed (so the
// tests above run it), the Go twin last, and Sigmoid and Tanh use the
// first.
func TestActKernelsListed(t *testing.T) {
	var names []string
	for _, k := range actKernels {
		names = append(names, k.name)
	}
	checkKernelsListed(t, "activation", names, actKernels[len(actKernels)-1] == actGoKernel, actBest == actKernels[0], actHasAsm, true)
}

func BenchmarkAct(b *testing.B) {
	rng := rand.New(rand.NewSource(3))
	const n = 320 // one position's gates at h = 64
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * 3)
	}
	y := make([]float32, n)
	for _, kern := range actKernels {
		for _, f := range []struct {
			name string
			fn   func([]float32)
		}{{"sigmoid", kern.sigmoid}, {"tanh", kern.tanh}, {"expneg", kern.expNeg}} {
			b.Run(kern.name+"/"+f.name, func(b *testing.B) {
				for b.Loop() {
					copy(y, x)
					f.fn(y)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/elem")
			})
		}
	}
	b.Run("float64-math", func(b *testing.B) {
		for b.Loop() {
			for i, v := range x {
				y[i] = float32(math.Tanh(float64(v)))
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/elem")
	})
}

// expNegRelTol bounds the relative error of ExpNegAbs where it is not
// flushed (|x| <= bceCutoff).
const expNegRelTol = 1.5e-7

// expNegCheck holds ExpNegAbs's worst relative error against math.Exp.
type expNegCheck struct {
	rel   float64
	relAt float32
}

func (c *expNegCheck) add(t *testing.T, name string, x, got float32) {
	t.Helper()
	if x != x {
		if got == got {
			t.Fatalf("%s: ExpNegAbs(NaN) = %g", name, got)
		}
		return
	}
	a := math.Abs(float64(x))
	if a > float64(bceCutoff) {
		if got != 0 {
			t.Fatalf("%s: ExpNegAbs(%g) = %g, want 0 (flushed)", name, x, got)
		}
		return
	}
	want := math.Exp(-a)
	if d := math.Abs(float64(got)-want) / want; !(d <= c.rel) {
		c.rel, c.relAt = d, x
	}
}

func (c *expNegCheck) verdict(t *testing.T, name string) {
	t.Helper()
	if !(c.rel <= expNegRelTol) {
		t.Errorf("%s: ExpNegAbs relative error %.3g (x = %g)", name, c.rel, c.relAt)
	}
	t.Logf("%s: ExpNegAbs relative error %.3g (x = %g)", name, c.rel, c.relAt)
}

// Every kernel's ExpNegAbs on every length 0..67, 1000 and 4099,
// unaligned, on the special values too: the Go twin's bits, within the
// bound of math.Exp, and nothing outside the slice written.
func TestExpNegAbsKernels(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	specials := append([]float32{float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN())}, actSpecial...)
	for _, kern := range actKernels {
		var c expNegCheck
		for _, n := range append(seq(0, 67), 1000, 4099) {
			for off := 0; off < 4; off++ {
				x := actInputs(rng, n)
				if n > 0 {
					x[rng.Intn(n)] = specials[rng.Intn(len(specials))]
				}
				got := runAct(t, kern.name+" expNeg", kern.expNeg, x, off)
				for i, v := range x {
					if w := expNeg32(v); math.Float32bits(got[i]) != math.Float32bits(w) {
						t.Fatalf("%s n=%d off=%d: ExpNegAbs(%g) = %g, the Go twin's %g", kern.name, n, off, v, got[i], w)
					}
					c.add(t, kern.name, v, got[i])
				}
			}
		}
		c.verdict(t, kern.name)
	}
	for _, v := range []float32{0, float32(math.Copysign(0, -1))} {
		if got := expNeg32(v); got != 1 {
			t.Errorf("ExpNegAbs(%g) = %g, want exactly 1", v, got)
		}
	}
}

// The sweep of TestActSweep for ExpNegAbs: |x| in [2^-30, 128), every
// 61st bit pattern, both signs; -act.exhaustive takes every float32.
func TestExpNegAbsSweep(t *testing.T) {
	got := make([]float32, actSweepChunk)
	for _, kern := range actKernels {
		var c expNegCheck
		actSweep(func(x []float32) {
			copy(got, x)
			kern.expNeg(got[:len(x)])
			for i, v := range x {
				if kern != actGoKernel {
					if w := expNeg32(v); math.Float32bits(got[i]) != math.Float32bits(w) {
						t.Fatalf("%s: ExpNegAbs(%g) = %g, the Go twin's %g", kern.name, v, got[i], w)
					}
				}
				c.add(t, kern.name, v, got[i])
			}
		})
		c.verdict(t, kern.name)
	}
}

package kernels

import "math"

// BCEWithLogits returns the summed binary cross-entropy of logits against
// targets x,
//
//	sum over i of  max(l,0) - l*x + log(1+exp(-|l|)),   l = logits[i], x = x[i]
//
// (torch's binary_cross_entropy_with_logits with reduction="sum"), and,
// when grad is not nil, writes its gradient sigmoid(l) - x to grad[i].
// Targets are 0 or 1 in practice, but any float is accepted.
//
// Preconditions: len(x) >= len(logits) and, if grad is not nil,
// len(grad) >= len(logits); only the first len(logits) elements are read
// or written. If they do not hold, BCEWithLogits returns NaN and writes
// nothing. len(logits) == 0 returns 0.
//
// Each element is computed in float32 from e = exp(-|l|) (vectorised, 16
// or 8 lanes, where the CPU allows; see DESIGN.md), and the terms are
// added in float64 in an order that depends only on len(logits) and the
// CPU's kernel: the same inputs give the same bits on every call.
//
// Accuracy (finite inputs): each term has a relative error below 3e-7
// (1.62e-7 measured over every float32 logit with x = 0 and 1) for
// targets in [0,1], where every term is >= 0, so the sum has the same
// relative bound; grad[i] is within 2.4e-7 (2 ulp of 1; 8.9e-8 measured)
// of sigmoid(l) - x. exp(-|l|) is taken as 0 for |l| > 87.33 (where it
// nears float32's smallest normal, 2^-126), so such a term is short of its
// exact value by less than 1.2e-38.
//
// Non-finite inputs: a NaN logit or target makes the sum and grad[i] NaN.
// An infinite logit makes the sum NaN or ±Inf, as
// IEEE arithmetic on max(l,0) - l*x gives (-Inf with x = 0 is 0 - (-Inf*0)
// = NaN, for example), and grad[i] = sigmoid(±Inf) - x, i.e. 1-x or -x.
// Infinite targets likewise give a non-finite sum.
func BCEWithLogits(logits, x, grad []float32) float64 {
	n := len(logits)
	if len(x) < n || (grad != nil && len(grad) < n) {
		return math.NaN()
	}
	if n == 0 {
		return 0
	}
	if grad != nil {
		grad = grad[:n]
	}
	return bceBest.run(logits, x[:n], grad)
}

// bceKernel is one implementation of BCEWithLogits. run needs len(x) ==
// len(logits) >= 1 and grad nil or of the same length. Values of this type
// are read-only tables.
type bceKernel struct {
	name  string
	lanes int // float32 lanes a vector (1 for Go)
	run   func(logits, x, grad []float32) float64
}

// bceGoKernel is the pure-Go twin: the same float32 formulas, one element
// at a time, and the terms summed in order.
var bceGoKernel = &bceKernel{name: "go", lanes: 1, run: bceGo}

// The formulas, shared by the Go twin and the assembly (which reads these
// constants from bceTab, built from them).
//
// e = exp(-a), a = |l|: n = round(-a*log2(e)) by adding 1.5*2^23 (bceMagic:
// the sum's low mantissa bits are then n, and its bits + 127 shifted left
// by 23 are the float 2^n); r = -a - n*ln2 with ln2 in two parts (Cody and
// Waite: bceLn2Hi has 15 significant bits, so n*bceLn2Hi is exact for
// |n| <= 2^9, and r is exact before the bceLn2Lo step), |r| <= ln2/2 (a
// bit more: n is rounded from a rounded product); exp(r) by a degree-6
// polynomial; e = exp(r) * 2^n. For a > bceCutoff, e = 0 (no subnormals
// ever reach the rest; n stays >= -126, so 2^n is a normal float).
//
// log1p(e), 0 <= e <= 1, directly as e*G(e) with G(e) = log1p(e)/e by a
// degree-8 polynomial on all of [0,1], written e + (e*H(e))*e with
// H = (G-1)/e: no division, no range reduction, and exact for tiny e
// (log1p(e) = e once e*H(e)*e is below half an ulp of e). Chosen over
// the log(1+e) of an exponent/mantissa split with a correction term (needs
// more operations and the reciprocal of 1+e) and over 2*atanh(e/(2+e)) (a
// second division per element, slow in AVX-512 on most cores): G is
// analytic on a disc of radius 1 about 0, so one polynomial on [0,1]
// converges fast enough (degree 8: 3.3e-8 relative error before rounding).
//
// sigmoid(l) = 1/(1+e) for l >= 0, e/(1+e) otherwise (one division,
// correctly rounded: no reciprocal estimate, so AVX2 and AVX-512 agree).
//
// Coefficients: fitted by kernels/testdata/bce_fit.py (minimax in relative
// error by Lawson's iteratively reweighted least squares in float64 with
// numpy, then rounded to float32 one by one, lowest degree first,
// refitting the higher ones each time). Max relative error measured by
// that script with float32 evaluation (FMA Horner, as here) on 2-3 million
// points: exp(r) 6.2e-8, e*G(e) 1.3e-7. Exhaustively over every float32
// |l| <= 90 (TestBCEExhaustive, see DESIGN.md), a term log1p(exp(-|l|))
// is within 1.62e-7 relative and sigmoid(l) within 8.9e-8.
const (
	bceLog2e  float32 = 0x1.715476p+0 // float32(1/ln 2)
	bceMagic  float32 = 0x1.8p+23     // 1.5*2^23: adding it rounds to an integer
	bceLn2Hi  float32 = 0x1.62e4p-1   // ln 2 to 15 bits
	bceLn2Lo  float32 = 0x1.7f7d1cp-20
	bceCutoff float32 = 87.33 // exp(-87.33) = 1.1832e-38 > 2^-126 = 1.1755e-38

	// exp(r) ~ 1 + r*(1 + r*(e2 + r*(e3 + r*(e4 + r*(e5 + r*e6)))))
	bceE2 float32 = 0x1.fffffcp-2
	bceE3 float32 = 0x1.55548cp-3
	bceE4 float32 = 0x1.5558b8p-5
	bceE5 float32 = 0x1.123e5ep-7
	bceE6 float32 = 0x1.6a4e32p-10

	// log1p(e)/e ~ 1 + e*(g1 + e*(g2 + ... + e*g8))
	bceG1 float32 = -0x1.ffff14p-2
	bceG2 float32 = 0x1.5535dep-2
	bceG3 float32 = -0x1.fd1368p-3
	bceG4 float32 = 0x1.884554p-3
	bceG5 float32 = -0x1.19af8ep-3
	bceG6 float32 = 0x1.44707ap-4
	bceG7 float32 = -0x1.eca398p-6
	bceG8 float32 = 0x1.5fa0dap-8
)

// fma32 is a*b+c rounded once to float32 (through float64: a*b is exact
// there, so only a sum that lands exactly between two float32 after its
// rounding to float64 can differ from a float32 FMA, rarely).
func fma32(a, b, c float32) float32 {
	return float32(math.FMA(float64(a), float64(b), float64(c)))
}

// bceExp is exp(-a) for a = |l| >= 0 (NaN for NaN, 0 for a > bceCutoff).
func bceExp(a float32) float32 {
	if a > bceCutoff {
		return 0
	}
	scale, r, t := expReduce(a)
	return fma32(t, r, 1) * scale
}

// expReduce is the range reduction and polynomial of bceExp for a >= 0:
// exp(-a) = scale * (1 + r*t), scale = 2^n, |r| <= ln2/2 (Tanh uses the
// parts to form expm1 without cancellation).
func expReduce(a float32) (scale, r, t float32) {
	k := fma32(a, -bceLog2e, bceMagic)
	nf := k - bceMagic // n, exactly
	r = fma32(nf, -bceLn2Hi, -a)
	r = fma32(nf, -bceLn2Lo, r)
	t = fma32(bceE6, r, bceE5)
	t = fma32(t, r, bceE4)
	t = fma32(t, r, bceE3)
	t = fma32(t, r, bceE2)
	t = fma32(t, r, 1)
	scale = math.Float32frombits((math.Float32bits(k) + 127) << 23)
	return scale, r, t
}

// bceLog1p is log(1+e) for 0 <= e <= 1.
func bceLog1p(e float32) float32 {
	q := fma32(bceG8, e, bceG7)
	q = fma32(q, e, bceG6)
	q = fma32(q, e, bceG5)
	q = fma32(q, e, bceG4)
	q = fma32(q, e, bceG3)
	q = fma32(q, e, bceG2)
	q = fma32(q, e, bceG1)
	w := q * e
	return fma32(w, e, e)
}

// bceGo is BCEWithLogits one element at a time, the sum in index order.
// Each term is float64(lin) + float64(log1p(e)), lin = max(l,0) - l*x
// rounded once (exact for x = 0 or 1).
func bceGo(logits, x, grad []float32) float64 {
	x = x[:len(logits)]
	if grad != nil {
		grad = grad[:len(logits)]
	}
	var s float64
	for i, l := range logits {
		t := x[i]
		a := math.Float32frombits(math.Float32bits(l) &^ (1 << 31))
		e := bceExp(a)
		lin := fma32(-l, t, max(l, 0))
		s += float64(lin) + float64(bceLog1p(e))
		if grad != nil {
			r := 1 / (1 + e)
			sig := r
			if !(l >= 0) {
				sig = float32(e * r) // rounded: never fused into the subtraction
			}
			grad[i] = sig - t
		}
	}
	return s
}

package kernels

import "math"

// Sigmoid and tanh, in place, in float32: the gate activations of the
// PixelRNN's LSTM cell. Vectorised (AVX-512 or AVX2+FMA where the CPU has
// them, pure Go otherwise); every kernel performs the same float32
// operations, so all give the same bits (see DESIGN.md, "Sigmoid and
// tanh").

// Sigmoid replaces every x[i] by 1/(1+exp(-x[i])).
//
// With e = exp(-|x|) (BCEWithLogits' exponential: its range reduction,
// polynomial and cutoff), the result is 1/(1+e) for x >= 0 and e/(1+e)
// otherwise, the division correctly rounded. Accuracy (measured over
// every float32, see DESIGN.md): within 8.93e-8 of the exact value
// absolutely, and 2.0e-7 relatively where exp(-|x|) is not flushed
// (|x| <= 87.33; beyond, the result is 0 for x < 0, short of the exact
// value by less than 1.2e-38). Sigmoid(±Inf)
// is 1 and 0, Sigmoid(NaN) is NaN.
func Sigmoid(x []float32) {
	if len(x) > 0 {
		actBest.sigmoid(x)
	}
}

// Tanh replaces every x[i] by tanh(x[i]).
//
// With a = min(|x|, 9.5) (tanh rounds to 1 in float32 for |x| > 9.02),
// m = expm1(-2a) from BCEWithLogits' exponential split as 2^n *
// (1 + r*t(r)) - 1 = (r*t(r))*2^n + (2^n - 1), the result is
// -m/(2+m) with the sign of x. No 1 - exp(-2a) is ever formed, so small
// arguments keep their relative accuracy. Accuracy (measured over every
// float32, see DESIGN.md): within 2.09e-7 relatively, and so absolutely.
// Tanh(±0) = ±0, Tanh(±Inf) = ±1, Tanh(NaN) is NaN.
func Tanh(x []float32) {
	if len(x) > 0 {
		actBest.tanh(x)
	}
}

// ExpNegAbs replaces every x[i] by exp(-|x[i]|): BCEWithLogits'
// exponential, the softmax's (whose arguments max - l are >= 0). Accuracy
// (measured over every float32, see DESIGN.md): within 7.63e-8
// relatively for |x| <= 87.33; beyond, the result is 0, short of the
// exact value by less than 1.2e-38. ExpNegAbs(±0) = 1 exactly,
// ExpNegAbs(±Inf) = 0, ExpNegAbs(NaN) is NaN.
func ExpNegAbs(x []float32) {
	if len(x) > 0 {
		actBest.expNeg(x)
	}
}

// actKernel is one implementation of Sigmoid, Tanh and ExpNegAbs. All
// need len(x) >= 1. Values of this type are read-only tables.
type actKernel struct {
	name    string
	lanes   int // float32 lanes a vector (1 for Go)
	sigmoid func(x []float32)
	tanh    func(x []float32)
	expNeg  func(x []float32)
}

// actGoKernel is the pure-Go twin: the same float32 formulas, one element
// at a time.
var actGoKernel = &actKernel{name: "go", lanes: 1, sigmoid: sigmoidGo, tanh: tanhGo, expNeg: expNegGo}

// Constants of Tanh beyond BCEWithLogits' (bce.go).
const (
	// actTanhClamp bounds |x|: tanh(x) rounds to 1 in float32 for
	// |x| > 9.011 (1 - tanh(x) < 2^-25), and the formula gives exactly 1
	// from |x| = 9.02 on; 2*9.5 keeps 2^n normal in the exponential.
	actTanhClamp float32 = 9.5
	actSignBit   uint32  = 1 << 31
)

// sigmoid32 is Sigmoid of one value.
func sigmoid32(x float32) float32 {
	a := math.Float32frombits(math.Float32bits(x) &^ actSignBit)
	e := bceExp(a)
	s := 1 / (1 + e)
	if !(x >= 0) {
		s = float32(e * s)
	}
	return s
}

// tanh32 is Tanh of one value.
func tanh32(x float32) float32 {
	a := math.Float32frombits(math.Float32bits(x) &^ actSignBit)
	if a > actTanhClamp { // NaN stays NaN
		a = actTanhClamp
	}
	scale, r, t := expReduce(a + a) // exp(-2a) = scale * (1 + r*t)
	q := float32(t * r)
	m := fma32(q, scale, float32(scale-1)) // expm1(-2a)
	th := float32(m / (2 + m))             // -tanh(a)
	return math.Float32frombits(math.Float32bits(th)&^actSignBit | math.Float32bits(x)&actSignBit)
}

func sigmoidGo(x []float32) {
	for i, v := range x {
		x[i] = sigmoid32(v)
	}
}

// expNeg32 is ExpNegAbs of one value.
func expNeg32(x float32) float32 {
	return bceExp(math.Float32frombits(math.Float32bits(x) &^ actSignBit))
}

func expNegGo(x []float32) {
	for i, v := range x {
		x[i] = expNeg32(v)
	}
}

func tanhGo(x []float32) {
	for i, v := range x {
		x[i] = tanh32(v)
	}
}

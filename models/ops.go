package models

import "math"

// reluInPlace replaces x by max(x, 0).
func reluInPlace(x []float32) {
	for i, v := range x {
		if v < 0 {
			x[i] = 0
		}
	}
}

// reluBackward multiplies d by the derivative of ReLU at the layer's output
// y (y > 0 where the input was positive).
func reluBackward(y, d []float32) {
	for i, v := range y {
		if v <= 0 {
			d[i] = 0
		}
	}
}

// bceWithLogits returns the summed binary cross-entropy of logits against
// targets x in {0,1} (as torch's binary_cross_entropy_with_logits with
// reduction="sum") and, when grad is not nil, writes its gradient
// sigmoid(l) - x there. It sums in float64.
func bceWithLogits(logits, x, grad []float32) float64 {
	var s float64
	for i, l := range logits {
		lf := float64(l)
		t := float64(x[i])
		// max(l,0) - l*t + log(1 + exp(-|l|))
		s += math.Max(lf, 0) - lf*t + math.Log1p(math.Exp(-math.Abs(lf)))
		if grad != nil {
			grad[i] = float32(sigmoid(lf) - t)
		}
	}
	return s
}

func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

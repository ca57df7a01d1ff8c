package kernels

import (
	"errors"
	"math"
)

// Elementwise passes of the models: ReLU, its derivative, bias adds and
// bias-gradient sums, vectorised (AVX-512 or AVX2 where the CPU has them,
// pure Go otherwise; see DESIGN.md). The mask operations are exact, so every
// kernel gives the same bits; the sums follow one order, fixed by the
// lengths alone, in every kernel (also exact bit for bit).
//
// ReLU semantics, in all of them: ReLU(v) is 0 where v < 0 and v otherwise,
// so ReLU(-0) = -0 and ReLU(NaN) = NaN (the NaN itself). The derivative
// zeroes a gradient where the ReLU's output y is <= 0 (+0 or -0 included)
// and keeps it where y > 0 or y is NaN.

// ReLU replaces x[i] by +0 where x[i] < 0 (-0 and NaN stay as they are).
func ReLU(x []float32) {
	if len(x) > 0 {
		eltBest.relu(x)
	}
}

// ReLUGrad zeroes d[i] (to +0) where y[i] <= 0, y being the ReLU's output;
// d[i] is kept where y[i] > 0 or y[i] is NaN. It needs len(y) >= len(d)
// (only the first len(d) are read); otherwise it returns an error and
// writes nothing.
func ReLUGrad(d, y []float32) error {
	if len(y) < len(d) {
		return errors.New("kernels: ReLUGrad: y shorter than d")
	}
	if len(d) > 0 {
		eltBest.reluGrad(d, y[:len(d)])
	}
	return nil
}

// AddBias adds b to every x[i] and then, if relu is set, applies ReLU (as
// ReLU: (x[i]+b) < 0 becomes +0).
func AddBias(x []float32, b float32, relu bool) {
	if len(x) > 0 {
		eltBest.addBias(x, b, relu)
	}
}

// AddBiasRows adds b to each row of x, a row-major matrix of len(b)
// columns (x[r*len(b)+j] += b[j]), then applies ReLU if relu is set.
// len(x) must be a multiple of len(b) (and len(b) > 0 unless x is empty);
// otherwise it returns an error and writes nothing.
func AddBiasRows(x, b []float32, relu bool) error {
	return addBiasRows(eltBest, x, b, relu)
}

// ReLUGradSum returns the sum of g and, when act is not nil, first zeroes
// g[i] in place where act[i] <= 0, as ReLUGrad(g, act) does (the sum is
// then that of the masked g). act nil: g is only read.
//
// Order of the sum (every kernel, bit for bit): 64 partial sums starting
// at +0, element i added to sum i mod 64 in increasing i; then
// t[l] = (s[l] + s[16+l]) + (s[32+l] + s[48+l]) for l < 16,
// u[l] = t[l] + t[l+8], v[l] = u[l] + u[l+4], w[l] = v[l] + v[l+2],
// result w[0] + w[1]. It depends only on len(g).
//
// Needs len(act) >= len(g) when act is not nil; otherwise it returns NaN
// and writes nothing. len(g) == 0 returns 0.
func ReLUGradSum(g, act []float32) float32 {
	if act != nil && len(act) < len(g) {
		return float32(math.NaN())
	}
	if len(g) == 0 {
		return 0
	}
	if act != nil {
		act = act[:len(g)]
	}
	return eltBest.maskSum(g, act)
}

// ReLUGradSumRows is the bias gradient of a fully connected layer: g is a
// row-major matrix of len(dst) columns (one row per image), and
// dst[j] = sum over rows r of g[r*len(dst)+j], each column added from +0
// in row order (so the result depends only on the shape). When act (the
// layer's ReLU output, shaped as g) is not nil, g is first masked in place
// as ReLUGrad(g, act) does and the masked values are summed.
//
// len(g) must be a multiple of len(dst) (len(dst) > 0 unless g is empty)
// and act nil or at least as long as g; otherwise it returns an error and
// writes nothing.
func ReLUGradSumRows(dst, g, act []float32) error {
	return reluGradSumRows(eltBest, dst, g, act)
}

func addBiasRows(k *eltKernel, x, b []float32, relu bool) error {
	m := len(b)
	if len(x) == 0 {
		return nil
	}
	if m == 0 || len(x)%m != 0 {
		return errors.New("kernels: AddBiasRows: len(x) is not a multiple of len(b)")
	}
	for r := 0; r < len(x); r += m {
		k.addVec(x[r:r+m], b, relu)
	}
	return nil
}

func reluGradSumRows(k *eltKernel, dst, g, act []float32) error {
	m := len(dst)
	if m == 0 {
		if len(g) == 0 {
			return nil
		}
		return errors.New("kernels: ReLUGradSumRows: empty dst")
	}
	if len(g)%m != 0 {
		return errors.New("kernels: ReLUGradSumRows: len(g) is not a multiple of len(dst)")
	}
	if act != nil && len(act) < len(g) {
		return errors.New("kernels: ReLUGradSumRows: act shorter than g")
	}
	clear(dst)
	for r := 0; r < len(g); r += m {
		var a []float32
		if act != nil {
			a = act[r : r+m]
		}
		k.maskAcc(dst, g[r:r+m], a)
	}
	return nil
}

// eltKernel is one implementation of the elementwise passes. Every
// function needs length >= 1 and all its slices of the same length (act
// may be nil where allowed). Values of this type are read-only tables.
type eltKernel struct {
	name  string
	lanes int // float32 lanes a vector (1 for Go)

	relu     func(x []float32)
	reluGrad func(d, y []float32)
	addBias  func(x []float32, b float32, relu bool)
	addVec   func(x, b []float32, relu bool) // x[i] = [relu](x[i] + b[i])
	maskSum  func(g, act []float32) float32  // ReLUGradSum
	maskAcc  func(dst, g, act []float32)     // g masked by act (if not nil); dst[i] += g[i]
}

// eltGoKernel is the pure-Go twin: branch-free (the sign pattern of
// activations is as good as random to a branch predictor; see negMask),
// the same results bit for bit.
var eltGoKernel = &eltKernel{
	name: "go", lanes: 1,
	relu: reluGo, reluGrad: reluGradGo, addBias: addBiasGo, addVec: addVecGo,
	maskSum: maskSumGo, maskAcc: maskAccGo,
}

// negMask is all ones where v < 0 (so not for -0 nor NaN), else 0. The
// Go compiler turns the if into a conditional move (UCOMISS + CMOV on
// amd64): no branch per value. Measured (amd64, BenchmarkElt -tags
// purego, random signs): ~1 ns a value, against ~1.8 for an integer bit
// formula and about the same as the branchy loops; the SIMD kernels take
// 0.03-0.07 ns.
func negMask(v float32) uint32 {
	m := uint32(0)
	if v < 0 {
		m = ^uint32(0)
	}
	return m
}

// keepMask is 0 where y <= 0 (±0 included, NaN not), else all ones: the
// ReLU derivative's mask.
func keepMask(y float32) uint32 {
	m := ^uint32(0)
	if y <= 0 {
		m = 0
	}
	return m
}

func reluGo(x []float32) {
	for i, v := range x {
		x[i] = math.Float32frombits(math.Float32bits(v) &^ negMask(v))
	}
}

func reluGradGo(d, y []float32) {
	y = y[:len(d)]
	for i, v := range y {
		d[i] = math.Float32frombits(math.Float32bits(d[i]) & keepMask(v))
	}
}

func addBiasGo(x []float32, b float32, relu bool) {
	if !relu {
		for i := range x {
			x[i] += b
		}
		return
	}
	for i, v := range x {
		t := v + b
		x[i] = math.Float32frombits(math.Float32bits(t) &^ negMask(t))
	}
}

func addVecGo(x, b []float32, relu bool) {
	b = b[:len(x)]
	if !relu {
		for i, v := range b {
			x[i] += v
		}
		return
	}
	for i, v := range b {
		t := x[i] + v
		x[i] = math.Float32frombits(math.Float32bits(t) &^ negMask(t))
	}
}

func maskSumGo(g, act []float32) float32 {
	var s [64]float32
	n := len(g)
	for i0 := 0; i0 < n; i0 += 64 {
		blk := g[i0:min(i0+64, n)]
		if act != nil {
			a := act[i0 : i0+len(blk)]
			for k, v := range blk {
				m := math.Float32frombits(math.Float32bits(v) & keepMask(a[k]))
				blk[k] = m
				s[k] += m
			}
		} else {
			for k, v := range blk {
				s[k] += v
			}
		}
	}
	return reduce64(&s)
}

// reduce64 adds the 64 partial sums in ReLUGradSum's tree.
func reduce64(s *[64]float32) float32 {
	var t [16]float32
	for l := range t {
		t[l] = (s[l] + s[16+l]) + (s[32+l] + s[48+l])
	}
	var u [8]float32
	for l := range u {
		u[l] = t[l] + t[l+8]
	}
	v0, v1, v2, v3 := u[0]+u[4], u[1]+u[5], u[2]+u[6], u[3]+u[7]
	w0, w1 := v0+v2, v1+v3
	return w0 + w1
}

func maskAccGo(dst, g, act []float32) {
	g = g[:len(dst)]
	if act == nil {
		for i, v := range g {
			dst[i] += v
		}
		return
	}
	act = act[:len(dst)]
	for i, v := range g {
		m := math.Float32frombits(math.Float32bits(v) & keepMask(act[i]))
		g[i] = m
		dst[i] += m
	}
}

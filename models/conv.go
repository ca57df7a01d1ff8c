package models

import (
	"math"
	"math/rand/v2"

	"github.com/gencluster/gencluster/kernels"
)

// Conv is a stride-1, same-padded 2-D convolution with an optional PixelCNN
// mask, on activations laid out channel-major over the whole batch:
// x[c][b*H*W + h*W + w]. Masked taps are never stored nor computed: the
// kernel keeps only the window positions the mask lets through, and the
// im2col matrix has rows for those taps alone, so a 3x3 mask-B convolution
// multiplies 5 taps instead of 9.
//
// The im2col matrix is never built: the GEMMs read its rows straight from
// the activations at each tap's offset while they pack their operands
// (kernels.SgemmIm2col, SgemmIm2colT), so a layer needs no workspace but
// the tap validity bits (kernels.Shifts) and a copy of W rearranged for
// the input gradient.
type Conv struct {
	In, Out, K int
	W, B       *Param
	dy, dx     []int // offsets of the kept taps
	pool       *kernels.Pool
	geo        kernels.Shifts // the taps over the last n x h x w batch
	mdy, mdx   []int          // the taps mirrored: -dy, -dx
	geoT       kernels.Shifts // the mirrored taps, for the input gradient
	wt         []float32      // W rearranged to [In][Out*Taps]

	// arguments of the parallel parts (set before pool.Run; avoids closures)
	n, h, w    int
	y, g, act  []float32 // epilogue / prologue arguments
	relu       bool
	biasFn     func(part, parts int)
	biasGradFn func(part, parts int)
}

// MaskKind selects the PixelCNN mask of a convolution.
type MaskKind int

const (
	MaskNone MaskKind = iota // dense kernel
	MaskA                    // hides the centre pixel and everything after it
	MaskB                    // hides everything after the centre pixel
)

// NewConv makes a k x k convolution in->out named prefix.weight / prefix.bias.
func NewConv(prefix string, in, out, k int, mask MaskKind, pool *kernels.Pool) *Conv {
	c := k / 2
	var taps, dy, dx []int
	for i := 0; i < k; i++ {
		for j := 0; j < k; j++ {
			keep := true
			switch mask {
			case MaskA:
				keep = i < c || (i == c && j < c)
			case MaskB:
				keep = i < c || (i == c && j <= c)
			}
			if keep {
				taps = append(taps, i*k+j)
				dy = append(dy, i-c)
				dx = append(dx, j-c)
			}
		}
	}
	l := &Conv{In: in, Out: out, K: k, dy: dy, dx: dx, pool: pool}
	for i := range dy {
		l.mdy = append(l.mdy, -dy[i])
		l.mdx = append(l.mdx, -dx[i])
	}
	if mask == MaskNone {
		taps = nil
	}
	l.W = newParam(prefix+".weight", []int{out, in, k, k}, taps)
	l.B = newParam(prefix+".bias", []int{out}, nil)
	l.biasFn = l.biasPart
	l.biasGradFn = l.biasGradPart
	return l
}

// Taps is the number of kernel positions computed (k*k for a dense kernel).
func (l *Conv) Taps() int { return len(l.dy) }

// Rows is the number of rows of the (implicit) im2col matrix: In * Taps.
func (l *Conv) Rows() int { return l.In * len(l.dy) }

// pointwise reports whether the convolution is 1x1: a plain GEMM on x.
func (l *Conv) pointwise() bool { return len(l.dy) == 1 && l.dy[0] == 0 && l.dx[0] == 0 }

// Init draws weights and biases like torch.nn.Conv2d's default
// (uniform in +-1/sqrt(fan_in), fan_in counting masked taps too).
func (l *Conv) Init(rng *rand.Rand) {
	bound := 1 / math.Sqrt(float64(l.In*l.K*l.K))
	full := make([]float32, l.Out*l.In*l.K*l.K)
	for i := range full {
		full[i] = float32((rng.Float64()*2 - 1) * bound)
	}
	_ = l.W.SetFromFull(full) // sizes match by construction
	for i := range l.B.Data {
		l.B.Data[i] = float32((rng.Float64()*2 - 1) * bound)
	}
}

// Forward computes y[Out][n*h*w] from x[In][n*h*w], then applies ReLU to y
// when relu is set. x and y must hold In and Out planes of n*h*w values
// (Forward panics otherwise).
func (l *Conv) Forward(x, y []float32, n, h, w int, relu bool) {
	np := n * h * w
	if l.pointwise() {
		kernels.Sgemm(l.pool, false, false, l.Out, np, l.In, 1, l.W.Data, l.In, x, np, 0, y, np)
	} else {
		l.setGeometry(n, h, w)
		b := kernels.Im2col{Src: x, Ld: np, Channels: l.In, Shifts: &l.geo}
		if err := kernels.SgemmIm2col(l.pool, l.Out, 1, l.W.Data, l.Rows(), b, 0, y, np); err != nil {
			panic("models: Conv.Forward: " + err.Error())
		}
	}
	l.y, l.n, l.h, l.w, l.relu = y, n, h, w, relu
	l.pool.Run(l.Out, l.biasFn)
	l.y = nil
}

// setGeometry makes l.geo the taps over n images of h x w (a no-op when it
// already is).
func (l *Conv) setGeometry(n, h, w int) {
	if err := l.geo.Set(n, h, w, l.dy, l.dx); err != nil {
		panic("models: Conv: " + err.Error())
	}
}

// biasPart adds the bias to the output channels of this part and applies
// the ReLU if asked (kernels.AddBias: a sum < 0 becomes +0).
func (l *Conv) biasPart(part, parts int) {
	np := l.n * l.h * l.w
	o0, o1 := kernels.Span(l.Out, 1, part, parts)
	for o := o0; o < o1; o++ {
		kernels.AddBias(l.y[o*np:(o+1)*np], l.B.Data[o], l.relu)
	}
}

// Backward takes dy = dLoss/dy and the forward input x, writes the weight
// and bias gradients (overwriting W.Grad and B.Grad) and, when dx is not nil,
// dLoss/dx into dx. When the forward pass applied a ReLU, act is its output
// and dy the gradient with respect to it; dy is then multiplied in place by
// the ReLU's derivative first. act is nil for a layer without ReLU.
//
// The weight gradient dy * im2col(x)^T is computed exactly as from the
// im2col matrix in memory (kernels.SgemmIm2colT); the input gradient, the
// adjoint of im2col, as a convolution of dy with the mirrored taps
// (kernels.SgemmIm2col), which sums in another order than col2im did.
func (l *Conv) Backward(x, dy, dx []float32, n, h, w int, act []float32) {
	l.BackwardParams(x, dy, n, h, w, act)
	l.BackwardInput(dy, dx, n, h, w)
}

// BackwardParams is the first half of Backward: the ReLU's derivative
// applied to dy, the bias and weight gradients, which are final when it
// returns (so a gradient hook can hand them on while BackwardInput runs).
func (l *Conv) BackwardParams(x, dy []float32, n, h, w int, act []float32) {
	np := n * h * w
	rows := l.Rows()
	l.g, l.act, l.n, l.h, l.w = dy, act, n, h, w
	l.pool.Run(l.Out, l.biasGradFn)
	l.g, l.act = nil, nil
	if l.pointwise() {
		kernels.Sgemm(l.pool, false, true, l.Out, rows, np, 1, dy, np, x, np, 0, l.W.Grad, rows)
	} else {
		l.setGeometry(n, h, w)
		b := kernels.Im2col{Src: x, Ld: np, Channels: l.In, Shifts: &l.geo}
		if err := kernels.SgemmIm2colT(l.pool, l.Out, 1, dy, np, b, 0, l.W.Grad, rows); err != nil {
			panic("models: Conv.Backward: " + err.Error())
		}
	}
}

// BackwardInput is the second half of Backward: dLoss/dx from dy (which
// BackwardParams has multiplied by the ReLU's derivative); nothing when dx
// is nil.
func (l *Conv) BackwardInput(dy, dx []float32, n, h, w int) {
	if dx == nil {
		return
	}
	np := n * h * w
	rows := l.Rows()
	if l.pointwise() {
		kernels.Sgemm(l.pool, true, false, l.In, np, l.Out, 1, l.W.Data, rows, dy, np, 0, dx, np)
		return
	}
	// dx[c][j] = sum over o, t of W[o][c*T+t] * dy[o][j - off[t]] where
	// (y-dy[t], x-dx[t]) is in the image: dy convolved with the mirrored
	// taps, as a GEMM with the weights rearranged to [In][Out*T].
	t := len(l.dy)
	l.wt = grow(l.wt, l.In*l.Out*t)
	for o := 0; o < l.Out; o++ {
		for c := 0; c < l.In; c++ {
			copy(l.wt[(c*l.Out+o)*t:(c*l.Out+o+1)*t], l.W.Data[o*rows+c*t:o*rows+(c+1)*t])
		}
	}
	if err := l.geoT.Set(n, h, w, l.mdy, l.mdx); err != nil {
		panic("models: Conv.Backward: " + err.Error())
	}
	b := kernels.Im2col{Src: dy, Ld: np, Channels: l.Out, Shifts: &l.geoT}
	if err := kernels.SgemmIm2col(l.pool, l.In, 1, l.wt, l.Out*t, b, 0, dx, np); err != nil {
		panic("models: Conv.Backward: " + err.Error())
	}
}

// biasGradPart applies the ReLU derivative to dy (when act is set: dy is
// zeroed where act <= 0) and sums dy over the batch into the bias
// gradient, for the channels of this part, in one pass
// (kernels.ReLUGradSum). Each channel is summed by one call, in an order
// fixed by its length, so the result does not depend on the thread count.
func (l *Conv) biasGradPart(part, parts int) {
	np := l.n * l.h * l.w
	o0, o1 := kernels.Span(l.Out, 1, part, parts)
	for o := o0; o < o1; o++ {
		var act []float32
		if l.act != nil {
			act = l.act[o*np : (o+1)*np]
		}
		l.B.Grad[o] = kernels.ReLUGradSum(l.g[o*np:(o+1)*np], act)
	}
}

package models

import (
	"fmt"
	"math/rand/v2"

	"github.com/gencluster/gencluster/kernels"
)

// PixelRNN is the reference recurrent autoregressive model: a 7x7 mask-A
// convolution 1->h (inp) gives u; a two-dimensional LSTM runs over the
// image from the top-left corner, the state at (r, c) computed from u(r,c)
// and the states at (r, c-1) and (r-1, c) by one 3h->5h linear layer
// (cell) whose outputs are the gates i, f_left, f_up, o, g:
//
//	c(r,c) = sig(f_left)*c(r,c-1) + sig(f_up)*c(r-1,c) + sig(i)*tanh(g)
//	h(r,c) = sig(o)*tanh(c(r,c))
//
// (h and c zero outside the image); then ReLU, 1x1 h->h (o1), ReLU, 1x1
// h->1 (o2), a Bernoulli logit per pixel with binary cross-entropy, or
// 1x1 h->256 with 256 levels, a softmax over the grey levels of each
// pixel (its input the grey levels in [0,1]) and the summed
// cross-entropy. Through the mask and the recurrence, the state at a
// position depends only on the pixels before it in raster order.
//
// Activations are laid out position-major: a row of channels per (image,
// row, column). The head is two row-major products (Linear). The states
// are computed one anti-diagonal d = r + c at a time: every position of a
// diagonal depends only on the one before, so a diagonal is one product
// over all its positions and all the images (cut by rows over the
// threads), [u | h_left | h_up] times the cell's weights, and one
// elementwise pass (kernels.LSTMCell2D). The recurrent workspaces are in
// diagonal order: a position's index k counts the diagonals' positions in
// order, by row within a diagonal, and its row for image b is k*n + b, so
// each diagonal is a contiguous block of rows.
type PixelRNN struct {
	height, width int
	hidden        int
	levels        int
	softmax       *softmaxNLL // levels 256
	bce           *bce
	inp           *Conv   // its weights and taps; computed here position-major
	cell          *Linear // [u | h_left | h_up] -> gates i, f_left, f_up, o, g
	o1, o2        *Linear // weights shaped [out, in, 1, 1] (1x1 convolutions)
	pool          *kernels.Pool
	partPools     []*kernels.Pool // one thread each: the products of pool's parts
	hook          func(*Param)    // see SetGradHook

	// geometry: the positions of an image in diagonal order
	diagOff []int // diagonal d holds positions diagOff[d] .. diagOff[d+1]-1
	diagR0  []int // the row of diagonal d's first position
	posR    []int // row of position k
	posC    []int // column of position k
	kOf     []int // position index k of pixel r*width + c

	// parallel passes: the function handed to pool.Run (built once) and the
	// arguments of the pass in progress
	colFn, gateFn, backFn func(part, parts int)
	x                     []float32
	n, diag               int

	// workspaces, grown on demand and reused. Diagonal order (row k*n+b):
	col   []float32 // [P][taps]: im2col of the input
	xs    []float32 // [P][3h]: the cell's input [u | h_left | h_up]
	gates []float32 // [P][5h]: pre-activations, then the gates (i, f_left, f_up, o: sigmoid; g: tanh); dZ in Grad
	cs    []float32 // [P][h]: cell state c
	tcs   []float32 // [P][h]: tanh(c)
	du    []float32 // [P][h]: the gradient of u
	// position order (row b*rows*cols + r*cols + c):
	rh    []float32 // [P][h]: relu(h)
	a1    []float32 // [P][h]: relu(o1(relu(h)))
	logit []float32 // [P][levels or 1]
	dlog  []float32 // [P][levels or 1]
	da1   []float32 // [P][h]
	dh    []float32 // [P][h]: the gradient of h
	// one diagonal's rows, the one in progress and the one after it
	dx   [2][]float32 // the gradient of the cell's input, [rows][3h]
	dcx  [2][]float32 // the gradient reaching c(r,c-1) and c(r-1,c): [rows][2h], dc*f_left | dc*f_up
	zero []float32    // h zeros: the state outside the image
}

// NewPixelRNN builds the network for rows x cols images with h hidden
// units and levels 2 (Bernoulli) or 256 (softmax).
func NewPixelRNN(rows, cols, h, levels int, pool *kernels.Pool) *PixelRNN {
	m := &PixelRNN{height: rows, width: cols, hidden: h, levels: levels, pool: pool, bce: newBCE(pool)}
	outs := 1
	if levels == GreyLevels {
		outs = GreyLevels
		m.softmax = newSoftmaxNLL(levels, pool)
	}
	m.inp = NewConv("inp", 1, h, 7, MaskA, pool)
	m.cell = NewLinear("cell", 3*h, 5*h, pool)
	m.o1 = NewLinear("o1", h, h, pool)
	m.o2 = NewLinear("o2", h, outs, pool)
	m.o1.W.Shape = []int{h, h, 1, 1}
	m.o2.W.Shape = []int{outs, h, 1, 1}
	m.zero = make([]float32, h)

	diags := rows + cols - 1
	m.diagOff = make([]int, diags+1)
	m.diagR0 = make([]int, diags)
	m.kOf = make([]int, rows*cols)
	for d := 0; d < diags; d++ {
		r0, r1 := max(0, d-cols+1), min(d, rows-1)
		m.diagR0[d] = r0
		for r := r0; r <= r1; r++ {
			m.kOf[r*cols+d-r] = len(m.posR)
			m.posR = append(m.posR, r)
			m.posC = append(m.posC, d-r)
		}
		m.diagOff[d+1] = len(m.posR)
	}
	m.colFn, m.gateFn, m.backFn = m.colPart, m.gatePart, m.backPart
	for range pool.Threads() {
		m.partPools = append(m.partPools, kernels.NewPool(1))
	}
	return m
}

// Name is "pixelrnn".
func (m *PixelRNN) Name() string { return PixelRNNName }

// Levels is 2 (Bernoulli pixels) or 256 (grey levels).
func (m *PixelRNN) Levels() int { return m.levels }

// Rows is the images' height.
func (m *PixelRNN) Rows() int { return m.height }

// Cols is the images' width.
func (m *PixelRNN) Cols() int { return m.width }

// Params lists inp.weight (masked: the 24 taps mask A keeps), inp.bias,
// cell.weight, cell.bias, o1.weight, o1.bias, o2.weight, o2.bias.
func (m *PixelRNN) Params() []*Param {
	return []*Param{m.inp.W, m.inp.B, m.cell.W, m.cell.B, m.o1.W, m.o1.B, m.o2.W, m.o2.B}
}

// Init draws the weights as PyTorch's defaults do, layer by layer in
// Params' order.
func (m *PixelRNN) Init(rng *rand.Rand) {
	m.inp.Init(rng)
	m.cell.Init(rng)
	m.o1.Init(rng)
	m.o2.Init(rng)
}

// diags is the number of anti-diagonals of an image.
func (m *PixelRNN) diags() int { return len(m.diagR0) }

// maxDiag is the number of positions of the longest diagonal.
func (m *PixelRNN) maxDiag() int { return min(m.height, m.width) }

// reserve sizes the workspaces for n images.
func (m *PixelRNN) reserve(n int) {
	h, np := m.hidden, n*m.height*m.width
	m.col = grow(m.col, np*m.inp.Taps())
	m.xs = grow(m.xs, np*3*h)
	m.gates = grow(m.gates, np*5*h)
	m.cs = grow(m.cs, np*h)
	m.tcs = grow(m.tcs, np*h)
	m.rh = grow(m.rh, np*h)
	m.a1 = grow(m.a1, np*h)
	m.logit = grow(m.logit, np*m.o2.Out)
}

// reserveGrad sizes the workspaces of the backward pass for n images.
func (m *PixelRNN) reserveGrad(n int) {
	h, np := m.hidden, n*m.height*m.width
	m.dlog = grow(m.dlog, np*m.o2.Out)
	m.da1 = grow(m.da1, np*h)
	m.dh = grow(m.dh, np*h)
	m.du = grow(m.du, np*h)
	rows := n * m.maxDiag()
	for i := range m.dx {
		m.dx[i] = grow(m.dx[i], rows*3*h)
		m.dcx[i] = grow(m.dcx[i], rows*2*h)
	}
}

// forward runs the network on the n images x and leaves the logits in
// m.logit (position order), keeping what Grad needs. Like the other
// models, it panics when x is short, but on the caller's goroutine, before
// the pool's parts read it.
func (m *PixelRNN) forward(x []float32, n int) {
	if len(x) < n*m.height*m.width {
		panic(fmt.Sprintf("models: PixelRNN: %d values for %d images of %dx%d", len(x), n, m.height, m.width))
	}
	m.reserve(n)
	m.inputConv(x, n)
	m.states(n)
	np := n * m.height * m.width
	m.o1.ForwardReLU(m.rh, m.a1, np)
	m.o2.Forward(m.a1, m.logit, np)
}

// inputConv writes u = inp(x) into the first h columns of m.xs, and the
// zeros of the states outside the image into the h_left columns of the
// first column's positions and the h_up columns of the first row's: the
// im2col of x in diagonal order (m.col), with u's slots set to the bias,
// then one product adding col W^T to them.
func (m *PixelRNN) inputConv(x []float32, n int) {
	np := n * m.height * m.width
	m.x, m.n = x, n
	m.pool.Run(np, m.colFn)
	m.x = nil
	t, w := m.inp.Taps(), 3*m.hidden
	kernels.Sgemm(m.pool, false, true, np, m.hidden, t, 1, m.col, t, m.inp.W.Data, t, 1, m.xs, w)
}

// colPart is inputConv's pass over the rows of this part.
func (m *PixelRNN) colPart(part, parts int) {
	n, h := m.n, m.hidden
	q0, q1 := kernels.Span(n*m.height*m.width, 1, part, parts)
	for q := q0; q < q1; q++ {
		k, b := q/n, q%n
		r, c := m.posR[k], m.posC[k]
		m.im2colRow(m.col[q*m.inp.Taps():(q+1)*m.inp.Taps()], m.x[b*m.height*m.width:(b+1)*m.height*m.width], r, c)
		row := m.xs[q*3*h : (q+1)*3*h]
		copy(row[:h], m.inp.B.Data)
		if c == 0 {
			clear(row[h : 2*h])
		}
		if r == 0 {
			clear(row[2*h:])
		}
	}
}

// im2colRow writes the input conv's taps at (r, c) of the image img into
// dst: the pixels the mask keeps, zero outside the image.
func (m *PixelRNN) im2colRow(dst, img []float32, r, c int) {
	for t := range dst {
		y, x := r+m.inp.dy[t], c+m.inp.dx[t]
		if y < 0 || y >= m.height || x < 0 || x >= m.width {
			dst[t] = 0
			continue
		}
		dst[t] = img[y*m.width+x]
	}
}

// states runs the recurrence over the diagonals: for each, one product
// gives the pre-activations of its positions, then the gates, c, tanh c
// and h are computed position by position, h going to the cell inputs of
// the next diagonal and, through a ReLU, to the head's input m.rh. A
// diagonal's rows are split over the pool, each part computing the
// product and the elementwise pass of its rows on a pool of its own (one
// hand-off per diagonal, not two; an element of a product does not
// depend on how the rows are cut, so neither does the result).
func (m *PixelRNN) states(n int) {
	m.n = n
	for d := 0; d < m.diags(); d++ {
		m.diag = d
		m.pool.Run(n*(m.diagOff[d+1]-m.diagOff[d]), m.gateFn)
	}
}

// gatePart is states for the rows of this part of diagonal m.diag.
func (m *PixelRNN) gatePart(part, parts int) {
	n, h, d := m.n, m.hidden, m.diag
	q0 := n * m.diagOff[d]
	i0, i1 := kernels.Span(n*(m.diagOff[d+1]-m.diagOff[d]), 1, part, parts)
	kernels.Sgemm(m.partPools[part], false, true, i1-i0, 5*h, 3*h, 1, m.xs[(q0+i0)*3*h:], 3*h, m.cell.W.Data, 3*h, 0, m.gates[(q0+i0)*5*h:], 5*h)
	m.gateRows(q0+i0, q0+i1)
}

// gateRows is the elementwise pass of states for rows q0..q1-1.
func (m *PixelRNN) gateRows(q0, q1 int) {
	n, h := m.n, m.hidden
	w, rc := m.width, m.height*m.width
	for q := q0; q < q1; q++ {
		k, b := q/n, q%n
		r, c := m.posR[k], m.posC[k]
		cl, cu := m.zero, m.zero
		if c > 0 {
			j := n*m.kOf[r*w+c-1] + b
			cl = m.cs[j*h : (j+1)*h]
		}
		if r > 0 {
			j := n*m.kOf[(r-1)*w+c] + b
			cu = m.cs[j*h : (j+1)*h]
		}
		p := b*rc + r*w + c
		hv := m.rh[p*h : (p+1)*h]
		lstmForward(m.gates[q*5*h:(q+1)*5*h], m.cell.B.Data, cl, cu, m.cs[q*h:(q+1)*h], m.tcs[q*h:(q+1)*h], hv)
		if c+1 < w {
			j := n*m.kOf[r*w+c+1] + b
			copy(m.xs[j*3*h+h:j*3*h+2*h], hv)
		}
		if r+1 < m.height {
			j := n*m.kOf[(r+1)*w+c] + b
			copy(m.xs[j*3*h+2*h:(j+1)*3*h], hv)
		}
		kernels.ReLU(hv)
	}
}

// lstmForward computes one position of the recurrence
// (kernels.LSTMCell2D): z holds the cell's 5h outputs without bias; it
// adds bias and replaces them by the gates (sigmoid of i, f_left, f_up,
// o; tanh of g), and writes c = f_left*cl + f_up*cu + i*g, tanh(c) and
// h = o*tanh(c).
func lstmForward(z, bias, cl, cu, c, tc, h []float32) {
	if err := kernels.LSTMCell2D(z, bias, cl, cu, c, tc, h); err != nil {
		panic("models: PixelRNN: " + err.Error())
	}
}

// lstmBackward is the backward pass of lstmForward at one position
// (kernels.LSTMCell2DGrad): a holds the gates, tc tanh(c), cl and cu the
// neighbours' cells. The gradient of h is dh + dhR + dhD (from the head
// and from the positions to the right and below, which took h as h_left
// and h_up), that reaching c from those positions dcR + dcD. It replaces
// the gates by the gradient of the pre-activations z and writes dc*f_left
// and dc*f_up into dcOut[:n] and dcOut[n:2n] (the gradients of cl and cu).
func lstmBackward(a, tc, cl, cu, dh, dhR, dhD, dcR, dcD, dcOut []float32) {
	if err := kernels.LSTMCell2DGrad(a, tc, cl, cu, dh, dhR, dhD, dcR, dcD, dcOut); err != nil {
		panic("models: PixelRNN: " + err.Error())
	}
}

// Loss and Grad ignore noise: the PixelRNN's likelihood is exact.
func (m *PixelRNN) Loss(x []float32, n int, _ Noise) float64 {
	if n <= 0 {
		return 0
	}
	m.forward(x, n)
	return m.outLoss(x, nil, n)
}

// outLoss is the loss of the logits m.forward left for the n images x,
// with its gradient written to grad unless grad is nil.
func (m *PixelRNN) outLoss(x, grad []float32, n int) float64 {
	dim := m.height * m.width
	if m.softmax != nil {
		return m.softmax.loss(m.logit, x, grad, n, dim, GreyLevels, 1)
	}
	return m.bce.loss(m.logit, x, grad, n, dim)
}

// Grad computes the summed loss of the n images x and the gradient of
// every parameter (Model.Grad).
func (m *PixelRNN) Grad(x []float32, n int, _ Noise) float64 {
	if n <= 0 { // zero gradients, reported in backward order all the same
		ps := m.Params()
		for i := len(ps) - 2; i >= 0; i -= 2 {
			for _, p := range ps[i : i+2] {
				clear(p.Grad)
			}
			reportGrads(m.hook, ps[i:i+2]...)
		}
		return 0
	}
	m.forward(x, n)
	m.reserveGrad(n)
	np := n * m.height * m.width
	loss := m.outLoss(x, m.dlog, n)

	// The head, as Linear layers; each layer's gradients go to the hook
	// before its input gradient is computed.
	m.o2.BackwardParams(m.a1, m.dlog, np)
	reportGrads(m.hook, m.o2.W, m.o2.B)
	m.o2.BackwardInput(m.dlog, m.da1, np, false)
	m.o1.BackwardParamsReLU(m.rh, m.da1, np, m.a1)
	reportGrads(m.hook, m.o1.W, m.o1.B)
	m.o1.BackwardInput(m.da1, m.dh, np, false)
	if err := kernels.ReLUGrad(m.dh[:np*m.hidden], m.rh); err != nil {
		panic("models: PixelRNN: " + err.Error())
	}

	m.statesBackward(n)
	// The cell's weights: one product over all the positions.
	m.cell.BackwardParams(m.xs, m.gates, np)
	reportGrads(m.hook, m.cell.W, m.cell.B)
	m.inputConvBackward(n)
	reportGrads(m.hook, m.inp.W, m.inp.B)
	return loss
}

// statesBackward runs the recurrence backwards, from the last diagonal:
// given the gradient of h from the head in m.dh, it leaves the gradient of
// the cell's pre-activations in m.gates and that of u in m.du. For each
// diagonal, the gradient of the cell's input is one product of those
// pre-activations' gradients with the cell's weights; its parts are split
// over the pool as in states.
func (m *PixelRNN) statesBackward(n int) {
	m.n = n
	for d := m.diags() - 1; d >= 0; d-- {
		m.diag = d
		m.pool.Run(n*(m.diagOff[d+1]-m.diagOff[d]), m.backFn)
	}
}

// backPart is statesBackward for the rows of this part of diagonal
// m.diag: the elementwise pass (backRows), then the gradient of the rows'
// cell input, whose u part is kept in m.du.
func (m *PixelRNN) backPart(part, parts int) {
	n, h, d := m.n, m.hidden, m.diag
	q0 := n * m.diagOff[d]
	i0, i1 := kernels.Span(n*(m.diagOff[d+1]-m.diagOff[d]), 1, part, parts)
	dx := m.dx[d%2]
	m.backRows(i0, i1)
	kernels.Sgemm(m.partPools[part], false, false, i1-i0, 3*h, 5*h, 1, m.gates[(q0+i0)*5*h:], 5*h, m.cell.W.Data, 3*h, 0, dx[i0*3*h:], 3*h)
	for i := i0; i < i1; i++ {
		copy(m.du[(q0+i)*h:(q0+i+1)*h], dx[i*3*h:i*3*h+h])
	}
}

// backRows is the elementwise pass of statesBackward for rows i0..i1-1
// of diagonal m.diag: each position's gradients of h and c gathered from
// the head and from the two positions of the next diagonal its state
// feeds, then lstmBackward.
func (m *PixelRNN) backRows(i0, i1 int) {
	n, h, d := m.n, m.hidden, m.diag
	w, rc := m.width, m.height*m.width
	q0 := n * m.diagOff[d]
	dxNext, dcNext := m.dx[(d+1)%2], m.dcx[(d+1)%2]
	dcOut := m.dcx[d%2]
	for i := i0; i < i1; i++ {
		q := q0 + i
		k, b := q/n, q%n
		r, c := m.posR[k], m.posC[k]
		p := b*rc + r*w + c
		dhR, dhD, dcR, dcD := m.zero, m.zero, m.zero, m.zero
		if c+1 < w { // (r, c+1) in the next diagonal took h as h_left
			j := (r-m.diagR0[d+1])*n + b
			dhR = dxNext[j*3*h+h : j*3*h+2*h]
			dcR = dcNext[j*2*h : j*2*h+h]
		}
		if r+1 < m.height { // (r+1, c) took it as h_up
			j := (r+1-m.diagR0[d+1])*n + b
			dhD = dxNext[j*3*h+2*h : (j+1)*3*h]
			dcD = dcNext[j*2*h+h : (j+1)*2*h]
		}
		cl, cu := m.zero, m.zero
		if c > 0 {
			j := n*m.kOf[r*w+c-1] + b
			cl = m.cs[j*h : (j+1)*h]
		}
		if r > 0 {
			j := n*m.kOf[(r-1)*w+c] + b
			cu = m.cs[j*h : (j+1)*h]
		}
		lstmBackward(m.gates[q*5*h:(q+1)*5*h], m.tcs[q*h:(q+1)*h], cl, cu,
			m.dh[p*h:(p+1)*h], dhR, dhD, dcR, dcD, dcOut[i*2*h:(i+1)*2*h])
	}
}

// inputConvBackward writes the gradients of inp from that of u (m.du):
// the bias's as column sums, the weights' as du^T col.
func (m *PixelRNN) inputConvBackward(n int) {
	np, t := n*m.height*m.width, m.inp.Taps()
	if err := kernels.ReLUGradSumRows(m.inp.B.Grad, m.du[:np*m.hidden], nil); err != nil {
		panic("models: PixelRNN: " + err.Error())
	}
	kernels.Sgemm(m.pool, true, false, m.hidden, t, np, 1, m.du, m.hidden, m.col, t, 0, m.inp.W.Grad, t)
}

// SetGradHook installs the hook Grad calls as each gradient is final
// (Model.SetGradHook): o2, o1, cell, inp, weight before bias.
func (m *PixelRNN) SetGradHook(hook func(*Param)) { m.hook = hook }

var (
	_ ProgressSampler = (*PixelRNN)(nil)
	_ GEMMLister      = (*PixelRNN)(nil)
)

// TrainGEMMs implements GEMMLister, as Grad calls Sgemm: the input
// convolution, the cell once per diagonal, o1 and o2; then o2's and o1's
// weight and input gradients, the cell's input gradient once per
// diagonal from the last, its weight gradient over all the positions, and
// the input convolution's weight gradient. (A diagonal's products are
// run as one per thread of the pool, each on its share of the rows.)
func (m *PixelRNN) TrainGEMMs(n int) []GEMM {
	h, np, t := m.hidden, n*m.height*m.width, m.inp.Taps()
	gs := []GEMM{{Name: "inp.weight forward", TransB: true, M: np, N: h, K: t}}
	for d := 0; d < m.diags(); d++ {
		rows := n * (m.diagOff[d+1] - m.diagOff[d])
		gs = append(gs, GEMM{Name: fmt.Sprintf("cell.weight forward diagonal %d", d), TransB: true, M: rows, N: 5 * h, K: 3 * h})
	}
	for _, l := range []*Linear{m.o1, m.o2} {
		gs = append(gs, GEMM{Name: l.W.Name + " forward", TransB: true, M: np, N: l.Out, K: l.In})
	}
	for _, l := range []*Linear{m.o2, m.o1} {
		gs = append(gs, GEMM{Name: l.W.Name + " weight grad", TransA: true, M: l.Out, N: l.In, K: np})
		gs = append(gs, GEMM{Name: l.W.Name + " input grad", M: np, N: l.In, K: l.Out})
	}
	for d := m.diags() - 1; d >= 0; d-- {
		rows := n * (m.diagOff[d+1] - m.diagOff[d])
		gs = append(gs, GEMM{Name: fmt.Sprintf("cell.weight input grad diagonal %d", d), M: rows, N: 3 * h, K: 5 * h})
	}
	gs = append(gs, GEMM{Name: "cell.weight weight grad", TransA: true, M: 5 * h, N: 3 * h, K: np})
	gs = append(gs, GEMM{Name: "inp.weight weight grad", TransA: true, M: h, N: t, K: np})
	return gs
}

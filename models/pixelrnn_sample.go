package models

import (
	"math/rand/v2"

	"github.com/gencluster/gencluster/kernels"
)

// Sampling a PixelRNN. The state at (r, c) depends only on u(r, c), which
// reads pixels before (r, c) in raster order, and on the states at
// (r, c-1) and (r-1, c); the logits at (r, c) only on the state there. So
// when pixel (r, c) is about to be drawn, its state and logits can be
// computed once and for all, carrying the states of the last two rows:
// drawing an image costs one forward pass spread over its pixels, instead
// of one forward pass of the whole image per pixel.
//
// At each pixel the n images are a batch of rows, as in Grad: the input
// convolution's taps, the cell and the head are small products over the
// batch, and the elementwise work is Grad's (lstmForward), so a pixel's
// logits are the very bits a forward pass over the canvas gives.

// rnnSampler is a PixelRNN's incremental sampling state for n images.
type rnnSampler struct {
	m      *PixelRNN
	n      int
	hs, cs [2][]float32 // states of rows r%2: [cols][n][h]
	col    []float32    // the input convolution's taps at the pixel: [n][taps]
	x      []float32    // the cell's input [u | h_left | h_up]: [n][3h]
	z      []float32    // the gates: [n][5h]
	tc     []float32    // tanh(c): [n][h]
	rh, a1 []float32    // the head's input relu(h) and hidden layer: [n][h]
	lg     []float32    // logits: [n][levels or 1]
}

func (m *PixelRNN) newSampler(n int) *rnnSampler {
	h := m.hidden
	s := &rnnSampler{
		m: m, n: n,
		col: make([]float32, n*m.inp.Taps()),
		x:   make([]float32, n*3*h),
		z:   make([]float32, n*5*h),
		tc:  make([]float32, n*h),
		rh:  make([]float32, n*h),
		a1:  make([]float32, n*h),
		lg:  make([]float32, n*m.o2.Out),
	}
	for i := range s.hs {
		s.hs[i] = make([]float32, m.width*n*h)
		s.cs[i] = make([]float32, m.width*n*h)
	}
	return s
}

// state returns the cached h and c at (r, c) of image b: zeros outside the
// image.
func (s *rnnSampler) state(r, c, b int) (h, cell []float32) {
	m := s.m
	if r < 0 || c < 0 {
		return m.zero, m.zero
	}
	o := (c*s.n + b) * m.hidden
	return s.hs[r%2][o : o+m.hidden], s.cs[r%2][o : o+m.hidden]
}

// Sample draws n images pixel by pixel in raster order, carrying the
// recurrent state (see pixelrnn_sample.go).
func (m *PixelRNN) Sample(dst []float32, n int, rng *rand.Rand) {
	m.SampleProgress(dst, n, rng, nil)
}

// SampleProgress is Sample calling progress(done, Rows*Cols), if not nil,
// after each pixel position (models.ProgressSampler). Each pixel of each
// image is drawn by drawPixel with one uniform from rng, images in order.
func (m *PixelRNN) SampleProgress(dst []float32, n int, rng *rand.Rand, progress func(done, total int)) {
	rows, cols, h := m.height, m.width, m.hidden
	if n <= 0 {
		return
	}
	canvas := dst[:n*rows*cols]
	clear(canvas)
	s := m.newSampler(n)
	t, L := m.inp.Taps(), m.o2.Out
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			// u at (r, c), with the neighbours' states beside it.
			for b := 0; b < n; b++ {
				m.im2colRow(s.col[b*t:(b+1)*t], canvas[b*rows*cols:(b+1)*rows*cols], r, c)
				x := s.x[b*3*h : (b+1)*3*h]
				copy(x[:h], m.inp.B.Data)
				hl, _ := s.state(r, c-1, b)
				hu, _ := s.state(r-1, c, b)
				copy(x[h:2*h], hl)
				copy(x[2*h:], hu)
			}
			kernels.Sgemm(m.pool, false, true, n, h, t, 1, s.col, t, m.inp.W.Data, t, 1, s.x, 3*h)
			// The cell.
			kernels.Sgemm(m.pool, false, true, n, 5*h, 3*h, 1, s.x, 3*h, m.cell.W.Data, 3*h, 0, s.z, 5*h)
			for b := 0; b < n; b++ {
				_, cl := s.state(r, c-1, b)
				_, cu := s.state(r-1, c, b)
				hv, cv := s.state(r, c, b)
				lstmForward(s.z[b*5*h:(b+1)*5*h], m.cell.B.Data, cl, cu, cv, s.tc[b*h:(b+1)*h], hv)
				copy(s.rh[b*h:(b+1)*h], hv)
			}
			kernels.ReLU(s.rh)
			// The head, and the draws.
			m.o1.ForwardReLU(s.rh, s.a1, n)
			m.o2.Forward(s.a1, s.lg, n)
			for b := 0; b < n; b++ {
				canvas[b*rows*cols+r*cols+c] = drawPixel(s.lg[b*L:(b+1)*L], 1, m.levels, rng)
			}
			if progress != nil {
				progress(r*cols+c+1, rows*cols)
			}
		}
	}
}

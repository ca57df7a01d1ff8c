package models

import (
	"fmt"
	"math/rand/v2"

	"github.com/gencluster/gencluster/kernels"
)

// PixelCNN is the reference autoregressive model: a 7x7 mask-A convolution
// 1->h, layers x [ReLU, 3x3 mask-B convolution h->h], ReLU, 1x1 h->h, ReLU,
// 1x1 h->1, giving a Bernoulli logit per pixel. Loss: binary cross-entropy
// summed over the pixels of an image. With 256 levels the last layer is
// 1x1 h->256, a softmax over the grey levels of each pixel (its input the
// grey levels in [0,1]), and the loss the summed cross-entropy.
type PixelCNN struct {
	height, width int
	levels        int
	softmax       *softmaxNLL // levels 256
	a             *Conv
	bs            []*Conv
	o1, o2        *Conv
	layers        []*Conv // a, bs..., o1, o2: forward order
	bce           *bce
	pool          *kernels.Pool
	hook          func(*Param) // see SetGradHook

	// workspaces, grown on demand and reused
	acts  [][]float32 // acts[0] = a(x); acts[i] = output of layer i (post-ReLU for i>=1 ... see forward)
	logit []float32
	d1    []float32
	d2    []float32
	win   []float32 // sampling window input
}

// NewPixelCNN builds the network for rows x cols images with h channels,
// the given number of mask-B layers and levels 2 (Bernoulli) or 256
// (softmax).
func NewPixelCNN(rows, cols, h, layers, levels int, pool *kernels.Pool) *PixelCNN {
	m := &PixelCNN{height: rows, width: cols, levels: levels, pool: pool, bce: newBCE(pool)}
	outs := 1
	if levels == GreyLevels {
		outs = GreyLevels
		m.softmax = newSoftmaxNLL(levels, pool)
	}
	m.a = NewConv("a", 1, h, 7, MaskA, pool)
	for i := 0; i < layers; i++ {
		m.bs = append(m.bs, NewConv(fmt.Sprintf("bs.%d", i), h, h, 3, MaskB, pool))
	}
	m.o1 = NewConv("o1", h, h, 1, MaskNone, pool)
	m.o2 = NewConv("o2", h, outs, 1, MaskNone, pool)
	m.layers = append(append([]*Conv{m.a}, m.bs...), m.o1, m.o2)
	return m
}

func (m *PixelCNN) Name() string { return PixelCNNName }
func (m *PixelCNN) Levels() int  { return m.levels }
func (m *PixelCNN) Rows() int    { return m.height }
func (m *PixelCNN) Cols() int    { return m.width }

func (m *PixelCNN) Params() []*Param {
	var ps []*Param
	for _, c := range m.layers {
		ps = append(ps, c.W, c.B)
	}
	return ps
}

func (m *PixelCNN) Init(rng *rand.Rand) {
	for _, c := range m.layers {
		c.Init(rng)
	}
}

// reserve sizes the workspaces for n images of h x w.
func (m *PixelCNN) reserve(n, h, w int) {
	np := n * h * w
	layers := len(m.bs) + 2 // a, bs..., o1 outputs
	if len(m.acts) != layers {
		m.acts = make([][]float32, layers)
	}
	hc := m.a.Out
	for i := range m.acts {
		m.acts[i] = grow(m.acts[i], hc*np)
	}
	m.logit = grow(m.logit, m.o2.Out*np)
}

// forward runs the network on x[n*h*w] (channel 1) and leaves the logits in
// m.logit. acts[i] holds the ReLU'd input of layer i+1: acts[0] = relu(a(x)),
// acts[k] = relu(bs[k-1](acts[k-1])), the last = relu(o1(acts[len-2])).
func (m *PixelCNN) forward(x []float32, n, h, w int) {
	m.reserve(n, h, w)
	m.a.Forward(x, m.acts[0], n, h, w, true)
	for i, b := range m.bs {
		b.Forward(m.acts[i], m.acts[i+1], n, h, w, true)
	}
	last := len(m.acts) - 1
	m.o1.Forward(m.acts[last-1], m.acts[last], n, h, w, true)
	m.o2.Forward(m.acts[last], m.logit, n, h, w, false)
}

// Loss and Grad ignore noise: the PixelCNN's likelihood is exact.
func (m *PixelCNN) Loss(x []float32, n int, _ Noise) float64 {
	m.forward(x, n, m.height, m.width)
	return m.outLoss(x, nil, n)
}

// outLoss is the loss of the logits m.forward left for the n images x,
// with its gradient written to grad unless grad is nil.
func (m *PixelCNN) outLoss(x, grad []float32, n int) float64 {
	dim := m.height * m.width
	if m.softmax != nil {
		return m.softmax.loss(m.logit, x, grad, n, dim, 1, n*dim)
	}
	return m.bce.loss(m.logit, x, grad, n, dim)
}

func (m *PixelCNN) Grad(x []float32, n int, _ Noise) float64 {
	h, w := m.height, m.width
	np := n * h * w
	m.forward(x, n, h, w)
	m.d1 = grow(m.d1, m.a.Out*np)
	m.d2 = grow(m.d2, max(m.a.Out, m.o2.Out)*np)
	dlogit := m.d2[:m.o2.Out*np]
	loss := m.outLoss(x, dlogit, n)

	// Each layer's parameter gradients go to the hook before its input
	// gradient is computed: the hook's all-reduce starts one GEMM earlier.
	last := len(m.acts) - 1
	// o2: logit = o2(acts[last]), no ReLU
	dcur := m.d1
	m.o2.BackwardParams(m.acts[last], dlogit, n, h, w, nil)
	m.gradDone(m.o2)
	m.o2.BackwardInput(dlogit, dcur, n, h, w)
	// o1: acts[last] = relu(o1(acts[last-1])); dcur = dL/dacts[last]
	dprev := m.d2
	m.o1.BackwardParams(m.acts[last-1], dcur, n, h, w, m.acts[last])
	m.gradDone(m.o1)
	m.o1.BackwardInput(dcur, dprev, n, h, w)
	dcur, dprev = dprev, dcur
	for i := len(m.bs) - 1; i >= 0; i-- {
		// acts[i+1] = relu(bs[i](acts[i])); dcur = dL/dacts[i+1]
		m.bs[i].BackwardParams(m.acts[i], dcur, n, h, w, m.acts[i+1])
		m.gradDone(m.bs[i])
		m.bs[i].BackwardInput(dcur, dprev, n, h, w)
		dcur, dprev = dprev, dcur
	}
	// acts[0] = relu(a(x)); the input needs no gradient
	m.a.Backward(x, dcur, nil, n, h, w, m.acts[0])
	m.gradDone(m.a)
	return loss
}

func (m *PixelCNN) SetGradHook(hook func(*Param)) { m.hook = hook }

// gradDone reports a layer whose gradients are final.
func (m *PixelCNN) gradDone(c *Conv) { reportGrads(m.hook, c.W, c.B) }

var (
	_ ProgressSampler = (*PixelCNN)(nil)
	_ GEMMLister      = (*PixelCNN)(nil)
)

// TrainGEMMs implements GEMMLister, as Conv.Forward and Conv.Backward call
// Sgemm: the forward pass layer by layer, then the backward pass from the
// last layer (weight gradient, then input gradient but for the first).
func (m *PixelCNN) TrainGEMMs(n int) []GEMM {
	np := n * m.height * m.width
	var gs []GEMM
	for _, c := range m.layers {
		gs = append(gs, GEMM{Name: c.W.Name + " forward", M: c.Out, N: np, K: c.Rows()})
	}
	for i := len(m.layers) - 1; i >= 0; i-- {
		c := m.layers[i]
		gs = append(gs, GEMM{Name: c.W.Name + " weight grad", TransB: true, M: c.Out, N: c.Rows(), K: np})
		if i > 0 {
			if c.pointwise() {
				gs = append(gs, GEMM{Name: c.W.Name + " input grad", TransA: true, M: c.In, N: np, K: c.Out})
			} else {
				gs = append(gs, GEMM{Name: c.W.Name + " input grad", M: c.In, N: np, K: c.Out * c.Taps()})
			}
		}
	}
	return gs
}

// reach is how many rows above, and columns either side, an output pixel's
// receptive field spans: the mask-A kernel's radius plus one per mask-B layer.
func (m *PixelCNN) reach() int { return m.a.K/2 + len(m.bs) }

// Sample draws n images pixel by pixel in raster order, each layer
// computed once per pixel from the cached layers below (see
// pixelcnn_sample.go).
func (m *PixelCNN) Sample(dst []float32, n int, rng *rand.Rand) {
	m.SampleProgress(dst, n, rng, nil)
}

// sampleWindowed draws what Sample draws by running the network, at each
// pixel, on a window of the canvas just large enough to hold the pixel's
// receptive field (reach rows above, reach columns either side): the
// sampler before the cached one, kept as the reference its tests compare
// with.
func (m *PixelCNN) sampleWindowed(dst []float32, n int, rng *rand.Rand) {
	h, w := m.height, m.width
	canvas := dst[:n*h*w]
	clear(canvas)
	r := m.reach()
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			y0 := max(0, y-r)
			x0, x1 := max(0, x-r), min(w, x+r+1)
			wh, ww := y-y0+1, x1-x0
			m.win = grow(m.win, n*wh*ww)
			for b := 0; b < n; b++ {
				for yy := 0; yy < wh; yy++ {
					copy(m.win[(b*wh+yy)*ww:(b*wh+yy+1)*ww], canvas[b*h*w+(y0+yy)*w+x0:b*h*w+(y0+yy)*w+x1])
				}
			}
			m.forward(m.win, n, wh, ww)
			for b := 0; b < n; b++ {
				canvas[b*h*w+y*w+x] = m.draw(m.logit[b*wh*ww+(wh-1)*ww+(x-x0):], n*wh*ww, rng)
			}
		}
	}
}

// draw draws a pixel from its logits lg[k*ks] (one for 2 levels, 256
// otherwise) with one uniform from rng: 0 or 1 from the Bernoulli, or a
// grey level/255 from the softmax.
func (m *PixelCNN) draw(lg []float32, ks int, rng *rand.Rand) float32 {
	return drawPixel(lg, ks, m.levels, rng)
}

// logitsAt is forward over whole images, for tests of the windowed sampler.
func (m *PixelCNN) logitsAt(x []float32, n int) []float32 {
	m.forward(x, n, m.height, m.width)
	return append([]float32(nil), m.logit[:m.o2.Out*n*m.height*m.width]...)
}

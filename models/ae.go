package models

import (
	"math/rand/v2"

	"github.com/gencluster/gencluster/kernels"
)

// AE is the regular autoencoder of the lecture: encoder in-hidden (ReLU) ->
// code, decoder code-hidden (ReLU) -> in with a sigmoid output. Loss: the
// squared error of the reconstruction against the grey levels in [0,1],
// summed over the pixels of an image (the L2 distance of the notes). It
// is not a density model: it cannot draw an image from nothing, so it is
// a Reconstructor, and its codes are what a linear probe measures.
type AE struct {
	in, hidden, code int
	e1, e2, d1, d2   *Linear
	pool             *kernels.Pool
	hook             func(*Param) // see SetGradHook
	errs             *perImage    // the squared error, image by image

	// arguments of the squared error in progress
	errX    []float32
	errGrad bool

	// workspaces: forward activations and their gradients
	h, z, d, logit, r []float32
	dh, dz, dd, dl    []float32
}

// NewAE builds the autoencoder for images of in pixels.
func NewAE(in, hidden, code int, pool *kernels.Pool) *AE {
	m := &AE{
		in: in, hidden: hidden, code: code, pool: pool,
		e1: NewLinear("e1", in, hidden, pool),
		e2: NewLinear("e2", hidden, code, pool),
		d1: NewLinear("d1", code, hidden, pool),
		d2: NewLinear("d2", hidden, in, pool),
	}
	m.errs = newPerImage(pool, m.sqErrImage)
	return m
}

func (m *AE) Name() string { return AEName }

// Levels is Continuous: the autoencoder reconstructs grey levels.
func (m *AE) Levels() int { return Continuous }

// Rows and Cols give the 28x28 image shape of the 784-pixel autoencoder.
func (m *AE) Rows() int { return 28 }
func (m *AE) Cols() int { return m.in / 28 }

// CodeSize is the length of the code Encode writes per image.
func (m *AE) CodeSize() int { return m.code }

func (m *AE) layers() []*Linear { return []*Linear{m.e1, m.e2, m.d1, m.d2} }

func (m *AE) Params() []*Param { return linearParams(m.layers()) }

func (m *AE) Init(rng *rand.Rand) { initLinears(m.layers(), rng) }

var (
	_ GEMMLister    = (*AE)(nil)
	_ Reconstructor = (*AE)(nil)
	_ Encoder       = (*AE)(nil)
)

// TrainGEMMs implements GEMMLister, as Grad calls Sgemm.
func (m *AE) TrainGEMMs(n int) []GEMM {
	var gs []GEMM
	for _, l := range m.layers() {
		gs = append(gs, GEMM{Name: l.W.Name + " forward", TransB: true, M: n, N: l.Out, K: l.In})
	}
	for _, l := range []*Linear{m.d2, m.d1, m.e2, m.e1} {
		gs = append(gs, GEMM{Name: l.W.Name + " weight grad", TransA: true, M: l.Out, N: l.In, K: n})
		if l != m.e1 {
			gs = append(gs, GEMM{Name: l.W.Name + " input grad", M: n, N: l.In, K: l.Out})
		}
	}
	return gs
}

func (m *AE) reserve(n int) {
	m.h = grow(m.h, n*m.hidden)
	m.z = grow(m.z, n*m.code)
	m.d = grow(m.d, n*m.hidden)
	m.logit = grow(m.logit, n*m.in)
	m.r = grow(m.r, n*m.in)
}

// encode leaves the codes of the n images x in m.z.
func (m *AE) encode(x []float32, n int) {
	m.reserve(n)
	m.e1.ForwardReLU(x, m.h, n)
	m.e2.Forward(m.h, m.z, n)
}

// forward leaves the reconstructions of x in m.r.
func (m *AE) forward(x []float32, n int) {
	m.encode(x, n)
	m.d1.ForwardReLU(m.z, m.d, n)
	m.d2.Forward(m.d, m.logit, n)
	r := m.r[:n*m.in]
	copy(r, m.logit)
	kernels.Sigmoid(r) // vectorised float32, within 9e-8 of the exact value
}

// sqErr is the summed squared error of m.r against x over n images (on
// the pool, perImage) and, when grad is set, writes its gradient with
// respect to the logits into m.dl: 2 (r - x) r (1 - r).
func (m *AE) sqErr(x []float32, n int, grad bool) float64 {
	if grad {
		m.dl = grow(m.dl, n*m.in)
	}
	m.errX, m.errGrad = x, grad
	s := m.errs.sum(n)
	m.errX = nil
	return s
}

// sqErrImage is image i's squared error, summed in pixel order.
func (m *AE) sqErrImage(_, i int) float64 {
	var s float64
	for p := i * m.in; p < (i+1)*m.in; p++ {
		r := m.r[p]
		e := r - m.errX[p]
		s += float64(e) * float64(e)
		if m.errGrad {
			m.dl[p] = 2 * e * r * (1 - r)
		}
	}
	return s
}

// Loss and Grad ignore noise: the autoencoder is deterministic.
func (m *AE) Loss(x []float32, n int, _ Noise) float64 {
	m.forward(x, n)
	return m.sqErr(x, n, false)
}

func (m *AE) Grad(x []float32, n int, _ Noise) float64 {
	m.forward(x, n)
	loss := m.sqErr(x, n, true)
	m.dd = grow(m.dd, n*m.hidden)
	m.dz = grow(m.dz, n*m.code)
	m.dh = grow(m.dh, n*m.hidden)

	// Each layer's parameter gradients are handed to the hook before its
	// input gradient is computed.
	m.d2.BackwardParams(m.d, m.dl, n)
	m.gradDone(m.d2)
	m.d2.BackwardInput(m.dl, m.dd, n, false)
	m.d1.BackwardParamsReLU(m.z, m.dd, n, m.d) // dd *= relu'(d) first
	m.gradDone(m.d1)
	m.d1.BackwardInput(m.dd, m.dz, n, false)
	m.e2.BackwardParams(m.h, m.dz, n)
	m.gradDone(m.e2)
	m.e2.BackwardInput(m.dz, m.dh, n, false)
	m.e1.BackwardParamsReLU(x, m.dh, n, m.h) // the data needs no gradient
	m.gradDone(m.e1)
	return loss
}

func (m *AE) SetGradHook(hook func(*Param)) { m.hook = hook }

func (m *AE) gradDone(l *Linear) { reportGrads(m.hook, l.W, l.B) }

// Sample writes zeros: an autoencoder has no prior to draw codes from.
// Its pictures are reconstructions (Reconstruct).
func (m *AE) Sample(dst []float32, n int, _ *rand.Rand) {
	clear(dst[:n*m.in])
}

// Reconstruct writes the reconstructions of the n images x into dst.
func (m *AE) Reconstruct(dst, x []float32, n int) {
	m.forward(x, n)
	copy(dst[:n*m.in], m.r)
}

// Encode writes the codes of the n images x into dst (n*CodeSize values).
func (m *AE) Encode(dst, x []float32, n int) {
	m.encode(x, n)
	copy(dst[:n*m.code], m.z)
}

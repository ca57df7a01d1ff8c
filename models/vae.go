package models

import (
	"math"
	"math/rand/v2"

	"github.com/gencluster/gencluster/kernels"
)

// VAE is the reference variational autoencoder: encoder in-hidden (ReLU) ->
// mu and log-variance (latent each); decoder latent-hidden (ReLU) -> in
// Bernoulli logits. Loss: the negative ELBO per image, binary cross-entropy
// plus the closed-form KL(q(z|x) || N(0, I)), with one reparameterised
// sample z = mu + exp(lv/2) * eps. Image i of a batch draws its latent
// normals eps from a PCG seeded by (noise.Seed, noise.First+i).
type VAE struct {
	in, hidden, latent int
	e, mu, lv, d1, d2  *Linear
	pool               *kernels.Pool
	bce                *bce

	hook func(*Param) // see SetGradHook

	// src, reseeded for each image, drives rng, which draws eps
	src *rand.PCG
	rng *rand.Rand

	// workspaces: forward activations and their gradients
	h, m, v, eps, z, d, logit []float32
	dh, dm, dv, dz, dd, dl    []float32
}

// NewVAE builds the network for images of in pixels.
func NewVAE(in, hidden, latent int, pool *kernels.Pool) *VAE {
	src := rand.NewPCG(0, 0)
	return &VAE{
		in: in, hidden: hidden, latent: latent, pool: pool, bce: newBCE(pool),
		src: src, rng: rand.New(src),
		e:  NewLinear("e", in, hidden, pool),
		mu: NewLinear("mu", hidden, latent, pool),
		lv: NewLinear("lv", hidden, latent, pool),
		d1: NewLinear("d1", latent, hidden, pool),
		d2: NewLinear("d2", hidden, in, pool),
	}
}

func (m *VAE) Name() string { return VAEName }

// Levels is BinaryLevels: the VAE models thresholded pixels.
func (m *VAE) Levels() int { return BinaryLevels }

// Rows and Cols give the 28x28 image shape the 784-pixel VAE models.
func (m *VAE) Rows() int { return 28 }
func (m *VAE) Cols() int { return m.in / 28 }

func (m *VAE) layers() []*Linear { return []*Linear{m.e, m.mu, m.lv, m.d1, m.d2} }

var _ GEMMLister = (*VAE)(nil)

// TrainGEMMs implements GEMMLister, as Linear.Forward and Linear.Backward
// call Sgemm: the layers' forward products in the order Grad runs them,
// then the backward ones (weight gradient, then input gradient but for
// the encoder's first layer, whose input is the data).
func (m *VAE) TrainGEMMs(n int) []GEMM {
	var gs []GEMM
	for _, l := range []*Linear{m.e, m.mu, m.lv, m.d1, m.d2} {
		gs = append(gs, GEMM{Name: l.W.Name + " forward", TransB: true, M: n, N: l.Out, K: l.In})
	}
	for _, l := range []*Linear{m.d2, m.d1, m.mu, m.lv, m.e} {
		gs = append(gs, GEMM{Name: l.W.Name + " weight grad", TransA: true, M: l.Out, N: l.In, K: n})
		if l != m.e {
			gs = append(gs, GEMM{Name: l.W.Name + " input grad", M: n, N: l.In, K: l.Out})
		}
	}
	return gs
}

func (m *VAE) Params() []*Param { return linearParams(m.layers()) }

func (m *VAE) Init(rng *rand.Rand) { initLinears(m.layers(), rng) }

func (m *VAE) reserve(n int) {
	m.h = grow(m.h, n*m.hidden)
	m.m = grow(m.m, n*m.latent)
	m.v = grow(m.v, n*m.latent)
	m.eps = grow(m.eps, n*m.latent)
	m.z = grow(m.z, n*m.latent)
	m.d = grow(m.d, n*m.hidden)
	m.logit = grow(m.logit, n*m.in)
}

// forward computes the logits for x and returns the summed KL term.
func (m *VAE) forward(x []float32, n int, noise Noise) float64 {
	m.reserve(n)
	m.e.ForwardReLU(x, m.h, n)
	m.mu.Forward(m.h, m.m, n)
	m.lv.Forward(m.h, m.v, n)
	var kl float64
	for i := range m.z {
		if i%m.latent == 0 {
			m.src.Seed(noise.Seed, mix64(noise.First+uint64(i/m.latent)))
		}
		eps := float32(m.rng.NormFloat64())
		m.eps[i] = eps
		mu, lv := m.m[i], m.v[i]
		m.z[i] = mu + eps*float32(math.Exp(0.5*float64(lv)))
		kl += -0.5 * (1 + float64(lv) - float64(mu)*float64(mu) - math.Exp(float64(lv)))
	}
	m.d1.ForwardReLU(m.z, m.d, n)
	m.d2.Forward(m.d, m.logit, n)
	return kl
}

func (m *VAE) Loss(x []float32, n int, noise Noise) float64 {
	kl := m.forward(x, n, noise)
	return m.bce.loss(m.logit, x, nil, n, m.in) + kl
}

func (m *VAE) Grad(x []float32, n int, noise Noise) float64 {
	kl := m.forward(x, n, noise)
	m.dl = grow(m.dl, n*m.in)
	m.dd = grow(m.dd, n*m.hidden)
	m.dz = grow(m.dz, n*m.latent)
	m.dm = grow(m.dm, n*m.latent)
	m.dv = grow(m.dv, n*m.latent)
	m.dh = grow(m.dh, n*m.hidden)
	loss := m.bce.loss(m.logit, x, m.dl, n, m.in) + kl

	// Each layer's parameter gradients are handed to the hook before its
	// input gradient is computed: the hook's all-reduce starts one GEMM
	// earlier.
	m.d2.BackwardParams(m.d, m.dl, n)
	m.gradDone(m.d2)
	m.d2.BackwardInput(m.dl, m.dd, n, false)
	m.d1.BackwardParamsReLU(m.z, m.dd, n, m.d) // dd *= relu'(d) first
	m.gradDone(m.d1)
	m.d1.BackwardInput(m.dd, m.dz, n, false)
	for i, dz := range m.dz {
		mu, lv := m.m[i], float64(m.v[i])
		std := math.Exp(0.5 * lv)
		// z = mu + eps*std; KL = -1/2 (1 + lv - mu^2 - e^lv)
		m.dm[i] = dz + mu
		m.dv[i] = float32(float64(dz)*float64(m.eps[i])*0.5*std + 0.5*(math.Exp(lv)-1))
	}
	m.mu.BackwardParams(m.h, m.dm, n)
	m.gradDone(m.mu)
	m.lv.BackwardParams(m.h, m.dv, n)
	m.gradDone(m.lv)
	m.mu.BackwardInput(m.dm, m.dh, n, false)
	m.lv.BackwardInput(m.dv, m.dh, n, true)
	m.e.BackwardParamsReLU(x, m.dh, n, m.h) // dh *= relu'(h) first; x needs no gradient
	m.gradDone(m.e)
	return loss
}

func (m *VAE) SetGradHook(hook func(*Param)) { m.hook = hook }

// gradDone reports a layer whose gradients are final.
func (m *VAE) gradDone(l *Linear) { reportGrads(m.hook, l.W, l.B) }

// Sample decodes n draws from the prior N(0, I) and writes the Bernoulli
// means (pixel probabilities).
func (m *VAE) Sample(dst []float32, n int, rng *rand.Rand) {
	m.reserve(n)
	for i := range m.z {
		m.z[i] = float32(rng.NormFloat64())
	}
	m.d1.ForwardReLU(m.z, m.d, n)
	m.d2.Forward(m.d, m.logit, n)
	for i, l := range m.logit[:n*m.in] {
		dst[i] = float32(sigmoid(float64(l)))
	}
}

// mix64 is SplitMix64's finaliser. Images' noise streams are consecutive
// integers; PCGs seeded with neighbouring states start out correlated, so
// the stream number is scrambled first.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

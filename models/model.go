// Package models holds the reference generative models (PixelCNN and VAE):
// their layers, forward and backward passes, losses and samplers. It knows
// nothing of the network: a model turns a batch of images into a loss and
// the gradient of that loss, and back into samples.
package models

import (
	"fmt"
	"math/rand/v2"

	"github.com/gencluster/gencluster/kernels"
)

// Names of the models, as given to --model.
const (
	PixelCNNName = "pixelcnn"
	VAEName      = "vae"
)

// Names lists the known models.
var Names = []string{PixelCNNName, VAEName}

// Noise names the random numbers a stochastic loss draws: image i of a Grad
// or Loss call draws from the stream (Seed, First+i), so computing a batch in
// pieces (First advanced by each piece's offset) draws exactly the numbers
// computing it whole does.
type Noise struct {
	Seed  uint64
	First uint64
}

// ProgressSampler is a Model whose sampling is many passes over all the
// images (the PixelCNN: one a pixel), and that can say how far it is.
type ProgressSampler interface {
	// SampleProgress is Sample calling progress(done, total), if not nil,
	// after each of its total passes; it draws the same images.
	SampleProgress(dst []float32, n int, rng *rand.Rand, progress func(done, total int))
}

// GEMM is one matrix product of a training step: C[M][N] (+)= op(A) op(B)
// with an inner dimension K, as kernels.Sgemm is called.
type GEMM struct {
	Name           string // layer and part: "bs.0 forward", "e weight grad"
	TransA, TransB bool
	M, N, K        int
}

// FLOPs is the floating-point operations of the product (a multiply-add
// counts two).
func (g GEMM) FLOPs() float64 { return 2 * float64(g.M) * float64(g.N) * float64(g.K) }

// GEMMLister is a Model that lists the matrix products of its training
// step on n images, in the order it runs them (forward, then backward):
// per layer a forward, a weight-gradient and, but for the first layer, an
// input-gradient product, with masked taps left out.
type GEMMLister interface {
	TrainGEMMs(n int) []GEMM
}

// TrainFLOPs is the useful floating-point operations of m's training step
// on n images: those of its matrix products (GEMMLister). The elementwise
// work (bias, ReLU, the loss) is left out: a few percent, and not what a
// FLOP rate compares. ok is false for a model that does not list them.
func TrainFLOPs(m Model, n int) (flops float64, ok bool) {
	l, ok := m.(GEMMLister)
	if !ok {
		return 0, false
	}
	for _, g := range l.TrainGEMMs(n) {
		flops += g.FLOPs()
	}
	return flops, true
}

// Model is a generative model of binary images of Rows x Cols pixels.
//
// Images are float32 {0,1} pixels, one image after the other in row-major
// order. A Model owns its workspaces and is not safe for concurrent use.
type Model interface {
	Name() string
	Rows() int
	Cols() int
	// Params lists the learnable tensors in a fixed order.
	Params() []*Param
	// Init draws fresh weights as PyTorch's default initialisation does.
	Init(rng *rand.Rand)
	// Grad computes the loss summed over the n images in x and overwrites
	// every Param's Grad with the gradient of that sum. noise names the
	// random numbers of any stochastic part of the loss (the VAE's
	// reparameterisation noise): image i draws from stream
	// (noise.Seed, noise.First+i), so the sum of Grad over pieces of a batch
	// equals Grad of the whole batch (up to float rounding).
	Grad(x []float32, n int, noise Noise) float64
	// Loss computes the summed loss of the n images in x without gradients,
	// drawing noise as Grad does.
	Loss(x []float32, n int, noise Noise) float64
	// Sample writes n new images into dst (n*Rows*Cols values in [0,1]).
	Sample(dst []float32, n int, rng *rand.Rand)
	// SetGradHook installs hook (nil removes it): during Grad it is called
	// for every Param as soon as its gradient is final, in backward order
	// (the last layer first), which is the same on every call. It runs on
	// Grad's goroutine and must neither change the gradient nor block: it
	// lets a data-parallel trainer start summing a gradient while the rest of
	// the backward pass runs.
	SetGradHook(hook func(*Param))
}

// New makes the model called name, computing on pool (nil: one thread).
// Weights are zero until Init or a checkpoint sets them.
func New(name string, pool *kernels.Pool) (Model, error) {
	switch name {
	case PixelCNNName:
		return NewPixelCNN(28, 28, 64, 6, pool), nil
	case VAEName:
		return NewVAE(784, 400, 20, pool), nil
	}
	return nil, fmt.Errorf("unknown model %q (known: pixelcnn, vae)", name)
}

// grow returns buf resized to n, reallocating only when it is too small.
func grow(buf []float32, n int) []float32 {
	if cap(buf) < n {
		return make([]float32, n)
	}
	return buf[:n]
}

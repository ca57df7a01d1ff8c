// Package models holds the reference generative models (PixelCNN, VAE,
// PixelRNN and the regular autoencoder):
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
	PixelRNNName = "pixelrnn"
	AEName       = "ae"
)

// Names lists the known models.
var Names = []string{PixelCNNName, VAEName, PixelRNNName, AEName}

// Pixel levels a model predicts (Model.Levels).
const (
	// Continuous: grey levels in [0,1] as real values (the autoencoder).
	Continuous = 0
	// BinaryLevels: pixels thresholded to {0,1} (byte > 127), a Bernoulli
	// per pixel.
	BinaryLevels = 2
	// GreyLevels: the 256 grey levels, a 256-way softmax per pixel.
	GreyLevels = 256
)

// Spec names a model: its kind and, for the autoregressive ones, how many
// levels a pixel takes (0: the model's default).
type Spec struct {
	Name   string
	Levels int
}

// Resolve checks s and fills in the default levels: 2 for pixelcnn,
// pixelrnn and vae; Continuous for ae. 256 is accepted for pixelcnn and
// pixelrnn only.
func (s Spec) Resolve() (Spec, error) {
	switch s.Name {
	case PixelCNNName, PixelRNNName:
		switch s.Levels {
		case 0:
			s.Levels = BinaryLevels
		case BinaryLevels, GreyLevels:
		default:
			return s, fmt.Errorf("model %s: levels %d: want 2 or 256", s.Name, s.Levels)
		}
	case VAEName:
		if s.Levels != 0 && s.Levels != BinaryLevels {
			return s, fmt.Errorf("model vae: levels %d: the VAE models binary pixels (levels 2)", s.Levels)
		}
		s.Levels = BinaryLevels
	case AEName:
		if s.Levels != 0 {
			return s, fmt.Errorf("model ae: levels %d: the autoencoder reconstructs grey levels and takes no --levels", s.Levels)
		}
	default:
		return s, fmt.Errorf("unknown model %q (known: pixelcnn, vae, pixelrnn, ae)", s.Name)
	}
	return s, nil
}

// Canonical is s checked (Resolve) in the form jobs and checkpoints
// record: Levels 0 for a model's default, 256 only when asked for, so that
// "levels 2" and "levels unset" name the same job.
func (s Spec) Canonical() (Spec, error) {
	r, err := s.Resolve()
	if err != nil {
		return s, err
	}
	if r.Levels != GreyLevels {
		r.Levels = 0
	}
	return r, nil
}

// String is the model's name, with "/256" for 256 grey levels:
// "pixelcnn", "pixelrnn/256".
func (s Spec) String() string {
	if s.Levels == GreyLevels {
		return s.Name + "/256"
	}
	return s.Name
}

// GreyInput reports whether m takes grey levels in [0,1] (byte/255) rather
// than pixels thresholded to {0,1}.
func GreyInput(m Model) bool { return m.Levels() != BinaryLevels }

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

// Model is a generative model of images of Rows x Cols pixels.
//
// Images are float32 pixels, one image after the other in row-major
// order: {0,1} when Levels is 2, grey levels byte/255 in [0,1] otherwise
// (GreyInput). A Model owns its workspaces and is not safe for concurrent
// use.
type Model interface {
	Name() string
	// Levels is how the model sees a pixel: BinaryLevels (a Bernoulli on
	// thresholded pixels), GreyLevels (a 256-way softmax on grey levels)
	// or Continuous (grey levels as real values).
	Levels() int
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
	// A model that cannot draw images from nothing (the autoencoder) is a
	// Reconstructor and writes zeros.
	Sample(dst []float32, n int, rng *rand.Rand)
	// SetGradHook installs hook (nil removes it): during Grad it is called
	// for every Param as soon as its gradient is final, in backward order
	// (the last layer first), which is the same on every call. It runs on
	// Grad's goroutine and must neither change the gradient nor block: it
	// lets a data-parallel trainer start summing a gradient while the rest of
	// the backward pass runs.
	SetGradHook(hook func(*Param))
}

// Reconstructor is a Model that maps images to images (the autoencoder):
// its "samples" are reconstructions of given images.
type Reconstructor interface {
	// Reconstruct writes the model's reconstruction of the n images in x
	// into dst.
	Reconstruct(dst, x []float32, n int)
}

// New makes the model spec names, computing on pool (nil: one thread).
// Weights are zero until Init or a checkpoint sets them.
func New(spec Spec, pool *kernels.Pool) (Model, error) {
	s, err := spec.Resolve()
	if err != nil {
		return nil, err
	}
	switch s.Name {
	case PixelCNNName:
		return NewPixelCNN(28, 28, 64, 6, s.Levels, pool), nil
	case VAEName:
		return NewVAE(784, 400, 20, pool), nil
	case PixelRNNName:
		return NewPixelRNN(28, 28, 64, s.Levels, pool), nil
	default: // AEName
		return NewAE(784, 400, 20, pool), nil
	}
}

// grow returns buf resized to n, reallocating only when it is too small.
func grow(buf []float32, n int) []float32 {
	if cap(buf) < n {
		return make([]float32, n)
	}
	return buf[:n]
}

// Encoder is a Model that maps an image to a code (the autoencoder): what
// a linear probe measures.
type Encoder interface {
	// CodeSize is the length of one image's code.
	CodeSize() int
	// Encode writes the codes of the n images in x into dst
	// (n*CodeSize values).
	Encode(dst, x []float32, n int)
}

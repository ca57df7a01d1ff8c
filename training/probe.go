package training

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/gencluster/gencluster/dataset"
	"github.com/gencluster/gencluster/models"
	"github.com/gencluster/gencluster/optim"
)

// The linear probe of an autoencoder's codes, as the PyTorch anchor
// measures it: logistic regression from the code to the classes, trained
// on the codes of the training split (Adam, ProbeLR, ProbeEpochs passes
// in batches of ProbeBatch, mean cross-entropy), and its accuracy on the
// test split.
const (
	ProbeLR      = 1e-2
	ProbeEpochs  = 20
	ProbeBatch   = 256
	probeClasses = 10
)

// ProbeResult is what Probe measured.
type ProbeResult struct {
	Accuracy  float64 // on the test split, in [0,1]
	TrainLoss float64 // mean cross-entropy of the last epoch's batches
	Train     int     // images the probe was fitted on
	Test      int     // images it was scored on
}

// Probe fits the linear probe on the codes enc gives the train images and
// scores it on the test images; the labels are bytes 0..9, one per image.
// seed draws the probe's initial weights and batch order.
func Probe(ctx context.Context, m models.Model, train, test *dataset.Images, trainLabels, testLabels []byte, seed uint64) (*ProbeResult, error) {
	enc, ok := m.(models.Encoder)
	if !ok {
		return nil, fmt.Errorf("probe: the %s model has no codes to probe (only ae does)", m.Name())
	}
	if len(trainLabels) != train.N || len(testLabels) != test.N {
		return nil, fmt.Errorf("probe: %d training labels for %d images, %d test labels for %d images", len(trainLabels), train.N, len(testLabels), test.N)
	}
	for _, l := range [][]byte{trainLabels, testLabels} {
		for i, c := range l {
			if c >= probeClasses {
				return nil, fmt.Errorf("probe: label %d of image %d is not a class 0..%d", c, i, probeClasses-1)
			}
		}
	}
	ztr, err := codes(ctx, m, enc, train)
	if err != nil {
		return nil, err
	}
	zte, err := codes(ctx, m, enc, test)
	if err != nil {
		return nil, err
	}
	d := enc.CodeSize()

	// nn.Linear(d, 10) with PyTorch's default initialisation.
	rng := rand.New(rand.NewPCG(seed, 0x9b0e))
	w := make([]float32, probeClasses*d)
	b := make([]float32, probeClasses)
	bound := 1 / math.Sqrt(float64(d))
	for _, p := range [][]float32{w, b} {
		for i := range p {
			p[i] = float32((rng.Float64()*2 - 1) * bound)
		}
	}
	gw := make([]float32, len(w))
	gb := make([]float32, len(b))
	cfg := optim.DefaultAdam()
	cfg.LR = ProbeLR
	opt := optim.NewAdam(cfg, []int{len(w), len(b)})
	params, grads := [][]float32{w, b}, [][]float32{gw, gb}

	res := &ProbeResult{Train: train.N, Test: test.N}
	logits := make([]float64, probeClasses)
	for epoch := 0; epoch < ProbeEpochs; epoch++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("probe stopped at epoch %d: %w", epoch, err)
		}
		perm := rng.Perm(train.N)
		var epochLoss float64
		batches := 0
		for lo := 0; lo < train.N; lo += ProbeBatch {
			idx := perm[lo:min(lo+ProbeBatch, train.N)]
			clear(gw)
			clear(gb)
			var loss float64
			for _, i := range idx {
				z := ztr[i*d : (i+1)*d]
				loss += probeLogits(w, b, z, logits, int(trainLabels[i]))
				// logits now holds softmax - onehot: the gradient of the
				// cross-entropy with respect to the logits.
				for c := 0; c < probeClasses; c++ {
					g := float32(logits[c])
					gb[c] += g
					row := gw[c*d : (c+1)*d]
					for k, v := range z {
						row[k] += g * v
					}
				}
			}
			if err := opt.Step(params, grads, 1/float32(len(idx))); err != nil {
				return nil, fmt.Errorf("probe: %w", err)
			}
			epochLoss += loss / float64(len(idx))
			batches++
		}
		res.TrainLoss = epochLoss / float64(batches)
	}
	right := 0
	for i := 0; i < test.N; i++ {
		linear(w, b, zte[i*d:(i+1)*d], logits)
		best := 0
		for c := 1; c < probeClasses; c++ {
			if logits[c] > logits[best] { // softmax is monotone: the argmax of the logits
				best = c
			}
		}
		if best == int(testLabels[i]) {
			right++
		}
	}
	res.Accuracy = float64(right) / float64(test.N)
	return res, nil
}

// linear computes the probe's logits W z + b on code z into out.
func linear(w, b, z []float32, out []float64) {
	d := len(z)
	for c := range out {
		s := float64(b[c])
		for k, v := range z {
			s += float64(w[c*d+k]) * float64(v)
		}
		out[c] = s
	}
}

// probeLogits computes the probe's softmax on code z into out, returns the
// cross-entropy against class t and leaves softmax - onehot(t) in out.
func probeLogits(w, b, z []float32, out []float64, t int) float64 {
	linear(w, b, z, out)
	mx := math.Inf(-1)
	for _, v := range out {
		mx = math.Max(mx, v)
	}
	lt := out[t] - mx
	var sum float64
	for c := range out {
		out[c] = math.Exp(out[c] - mx)
		sum += out[c]
	}
	loss := math.Log(sum) - lt
	for c := range out {
		out[c] /= sum
	}
	out[t]--
	return loss
}

// codes encodes every image of set (grey levels, as the model trains).
func codes(ctx context.Context, m models.Model, enc models.Encoder, set *dataset.Images) ([]float32, error) {
	if err := dataset.CheckShape(set, m.Rows(), m.Cols()); err != nil {
		return nil, err
	}
	dim, d := set.Dim(), enc.CodeSize()
	z := make([]float32, set.N*d)
	x := make([]float32, TestBatch*dim)
	grey := models.GreyInput(m)
	for lo := 0; lo < set.N; lo += TestBatch {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("probe: encoding stopped at image %d: %w", lo, err)
		}
		n := min(TestBatch, set.N-lo)
		for i := 0; i < n; i++ {
			set.Pixels(lo+i, x[i*dim:(i+1)*dim], grey)
		}
		enc.Encode(z[lo*d:(lo+n)*d], x, n)
	}
	return z, nil
}

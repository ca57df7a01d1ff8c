package models

import (
	"math"
	"math/rand/v2"
	"testing"
)

// gradSum runs Grad and returns the loss and a float64 copy of every
// parameter's gradient.
func gradSum(m Model, x []float32, n int, noise Noise) (float64, [][]float64) {
	loss := m.Grad(x, n, noise)
	var gs [][]float64
	for _, p := range m.Params() {
		g := make([]float64, len(p.Grad))
		for i, v := range p.Grad {
			g[i] = float64(v)
		}
		gs = append(gs, g)
	}
	return loss, gs
}

// piecewise computes Grad and Loss over the pieces [0,k) and [k,n) of x,
// the second with First advanced by shift, and sums them in float64.
// Images are dim values each.
func piecewise(m Model, x []float32, dim, n, k int, noise Noise, shift uint64) (gradLoss, loss float64, grads [][]float64) {
	gradLoss, grads = gradSum(m, x[:k*dim], k, noise)
	loss = m.Loss(x[:k*dim], k, noise)
	second := Noise{Seed: noise.Seed, First: noise.First + shift}
	l2, g2 := gradSum(m, x[k*dim:n*dim], n-k, second)
	gradLoss += l2
	loss += m.Loss(x[k*dim:n*dim], n-k, second)
	for i := range grads {
		for j := range grads[i] {
			grads[i][j] += g2[i][j]
		}
	}
	return gradLoss, loss, grads
}

func close64(a, b, rel float64) bool {
	return math.Abs(a-b) <= rel*math.Max(math.Abs(a), math.Abs(b))+1e-9
}

// TestGradSplitsIntoPieces: the gradient and loss of a batch equal the sums
// over two pieces of it when the second piece's noise starts at its offset,
// as data-parallel workers compute them. For the VAE, a piece whose noise
// does not start at its offset must differ (the check can fail).
func TestGradSplitsIntoPieces(t *testing.T) {
	for _, c := range []struct {
		name       string
		m          Model
		dim        int // pixels per image (the small VAE's Rows and Cols assume 784)
		stochastic bool
	}{
		{"pixelcnn", NewPixelCNN(6, 7, 5, 2, 2, nil), 6 * 7, false},
		{"pixelcnn/256", NewPixelCNN(6, 7, 5, 2, GreyLevels, nil), 6 * 7, false},
		{"vae", NewVAE(12, 7, 3, nil), 12, true},
		{"pixelrnn", NewPixelRNN(5, 6, 4, 2, nil), 5 * 6, false},
		{"pixelrnn/256", NewPixelRNN(5, 6, 4, GreyLevels, nil), 5 * 6, false},
		{"ae", NewAE(12, 7, 3, nil), 12, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(21, 22))
			m := c.m
			m.Init(rng)
			n := 7
			x := inputImages(rng, m, n*c.dim)
			noise := Noise{Seed: 23, First: 40}
			wholeLoss, whole := gradSum(m, x, n, noise)
			if l := m.Loss(x, n, noise); !close64(l, wholeLoss, 1e-5) {
				t.Fatalf("Loss %v, Grad's loss %v", l, wholeLoss)
			}
			for _, k := range []int{1, 3, 6} {
				gl, l, gs := piecewise(m, x, c.dim, n, k, noise, uint64(k))
				if !close64(gl, wholeLoss, 1e-5) || !close64(l, wholeLoss, 1e-5) {
					t.Errorf("k=%d: pieces' loss %v (Loss %v), whole batch %v", k, gl, l, wholeLoss)
				}
				for i, p := range m.Params() {
					// Relative to the tensor's largest gradient: a tiny
					// element is a difference of large terms.
					scale := 0.0
					for _, v := range whole[i] {
						scale = math.Max(scale, math.Abs(v))
					}
					for j := range whole[i] {
						if math.Abs(gs[i][j]-whole[i][j]) > 1e-5*scale+1e-9 {
							t.Fatalf("k=%d: %s grad[%d]: pieces %v, whole batch %v", k, p.Name, j, gs[i][j], whole[i][j])
						}
					}
				}
			}
			if !c.stochastic {
				return
			}
			// The noise must matter, or the test above proves nothing.
			if gl, _, _ := piecewise(m, x, c.dim, n, 3, noise, 0); close64(gl, wholeLoss, 1e-5) {
				t.Errorf("second piece drawing the first piece's noise gave the whole batch's loss %v", gl)
			}
			if l := m.Loss(x, n, Noise{Seed: noise.Seed + 1, First: noise.First}); close64(l, wholeLoss, 1e-5) {
				t.Errorf("another seed gave the same loss %v", l)
			}
		})
	}
}

package models

import "testing"

// The training step's matrix products: per layer a forward, a weight and
// (but for the first layer) an input gradient product, each of the
// layer's multiply-adds (masked taps left out), so the FLOPs are three
// forward passes less the first layer's input gradient.
func TestTrainFLOPs(t *testing.T) {
	pc := NewPixelCNN(28, 28, 64, 6, 2, nil)
	// Forward multiply-adds per pixel: 7x7 mask A keeps 24 taps of 1
	// channel; mask B 5 of 9 taps of 64 channels; two 1x1 layers.
	perPixel := 64*24 + 6*64*64*5 + 64*64 + 1*64
	want := 2 * 784 * float64(3*perPixel-64*24) * 5 // 5 images
	if got, ok := TrainFLOPs(pc, 5); !ok || got != want {
		t.Errorf("pixelcnn: %v FLOPs on 5 images, want %v", got, want)
	}
	vae := NewVAE(784, 400, 20, nil)
	perImage := 784*400 + 2*400*20 + 20*400 + 400*784
	if got, ok := TrainFLOPs(vae, 7); !ok || got != 2*7*float64(3*perImage-784*400) {
		t.Errorf("vae: %v FLOPs on 7 images, want %v", got, 2*7*float64(3*perImage-784*400))
	}
	for _, m := range []GEMMLister{pc, vae} {
		seen := map[string]bool{}
		for _, g := range m.TrainGEMMs(3) {
			if seen[g.Name] || g.M < 1 || g.N < 1 || g.K < 1 {
				t.Errorf("%+v: repeated or empty", g)
			}
			seen[g.Name] = true
		}
	}
}

package models

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestGradHook: the hook sees every parameter exactly once per Grad, in
// backward order, and each gradient is already final when it is reported.
func TestGradHook(t *testing.T) {
	for _, c := range []struct {
		name string
		m    Model
		dim  int
	}{
		{"pixelcnn", NewPixelCNN(6, 7, 5, 2, 2, nil), 6 * 7},
		{"pixelcnn/256", NewPixelCNN(6, 7, 5, 2, GreyLevels, nil), 6 * 7},
		{"vae", NewVAE(12, 7, 3, nil), 12},
		{"pixelrnn", NewPixelRNN(5, 6, 4, 2, nil), 5 * 6},
		{"pixelrnn/256", NewPixelRNN(5, 6, 4, GreyLevels, nil), 5 * 6},
		{"ae", NewAE(12, 7, 3, nil), 12},
	} {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			c.m.Init(rng)
			const n = 3
			x := inputImages(rng, c.m, n*c.dim)
			var order []*Param
			var atHook [][]float32
			c.m.SetGradHook(func(p *Param) {
				order = append(order, p)
				atHook = append(atHook, slices.Clone(p.Grad))
			})
			c.m.Grad(x, n, Noise{Seed: 1})
			ps := c.m.Params()
			if len(order) != len(ps) {
				t.Fatalf("hook called %d times, want %d (one per parameter)", len(order), len(ps))
			}
			// Every parameter once, the last layer's first, final when seen.
			seen := map[*Param]bool{}
			for i, p := range order {
				if seen[p] || !slices.Contains(ps, p) {
					t.Fatalf("hook call %d reported %s twice or a foreign parameter", i, p.Name)
				}
				seen[p] = true
				if !slices.Equal(atHook[i], p.Grad) {
					t.Errorf("%s: gradient changed after the hook reported it final", p.Name)
				}
			}
			if order[0] != ps[len(ps)-2] {
				t.Errorf("first reported %s, want the last layer's weight %s", order[0].Name, ps[len(ps)-2].Name)
			}
			// The same order on every call (ranks start buckets in it).
			first := slices.Clone(order)
			order, atHook = order[:0], atHook[:0]
			c.m.Grad(x, n, Noise{Seed: 2})
			if !slices.Equal(order, first) {
				t.Error("hook order differs between calls")
			}
			c.m.SetGradHook(nil)
			order = order[:0]
			c.m.Grad(x, n, Noise{Seed: 1})
			if len(order) != 0 {
				t.Error("hook still called after SetGradHook(nil)")
			}
		})
	}
}

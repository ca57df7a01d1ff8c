package optim

import "testing"

// BenchmarkAdamStep times one update of the VAE's 652,824 parameters.
func BenchmarkAdamStep(b *testing.B) {
	lengths := []int{400 * 784, 400, 20 * 400, 20, 20 * 400, 20, 400 * 20, 400, 784 * 400, 784}
	a := NewAdam(DefaultAdam(), lengths)
	var params, grads [][]float32
	for _, n := range lengths {
		p, g := make([]float32, n), make([]float32, n)
		for i := range g {
			g[i] = float32(i%7) - 3
		}
		params, grads = append(params, p), append(grads, g)
	}
	for b.Loop() {
		if err := a.Step(params, grads, 1.0/128); err != nil {
			b.Fatal(err)
		}
	}
}

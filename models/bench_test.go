package models

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/gencluster/gencluster/kernels"
)

// BenchmarkGrad times one forward+backward pass of each reference model at
// the batch sizes of the speed targets (pixelcnn 32, vae 128).
func BenchmarkGrad(b *testing.B) {
	for _, c := range []struct {
		name  Spec
		batch int
	}{{Spec{Name: PixelCNNName}, 32}, {Spec{Name: VAEName}, 128},
		{Spec{Name: PixelRNNName}, 32}, {Spec{Name: AEName}, 128},
		{Spec{Name: PixelCNNName, Levels: GreyLevels}, 32}, {Spec{Name: PixelRNNName, Levels: GreyLevels}, 32}} {
		for _, threads := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/b%d/t%d", c.name, c.batch, threads), func(b *testing.B) {
				pool := kernels.NewPool(threads)
				defer pool.Close()
				m, err := New(c.name, pool)
				if err != nil {
					b.Fatal(err)
				}
				m.Init(rand.New(rand.NewPCG(1, 1)))
				x := inputImages(rand.New(rand.NewPCG(2, 2)), m, c.batch*784)
				m.Grad(x, c.batch, Noise{Seed: 3})
				b.ResetTimer()
				for b.Loop() {
					m.Grad(x, c.batch, Noise{Seed: 3})
				}
				b.ReportMetric(float64(c.batch)*float64(b.N)/b.Elapsed().Seconds(), "images/s")
			})
		}
	}
}

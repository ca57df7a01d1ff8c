package models

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gencluster/gencluster/kernels"
)

// The cached sampler draws exactly what the windowed one (a forward pass
// per pixel) draws for the same seed: every pixel of a batch, on 1 and 2
// threads, for a batch that is and one that is not a multiple of the
// kernels' tile widths; and it reports progress once per pixel.
func TestSampleCachedEqualsWindowed(t *testing.T) {
	for _, c := range []struct{ levels, threads, n int }{
		{2, 1, 5}, {2, 1, 16}, {2, 2, 5}, {2, 2, 16}, {GreyLevels, 1, 5}, {GreyLevels, 2, 16},
	} {
		threads, n := c.threads, c.n
		{
			pool := kernels.NewPool(threads)
			// 14x12 images of 16 channels (the model's are 28x28 of 64):
			// the same layers, non-square (rows and columns not mixed up),
			// and the windowed reference fast enough under -race.
			const rows, cols = 14, 12
			m := NewPixelCNN(rows, cols, 16, 6, c.levels, pool)
			m.Init(rand.New(rand.NewPCG(7, uint64(n))))
			// Sharper than the initial weights (logits near 0, pixels
			// coin flips): scale the output layer so that the draws
			// depend on the logits' values, not only on the coins.
			for i := range m.o2.W.Data {
				m.o2.W.Data[i] *= 8
			}
			want := make([]float32, n*rows*cols)
			m.sampleWindowed(want, n, rand.New(rand.NewPCG(3, 4)))
			got := make([]float32, n*rows*cols)
			calls := 0
			m.SampleProgress(got, n, rand.New(rand.NewPCG(3, 4)), func(done, total int) {
				calls++
				if done != calls || total != rows*cols {
					t.Fatalf("progress(%d, %d) at call %d", done, total, calls)
				}
			})
			pool.Close()
			if calls != rows*cols {
				t.Errorf("progress called %d times, want %d", calls, rows*cols)
			}
			if !slices.Equal(got, want) {
				diff := 0
				for i := range got {
					if got[i] != want[i] {
						diff++
					}
				}
				t.Fatalf("%d levels, %d threads, %d images: %d of %d pixels differ from the windowed sampler's", c.levels, threads, n, diff, len(got))
			}
			values := map[float32]int{}
			for _, v := range got {
				values[v]++
			}
			if len(values) < 2 || (c.levels == GreyLevels && len(values) < 16) {
				t.Fatalf("%d levels, %d threads, %d images: only %d distinct pixel values: not a sample", c.levels, threads, n, len(values))
			}
		}
	}
}

func BenchmarkSamplePixelCNN(b *testing.B) {
	for _, c := range []struct {
		name string
		fn   func(m *PixelCNN, dst []float32, n int, rng *rand.Rand)
	}{
		{"cached", func(m *PixelCNN, dst []float32, n int, rng *rand.Rand) { m.Sample(dst, n, rng) }},
		{"windowed", (*PixelCNN).sampleWindowed},
	} {
		b.Run(c.name, func(b *testing.B) {
			pool := kernels.NewPool(1)
			defer pool.Close()
			m := NewPixelCNN(28, 28, 64, 6, 2, pool)
			m.Init(rand.New(rand.NewPCG(1, 2)))
			const n = 16
			dst := make([]float32, n*784)
			for b.Loop() {
				c.fn(m, dst, n, rand.New(rand.NewPCG(1, 1)))
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
		})
	}
}

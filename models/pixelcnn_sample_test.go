package models

import (
	"fmt"
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
		pool := kernels.NewPool(c.threads)
		t.Cleanup(pool.Close) // also when a check fails
		// 14x12 images of 16 channels (the model's are 28x28 of 64): the
		// same layers, non-square (rows and columns not mixed up), and the
		// windowed reference fast enough under -race.
		const rows, cols = 14, 12
		m := NewPixelCNN(rows, cols, 16, 6, c.levels, pool)
		m.Init(rand.New(rand.NewPCG(7, uint64(c.n))))
		// Sharper than the initial weights (logits near 0, pixels coin
		// flips): scale the output layer so that the draws depend on the
		// logits' values, not only on the coins.
		for i := range m.o2.W.Data {
			m.o2.W.Data[i] *= 8
		}
		checkIncrementalSampler(t, fmt.Sprintf("%d levels, %d threads, %d images", c.levels, c.threads, c.n),
			m, m.sampleWindowed, c.n, rows, cols, c.levels)
	}
}

// checkIncrementalSampler draws n images of rows x cols with s's
// SampleProgress and with full, a sampler that runs the whole model per
// pixel, from the same seed, and fails t unless they are the same pixels,
// progress came once per pixel, and the pixels are a sample (for 256
// levels, at least 16 distinct values).
func checkIncrementalSampler(t *testing.T, what string, s ProgressSampler, full func(dst []float32, n int, rng *rand.Rand),
	n, rows, cols, levels int) {
	t.Helper()
	want := make([]float32, n*rows*cols)
	full(want, n, rand.New(rand.NewPCG(3, 4)))
	got := make([]float32, n*rows*cols)
	calls := 0
	s.SampleProgress(got, n, rand.New(rand.NewPCG(3, 4)), func(done, total int) {
		calls++
		if done != calls || total != rows*cols {
			t.Fatalf("%s: progress(%d, %d) at call %d", what, done, total, calls)
		}
	})
	if calls != rows*cols {
		t.Errorf("%s: progress called %d times, want %d", what, calls, rows*cols)
	}
	if !slices.Equal(got, want) {
		diff := 0
		for i := range got {
			if got[i] != want[i] {
				diff++
			}
		}
		t.Fatalf("%s: %d of %d pixels differ from the full sampler's", what, diff, len(got))
	}
	values := map[float32]int{}
	for _, v := range got {
		values[v]++
	}
	if len(values) < 2 || (levels == GreyLevels && len(values) < 16) {
		t.Fatalf("%s: only %d distinct pixel values: not a sample", what, len(values))
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

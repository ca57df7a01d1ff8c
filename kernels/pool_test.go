package kernels

import (
	"fmt"
	"testing"
)

// BenchmarkPoolRun times one Run of a small task on every thread: the
// dispatch and join a model step pays per parallel pass (a VAE step makes
// ~40 of them, a PixelRNN step ~400).
func BenchmarkPoolRun(b *testing.B) {
	for _, threads := range []int{2, 3} {
		for _, work := range []int{0, 2000} {
			b.Run(fmt.Sprintf("threads=%d/work=%d", threads, work), func(b *testing.B) {
				p := NewPool(threads)
				defer p.Close()
				sink := make([]float32, threads*64)
				fn := func(part, parts int) {
					s := sink[part*64:]
					for i := 0; i < work; i++ {
						s[i&63] += 1
					}
				}
				for b.Loop() {
					p.Run(threads, fn)
				}
			})
		}
	}
}

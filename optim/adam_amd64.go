//go:build amd64 && !purego

package optim

import "golang.org/x/sys/cpu"

// hasAdamSIMD says whether adamAVX can run here.
var hasAdamSIMD = cpu.X86.HasAVX

//go:noescape
func adamAVX(p, m, v, g []float32, scale, b1, c1, b2, c2, step, bc2s, eps float32)

// adamVector updates the first len(p) &^ 7 elements with AVX and returns
// how many it did (0 without AVX).
func adamVector(p, m, v, g []float32, scale, b1, c1, b2, c2, step, bc2s, eps float32) int {
	if !hasAdamSIMD {
		return 0
	}
	adamAVX(p, m, v, g, scale, b1, c1, b2, c2, step, bc2s, eps)
	return len(p) &^ 7
}

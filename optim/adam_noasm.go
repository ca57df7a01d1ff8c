//go:build !amd64 || purego

package optim

// adamVector has no vector path on this build: the Go loop does it all.
func adamVector(p, m, v, g []float32, scale, b1, c1, b2, c2, step, bc2s, eps float32) int {
	return 0
}

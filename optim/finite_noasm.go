//go:build !amd64 || purego

package optim

// finiteVector has no vector path on this build: the Go loop does it all.
func finiteVector(x []float32) int { return 0 }

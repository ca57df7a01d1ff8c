//go:build amd64 && !purego

package optim

//go:noescape
func finiteAVX(x []float32) bool

// finiteVector checks the first len(x) &^ 31 values with AVX and returns
// how many it checked, or -1 if one of them is not finite (0 without AVX).
func finiteVector(x []float32) int {
	if !hasAdamSIMD || len(x) < 32 {
		return 0
	}
	if !finiteAVX(x) {
		return -1
	}
	return len(x) &^ 31
}

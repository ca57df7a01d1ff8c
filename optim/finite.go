package optim

// FirstNonFinite returns the index of the first tensor of ts that holds a
// NaN or an infinity, or -1 if every value is finite. A step must check its
// summed gradients with it before Step: Adam would spread one NaN into the
// parameters and both moments. On amd64 with AVX it reads 32 values an
// instruction group; elsewhere (and for the tail) a Go loop.
func FirstNonFinite(ts [][]float32) int {
	for i, t := range ts {
		n := finiteVector(t)
		if n < 0 || !finiteScalar(t[n:]) {
			return i
		}
	}
	return -1
}

// finiteScalar reports whether every value of x is finite: v-v is 0 for
// a finite v and NaN for a NaN or an infinity.
func finiteScalar(x []float32) bool {
	for _, v := range x {
		if v-v != 0 {
			return false
		}
	}
	return true
}

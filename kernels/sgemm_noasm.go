//go:build !amd64 || purego

package kernels

// sgemmKernels lists the micro-kernels this build can run, best first.
var sgemmKernels = []*sgemmKernel{sgemmGo}

// sgemmBest is the kernel Sgemm uses.
var sgemmBest = sgemmGo

// sgemmMicro runs the pure-Go micro-kernel on one tile (see sgemm_amd64.go).
func sgemmMicro(kern *sgemmKernel, k int, a, b []float32, ldb int, c []float32, ldc, rows int, alpha, beta float32) {
	sgemmKernelGo4x4(k, a, b, ldb, c, ldc, rows, alpha, beta)
}

// Without assembly the Go packing loops do all the work.

func packStripsFast(kern *sgemmKernel, dst, src []float32, ld, off, kc, width, strips int) bool {
	return false
}

func packGatherFast(kern *sgemmKernel, dst, src []float32, ld, off, kc, width int) int {
	return 0
}

func packIm2colFast(kern *sgemmKernel, dst []float32, b *Im2col, p0, kc, j0, strips int) bool {
	return false
}

func packIm2colTFast(kern *sgemmKernel, dst []float32, b *Im2col, p0, kc, j0, w int) (g8, l8 int) {
	return 0, 0
}

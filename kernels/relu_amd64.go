//go:build amd64 && !purego

package kernels

import "golang.org/x/sys/cpu"

// eltKernels lists the elementwise kernels this machine can run, best
// first (set once at init, read-only afterwards); the pure-Go twin is
// last. Tests run every one of them.
var eltKernels = func() []*eltKernel {
	var ks []*eltKernel
	if cpu.X86.HasAVX512F {
		ks = append(ks, &eltKernel{
			name: "avx512", lanes: 16,
			relu:     func(x []float32) { reluAVX512(len(x), &x[0]) },
			reluGrad: func(d, y []float32) { _ = y[len(d)-1]; reluGradAVX512(len(d), &d[0], &y[0]) },
			addBias:  func(x []float32, b float32, relu bool) { addBiasAVX512(len(x), &x[0], b, boolInt(relu)) },
			addVec:   func(x, b []float32, relu bool) { _ = b[len(x)-1]; addVecAVX512(len(x), &x[0], &b[0], boolInt(relu)) },
			maskSum:  func(g, act []float32) float32 { return maskSumAVX512(len(g), &g[0], actPtr(act, len(g))) },
			maskAcc: func(dst, g, act []float32) {
				_ = g[len(dst)-1]
				maskAccAVX512(len(dst), &dst[0], &g[0], actPtr(act, len(dst)))
			},
		})
	}
	if cpu.X86.HasAVX2 {
		ks = append(ks, &eltKernel{
			name: "avx2", lanes: 8,
			relu:     func(x []float32) { reluAVX2(len(x), &x[0]) },
			reluGrad: func(d, y []float32) { _ = y[len(d)-1]; reluGradAVX2(len(d), &d[0], &y[0]) },
			addBias:  func(x []float32, b float32, relu bool) { addBiasAVX2(len(x), &x[0], b, boolInt(relu)) },
			addVec:   func(x, b []float32, relu bool) { _ = b[len(x)-1]; addVecAVX2(len(x), &x[0], &b[0], boolInt(relu)) },
			maskSum:  func(g, act []float32) float32 { return maskSumAVX2(len(g), &g[0], actPtr(act, len(g))) },
			maskAcc: func(dst, g, act []float32) {
				_ = g[len(dst)-1]
				maskAccAVX2(len(dst), &dst[0], &g[0], actPtr(act, len(dst)))
			},
		})
	}
	return append(ks, eltGoKernel)
}()

// eltBest is the kernel the elementwise functions use.
var eltBest = eltKernels[0]

// eltHasAsm: this build has the assembly kernels.
const eltHasAsm = true

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// actPtr is &act[0] (act checked to hold n >= 1 elements), or nil for no act.
func actPtr(act []float32, n int) *float32 {
	if act == nil {
		return nil
	}
	_ = act[n-1]
	return &act[0]
}

// The assembly kernels (relu_amd64.s) take n >= 1 elements from each
// pointer. The AVX512 ones need AVX-512F, the AVX2 ones AVX2; relu != 0
// applies ReLU after the bias add; act == nil means no mask.

//go:noescape
func reluAVX512(n int, x *float32)

//go:noescape
func reluGradAVX512(n int, d, y *float32)

//go:noescape
func addBiasAVX512(n int, x *float32, b float32, relu int)

//go:noescape
func addVecAVX512(n int, x, b *float32, relu int)

// maskSumAVX512 is ReLUGradSum: 4 zmm accumulators hold the 64 partial sums.
//
//go:noescape
func maskSumAVX512(n int, gp, act *float32) float32

//go:noescape
func maskAccAVX512(n int, dst, gp, act *float32)

//go:noescape
func reluAVX2(n int, x *float32)

//go:noescape
func reluGradAVX2(n int, d, y *float32)

//go:noescape
func addBiasAVX2(n int, x *float32, b float32, relu int)

//go:noescape
func addVecAVX2(n int, x, b *float32, relu int)

// maskSumAVX2 is ReLUGradSum: 8 ymm accumulators hold the 64 partial sums.
//
//go:noescape
func maskSumAVX2(n int, gp, act *float32) float32

//go:noescape
func maskAccAVX2(n int, dst, gp, act *float32)

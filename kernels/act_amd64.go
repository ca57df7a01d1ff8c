//go:build amd64 && !purego

package kernels

import (
	"math"

	"golang.org/x/sys/cpu"
)

// actKernels lists the Sigmoid, Tanh and ExpNegAbs kernels this machine can run,
// best first (set once at init, read-only afterwards); the pure-Go twin is
// last. Tests run every one of them.
var actKernels = func() []*actKernel {
	var ks []*actKernel
	if cpu.X86.HasAVX512F {
		ks = append(ks, &actKernel{
			name: "avx512", lanes: 16,
			sigmoid: func(x []float32) { sigmoidAVX512(len(x), &x[0], actTab) },
			tanh:    func(x []float32) { tanhAVX512(len(x), &x[0], actTab) },
			expNeg:  func(x []float32) { expNegAVX512(len(x), &x[0], actTab) },
		})
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ks = append(ks, &actKernel{
			name: "avx2", lanes: 8,
			sigmoid: func(x []float32) { sigmoidAVX2(len(x), &x[0], actTab) },
			tanh:    func(x []float32) { tanhAVX2(len(x), &x[0], actTab) },
			expNeg:  func(x []float32) { expNegAVX2(len(x), &x[0], actTab) },
		})
	}
	return append(ks, actGoKernel)
}()

// actBest is the kernel Sigmoid, Tanh and ExpNegAbs use.
var actBest = actKernels[0]

// actHasAsm: this build has the assembly kernels.
const actHasAsm = true

// The assembly kernels (act_amd64.s) work in place on n >= 1 elements
// from x; c is actTab. The AVX512 ones need AVX-512F (16 lanes, the tail
// under a k-mask), the AVX2 ones AVX2 and FMA (8 lanes, the tail with
// VMASKMOVPS).

//go:noescape
func sigmoidAVX512(n int, x *float32, c *[actTabRows][8]uint32)

//go:noescape
func tanhAVX512(n int, x *float32, c *[actTabRows][8]uint32)

//go:noescape
func expNegAVX512(n int, x *float32, c *[actTabRows][8]uint32)

//go:noescape
func sigmoidAVX2(n int, x *float32, c *[actTabRows][8]uint32)

//go:noescape
func tanhAVX2(n int, x *float32, c *[actTabRows][8]uint32)

//go:noescape
func expNegAVX2(n int, x *float32, c *[actTabRows][8]uint32)

// actTab holds the constants of the formulas in act.go and bce.go, each
// repeated in 8 lanes (one ymm vector; the AVX-512 kernels broadcast lane
// 0), at the byte offsets 32*row that act_amd64.s uses. Built once at init
// from the Go constants, so the assembly and the Go twin cannot disagree;
// read-only afterwards.
var actTab = func() *[actTabRows][8]uint32 {
	f := math.Float32bits
	rows := [actTabRows]uint32{
		0x7fffffff, f(-bceLog2e), f(bceMagic), f(bceLn2Hi), f(bceLn2Lo),
		f(bceE2), f(bceE3), f(bceE4), f(bceE5), f(bceE6),
		f(1), f(bceCutoff), 127, f(actTanhClamp), f(2), actSignBit,
		0, // row 16: lane indices
	}
	var t [actTabRows][8]uint32
	fillTab(t[:], rows[:], 16)
	return &t
}()

// actTabRows is the number of rows of actTab.
const actTabRows = 17

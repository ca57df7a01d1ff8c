//go:build amd64 && !purego

package kernels

import (
	"math"

	"golang.org/x/sys/cpu"
)

// bceKernels lists the BCEWithLogits kernels this machine can run, best
// first (set once at init, read-only afterwards); the pure-Go twin is
// last. Tests run every one of them.
var bceKernels = func() []*bceKernel {
	var ks []*bceKernel
	if cpu.X86.HasAVX512F {
		ks = append(ks, &bceKernel{name: "avx512", lanes: 16, run: bceRunAVX512})
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ks = append(ks, &bceKernel{name: "avx2", lanes: 8, run: bceRunAVX2})
	}
	return append(ks, bceGoKernel)
}()

// bceBest is the kernel BCEWithLogits uses.
var bceBest = bceKernels[0]

func bceRunAVX512(logits, x, grad []float32) float64 {
	_ = x[len(logits)-1]
	var gp *float32
	if grad != nil {
		_ = grad[len(logits)-1]
		gp = &grad[0]
	}
	return bceAVX512(len(logits), &logits[0], &x[0], gp, bceTab)
}

func bceRunAVX2(logits, x, grad []float32) float64 {
	_ = x[len(logits)-1]
	var gp *float32
	if grad != nil {
		_ = grad[len(logits)-1]
		gp = &grad[0]
	}
	return bceAVX2(len(logits), &logits[0], &x[0], gp, bceTab)
}

// bceAVX512 is BCEWithLogits over n >= 1 elements of l and x, writing the
// gradient to grad unless it is nil; c is bceTab. 16 lanes; the terms are
// added into 16 float64 partial sums (element i into sum i mod 16), which
// are reduced in a fixed order. Needs AVX-512F.
//
//go:noescape
func bceAVX512(n int, l, x, grad *float32, c *[bceTabRows][8]uint32) float64

// bceAVX2 is bceAVX512 with 8 lanes (8 partial sums). Needs AVX2 and FMA.
//
//go:noescape
func bceAVX2(n int, l, x, grad *float32, c *[bceTabRows][8]uint32) float64

// bceTab holds the constants of the formulas in bce.go, each repeated in
// 8 lanes (one ymm vector; the AVX-512 kernel broadcasts lane 0), at the
// byte offsets 32*row that bce_amd64.s uses. Built once at init from the
// Go constants, so the assembly and the Go twin cannot disagree;
// read-only afterwards.
var bceTab = func() *[bceTabRows][8]uint32 {
	f := math.Float32bits
	rows := [bceTabRows]uint32{
		0x7fffffff, f(-bceLog2e), f(bceMagic), f(bceLn2Hi), f(bceLn2Lo),
		f(bceE2), f(bceE3), f(bceE4), f(bceE5), f(bceE6),
		f(1),
		f(bceG1), f(bceG2), f(bceG3), f(bceG4), f(bceG5), f(bceG6), f(bceG7), f(bceG8),
		f(bceCutoff), 127, 0, // row 21: lane indices
	}
	var t [bceTabRows][8]uint32
	fillTab(t[:], rows[:], 21)
	return &t
}()

// fillTab fills the constant table t of an assembly kernel: row i holds
// rows[i] in each of its 8 lanes, except row lanesRow, which holds the
// lane indices 0..7 (for tail masks).
func fillTab(t [][8]uint32, rows []uint32, lanesRow int) {
	for i, v := range rows {
		for j := range t[i] {
			t[i][j] = v
		}
	}
	for j := range t[lanesRow] {
		t[lanesRow][j] = uint32(j)
	}
}

// bceTabRows is the number of rows of bceTab.
const bceTabRows = 22

// bceHasAsm: this build has the assembly kernels.
const bceHasAsm = true

//go:build amd64 && !purego

package kernels

import "golang.org/x/sys/cpu"

// peakAsm lists the assembly peak loops this CPU can run, widest first.
func peakAsm() []PeakKernel {
	var ks []PeakKernel
	if cpu.X86.HasAVX512F {
		ks = append(ks, PeakKernel{Name: "avx512", Width: 16, FlopsPerIter: 16 * 16 * 2, run: func(n int) float32 { return peakFMA512(n) }})
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ks = append(ks, PeakKernel{Name: "avx2", Width: 8, FlopsPerIter: 12 * 8 * 2, run: func(n int) float32 { return peakFMA256(n) }})
	}
	return ks
}

// peakFMA256 runs iters iterations of 12 independent VFMADD231PS on ymm
// registers (each lane += 1*1) and returns the sum of all lanes. Needs
// AVX2 and FMA.
//
//go:noescape
func peakFMA256(iters int) float32

// peakFMA512 is peakFMA256 with 16 zmm accumulators. Needs AVX-512F.
//
//go:noescape
func peakFMA512(iters int) float32

// peakHasAsm: this build has the assembly loops.
const peakHasAsm = true

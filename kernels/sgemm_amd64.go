//go:build amd64 && !purego

package kernels

import "golang.org/x/sys/cpu"

// sgemmAVX2 is a 6x16 tile: 12 ymm accumulators, two ymm loads of B and six
// broadcasts of A per step of k. Blocking for Zen 3 / Skylake-class cores:
// the kc x 16 B strip (16 KiB at kc = 256) sits in L1, the mc x kc A block
// (at most 192 KiB) in L2.
var sgemmAVX2 = &sgemmKernel{
	name: "avx2-6x16", kind: kindAVX2, mr: 6, nr: 16,
	kc: 256, aBudget: 48 << 10, bBudget: 128 << 10,
}

// sgemmAVX512 is an 8x32 tile: 16 zmm accumulators, two zmm loads of B and
// eight broadcasts of A per step of k. 8 rows divide the common m (64, 128,
// 320, 400, 784).
var sgemmAVX512 = &sgemmKernel{
	name: "avx512-8x32", kind: kindAVX512, mr: 8, nr: 32,
	kc: 256, aBudget: 64 << 10, bBudget: 128 << 10,
}

// sgemmKernels lists the micro-kernels this machine can run, best first
// (set once at init, read-only afterwards). Tests run every one of them.
var sgemmKernels = func() []*sgemmKernel {
	var ks []*sgemmKernel
	if cpu.X86.HasAVX512F {
		ks = append(ks, sgemmAVX512)
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ks = append(ks, sgemmAVX2)
	}
	return append(ks, sgemmGo)
}()

// sgemmBest is the kernel Sgemm uses.
var sgemmBest = sgemmKernels[0]

// sgemmMicro runs kern's micro-kernel on one mr x nr tile, storing its
// first rows rows (1..mr): C = alpha*sum_l a[l*mr:(l+1)*mr] (x)
// b[l*ldb : l*ldb+nr] + beta*C, C not read when beta == 0. Rows past rows
// are still computed (from zero padding) but neither read nor written.
// The slice checks make the assembly safe.
func sgemmMicro(kern *sgemmKernel, k int, a, b []float32, ldb int, c []float32, ldc, rows int, alpha, beta float32) {
	switch kern.kind {
	case kindAVX2:
		_ = a[6*k-1]
		_ = b[(k-1)*ldb+15]
		_ = c[(rows-1)*ldc+15]
		if rows > 6 {
			panic("kernels: bad tile")
		}
		sgemmKernel6x16AVX2(k, &a[0], &b[0], ldb, &c[0], ldc, rows, alpha, beta)
	case kindAVX512:
		_ = a[8*k-1]
		_ = b[(k-1)*ldb+31]
		_ = c[(rows-1)*ldc+31]
		if rows > 8 {
			panic("kernels: bad tile")
		}
		sgemmKernel8x32AVX512(k, &a[0], &b[0], ldb, &c[0], ldc, rows, alpha, beta)
	default:
		sgemmKernelGo4x4(k, a, b, ldb, c, ldc, rows, alpha, beta)
	}
}

// sgemmKernel6x16AVX2 needs AVX2 and FMA; k >= 1, 1 <= rows <= 6. Strides
// are in floats.
//
//go:noescape
func sgemmKernel6x16AVX2(k int, a, b *float32, ldb int, c *float32, ldc int, rows int, alpha, beta float32)

// sgemmKernel8x32AVX512 needs AVX-512F; k >= 1, 1 <= rows <= 8. Strides
// are in floats.
//
//go:noescape
func sgemmKernel8x32AVX512(k int, a, b *float32, ldb int, c *float32, ldc int, rows int, alpha, beta float32)

// packStripsFast packs strips full strips of width floats (see packStrips)
// with AVX when kern is an AVX kernel and width is one it handles; it
// reports whether it did.
func packStripsFast(kern *sgemmKernel, dst, src []float32, ld, off, kc, width, strips int) bool {
	if kern.kind == kindGo {
		return false
	}
	switch width {
	case 6, 8, 16, 32:
	default:
		return false
	}
	_ = src[off+(kc-1)*ld+strips*width-1]
	_ = dst[strips*kc*width-1]
	packStripsAVX(kc, &src[off], ld, &dst[0], width, strips)
	return true
}

// packGatherFast transposes the first kc&^7 columns of a full-width gather
// (see packGather) with AVX when it can and returns how many it did.
func packGatherFast(kern *sgemmKernel, dst, src []float32, ld, off, kc, width int) int {
	n8 := kc / 8
	if kern.kind == kindGo || n8 == 0 {
		return 0
	}
	switch width {
	case 6:
		_ = src[off+5*ld+n8*8-1]
		_ = dst[n8*8*6-1]
		packTrans6AVX(n8, &src[off], ld, &dst[0])
	case 8, 16, 32:
		_ = src[off+(width-1)*ld+n8*8-1]
		_ = dst[n8*8*width-1]
		for r := 0; r < width; r += 8 {
			packTrans8AVX(n8, &src[off+r*ld], ld, &dst[r], width)
		}
	default:
		return 0
	}
	return n8 * 8
}

// packStripsAVX sets dst[s*kc*w+l*w : +w] = src[l*ld+s*w : +w] for l < kc,
// s < strips; w is 6, 8, 16 or 32. Needs AVX.
//
//go:noescape
func packStripsAVX(kc int, src *float32, ld int, dst *float32, w int, strips int)

// packTrans8AVX sets dst[l*ldd+r] = src[r*ld+l] for r < 8, l < 8*n8.
// Needs AVX.
//
//go:noescape
func packTrans8AVX(n8 int, src *float32, ld int, dst *float32, ldd int)

// packTrans6AVX sets dst[l*6+r] = src[r*ld+l] for r < 6, l < 8*n8.
// Needs AVX.
//
//go:noescape
func packTrans6AVX(n8 int, src *float32, ld int, dst *float32)

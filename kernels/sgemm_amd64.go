//go:build amd64 && !purego

package kernels

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

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

// packIm2colFast packs strips strips of the implicit im2col matrix b (see
// packIm2col) with masked vector loads, when kern is an AVX kernel; it
// reports whether it did. Each row of B is read straight from its plane at
// the tap's offset; the lanes where the tap is invalid are masked off,
// which both zeroes them and keeps them from being read (masked-off lanes
// do not fault), so only values inside b.Src are ever loaded.
func packIm2colFast(kern *sgemmKernel, dst []float32, b *Im2col, p0, kc, j0, strips int) bool {
	s := b.Shifts
	nr := kern.nr
	switch {
	case kern.kind == kindAVX512 && nr == 32:
	case kern.kind == kindAVX2 && nr == 16 && cpu.X86.HasAVX2:
	default:
		return false
	}
	// The strips must lie within the plane rounded up to whole strips:
	// the mask bits read, 4 bytes from byte j/8 for each strip start j,
	// then stay within each tap's row of bits (see Shifts.bits).
	if j0%nr != 0 || j0+strips*nr >= s.plane+nr {
		return false
	}
	taps := len(s.dy)
	_ = dst[strips*kc*nr-1]
	_ = s.off[taps-1]
	bits := s.bitBytes()
	c0, t0 := p0/taps, p0%taps
	_ = bits[(taps-1)*s.words*8+(j0+strips*nr)/8+3]
	src := &b.Src[c0*b.Ld+j0]
	if nr == 32 {
		packIm2colAVX512(kc, src, b.Ld, &s.off[0], taps, t0, &bits[j0/8], s.words*8, &dst[0], strips)
	} else {
		packIm2colAVX2(kc, src, b.Ld, &s.off[0], taps, t0, &bits[j0/8], s.words*8, &dst[0], strips)
	}
	return true
}

// packIm2colTFast packs, for one strip of op(B) = B^T (see packIm2colT), w
// valid columns from j0, the first g8 = w&^7 columns over the first l8 =
// kc&^7 rows, eight columns (rows of B) at a time: masked loads of eight
// runs of eight positions, then an 8x8 transpose. It returns g8 and l8
// (0, 0 when it cannot).
func packIm2colTFast(kern *sgemmKernel, dst []float32, b *Im2col, p0, kc, j0, w int) (g8, l8 int) {
	n8 := kc / 8
	if kern.kind == kindGo || n8 == 0 || w < 8 || !cpu.X86.HasAVX2 {
		return 0, 0
	}
	s := b.Shifts
	nr, taps := kern.nr, len(s.dy)
	g8 = w / 8 * 8
	_ = dst[(n8*8-1)*nr+g8-1]
	bits := s.bitBytes()
	// Bits read: 4 bytes from byte (p0+l)/8 for l < n8*8, within each row.
	if (p0+n8*8)/8+4 > s.words*8 {
		return 0, 0
	}
	var soff, boff [8]int
	for r0 := 0; r0 < g8; r0 += 8 {
		for i := range soff {
			ch, t := (j0+r0+i)/taps, (j0+r0+i)%taps
			soff[i] = ch*b.Ld + s.off[t] + p0
			boff[i] = t*s.words*8 + p0/8
		}
		if kern.kind == kindAVX512 && cpu.X86.HasAVX512VL {
			packIm2colTAVX512(n8, &b.Src[0], &soff, &bits[0], &boff, p0&7, &dst[r0], nr)
		} else {
			packIm2colTAVX(n8, &b.Src[0], &soff, &bits[0], &boff, p0&7, &dst[r0], nr)
		}
	}
	return g8, n8 * 8
}

// bitBytes returns the validity bits of s as bytes: on this little-endian
// machine bit j of a tap's row is bit j%8 of its byte j/8.
func (s *Shifts) bitBytes() []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&s.bits[0])), len(s.bits)*8)
}

// packIm2colAVX512 packs kc rows of an implicit im2col matrix as strips
// strips of 32 columns. Row l is row t0+l counted from (channel c0, tap 0)
// taps at a time: tap t = (t0+l) mod taps of channel c0 + (t0+l)/taps. For
// s < strips: dst[s*kc*32 + l*32 + i] = src[(c-c0)*ld + offs[t] + s*32 + i]
// where bit s*32+i of bits[t*bstride:] is set, else 0. Needs AVX-512F.
//
//go:noescape
func packIm2colAVX512(kc int, src *float32, ld int, offs *int, taps, t0 int, bits *byte, bstride int, dst *float32, strips int)

// packIm2colAVX2 is packIm2colAVX512 for strips of 16 columns
// (dst[s*kc*16 + l*16 + i]). Needs AVX2.
//
//go:noescape
func packIm2colAVX2(kc int, src *float32, ld int, offs *int, taps, t0 int, bits *byte, bstride int, dst *float32, strips int)

// packIm2colTAVX sets, for r < 8 and l < 8*n8, dst[l*ldd + r] =
// src[soff[r] + l] where bit shift+l of bits[boff[r]:] is set, else 0
// (shift < 8). Needs AVX2.
//
//go:noescape
func packIm2colTAVX(n8 int, src *float32, soff *[8]int, bits *byte, boff *[8]int, shift int, dst *float32, ldd int)

// packIm2colTAVX512 is packIm2colTAVX with AVX-512 k-masks. Needs
// AVX-512F and AVX-512VL.
//
//go:noescape
func packIm2colTAVX512(n8 int, src *float32, soff *[8]int, bits *byte, boff *[8]int, shift int, dst *float32, ldd int)

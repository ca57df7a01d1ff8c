// Package kernels holds the dense float32 compute kernels the models are
// built on: a packed, blocked single-precision GEMM with SIMD micro-kernels
// and a pure-Go twin, and a small goroutine pool that runs them in parallel.
package kernels

import (
	"fmt"
	"unsafe"
)

// Sgemm computes C = alpha*op(A)*op(B) + beta*C for row-major matrices, where
// op(X) is X or its transpose. op(A) is m x k, op(B) is k x n, C is m x n;
// lda, ldb and ldc are the row strides of A, B and C as stored. beta == 0
// overwrites C (NaNs in C are not propagated). alpha == 0 or k == 0 only
// scales C by beta, without reading A or B (as in BLAS).
//
// The result does not depend on the number of threads in p: each element of
// C is always accumulated over k in the same order.
//
// The work is spread over p's threads by output blocks. With a non-nil p the
// packing buffers live in p and are reused, so steady-state calls do not
// allocate; with a nil p they are allocated on every call.
//
// See DESIGN.md for how it is built.
func Sgemm(p *Pool, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	sgemm(p, sgemmBest, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// SgemmRef is the obviously-correct twin of Sgemm: three loops, no blocking.
func SgemmRef(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float32
			for l := 0; l < k; l++ {
				var av, bv float32
				if transA {
					av = a[l*lda+i]
				} else {
					av = a[i*lda+l]
				}
				if transB {
					bv = b[j*ldb+l]
				} else {
					bv = b[l*ldb+j]
				}
				s += av * bv
			}
			if beta == 0 {
				c[i*ldc+j] = alpha * s
			} else {
				c[i*ldc+j] = alpha*s + beta*c[i*ldc+j]
			}
		}
	}
}

// Micro-kernel kinds. Which exist depends on the build (sgemm_amd64.go,
// sgemm_noasm.go).
const (
	kindGo = iota
	kindAVX2
	kindAVX512
)

// sgemmKernel describes a micro-kernel and the blocking used around it.
// Values of this type are read-only tables.
type sgemmKernel struct {
	name   string
	kind   int
	mr, nr int // register tile: mr rows of C by nr columns
	// kc is the largest k block. k is cut into ceil(k/kc) nearly equal
	// blocks; this depends only on k, never on the output partition, which
	// is what makes results independent of the thread count.
	kc int
	// aBudget and bBudget bound, in floats, the packed block of A (mc x kc,
	// meant to stay in L2) and the packed panel of B (kc x nc, meant to stay
	// in L2/L3).
	aBudget, bBudget int
}

// sgemmGo is the pure-Go micro-kernel, available on every build.
var sgemmGo = &sgemmKernel{
	name: "go4x4", kind: kindGo, mr: 4, nr: 4,
	kc: 256, aBudget: 48 << 10, bBudget: 256 << 10,
}

// sgemmScratch is one thread's packing memory.
type sgemmScratch struct {
	ap, bp, tmp []float32
}

// grow makes sure the buffers hold at least na, nb and nt floats.
func (s *sgemmScratch) grow(na, nb, nt int) {
	if cap(s.ap) < na {
		s.ap = alignedFloats(na)
	}
	if cap(s.bp) < nb {
		s.bp = alignedFloats(nb)
	}
	if cap(s.tmp) < nt {
		s.tmp = alignedFloats(nt)
	}
	s.ap, s.bp, s.tmp = s.ap[:na], s.bp[:nb], s.tmp[:nt]
}

// alignedFloats returns n zeroed floats starting on a 64-byte boundary.
func alignedFloats(n int) []float32 {
	buf := make([]float32, n+16)
	off := int(uintptr(unsafe.Pointer(&buf[0]))&63) / 4
	if off != 0 {
		off = 16 - off
	}
	return buf[off : off+n : off+n]
}

// sgemmCall holds the arguments of one Sgemm call, shared by its parts.
type sgemmCall struct {
	kern           *sgemmKernel
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b, c        []float32
	lda, ldb, ldc  int
	splitN         bool // parts split the columns of C (else its rows)
	// implicit: B is not b but the implicit im2col matrix im (transB: its
	// transpose is op(B)); see im2col.go.
	implicit bool
	im       Im2col
}

// sgemmSerialFMAs is the work (multiply-adds over whole register tiles)
// under which a call runs on one thread: about 50 µs at AVX2 speed. Waking
// a parked helper goroutine can cost tens of µs, more than splitting such a
// call saves. (The result does not depend on this choice.)
const sgemmSerialFMAs = 1 << 21

func sgemm(p *Pool, kern *sgemmKernel, transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Sprintf("kernels: Sgemm: negative size m=%d n=%d k=%d", m, n, k))
	}
	if m == 0 || n == 0 {
		return
	}
	checkMatrix("C", m, n, c, ldc)
	if k == 0 || alpha == 0 {
		scaleMatrix(m, n, beta, c, ldc)
		return
	}
	if transA {
		checkMatrix("A", k, m, a, lda)
	} else {
		checkMatrix("A", m, k, a, lda)
	}
	if transB {
		checkMatrix("B", n, k, b, ldb)
	} else {
		checkMatrix("B", k, n, b, ldb)
	}
	g := sgemmCall{
		kern: kern, transA: transA, transB: transB, m: m, n: n, k: k,
		alpha: alpha, beta: beta, a: a, b: b, c: c, lda: lda, ldb: ldb, ldc: ldc,
		splitN: n >= m,
	}
	g.run(p)
}

// run computes the call on p's threads (or on the caller's alone for small
// calls); the sizes are checked and C is not empty, k > 0, alpha != 0.
func (g *sgemmCall) run(p *Pool) {
	m, n, k, kern := g.m, g.n, g.k, g.kern
	parts := p.Threads()
	if tiles := g.tiles(); tiles < parts {
		parts = tiles
	}
	mr, nr := kern.mr, kern.nr
	if (m+mr-1)/mr*mr*((n+nr-1)/nr*nr)*k < sgemmSerialFMAs {
		parts = 1
	}
	if parts <= 1 {
		if p == nil {
			var s sgemmScratch
			g.block(&s, 0, m, 0, n)
			return
		}
		p.growScratch(1)
		g.block(&p.scratch[0], 0, m, 0, n)
		return
	}
	p.growScratch(parts)
	p.gemm = *g
	if p.gemmFn == nil {
		p.gemmFn = p.sgemmPart
	}
	p.Run(parts, p.gemmFn)
	p.gemm = sgemmCall{} // do not keep the caller's matrices alive
}

// tiles is the number of register tiles along the split dimension.
func (g *sgemmCall) tiles() int {
	if g.splitN {
		return (g.n + g.kern.nr - 1) / g.kern.nr
	}
	return (g.m + g.kern.mr - 1) / g.kern.mr
}

func (p *Pool) growScratch(parts int) {
	if len(p.scratch) < parts {
		s := make([]sgemmScratch, p.threads)
		copy(s, p.scratch)
		p.scratch = s
	}
}

// sgemmPart computes one part of p.gemm: a range of whole register tiles
// of C's columns (or rows), all rows (or columns), the full k.
func (p *Pool) sgemmPart(part, parts int) {
	g := &p.gemm
	s := &p.scratch[part]
	if g.splitN {
		j0, j1 := Span(g.n, g.kern.nr, part, parts)
		g.block(s, 0, g.m, j0, j1)
	} else {
		i0, i1 := Span(g.m, g.kern.mr, part, parts)
		g.block(s, i0, i1, 0, g.n)
	}
}

// kBlock returns the k block size: k cut into ceil(k/kc) nearly equal
// blocks. It depends only on k and the kernel.
func (kern *sgemmKernel) kBlock(k int) int {
	nk := (k + kern.kc - 1) / kern.kc
	return (k + nk - 1) / nk
}

// cut splits n into the fewest blocks of at most max (max >= unit) and
// returns the block size, a multiple of unit.
func cut(n, max, unit int) int {
	if max < unit {
		max = unit
	}
	max = max / unit * unit
	nb := (n + max - 1) / max
	bs := (n + nb - 1) / nb
	return (bs + unit - 1) / unit * unit
}

// block computes C[i0:i1, j0:j1] with the blocked algorithm:
//
//	for jc over column panels of C (width nc)
//	  for pc over k blocks (depth kc; the first applies beta, the rest add)
//	    for ic over row blocks (height mc): pack A[ic, pc] (mc x kc)
//	      for jr over nr-wide column strips of the panel:
//	        (first ic only) pack B[pc, jr] (kc x nr) into the panel buffer
//	        for ir over mr-high row strips: micro-kernel on the mr x nr tile
//
// Every element of C sees the same k blocks in the same order, whatever
// [i0, i1) x [j0, j1) is.
func (g *sgemmCall) block(s *sgemmScratch, i0, i1, j0, j1 int) {
	kern := g.kern
	mr, nr := kern.mr, kern.nr
	k := g.k
	kcs := kern.kBlock(k)
	mcs := cut(i1-i0, kern.aBudget/kcs, mr)
	ncs := cut(j1-j0, kern.bBudget/kcs, nr)
	s.grow(mcs*kcs, ncs*kcs, mr*nr)
	alpha, c, ldc := g.alpha, g.c, g.ldc
	direct := !g.transB && !g.implicit && i1-i0 <= mr
	// B is packed gcols columns at a time (about 128 KiB), so that each row
	// of B is read in long contiguous runs.
	gcols := max(nr, (32<<10)/kcs/nr*nr)
	for jc := j0; jc < j1; jc += ncs {
		nc := min(ncs, j1-jc)
		for pc := 0; pc < k; pc += kcs {
			kc := min(kcs, k-pc)
			beta := g.beta
			if pc > 0 {
				beta = 1
			}
			for ic := i0; ic < i1; ic += mcs {
				mc := min(mcs, i1-ic)
				packA(kern, s.ap, g.a, g.lda, g.transA, ic, mc, pc, kc)
				for jr := 0; jr < nc; jr += nr {
					nrb := min(nr, nc-jr)
					bpan, ldb := s.bp[jr*kc:(jr+nr)*kc], nr
					switch {
					case direct && nrb == nr:
						// One row of tiles and B not transposed: the
						// strip is used once, so read it in place.
						bpan, ldb = g.b[pc*g.ldb+jc+jr:], g.ldb
					case direct:
						if ic == i0 {
							packB(kern, bpan, g.b, g.ldb, g.transB, pc, kc, jc+jr, nrb)
						}
					case ic == i0 && jr%gcols == 0:
						// Pack the next group of strips (on the first row
						// block only; later ones reuse it), just before use.
						g.packB(s.bp[jr*kc:], pc, kc, jc+jr, min(gcols, nc-jr))
					}
					for ir := 0; ir < mc; ir += mr {
						mrb := min(mr, mc-ir)
						apan := s.ap[ir*kc : (ir+mr)*kc]
						off := (ic+ir)*ldc + jc + jr
						if nrb == nr {
							sgemmMicro(kern, kc, apan, bpan, ldb, c[off:], ldc, mrb, alpha, beta)
							continue
						}
						// Right edge: compute the whole padded tile into
						// tmp, then apply alpha and beta exactly as the
						// kernels do.
						sgemmMicro(kern, kc, apan, bpan, ldb, s.tmp, nr, mr, 1, 0)
						storeEdge(c[off:], ldc, s.tmp, nr, mrb, nrb, alpha, beta)
					}
				}
			}
		}
	}
}

// packB packs op(B)[p0:p0+kc, j0:j0+cols] like the function packB, from
// B in memory or from the implicit im2col matrix.
func (g *sgemmCall) packB(dst []float32, p0, kc, j0, cols int) {
	switch {
	case !g.implicit:
		packB(g.kern, dst, g.b, g.ldb, g.transB, p0, kc, j0, cols)
	case g.transB:
		packIm2colT(g.kern, dst, &g.im, p0, kc, j0, cols)
	default:
		packIm2col(g.kern, dst, &g.im, p0, kc, j0, cols)
	}
}

// storeEdge writes C = alpha*T + beta*C for an mrb x nrb corner of a tile.
// The explicit conversions keep Go from fusing the operations, so that the
// rounding is that of the assembly kernels: round(round(alpha*t) +
// round(beta*c)).
func storeEdge(c []float32, ldc int, t []float32, ldt, mrb, nrb int, alpha, beta float32) {
	for r := 0; r < mrb; r++ {
		cr := c[r*ldc : r*ldc+nrb]
		tr := t[r*ldt : r*ldt+nrb]
		if beta == 0 {
			for j, v := range tr {
				cr[j] = alpha * v
			}
			continue
		}
		for j, v := range tr {
			cr[j] = float32(alpha*v) + float32(beta*cr[j])
		}
	}
}

// packA packs op(A)[i0:i0+mc, p0:p0+kc] into dst as ceil(mc/mr) panels of
// mr rows; panel q holds, for l = 0..kc-1, the mr values op(A)[i0+q*mr+r,
// p0+l] at dst[q*mr*kc + l*mr + r]. Rows past mc are zero.
func packA(kern *sgemmKernel, dst, a []float32, lda int, trans bool, i0, mc, p0, kc int) {
	mr := kern.mr
	if trans {
		// op(A)[i][l] = a[l*lda+i]: each l is a contiguous run of rows.
		packStrips(kern, dst, a, lda, p0*lda+i0, kc, mc, mr)
		return
	}
	// op(A)[i][l] = a[i*lda+l]: gather the rows.
	for ir := 0; ir < mc; ir += mr {
		packGather(kern, dst[ir*kc:(ir+mr)*kc], a, lda, (i0+ir)*lda+p0, kc, min(mr, mc-ir), mr)
	}
}

// packB packs op(B)[p0:p0+kc, j0:j0+cols] into dst as ceil(cols/nr) strips
// of nr columns; strip q holds, for l = 0..kc-1, the nr values
// op(B)[p0+l, j0+q*nr+j] at dst[q*nr*kc + l*nr + j]. Columns past cols are
// zero.
func packB(kern *sgemmKernel, dst, b []float32, ldb int, trans bool, p0, kc, j0, cols int) {
	nr := kern.nr
	if !trans {
		// op(B)[l][j] = b[l*ldb+j]: each l is a contiguous run of columns.
		packStrips(kern, dst, b, ldb, p0*ldb+j0, kc, cols, nr)
		return
	}
	// op(B)[l][j] = b[j*ldb+l]: gather the columns.
	for jr := 0; jr < cols; jr += nr {
		packGather(kern, dst[jr*kc:(jr+nr)*kc], b, ldb, (j0+jr)*ldb+p0, kc, min(nr, cols-jr), nr)
	}
}

// packStrips packs the kc x w block whose row l is src[off+l*ld : +w] as
// ceil(w/width) strips of width columns: strip q's row l at
// dst[q*width*kc + l*width]. Columns past w are zero.
func packStrips(kern *sgemmKernel, dst, src []float32, ld, off, kc, w, width int) {
	full := w / width
	if full > 0 && !packStripsFast(kern, dst, src, ld, off, kc, width, full) {
		for q := 0; q < full; q++ {
			packRun(dst[q*width*kc:(q+1)*width*kc], src, ld, off+q*width, kc, width, width)
		}
	}
	if rest := w - full*width; rest > 0 {
		packRun(dst[full*width*kc:(full+1)*width*kc], src, ld, off+full*width, kc, rest, width)
	}
}

// packRun copies kc runs of w contiguous floats, run l starting at
// src[off+l*ld], to dst[l*width:], zero-filling each row to width.
func packRun(dst, src []float32, ld, off, kc, w, width int) {
	dst = dst[:kc*width]
	if w == width && width == 4 {
		for l := 0; l < kc; l++ {
			s := src[off+l*ld : off+l*ld+4 : off+l*ld+4]
			d := dst[l*4 : l*4+4 : l*4+4]
			d[0], d[1], d[2], d[3] = s[0], s[1], s[2], s[3]
		}
		return
	}
	for l := 0; l < kc; l++ {
		d := dst[l*width : l*width+width]
		copy(d, src[off+l*ld:off+l*ld+w])
		clear(d[w:])
	}
}

// packGather transposes: for r < w, the run src[off+r*ld : +kc] goes to
// dst[l*width+r] for l < kc; entries r >= w are zero.
func packGather(kern *sgemmKernel, dst, src []float32, ld, off, kc, w, width int) {
	dst = dst[:kc*width]
	l0 := 0
	if w == width {
		l0 = packGatherFast(kern, dst, src, ld, off, kc, width)
	}
	if l0 == kc {
		return
	}
	r := 0
	for ; r+4 <= w; r += 4 {
		s0 := src[off+r*ld+l0 : off+r*ld+kc]
		s1 := src[off+(r+1)*ld+l0 : off+(r+1)*ld+kc]
		s2 := src[off+(r+2)*ld+l0 : off+(r+2)*ld+kc]
		s3 := src[off+(r+3)*ld+l0 : off+(r+3)*ld+kc]
		for l := range s0 {
			d := dst[(l0+l)*width+r : (l0+l)*width+r+4]
			d[0], d[1], d[2], d[3] = s0[l], s1[l], s2[l], s3[l]
		}
	}
	for ; r < w; r++ {
		s0 := src[off+r*ld+l0 : off+r*ld+kc]
		for l, v := range s0 {
			dst[(l0+l)*width+r] = v
		}
	}
	if w < width {
		for l := l0; l < kc; l++ {
			clear(dst[l*width+w : l*width+width])
		}
	}
}

// checkMatrix panics unless x can hold a rows x cols row-major matrix with
// row stride ld.
func checkMatrix(name string, rows, cols int, x []float32, ld int) {
	if err := matrixErr(name, rows, cols, x, ld); err != nil {
		panic(err.Error())
	}
}

// matrixErr returns an error unless x can hold a rows x cols row-major
// matrix with row stride ld.
func matrixErr(name string, rows, cols int, x []float32, ld int) error {
	if ld < max(1, cols) {
		return fmt.Errorf("kernels: Sgemm: ld%s = %d < %d columns", name, ld, cols)
	}
	if rows > 0 && cols > 0 && (len(x) < cols || (len(x)-cols)/ld < rows-1) {
		return fmt.Errorf("kernels: Sgemm: %s has %d elements, needs %d for %dx%d with stride %d", name, len(x), (rows-1)*ld+cols, rows, cols, ld)
	}
	return nil
}

// scaleMatrix sets C = beta*C (C = 0 when beta == 0, whatever C held).
func scaleMatrix(m, n int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
		} else if beta != 1 {
			for j := range row {
				row[j] *= beta
			}
		}
	}
}

// sgemmKernelGo4x4 is the pure-Go micro-kernel: C[0:rows, 0:4] = alpha*acc
// + beta*C where acc = sum over l < k of a[4l:4l+4] (a column of the tile's
// rows) times b[l*ldb : l*ldb+4]. beta == 0 does not read C.
func sgemmKernelGo4x4(k int, a, b []float32, ldb int, c []float32, ldc, rows int, alpha, beta float32) {
	var c00, c01, c02, c03 float32
	var c10, c11, c12, c13 float32
	var c20, c21, c22, c23 float32
	var c30, c31, c32, c33 float32
	a = a[:4*k]
	for l := 0; l < k; l++ {
		aa := a[4*l : 4*l+4 : 4*l+4]
		bb := b[l*ldb : l*ldb+4 : l*ldb+4]
		a0, a1, a2, a3 := aa[0], aa[1], aa[2], aa[3]
		b0, b1, b2, b3 := bb[0], bb[1], bb[2], bb[3]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		c20 += a2 * b0
		c21 += a2 * b1
		c22 += a2 * b2
		c23 += a2 * b3
		c30 += a3 * b0
		c31 += a3 * b1
		c32 += a3 * b2
		c33 += a3 * b3
	}
	storeRow4(c[0:4:4], c00, c01, c02, c03, alpha, beta)
	if rows > 1 {
		storeRow4(c[ldc:ldc+4:ldc+4], c10, c11, c12, c13, alpha, beta)
	}
	if rows > 2 {
		storeRow4(c[2*ldc:2*ldc+4:2*ldc+4], c20, c21, c22, c23, alpha, beta)
	}
	if rows > 3 {
		storeRow4(c[3*ldc:3*ldc+4:3*ldc+4], c30, c31, c32, c33, alpha, beta)
	}
}

func storeRow4(c []float32, v0, v1, v2, v3, alpha, beta float32) {
	c = c[:4]
	if beta == 0 {
		c[0], c[1], c[2], c[3] = alpha*v0, alpha*v1, alpha*v2, alpha*v3
		return
	}
	c[0] = float32(alpha*v0) + float32(beta*c[0])
	c[1] = float32(alpha*v1) + float32(beta*c[1])
	c[2] = float32(alpha*v2) + float32(beta*c[2])
	c[3] = float32(alpha*v3) + float32(beta*c[3])
}

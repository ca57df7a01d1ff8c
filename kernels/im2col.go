package kernels

import (
	"errors"
	"fmt"
)

// Implicit im2col: a GEMM whose B operand is the im2col matrix of a batch
// of images, read straight from the images while B is packed instead of
// being built in memory first. See DESIGN.md, "Implicit im2col".

// Shifts is the geometry of an implicit im2col: a batch of n images of
// h x w values, stored one after the other (a plane of n*h*w values, the
// value of image b at row y, column x at index b*h*w + y*w + x), and a list
// of taps, tap t a 2-D shift (dy[t], dx[t]). Tap t reads, for each position
// j = (b, y, x) of the plane, the value at (b, y+dy[t], x+dx[t]) when that
// lies inside the image, and 0 when it does not (same padding). Shifts
// precomputes, per tap, which positions are valid, as one bit per position.
//
// The zero value is an empty geometry; Set fills it. A Shifts is read-only
// while GEMMs use it, so one can serve several calls at once.
type Shifts struct {
	n, h, w, plane int
	dy, dx         []int
	off            []int // dy*w + dx: where tap t reads, relative to j
	// bits holds words uint64s per tap: bit j%64 of word j/64 is set when
	// tap t is valid at position j. Bits past the plane are zero, and each
	// row has at least two zero words of padding past it, so that the
	// assembly can read 4 bytes at any byte index up to plane/8 + 4.
	bits  []uint64
	words int
}

// maxPlane bounds n*h*w (and the shifts) so that every index computed
// from them fits an int32 and cannot overflow.
const maxPlane = 1 << 30

// Set makes s the geometry of n images of h x w with the taps (dy[i],
// dx[i]). It reuses s's memory when it is large enough, and does nothing
// when s already describes that geometry. n, h, w must be >= 0, dy and dx
// of equal length, n*h*w and every |dy|, |dx| below 2^30; otherwise Set
// returns an error and leaves s empty.
func (s *Shifts) Set(n, h, w int, dy, dx []int) error {
	if s.Is(n, h, w, dy, dx) {
		return nil
	}
	s.n, s.h, s.w, s.plane = 0, 0, 0, 0
	s.dy, s.dx, s.off = s.dy[:0], s.dx[:0], s.off[:0]
	switch {
	case n < 0 || h < 0 || w < 0:
		return fmt.Errorf("kernels: Shifts: negative size %d x %d x %d", n, h, w)
	case len(dy) != len(dx):
		return fmt.Errorf("kernels: Shifts: %d dy but %d dx", len(dy), len(dx))
	case h > 0 && w > 0 && (h >= maxPlane/w || n >= maxPlane/(h*w)):
		return fmt.Errorf("kernels: Shifts: %d x %d x %d is too large", n, h, w)
	}
	for i := range dy {
		if dy[i] <= -maxPlane || dy[i] >= maxPlane || dx[i] <= -maxPlane || dx[i] >= maxPlane {
			return fmt.Errorf("kernels: Shifts: tap %d shift (%d, %d) too large", i, dy[i], dx[i])
		}
	}
	plane := n * h * w
	s.dy = append(s.dy, dy...)
	s.dx = append(s.dx, dx...)
	for i := range dy {
		// |dy*w| < 2^30 * 2^30 would overflow int32 but not int64; the
		// offset only ever matters for valid positions, which are within
		// the plane, so clamp it to a harmless value otherwise.
		o := dy[i]*w + dx[i]
		if !s.tapUsed(h, w, dy[i], dx[i]) {
			o = 0
		}
		s.off = append(s.off, o)
	}
	s.words = plane/64 + 3
	nb := len(dy) * s.words
	if cap(s.bits) < nb {
		s.bits = make([]uint64, nb)
	}
	s.bits = s.bits[:nb]
	clear(s.bits)
	hw := h * w
	for t := range dy {
		row := s.bits[t*s.words : (t+1)*s.words]
		xa, xb := max(0, -dx[t]), min(w, w-dx[t]) // valid x: 0 <= x+dx < w
		ya, yb := max(0, -dy[t]), min(h, h-dy[t])
		if xa >= xb || ya >= yb {
			continue
		}
		for b := 0; b < n; b++ {
			for y := ya; y < yb; y++ {
				setBits(row, b*hw+y*w+xa, b*hw+y*w+xb)
			}
		}
	}
	s.n, s.h, s.w, s.plane = n, h, w, plane
	return nil
}

// tapUsed reports whether a shift is valid anywhere in an h x w image.
func (s *Shifts) tapUsed(h, w, dy, dx int) bool {
	return max(0, -dx) < min(w, w-dx) && max(0, -dy) < min(h, h-dy)
}

// setBits sets bits [a, b) of row.
func setBits(row []uint64, a, b int) {
	for a < b {
		wd, sh := a>>6, uint(a&63)
		k := min(64-int(sh), b-a)
		var m uint64 = ^uint64(0)
		if k < 64 {
			m = (uint64(1)<<uint(k) - 1)
		}
		row[wd] |= m << sh
		a += k
	}
}

// Is reports whether s is the geometry Set(n, h, w, dy, dx) would make.
func (s *Shifts) Is(n, h, w int, dy, dx []int) bool {
	if s.n != n || s.h != h || s.w != w || len(s.dy) != len(dy) || len(dx) != len(dy) || s.plane != n*h*w || s.bits == nil {
		return false
	}
	for i := range dy {
		if s.dy[i] != dy[i] || s.dx[i] != dx[i] {
			return false
		}
	}
	return true
}

// Plane is the number of positions, n*h*w.
func (s *Shifts) Plane() int { return s.plane }

// Taps is the number of taps.
func (s *Shifts) Taps() int { return len(s.dy) }

// valid reports whether tap t is valid at position j (j < plane + 64).
func (s *Shifts) valid(t, j int) bool {
	return s.bits[t*s.words+j>>6]>>uint(j&63)&1 != 0
}

// Im2col describes, without storing it, the im2col matrix of channels
// images planes: the (Channels*Taps) x Plane matrix B (Taps and Plane those
// of Shifts) whose row c*Taps+t is plane c of Src shifted by tap t:
//
//	B[c*Taps+t][j] = Src[c*Ld + j + dy[t]*w + dx[t]]  where tap t is valid at j
//	B[c*Taps+t][j] = 0                                 elsewhere
//
// Plane c of Src is Src[c*Ld : c*Ld+Plane]; only values inside a plane are
// read, never the padding between planes nor anything outside Src.
type Im2col struct {
	Src      []float32
	Ld       int // distance between planes in Src, >= Plane
	Channels int
	Shifts   *Shifts
}

// check validates b and returns its rows (Channels*Taps) and columns (Plane).
func (b *Im2col) check() (rows, cols int, err error) {
	s := b.Shifts
	if s == nil {
		return 0, 0, errors.New("kernels: Im2col: nil Shifts")
	}
	if b.Channels < 0 {
		return 0, 0, fmt.Errorf("kernels: Im2col: %d channels", b.Channels)
	}
	if b.Channels > 0 && s.plane > 0 {
		if b.Ld < s.plane {
			return 0, 0, fmt.Errorf("kernels: Im2col: Ld = %d < plane %d", b.Ld, s.plane)
		}
		if (len(b.Src)-s.plane)/b.Ld < b.Channels-1 || len(b.Src) < s.plane {
			return 0, 0, fmt.Errorf("kernels: Im2col: Src has %d values, needs %d channels of %d with stride %d", len(b.Src), b.Channels, s.plane, b.Ld)
		}
	}
	if len(s.dy) > 0 && b.Channels > maxPlane/len(s.dy) {
		return 0, 0, fmt.Errorf("kernels: Im2col: %d channels x %d taps is too many", b.Channels, len(s.dy))
	}
	return b.Channels * len(s.dy), s.plane, nil
}

// SgemmIm2col computes C = alpha*A*B + beta*C where B is the implicit
// im2col matrix b ((b.Channels*Taps) x Plane), A is m x (b.Channels*Taps)
// with row stride lda and C is m x Plane with row stride ldc. The result
// is bit-identical to building B in memory and calling Sgemm(p, false,
// false, ...) with it, on any number of threads. beta, alpha and the
// empty cases behave as in Sgemm.
//
// It returns an error, and leaves C alone, when a matrix is too short for
// its shape and stride or b is not a valid Im2col (see Im2col, Shifts).
func SgemmIm2col(p *Pool, m int, alpha float32, a []float32, lda int, b Im2col, beta float32, c []float32, ldc int) error {
	return sgemmIm2col(p, sgemmBest, false, m, alpha, a, lda, b, beta, c, ldc)
}

// SgemmIm2colT computes C = alpha*A*B^T + beta*C where B is the implicit
// im2col matrix b ((b.Channels*Taps) x Plane), A is m x Plane with row
// stride lda and C is m x (b.Channels*Taps) with row stride ldc: the
// weight gradient of a convolution. The result is bit-identical to
// Sgemm(p, false, true, ...) on B built in memory, on any number of
// threads. Errors as SgemmIm2col.
func SgemmIm2colT(p *Pool, m int, alpha float32, a []float32, lda int, b Im2col, beta float32, c []float32, ldc int) error {
	return sgemmIm2col(p, sgemmBest, true, m, alpha, a, lda, b, beta, c, ldc)
}

func sgemmIm2col(p *Pool, kern *sgemmKernel, trans bool, m int, alpha float32, a []float32, lda int, b Im2col, beta float32, c []float32, ldc int) error {
	rows, cols, err := b.check()
	if err != nil {
		return err
	}
	if m < 0 {
		return fmt.Errorf("kernels: SgemmIm2col: m = %d", m)
	}
	n, k := cols, rows
	if trans {
		n, k = rows, cols
	}
	if m == 0 || n == 0 {
		return nil
	}
	if err := matrixErr("C", m, n, c, ldc); err != nil {
		return err
	}
	if k == 0 || alpha == 0 {
		scaleMatrix(m, n, beta, c, ldc)
		return nil
	}
	if err := matrixErr("A", m, k, a, lda); err != nil {
		return err
	}
	g := sgemmCall{
		kern: kern, transB: trans, m: m, n: n, k: k,
		alpha: alpha, beta: beta, a: a, c: c, lda: lda, ldc: ldc,
		splitN: n >= m, im: b, implicit: true,
	}
	g.run(p)
	return nil
}

// packIm2col packs rows p0..p0+kc, columns j0..j0+cols of the implicit B
// exactly as packB packs the same block of B stored in memory: ceil(cols/nr)
// strips of nr columns, strip q's row l at dst[q*nr*kc + l*nr], zero past
// cols. j0 is a multiple of nr, and cols is one too unless j0+cols is the
// plane (the last, partial strip).
func packIm2col(kern *sgemmKernel, dst []float32, b *Im2col, p0, kc, j0, cols int) {
	nr := kern.nr
	strips := (cols + nr - 1) / nr
	if packIm2colFast(kern, dst, b, p0, kc, j0, strips) {
		return
	}
	s := b.Shifts
	taps := len(s.dy)
	for l := 0; l < kc; l++ {
		ch, t := (p0+l)/taps, (p0+l)%taps
		base := ch*b.Ld + s.off[t]
		for q := 0; q < strips; q++ {
			d := dst[q*nr*kc+l*nr : q*nr*kc+l*nr+nr]
			for i := range d {
				j := j0 + q*nr + i
				if q*nr+i < cols && s.valid(t, j) {
					d[i] = b.Src[base+j]
				} else {
					d[i] = 0
				}
			}
		}
	}
}

// packIm2colT packs rows p0..p0+kc, columns j0..j0+cols of op(B) = B^T
// (rows are positions of the plane, columns rows of the implicit B)
// exactly as packB(trans) packs B^T stored in memory.
func packIm2colT(kern *sgemmKernel, dst []float32, b *Im2col, p0, kc, j0, cols int) {
	nr := kern.nr
	s := b.Shifts
	taps := len(s.dy)
	for jr := 0; jr < cols; jr += nr {
		w := min(nr, cols-jr)
		d := dst[jr*kc : jr*kc+nr*kc]
		// The fast path does groups of 8 whole columns for the first
		// l8 rows; Go does the rest.
		g8, l8 := packIm2colTFast(kern, d, b, p0, kc, j0+jr, w)
		for i := 0; i < nr; i++ {
			l0 := 0
			if i < g8 {
				l0 = l8
			}
			if i >= w {
				for l := l0; l < kc; l++ {
					d[l*nr+i] = 0
				}
				continue
			}
			r := j0 + jr + i
			ch, t := r/taps, r%taps
			base := ch*b.Ld + s.off[t]
			for l := l0; l < kc; l++ {
				j := p0 + l
				if s.valid(t, j) {
					d[l*nr+i] = b.Src[base+j]
				} else {
					d[l*nr+i] = 0
				}
			}
		}
	}
}

package kernels

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
)

// tapSet is a named list of shifts.
type tapSet struct {
	name   string
	dy, dx []int
}

// window returns the taps of a k x k window (radius k/2); keep, if not nil,
// selects which (i, j) are kept, as a PixelCNN mask does.
func window(name string, k int, keep func(i, j int) bool) tapSet {
	ts := tapSet{name: name}
	c := k / 2
	for i := 0; i < k; i++ {
		for j := 0; j < k; j++ {
			if keep == nil || keep(i, j) {
				ts.dy = append(ts.dy, i-c)
				ts.dx = append(ts.dx, j-c)
			}
		}
	}
	return ts
}

func testTapSets() []tapSet {
	maskA := func(c int) func(i, j int) bool {
		return func(i, j int) bool { return i < c || (i == c && j < c) }
	}
	maskB := func(c int) func(i, j int) bool {
		return func(i, j int) bool { return i < c || (i == c && j <= c) }
	}
	odd := tapSet{name: "odd", dy: []int{0, 2, -3, 1, 0, 40, -1}, dx: []int{5, -2, 0, 1, -7, 0, 9}}
	return []tapSet{
		window("1x1", 1, nil),
		window("3x3", 3, nil),
		window("3x3B", 3, maskB(1)),
		window("7x7A", 7, maskA(3)),
		window("5x5", 5, nil),
		odd, // shifts beyond the image, and a tap valid nowhere
		{name: "none"},
	}
}

// im2colRef builds the im2col matrix of b in memory, from the definition
// (not from the validity bits): row c*T+t, column (img, y, x) is plane c at
// (img, y+dy[t], x+dx[t]), or 0 outside the image.
func im2colRef(b Im2col, n, h, w int, dy, dx []int) []float32 {
	taps, plane := len(dy), n*h*w
	out := make([]float32, b.Channels*taps*plane)
	for c := 0; c < b.Channels; c++ {
		for t := 0; t < taps; t++ {
			row := out[(c*taps+t)*plane : (c*taps+t+1)*plane]
			for img := 0; img < n; img++ {
				for y := 0; y < h; y++ {
					for x := 0; x < w; x++ {
						sy, sx := y+dy[t], x+dx[t]
						if sy < 0 || sy >= h || sx < 0 || sx >= w {
							continue
						}
						row[img*h*w+y*w+x] = b.Src[c*b.Ld+img*h*w+sy*w+sx]
					}
				}
			}
		}
	}
	return out
}

// guarded returns n random values inside a larger slice whose values
// around them (and between planes, see randPlanes) are NaN: a read of a
// value the implicit matrix must not read shows up as a NaN in B.
func randPlanes(rng *rand.Rand, channels, plane, ld int) []float32 {
	const guard = 64
	size := max(0, (channels-1)*ld+plane)
	buf := make([]float32, size+2*guard)
	for i := range buf {
		buf[i] = float32(math.NaN())
	}
	src := buf[guard : guard+size]
	for i := range src {
		if i%ld < plane {
			src[i] = rng.Float32()*2 - 1
		}
	}
	return src
}

type im2colCase struct {
	n, h, w  int
	channels int
	pad      int // Ld - plane
	taps     tapSet
}

func (tc im2colCase) String() string {
	return fmt.Sprintf("%dx%dx%d c=%d pad=%d taps=%s", tc.n, tc.h, tc.w, tc.channels, tc.pad, tc.taps.name)
}

func im2colCases(short bool) []im2colCase {
	geoms := [][3]int{{1, 1, 1}, {1, 4, 4}, {3, 5, 7}, {2, 9, 6}, {1, 28, 28}, {3, 28, 28}, {5, 3, 11}}
	if short {
		geoms = [][3]int{{1, 1, 1}, {3, 5, 7}, {1, 28, 28}, {5, 3, 11}}
	}
	var cs []im2colCase
	i := 0
	for _, g := range geoms {
		for _, ts := range testTapSets() {
			cs = append(cs, im2colCase{n: g[0], h: g[1], w: g[2], channels: 1 + i%4, pad: (i % 3) * 5, taps: ts})
			i++
		}
	}
	return cs
}

func (tc im2colCase) build(t *testing.T, rng *rand.Rand) (Im2col, []float32) {
	t.Helper()
	var s Shifts
	if err := s.Set(tc.n, tc.h, tc.w, tc.taps.dy, tc.taps.dx); err != nil {
		t.Fatal(err)
	}
	plane := tc.n * tc.h * tc.w
	ld := plane + tc.pad
	b := Im2col{Src: randPlanes(rng, tc.channels, plane, ld), Ld: ld, Channels: tc.channels, Shifts: &s}
	return b, im2colRef(b, tc.n, tc.h, tc.w, tc.taps.dy, tc.taps.dx)
}

func sameBits(x, y []float32) int {
	for i := range x {
		if math.Float32bits(x[i]) != math.Float32bits(y[i]) {
			return i
		}
	}
	return -1
}

// TestShiftsBits: the validity bits are those of the definition, and zero
// past the plane.
func TestShiftsBits(t *testing.T) {
	var s Shifts
	for _, tc := range im2colCases(false) {
		if err := s.Set(tc.n, tc.h, tc.w, tc.taps.dy, tc.taps.dx); err != nil {
			t.Fatal(err)
		}
		for ti := range tc.taps.dy {
			for j := 0; j < s.words*64; j++ {
				want := false
				if j < s.plane {
					y, x := j%(tc.h*tc.w)/tc.w+tc.taps.dy[ti], j%tc.w+tc.taps.dx[ti]
					want = y >= 0 && y < tc.h && x >= 0 && x < tc.w
				}
				if s.valid(ti, j) != want {
					t.Fatalf("%s: tap %d at %d: valid %v, want %v", tc, ti, j, !want, want)
				}
			}
		}
	}
}

// TestPackIm2colMatchesPackB: the panels packed from the implicit matrix
// are bit-identical to those packed from the explicit im2col, for every
// kernel, any block of rows and whole strips of columns (up to the partial
// last strip), transposed or not.
func TestPackIm2colMatchesPackB(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	for _, kern := range sgemmKernels {
		nr := kern.nr
		for _, tc := range im2colCases(testing.Short()) {
			b, cols := tc.build(t, rng)
			rows, plane := b.Channels*b.Shifts.Taps(), b.Shifts.Plane()
			if rows == 0 || plane == 0 {
				continue
			}
			for trial := 0; trial < 6; trial++ {
				// Not transposed: op(B) = B, rows x plane.
				p0 := rng.Intn(rows)
				kc := 1 + rng.Intn(rows-p0)
				j0 := rng.Intn((plane+nr-1)/nr) * nr
				ncols := min(plane-j0, (1+rng.Intn(4))*nr)
				if trial == 0 {
					p0, kc, j0, ncols = 0, rows, 0, plane
				}
				strips := (ncols + nr - 1) / nr
				want := make([]float32, strips*nr*kc)
				got := make([]float32, len(want))
				for i := range got {
					got[i] = float32(math.NaN())
				}
				packB(kern, want, cols, plane, false, p0, kc, j0, ncols)
				packIm2col(kern, got, &b, p0, kc, j0, ncols)
				if i := sameBits(got, want); i >= 0 {
					t.Fatalf("%s %s: pack rows %d+%d cols %d+%d: [%d] = %v, want %v", kern.name, tc, p0, kc, j0, ncols, i, got[i], want[i])
				}
				// Transposed: op(B) = B^T, plane x rows.
				p0 = rng.Intn(plane)
				kc = 1 + rng.Intn(min(plane-p0, 300))
				j0 = rng.Intn((rows+nr-1)/nr) * nr
				ncols = min(rows-j0, (1+rng.Intn(3))*nr)
				if trial == 0 {
					p0, kc, j0, ncols = 0, min(plane, 256), 0, rows
				}
				strips = (ncols + nr - 1) / nr
				want = make([]float32, strips*nr*kc)
				got = make([]float32, len(want))
				for i := range got {
					got[i] = float32(math.NaN())
				}
				packB(kern, want, cols, plane, true, p0, kc, j0, ncols)
				packIm2colT(kern, got, &b, p0, kc, j0, ncols)
				if i := sameBits(got, want); i >= 0 {
					t.Fatalf("%s %s: packT rows %d+%d cols %d+%d: [%d] = %v, want %v", kern.name, tc, p0, kc, j0, ncols, i, got[i], want[i])
				}
			}
		}
	}
}

// TestSgemmIm2colMatchesExplicit: SgemmIm2col and SgemmIm2colT give the
// bits of Sgemm on the im2col matrix built in memory, for every kernel
// (with its real and a tiny blocking: many k blocks, row blocks, column
// panels), on pools of 1 to 3 threads and none.
func TestSgemmIm2colMatchesExplicit(t *testing.T) {
	rng := rand.New(rand.NewSource(12))
	pools := testPools()
	defer closePools(pools)
	ms := []int{1, 5, 8, 13, 64}
	i := 0
	for _, kern := range testKernels() {
		for _, tc := range im2colCases(testing.Short()) {
			b, cols := tc.build(t, rng)
			rows, plane := b.Channels*b.Shifts.Taps(), b.Shifts.Plane()
			m := ms[i%len(ms)]
			p := pools[i%len(pools)]
			ab := alphaBetas[i%len(alphaBetas)]
			i++
			// C = A (m x rows) * B
			a := randMatrix(rng, m, rows, rows+1)
			c0 := randMatrix(rng, m, plane, plane+2)
			want := append([]float32(nil), c0...)
			got := append([]float32(nil), c0...)
			sgemm(p, kern, false, false, m, plane, rows, ab[0], a, rows+1, cols, plane, ab[1], want, plane+2)
			if err := sgemmIm2col(p, kern, false, m, ab[0], a, rows+1, b, ab[1], got, plane+2); err != nil {
				t.Fatal(err)
			}
			if j := sameBits(got, want); j >= 0 {
				t.Fatalf("%s %s m=%d %d threads: C[%d] = %v, want %v", kern.name, tc, m, p.Threads(), j, got[j], want[j])
			}
			// C = A (m x plane) * B^T
			a = randMatrix(rng, m, plane, plane+3)
			c0 = randMatrix(rng, m, rows, rows+1)
			want = append(want[:0], c0...)
			got = append(got[:0], c0...)
			sgemm(p, kern, false, true, m, rows, plane, ab[0], a, plane+3, cols, plane, ab[1], want, rows+1)
			if err := sgemmIm2col(p, kern, true, m, ab[0], a, plane+3, b, ab[1], got, rows+1); err != nil {
				t.Fatal(err)
			}
			if j := sameBits(got, want); j >= 0 {
				t.Fatalf("%s %s m=%d %d threads, transposed: C[%d] = %v, want %v", kern.name, tc, m, p.Threads(), j, got[j], want[j])
			}
		}
	}
}

// TestSgemmIm2colLarge: the PixelCNN's shapes at a small batch, on two
// threads, against the explicit product (bits).
func TestSgemmIm2colLarge(t *testing.T) {
	rng := rand.New(rand.NewSource(13))
	p := NewPool(2)
	defer p.Close()
	for _, kern := range sgemmKernels {
		for _, tc := range []im2colCase{
			{n: 4, h: 28, w: 28, channels: 64, taps: window("3x3B", 3, func(i, j int) bool { return i < 1 || (i == 1 && j <= 1) })},
			{n: 3, h: 28, w: 28, channels: 1, taps: window("7x7A", 7, func(i, j int) bool { return i < 3 || (i == 3 && j < 3) })},
		} {
			b, cols := tc.build(t, rng)
			rows, plane := b.Channels*b.Shifts.Taps(), b.Shifts.Plane()
			m := 64
			a := randMatrix(rng, m, rows, rows)
			want := make([]float32, m*plane)
			got := make([]float32, m*plane)
			sgemm(p, kern, false, false, m, plane, rows, 1, a, rows, cols, plane, 0, want, plane)
			if err := sgemmIm2col(p, kern, false, m, 1, a, rows, b, 0, got, plane); err != nil {
				t.Fatal(err)
			}
			if j := sameBits(got, want); j >= 0 {
				t.Fatalf("%s %s: C[%d] = %v, want %v", kern.name, tc, j, got[j], want[j])
			}
			a = randMatrix(rng, m, plane, plane)
			want = make([]float32, m*rows)
			got = make([]float32, m*rows)
			sgemm(p, kern, false, true, m, rows, plane, 1, a, plane, cols, plane, 0, want, rows)
			if err := sgemmIm2col(p, kern, true, m, 1, a, plane, b, 0, got, rows); err != nil {
				t.Fatal(err)
			}
			if j := sameBits(got, want); j >= 0 {
				t.Fatalf("%s %s transposed: C[%d] = %v, want %v", kern.name, tc, j, got[j], want[j])
			}
		}
	}
}

// TestSgemmIm2colErrors: bad arguments are reported, not panicked on, and
// C is left alone.
func TestSgemmIm2colErrors(t *testing.T) {
	var s Shifts
	if err := s.Set(2, 3, 4, []int{0, 1}, []int{0, -1}); err != nil {
		t.Fatal(err)
	}
	src := make([]float32, 3*24)
	good := Im2col{Src: src, Ld: 24, Channels: 3, Shifts: &s}
	a := make([]float32, 5*6)
	c := make([]float32, 5*24)
	if err := SgemmIm2col(nil, 5, 1, a, 6, good, 0, c, 24); err != nil {
		t.Fatalf("good call: %v", err)
	}
	if err := SgemmIm2colT(nil, 5, 1, make([]float32, 5*24), 24, good, 0, make([]float32, 5*6), 6); err != nil {
		t.Fatalf("good transposed call: %v", err)
	}
	for _, tc := range []struct {
		name string
		b    Im2col
		m    int
		a    []float32
		lda  int
		c    []float32
		ldc  int
	}{
		{"nil shifts", Im2col{Src: src, Ld: 24, Channels: 3}, 5, a, 6, c, 24},
		{"short src", Im2col{Src: src[:70], Ld: 24, Channels: 3, Shifts: &s}, 5, a, 6, c, 24},
		{"small ld", Im2col{Src: src, Ld: 20, Channels: 3, Shifts: &s}, 5, a, 6, c, 24},
		{"negative channels", Im2col{Src: src, Ld: 24, Channels: -1, Shifts: &s}, 5, a, 6, c, 24},
		{"negative m", good, -1, a, 6, c, 24},
		{"short a", good, 5, a[:29], 6, c, 24},
		{"small lda", good, 5, a, 5, c, 24},
		{"short c", good, 5, a, 6, c[:119], 24},
		{"small ldc", good, 5, a, 6, c, 23},
	} {
		if err := SgemmIm2col(nil, tc.m, 1, tc.a, tc.lda, tc.b, 0, tc.c, tc.ldc); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	if err := SgemmIm2colT(nil, 5, 1, a, 6, good, 0, c, 24); err == nil {
		t.Errorf("transposed with untransposed shapes: no error")
	}
	for _, bad := range []struct {
		n, h, w int
		dy, dx  []int
	}{
		{-1, 2, 2, nil, nil},
		{1, 2, 2, []int{0}, nil},
		{1 << 20, 1 << 10, 1 << 10, nil, nil},
		{1, 2, 2, []int{1 << 40}, []int{0}},
	} {
		if err := s.Set(bad.n, bad.h, bad.w, bad.dy, bad.dx); err == nil {
			t.Errorf("Shifts.Set(%d, %d, %d, %v, %v): no error", bad.n, bad.h, bad.w, bad.dy, bad.dx)
		}
		if s.Plane() != 0 || s.Taps() != 0 {
			t.Errorf("failed Set left plane %d, %d taps", s.Plane(), s.Taps())
		}
	}
}

// TestSgemmIm2colNoAllocs: with a warm Pool neither variant allocates.
func TestSgemmIm2colNoAllocs(t *testing.T) {
	rng := rand.New(rand.NewSource(14))
	var s Shifts
	ts := window("3x3", 3, nil)
	if err := s.Set(4, 28, 28, ts.dy, ts.dx); err != nil {
		t.Fatal(err)
	}
	plane, rows := s.Plane(), 16*s.Taps()
	b := Im2col{Src: randPlanes(rng, 16, plane, plane), Ld: plane, Channels: 16, Shifts: &s}
	a := randMatrix(rng, 32, rows, rows)
	at := randMatrix(rng, 32, plane, plane)
	c := make([]float32, 32*plane)
	ct := make([]float32, 32*rows)
	for _, threads := range []int{1, 2, 3} {
		p := NewPool(threads)
		run := func() {
			if err := SgemmIm2col(p, 32, 1, a, rows, b, 0, c, plane); err != nil {
				t.Fatal(err)
			}
			if err := SgemmIm2colT(p, 32, 1, at, plane, b, 0, ct, rows); err != nil {
				t.Fatal(err)
			}
		}
		run()
		if allocs := testing.AllocsPerRun(5, run); allocs != 0 {
			t.Errorf("%d threads: %v allocations per call", threads, allocs)
		}
		p.Close()
	}
	var s2 Shifts
	if err := s2.Set(4, 28, 28, ts.dy, ts.dx); err != nil {
		t.Fatal(err)
	}
	if allocs := testing.AllocsPerRun(5, func() { _ = s2.Set(4, 28, 28, ts.dy, ts.dx) }); allocs != 0 {
		t.Errorf("Shifts.Set of the same geometry: %v allocations", allocs)
	}
}

// BenchmarkSgemmIm2col reports GFLOP/s of the PixelCNN's convolution
// products at batch 32 (28x28, 64 channels; 3x3 mask B and 7x7 mask A),
// implicit (SgemmIm2col, SgemmIm2colT) against Sgemm on the im2col matrix
// built beforehand (which leaves out the cost of building it).
func BenchmarkSgemmIm2col(b *testing.B) {
	rng := rand.New(rand.NewSource(15))
	maskB := window("3x3B", 3, func(i, j int) bool { return i < 1 || (i == 1 && j <= 1) })
	maskA := window("7x7A", 7, func(i, j int) bool { return i < 3 || (i == 3 && j < 3) })
	for _, c := range []struct {
		name     string
		taps     tapSet
		channels int
	}{{"3x3B_64", maskB, 64}, {"7x7A_1", maskA, 1}} {
		var s Shifts
		if err := s.Set(32, 28, 28, c.taps.dy, c.taps.dx); err != nil {
			b.Fatal(err)
		}
		plane, rows, m := s.Plane(), c.channels*s.Taps(), 64
		im := Im2col{Src: randPlanes(rng, c.channels, plane, plane), Ld: plane, Channels: c.channels, Shifts: &s}
		cols := im2colRef(im, 32, 28, 28, c.taps.dy, c.taps.dx)
		a := randMatrix(rng, m, rows, rows)
		at := randMatrix(rng, m, plane, plane)
		y := make([]float32, m*plane)
		dw := make([]float32, m*rows)
		for _, threads := range []int{1, 2} {
			p := NewPool(threads)
			for _, v := range []struct {
				name string
				fn   func()
			}{
				{"NN/implicit", func() { _ = SgemmIm2col(p, m, 1, a, rows, im, 0, y, plane) }},
				{"NN/explicit", func() { Sgemm(p, false, false, m, plane, rows, 1, a, rows, cols, plane, 0, y, plane) }},
				{"NT/implicit", func() { _ = SgemmIm2colT(p, m, 1, at, plane, im, 0, dw, rows) }},
				{"NT/explicit", func() { Sgemm(p, false, true, m, rows, plane, 1, at, plane, cols, plane, 0, dw, rows) }},
			} {
				b.Run(fmt.Sprintf("%s/%s/t%d", c.name, v.name, threads), func(b *testing.B) {
					v.fn()
					b.ResetTimer()
					for b.Loop() {
						v.fn()
					}
					b.ReportMetric(2*float64(m)*float64(plane)*float64(rows)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
			p.Close()
		}
	}
}

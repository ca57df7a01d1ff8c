package models

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gencluster/gencluster/kernels"
)

// TestPixelRNNParams: the state_dict names and shapes of the PyTorch
// definition, inp.weight masked (24 of 49 taps kept, Expand restores
// OIHW), and PyTorch's default bounds (fan_in of inp counting its masked
// taps).
func TestPixelRNNParams(t *testing.T) {
	for _, levels := range []int{BinaryLevels, GreyLevels} {
		const h = 64
		m := NewPixelRNN(28, 28, h, levels, nil)
		L := 1
		if levels == GreyLevels {
			L = 256
		}
		want := []struct {
			name  string
			shape []int
			n     int
		}{
			{"inp.weight", []int{h, 1, 7, 7}, h * 24}, {"inp.bias", []int{h}, h},
			{"cell.weight", []int{5 * h, 3 * h}, 15 * h * h}, {"cell.bias", []int{5 * h}, 5 * h},
			{"o1.weight", []int{h, h, 1, 1}, h * h}, {"o1.bias", []int{h}, h},
			{"o2.weight", []int{L, h, 1, 1}, L * h}, {"o2.bias", []int{L}, L},
		}
		ps := m.Params()
		if len(ps) != len(want) {
			t.Fatalf("%d params, want %d", len(ps), len(want))
		}
		m.Init(rand.New(rand.NewPCG(1, 2)))
		for i, p := range ps {
			w := want[i]
			if p.Name != w.name || !slices.Equal(p.Shape, w.shape) || len(p.Data) != w.n || len(p.Grad) != w.n {
				t.Errorf("param %d: %s %v (%d values), want %s %v (%d)", i, p.Name, p.Shape, len(p.Data), w.name, w.shape, w.n)
			}
		}
		if len(m.inp.W.Taps) != 24 || len(m.inp.W.Expand()) != h*49 {
			t.Errorf("inp.weight: %d taps, %d expanded values", len(m.inp.W.Taps), len(m.inp.W.Expand()))
		}
		// Bounds: uniform in +-1/sqrt(fan_in), and the largest draws near it.
		for _, c := range []struct {
			ps    []*Param
			fanIn int
		}{{ps[0:2], 49}, {ps[2:4], 3 * h}, {ps[4:6], h}, {ps[6:8], h}} {
			bound := 1 / math.Sqrt(float64(c.fanIn))
			var mx float64
			for _, p := range c.ps {
				for _, v := range p.Data {
					mx = max(mx, math.Abs(float64(v)))
				}
			}
			if mx > bound || (c.ps[0].Len() > 100 && mx < 0.9*bound) {
				t.Errorf("%s: largest |value| %.4g, bound 1/sqrt(%d) = %.4g", c.ps[0].Name, mx, c.fanIn, bound)
			}
		}
	}
}

// rnnState reads the model's h and c at (r, c) of image b after a forward
// pass (h = o * tanh(c) from the kept gates).
func (m *PixelRNN) rnnState(n, r, c, b int) (hs, cs []float32) {
	h := m.hidden
	q := n*m.kOf[r*m.width+c] + b
	cs = slices.Clone(m.cs[q*h : (q+1)*h])
	hs = make([]float32, h)
	for j := range hs {
		hs[j] = m.gates[q*5*h+3*h+j] * m.tcs[q*h+j]
	}
	return hs, cs
}

// directPixelRNN is the model computed the obvious way in float64 from the
// PyTorch-layout weights: the masked convolution (directConv), then the
// LSTM position by position in raster order, then the head. It returns h
// and c as [n][rows][cols][h] and the logits as [n][rows][cols][L].
func directPixelRNN(m *PixelRNN, x []float32, n int) (hs, cs, logits []float64) {
	H, rows, cols := m.hidden, m.height, m.width
	rc := rows * cols
	u := directConv(m.inp.W.Expand(), m.inp.B.Data, 1, H, 7, x, n, rows, cols) // [H][n*rc]
	W, bias := m.cell.W.Data, m.cell.B.Data
	hs = make([]float64, n*rc*H)
	cs = make([]float64, n*rc*H)
	sig := func(v float64) float64 { return 1 / (1 + math.Exp(-v)) }
	at := func(s []float64, b, r, c int) []float64 {
		if r < 0 || c < 0 {
			return make([]float64, H)
		}
		o := ((b*rows+r)*cols + c) * H
		return s[o : o+H]
	}
	for b := 0; b < n; b++ {
		for r := 0; r < rows; r++ {
			for c := 0; c < cols; c++ {
				in := make([]float64, 3*H)
				for j := 0; j < H; j++ {
					in[j] = float64(u[j*n*rc+b*rc+r*cols+c])
				}
				copy(in[H:], at(hs, b, r, c-1))
				copy(in[2*H:], at(hs, b, r-1, c))
				z := make([]float64, 5*H)
				for o := range z {
					s := float64(bias[o])
					for i, v := range in {
						s += float64(W[o*3*H+i]) * v
					}
					z[o] = s
				}
				cl, cu := at(cs, b, r, c-1), at(cs, b, r-1, c)
				hh, cc := at(hs, b, r, c), at(cs, b, r, c)
				for j := 0; j < H; j++ {
					cc[j] = sig(z[H+j])*cl[j] + sig(z[2*H+j])*cu[j] + sig(z[j])*math.Tanh(z[4*H+j])
					hh[j] = sig(z[3*H+j]) * math.Tanh(cc[j])
				}
			}
		}
	}
	L := m.o2.Out
	logits = make([]float64, n*rc*L)
	a0, a1 := make([]float64, H), make([]float64, H)
	for p := 0; p < n*rc; p++ {
		for j := range a0 {
			a0[j] = max(hs[p*H+j], 0)
		}
		for o := range a1 {
			s := float64(m.o1.B.Data[o])
			for i, v := range a0 {
				s += float64(m.o1.W.Data[o*H+i]) * v
			}
			a1[o] = max(s, 0)
		}
		for o := 0; o < L; o++ {
			s := float64(m.o2.B.Data[o])
			for i, v := range a1 {
				s += float64(m.o2.W.Data[o*H+i]) * v
			}
			logits[p*L+o] = s
		}
	}
	return hs, cs, logits
}

// TestPixelRNNMatchesDirect: the diagonal-batched recurrence and the head
// against directPixelRNN on random weights (the cell's scaled up so that
// gates saturate), non-square images, both level counts, 1 and 3 threads.
func TestPixelRNNMatchesDirect(t *testing.T) {
	for _, c := range []struct{ levels, threads int }{{2, 1}, {GreyLevels, 3}} {
		pool := kernels.NewPool(c.threads)
		rng := rand.New(rand.NewPCG(31, uint64(c.levels)))
		const rows, cols, h, n = 6, 9, 5, 3
		m := NewPixelRNN(rows, cols, h, c.levels, pool)
		m.Init(rng)
		for i := range m.cell.W.Data {
			m.cell.W.Data[i] *= 3
		}
		x := inputImages(rng, m, n*rows*cols)
		m.forward(x, n)
		wantH, wantC, wantLogits := directPixelRNN(m, x, n)
		worst := 0.0
		for b := 0; b < n; b++ {
			for r := 0; r < rows; r++ {
				for cc := 0; cc < cols; cc++ {
					gh, gc := m.rnnState(n, r, cc, b)
					p := (b*rows+r)*cols + cc
					for j := 0; j < h; j++ {
						dh := math.Abs(float64(gh[j]) - wantH[p*h+j])
						dc := math.Abs(float64(gc[j]) - wantC[p*h+j])
						worst = max(worst, dh, dc)
						if dh > 1e-5 || dc > 1e-5 {
							t.Fatalf("levels %d: image %d (%d,%d) unit %d: h %v c %v, direct h %v c %v", c.levels, b, r, cc, j, gh[j], gc[j], wantH[p*h+j], wantC[p*h+j])
						}
						if rh := m.rh[p*h+j]; rh != max(gh[j], 0) {
							t.Fatalf("levels %d: relu(h) %v, h %v", c.levels, rh, gh[j])
						}
					}
				}
			}
		}
		for i, v := range wantLogits {
			if math.Abs(float64(m.logit[i])-v) > 1e-5*math.Max(1, math.Abs(v)) {
				t.Fatalf("levels %d: logit %d = %v, direct %v", c.levels, i, m.logit[i], v)
			}
		}
		t.Logf("levels %d: largest state difference %.3g", c.levels, worst)
		pool.Close()
	}
}

// TestPixelRNNStatesGradient: the recurrence alone (statesBackward and the
// cell's weight gradient) against finite differences of sum(R * h) with
// respect to u, the cell's weights and its bias.
func TestPixelRNNStatesGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	const rows, cols, h, n = 5, 6, 4, 2
	m := NewPixelRNN(rows, cols, h, 2, nil)
	m.Init(rng)
	for i := range m.cell.W.Data {
		m.cell.W.Data[i] *= 2
	}
	np := n * rows * cols
	m.reserve(n)
	m.reserveGrad(n)
	m.inputConv(binaryImages(rng, np), n) // the zero borders
	u := randSlice(rng, np*h, 1)          // diagonal order
	R := randSlice(rng, np*h, 1)          // position order
	loss := func() float64 {
		for q := 0; q < np; q++ {
			copy(m.xs[q*3*h:q*3*h+h], u[q*h:(q+1)*h])
		}
		m.states(n)
		var s float64
		for b := 0; b < n; b++ {
			for r := 0; r < rows; r++ {
				for c := 0; c < cols; c++ {
					hv, _ := m.rnnState(n, r, c, b)
					p := (b*rows+r)*cols + c
					s += dot64(R[p*h:(p+1)*h], hv)
				}
			}
		}
		return s
	}
	loss()
	copy(m.dh, R)
	m.statesBackward(n)
	m.cell.BackwardParams(m.xs, m.gates, np)
	du := slices.Clone(m.du[:np*h])
	wg, bg := slices.Clone(m.cell.W.Grad), slices.Clone(m.cell.B.Grad)
	// eps 3e-3: at 1e-2 the central difference of a saturated gate's bias
	// (which moves every position) is 4% off, its truncation error.
	checkGrad(t, "u", u, du, loss, 3e-3, 2e-3, 0)
	checkGrad(t, "cell.weight", m.cell.W.Data, wg, loss, 3e-3, 2e-3, 0)
	checkGrad(t, "cell.bias", m.cell.B.Data, bg, loss, 3e-3, 2e-3, 0)
}

// TestLSTMCellGradient: one position's lstmForward and lstmBackward
// against finite differences, with respect to the pre-activations and
// the neighbours' cells, for a loss on h, c and the gradients passed to
// the neighbours.
func TestLSTMCellGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(43, 44))
	const h = 6
	z0 := randSlice(rng, 5*h, 3)
	bias := randSlice(rng, 5*h, 0.5)
	cl, cu := randSlice(rng, h, 2), randSlice(rng, h, 2)
	rh, rc := randSlice(rng, h, 1), randSlice(rng, h, 1)
	z := make([]float32, 5*h)
	c, tc, hv := make([]float32, h), make([]float32, h), make([]float32, h)
	// L = sum(rh*h) + sum(rc*c): the gradient reaching c from later
	// positions is rc.
	loss := func() float64 {
		copy(z, z0)
		lstmForward(z, bias, cl, cu, c, tc, hv)
		return dot64(rh, hv) + dot64(rc, c)
	}
	loss()
	// The gradients of h and c arrive in parts (head, right, below).
	dc := make([]float32, 2*h)
	rh1, rh2 := randSlice(rng, h, 1), randSlice(rng, h, 1)
	rc1 := randSlice(rng, h, 1)
	dh0, dc0 := make([]float32, h), make([]float32, h)
	for j := range dh0 {
		dh0[j] = rh[j] - rh1[j] - rh2[j]
		dc0[j] = rc[j] - rc1[j]
	}
	lstmBackward(z, tc, cl, cu, dh0, rh1, rh2, rc1, dc0, dc)
	dz := slices.Clone(z)
	checkGrad(t, "z", z0, dz, loss, 1e-3, 1e-3, 0)
	checkGrad(t, "bias", bias, dz, loss, 1e-3, 1e-3, 0)
	// dc*f_left and dc*f_up are the gradients of cl and cu.
	checkGrad(t, "c_left", cl, dc[:h], loss, 1e-3, 1e-3, 0)
	checkGrad(t, "c_up", cu, dc[h:], loss, 1e-3, 1e-3, 0)
}

// TestPixelRNNInputConvGradient: the input convolution's weight and bias
// gradients against finite differences of sum(R * u).
func TestPixelRNNInputConvGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(45, 46))
	const rows, cols, h, n = 5, 6, 4, 2
	m := NewPixelRNN(rows, cols, h, GreyLevels, nil)
	m.Init(rng)
	np := n * rows * cols
	m.reserve(n)
	m.reserveGrad(n)
	x := greyImages(rng, np)
	R := randSlice(rng, np*h, 1) // diagonal order
	loss := func() float64 {
		m.inputConv(x, n)
		var s float64
		for q := 0; q < np; q++ {
			s += dot64(R[q*h:(q+1)*h], m.xs[q*3*h:q*3*h+h])
		}
		return s
	}
	loss()
	copy(m.du, R)
	m.inputConvBackward(n)
	checkGrad(t, "inp.weight", m.inp.W.Data, slices.Clone(m.inp.W.Grad), loss, 1e-2, 1e-3, 0)
	checkGrad(t, "inp.bias", m.inp.B.Data, slices.Clone(m.inp.B.Grad), loss, 1e-2, 1e-3, 0)
}

func TestPixelRNNGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(51, 52))
	m := NewPixelRNN(5, 6, 4, 2, nil)
	m.Init(rng)
	n := 2
	checkModelGrad(t, m, binaryImages(rng, n*5*6), n, 53)
}

func TestPixelRNN256Gradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(54, 55))
	m := NewPixelRNN(5, 6, 4, GreyLevels, nil)
	m.Init(rng)
	n := 2
	checkModelGrad(t, m, greyImages(rng, n*5*6), n, 56)
}

// TestPixelRNNIsAutoregressive: no logit depends on its own pixel or a
// later one (bit for bit), and the next pixel's logits do depend on it
// (the pixel below for the last of a row: the state at (r+1, 0) sees
// only the columns the mask reaches and the states above-left).
func TestPixelRNNIsAutoregressive(t *testing.T) {
	for _, levels := range []int{BinaryLevels, GreyLevels} {
		rng := rand.New(rand.NewPCG(57, 58))
		const rows, cols = 9, 8
		m := NewPixelRNN(rows, cols, 16, levels, nil)
		m.Init(rng)
		L := m.o2.Out
		x := inputImages(rng, m, rows*cols)
		m.forward(x, 1)
		base := slices.Clone(m.logit[:rows*cols*L])
		for _, pos := range []int{0, 7, 8, 13, 35, 40, rows*cols - 1} {
			y := slices.Clone(x)
			for i := pos; i < rows*cols; i++ {
				y[i] = 1 - y[i]
			}
			m.forward(y, 1)
			got := m.logit[:rows*cols*L]
			for i := 0; i < (pos+1)*L; i++ {
				if got[i] != base[i] {
					t.Fatalf("levels %d: logit %d of pixel %d changed when pixels %d.. changed", levels, i%L, i/L, pos)
				}
			}
			next := pos + 1
			if next%cols == 0 {
				next = pos + cols
			}
			if next < rows*cols && slices.Equal(got[next*L:(next+1)*L], base[next*L:(next+1)*L]) {
				t.Errorf("levels %d: pixel %d's logits did not change when pixel %d changed", levels, next, pos)
			}
		}
	}
}

// sampleFull draws what Sample draws by running the whole forward pass on
// the canvas at each pixel: the reference the incremental sampler is held
// to.
func (m *PixelRNN) sampleFull(dst []float32, n int, rng *rand.Rand) {
	rows, cols, L := m.height, m.width, m.o2.Out
	canvas := dst[:n*rows*cols]
	clear(canvas)
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			m.forward(canvas, n)
			for b := 0; b < n; b++ {
				p := b*rows*cols + r*cols + c
				canvas[p] = drawPixel(m.logit[p*L:(p+1)*L], 1, m.levels, rng)
			}
		}
	}
}

// The incremental sampler draws exactly what the full forward pass at
// each pixel draws for the same seed, on 1 and 2 threads, both level
// counts, and reports progress once per pixel.
func TestPixelRNNSampleEqualsFull(t *testing.T) {
	for _, c := range []struct{ levels, threads, n int }{
		{2, 1, 3}, {2, 2, 5}, {GreyLevels, 1, 3}, {GreyLevels, 2, 5},
	} {
		pool := kernels.NewPool(c.threads)
		t.Cleanup(pool.Close) // also when a check fails
		const rows, cols = 7, 6
		m := NewPixelRNN(rows, cols, 8, c.levels, pool)
		m.Init(rand.New(rand.NewPCG(61, uint64(c.n))))
		// Sharper than the initial weights, so that the draws depend on
		// the logits' values, not only on the coins.
		for i := range m.o2.W.Data {
			m.o2.W.Data[i] *= 8
		}
		checkIncrementalSampler(t, fmt.Sprintf("%d levels, %d threads, %d images", c.levels, c.threads, c.n),
			m, m.sampleFull, c.n, rows, cols, c.levels)
	}
}

// TestPixelRNNTrainFLOPs: per pixel a forward, a weight-gradient and an
// input-gradient product of each layer but the input convolution's input
// gradient, masked taps left out; names unique.
func TestPixelRNNTrainFLOPs(t *testing.T) {
	for _, levels := range []int{BinaryLevels, GreyLevels} {
		m := NewPixelRNN(28, 28, 64, levels, nil)
		L := m.o2.Out
		perPixel := 24*64 + 192*320 + 64*64 + 64*L
		want := 2 * 784 * float64(3*perPixel-24*64) * 5
		if got, ok := TrainFLOPs(m, 5); !ok || got != want {
			t.Errorf("levels %d: %v FLOPs on 5 images, want %v", levels, got, want)
		}
		seen := map[string]bool{}
		for _, g := range m.TrainGEMMs(3) {
			if seen[g.Name] || g.M < 1 || g.N < 1 || g.K < 1 {
				t.Errorf("%+v: repeated or empty", g)
			}
			seen[g.Name] = true
		}
	}
}

// TestPixelRNNEmptyBatch: no images, no loss, zero gradients reported
// in the usual order, no panic.
func TestPixelRNNEmptyBatch(t *testing.T) {
	m := NewPixelRNN(5, 6, 4, 2, nil)
	m.Init(rand.New(rand.NewPCG(1, 2)))
	var order, want []*Param
	m.SetGradHook(func(p *Param) { want = append(want, p) })
	m.Grad(binaryImages(rand.New(rand.NewPCG(3, 4)), 5*6), 1, Noise{})
	for _, p := range m.Params() {
		p.Grad[0] = 1
	}
	m.SetGradHook(func(p *Param) { order = append(order, p) })
	if l := m.Grad(nil, 0, Noise{}); l != 0 {
		t.Errorf("Grad of no images: %v", l)
	}
	if !slices.Equal(order, want) {
		t.Error("the hook saw the parameters of no images in another order")
	}
	for _, p := range m.Params() {
		if p.Grad[0] != 0 {
			t.Errorf("%s: gradient %v of no images", p.Name, p.Grad[0])
		}
	}
	if l := m.Loss(nil, 0, Noise{}); l != 0 {
		t.Errorf("Loss of no images: %v", l)
	}
	m.Sample(nil, 0, rand.New(rand.NewPCG(1, 2)))
	// A short batch panics on the caller's goroutine (recoverable), not
	// in one of the pool's.
	pool := kernels.NewPool(2)
	defer pool.Close()
	m = NewPixelRNN(5, 6, 4, 2, pool)
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Loss of a short batch did not panic")
			}
		}()
		m.Loss(make([]float32, 2*5*6-1), 2, Noise{})
	}()
}

func BenchmarkSamplePixelRNN(b *testing.B) {
	for _, levels := range []int{BinaryLevels, GreyLevels} {
		b.Run(Spec{Name: PixelRNNName, Levels: levels}.String(), func(b *testing.B) {
			pool := kernels.NewPool(1)
			defer pool.Close()
			m := NewPixelRNN(28, 28, 64, levels, pool)
			m.Init(rand.New(rand.NewPCG(1, 2)))
			const n = 16
			dst := make([]float32, n*784)
			for b.Loop() {
				m.Sample(dst, n, rand.New(rand.NewPCG(1, 1)))
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
		})
	}
}

package models

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gencluster/gencluster/kernels"
)

func randSlice(rng *rand.Rand, n int, scale float64) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32((rng.Float64()*2 - 1) * scale)
	}
	return s
}

func dot64(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

// checkGrad compares analytic gradient grad of f with respect to the values
// in x against central finite differences at up to max positions spread
// over x. f must recompute from x each call.
func checkGrad(t *testing.T, what string, x, grad []float32, f func() float64, eps, tol float64, maxN int) {
	t.Helper()
	if len(x) != len(grad) {
		t.Fatalf("%s: %d values but %d gradients", what, len(x), len(grad))
	}
	stride := 1
	if maxN > 0 && len(x) > maxN {
		stride = len(x)/maxN + 1
	}
	bad := 0
	for i := 0; i < len(x); i += stride {
		old := x[i]
		x[i] = old + float32(eps)
		fp := f()
		x[i] = old - float32(eps)
		fm := f()
		x[i] = old
		num := (fp - fm) / (2 * eps)
		ana := float64(grad[i])
		if math.Abs(num-ana) > tol*math.Max(1, math.Abs(num)) {
			if bad < 5 {
				t.Errorf("%s[%d]: analytic %.6g, finite difference %.6g", what, i, ana, num)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d checked gradients disagree", what, bad, (len(x)+stride-1)/stride)
	}
}

func TestConvGradients(t *testing.T) {
	cases := []struct {
		name       string
		in, out, k int
		mask       MaskKind
	}{
		{"maskA7", 2, 3, 7, MaskA},
		{"maskB3", 3, 4, 3, MaskB},
		{"dense3", 2, 3, 3, MaskNone},
		{"pointwise", 3, 2, 1, MaskNone},
	}
	for _, tc := range cases {
		for _, relu := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/relu=%v", tc.name, relu), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(1, 2))
				n, h, w := 2, 5, 6
				np := n * h * w
				l := NewConv("c", tc.in, tc.out, tc.k, tc.mask, nil)
				l.Init(rng)
				x := randSlice(rng, tc.in*np, 1)
				r := randSlice(rng, tc.out*np, 1) // L = sum(r * y), y after the optional ReLU
				y := make([]float32, tc.out*np)
				loss := func() float64 {
					l.Forward(x, y, n, h, w, false)
					return dot64(r, y)
				}
				var act []float32
				if relu {
					// Forward's ReLU must be max(pre-activation, 0) exactly.
					pre := make([]float32, len(y))
					l.Forward(x, pre, n, h, w, false)
					l.Forward(x, y, n, h, w, true)
					for i, v := range y {
						if v != max(pre[i], 0) {
							t.Fatalf("Forward with ReLU: y[%d] = %v, pre-activation %v", i, v, pre[i])
						}
					}
					act = y
					// Finite differences across a ReLU's kink are
					// meaningless, so differentiate the loss with the ReLU
					// pattern of this point frozen: sum(r * active * pre).
					// Its gradient here is the true one.
					frozen := make([]float32, len(r))
					for i, v := range y {
						if v > 0 {
							frozen[i] = r[i]
						}
					}
					loss = func() float64 {
						l.Forward(x, pre, n, h, w, false)
						return dot64(frozen, pre)
					}
				}
				dy := append([]float32(nil), r...) // Backward applies the ReLU derivative in place
				dx := make([]float32, len(x))
				l.Backward(x, dy, dx, n, h, w, act)
				checkGrad(t, "weight", l.W.Data, l.W.Grad, loss, 1e-2, 1e-3, 0)
				checkGrad(t, "bias", l.B.Data, l.B.Grad, loss, 1e-2, 1e-3, 0)
				checkGrad(t, "input", x, dx, loss, 1e-2, 1e-3, 0)
			})
		}
	}
}

// directConv is a plain masked convolution from the full OIHW weights, as
// torch's F.conv2d(x, weight*mask, bias, padding=k//2) computes it.
func directConv(full, bias []float32, in, out, k int, x []float32, n, h, w int) []float32 {
	p := k / 2
	np := n * h * w
	y := make([]float32, out*np)
	for o := 0; o < out; o++ {
		for b := 0; b < n; b++ {
			for yy := 0; yy < h; yy++ {
				for xx := 0; xx < w; xx++ {
					s := float64(bias[o])
					for c := 0; c < in; c++ {
						for i := 0; i < k; i++ {
							for j := 0; j < k; j++ {
								sy, sx := yy+i-p, xx+j-p
								if sy < 0 || sy >= h || sx < 0 || sx >= w {
									continue
								}
								s += float64(full[((o*in+c)*k+i)*k+j]) * float64(x[c*np+b*h*w+sy*w+sx])
							}
						}
					}
					y[o*np+b*h*w+yy*w+xx] = float32(s)
				}
			}
		}
	}
	return y
}

func TestConvMatchesTorchSemantics(t *testing.T) {
	for _, mk := range []struct {
		mask MaskKind
		k    int
		taps int
	}{{MaskA, 7, 24}, {MaskB, 3, 5}, {MaskNone, 3, 9}} {
		rng := rand.New(rand.NewPCG(3, 4))
		n, h, w, in, out := 2, 6, 7, 3, 4
		l := NewConv("c", in, out, mk.k, mk.mask, nil)
		l.Init(rng)
		if l.Taps() != mk.taps {
			t.Fatalf("mask %d: %d taps, want %d", mk.mask, l.Taps(), mk.taps)
		}
		full := l.W.Expand()
		if mk.mask != MaskNone {
			// PyTorch's mask: m[:, :, c, c+(B):] = 0; m[:, :, c+1:] = 0
			c := mk.k / 2
			mask := l.W.Mask()
			for i := 0; i < mk.k; i++ {
				for j := 0; j < mk.k; j++ {
					want := float32(1)
					if i > c || (i == c && j > c) || (i == c && j == c && mk.mask == MaskA) {
						want = 0
					}
					if got := mask[i*mk.k+j]; got != want {
						t.Errorf("mask %d at (%d,%d) = %v, want %v", mk.mask, i, j, got, want)
					}
				}
			}
		}
		x := randSlice(rng, in*n*h*w, 1)
		y := make([]float32, out*n*h*w)
		l.Forward(x, y, n, h, w, false)
		want := directConv(full, l.B.Data, in, out, mk.k, x, n, h, w)
		for i := range y {
			if math.Abs(float64(y[i]-want[i])) > 1e-5 {
				t.Fatalf("mask %d: y[%d] = %v, direct convolution gives %v", mk.mask, i, y[i], want[i])
			}
		}
	}
}

func TestLinearGradients(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	n, in, out := 3, 7, 5
	l := NewLinear("l", in, out, nil)
	l.Init(rng)
	x := randSlice(rng, n*in, 1)
	r := randSlice(rng, n*out, 1)
	y := make([]float32, n*out)
	loss := func() float64 { l.Forward(x, y, n); return dot64(r, y) }
	dx := randSlice(rng, n*in, 1)
	base := append([]float32(nil), dx...)
	l.Backward(x, r, dx, n, true) // adds onto base
	for i := range dx {
		dx[i] -= base[i]
	}
	checkGrad(t, "weight", l.W.Data, l.W.Grad, loss, 1e-2, 1e-3, 0)
	checkGrad(t, "bias", l.B.Data, l.B.Grad, loss, 1e-2, 1e-3, 0)
	checkGrad(t, "input", x, dx, loss, 1e-2, 1e-3, 0)
}

// TestLinearReLUGradients: ForwardReLU / BackwardParamsReLU (the ReLU
// folded into the bias passes) against finite differences, and against
// the unfused Forward + kernels.ReLU, kernels.ReLUGrad + BackwardParams.
func TestLinearReLUGradients(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	n, in, out := 4, 9, 19
	l := NewLinear("l", in, out, nil)
	l.Init(rng)
	x := randSlice(rng, n*in, 1)
	r := randSlice(rng, n*out, 1)
	y := make([]float32, n*out)
	loss := func() float64 { l.ForwardReLU(x, y, n); return dot64(r, y) }
	pre := make([]float32, n*out)
	for range 50 { // move biases until no pre-activation is near the kink
		l.Forward(x, pre, n)
		near := false
		for i, v := range pre {
			if math.Abs(float64(v)) < 0.02 {
				l.B.Data[i%out] += 0.05
				near = true
			}
		}
		if !near {
			break
		}
	}
	loss()
	l.Forward(x, pre, n)
	kernels.ReLU(pre)
	for i := range y {
		if math.Float32bits(y[i]) != math.Float32bits(pre[i]) {
			t.Fatalf("ForwardReLU y[%d] = %g, Forward + ReLU %g", i, y[i], pre[i])
		}
	}
	// the unfused backward, for comparison
	d0 := append([]float32(nil), r...)
	if err := kernels.ReLUGrad(d0, y); err != nil {
		t.Fatal(err)
	}
	l.BackwardParams(x, d0, n)
	wg := append([]float32(nil), l.W.Grad...)
	bg := append([]float32(nil), l.B.Grad...)

	dy := append([]float32(nil), r...)
	l.BackwardParamsReLU(x, dy, n, y)
	dx := make([]float32, n*in)
	l.BackwardInput(dy, dx, n, false)
	for i := range dy {
		if dy[i] != d0[i] {
			t.Fatalf("masked dy[%d] = %g, want %g", i, dy[i], d0[i])
		}
	}
	for i := range wg {
		if l.W.Grad[i] != wg[i] {
			t.Fatalf("weight grad %d differs from the unfused one", i)
		}
	}
	for i := range bg {
		if l.B.Grad[i] != bg[i] {
			t.Fatalf("bias grad %d differs from the unfused one", i)
		}
	}
	checkGrad(t, "weight", l.W.Data, l.W.Grad, loss, 1e-3, 1e-3, 0)
	checkGrad(t, "bias", l.B.Data, l.B.Grad, loss, 1e-3, 1e-3, 0)
	checkGrad(t, "input", x, dx, loss, 1e-3, 1e-3, 0)
}

func TestReLUBackward(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	x := randSlice(rng, 50, 1)
	for i := range x { // keep away from the kink so differences are exact
		if math.Abs(float64(x[i])) < 0.05 {
			x[i] = 0.5
		}
	}
	r := randSlice(rng, 50, 1)
	y := make([]float32, 50)
	loss := func() float64 { copy(y, x); kernels.ReLU(y); return dot64(r, y) }
	loss()
	d := append([]float32(nil), r...)
	if err := kernels.ReLUGrad(d, y); err != nil {
		t.Fatal(err)
	}
	checkGrad(t, "relu input", x, d, loss, 1e-3, 1e-3, 0)
}

func TestBCEWithLogits(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	l := randSlice(rng, 40, 8)
	l[0], l[1] = 60, -60 // large logits must stay finite
	x := make([]float32, 40)
	for i := range x {
		if rng.IntN(2) == 1 {
			x[i] = 1
		}
	}
	g := make([]float32, 40)
	v := bceWithLogits(l, x, g)
	// -log sigmoid(l) for x=1, -log(1-sigmoid(l)) = -log sigmoid(-l) for x=0
	softplus := func(a float64) float64 {
		if a > 30 {
			return a
		}
		return math.Log1p(math.Exp(a))
	}
	var want float64
	for i := range l {
		if x[i] == 1 {
			want += softplus(-float64(l[i]))
		} else {
			want += softplus(float64(l[i]))
		}
	}
	if math.IsInf(v, 0) || math.IsNaN(v) || math.Abs(v-want) > 1e-6*math.Abs(want) {
		t.Fatalf("bce = %v, want %v", v, want)
	}
	checkGrad(t, "logits", l, g, func() float64 { return bceWithLogits(l, x, nil) }, 1e-3, 1e-3, 0)
}

// TestSoftmaxNLL: the 256-way cross-entropy in both layouts (channel-major
// and a row per pixel), against float64 log-softmax, with logits from
// small to large (one image's 300 apart), on 1 and 3 threads (the same
// bits); the loss within 1e-6 relatively, every gradient within 2e-7.
func TestSoftmaxNLL(t *testing.T) {
	const n, dim, L = 3, 5, GreyLevels
	rng := rand.New(rand.NewPCG(11, 12))
	logits := make([]float32, n*dim*L) // [image][pixel][level]
	x := make([]float32, n*dim)
	for i := range logits {
		logits[i] = float32(rng.NormFloat64() * []float64{0.1, 4, 100}[i/(dim*L)])
	}
	for i := range x {
		x[i] = float32(rng.IntN(256)) / 255
	}
	// The reference per pixel p: log sum exp(l) - l[t] and softmax - onehot.
	var want float64
	wantImage := make([]float64, n)
	wantGrad := make([]float64, len(logits))
	for p := 0; p < n*dim; p++ {
		row := logits[p*L : (p+1)*L]
		mx := math.Inf(-1)
		for _, v := range row {
			mx = math.Max(mx, float64(v))
		}
		var sum float64
		for _, v := range row {
			sum += math.Exp(float64(v) - mx)
		}
		tgt := level(x[p])
		want += math.Log(sum) + mx - float64(row[tgt])
		wantImage[p/dim] += math.Log(sum) + mx - float64(row[tgt])
		for k, v := range row {
			wantGrad[p*L+k] = math.Exp(float64(v)-mx) / sum
		}
		wantGrad[p*L+tgt]--
	}
	var ref float64
	for _, threads := range []int{1, 3} {
		pool := kernels.NewPool(threads)
		t.Cleanup(pool.Close) // also when a check fails
		s := newSoftmaxNLL(L, pool)
		// a row per pixel: pixStride L, levelStride 1
		g := make([]float32, len(logits))
		rows := s.loss(logits, x, g, n, dim, L, 1)
		// channel-major: [level][pixel], pixStride 1, levelStride n*dim
		cm := make([]float32, len(logits))
		for p := 0; p < n*dim; p++ {
			for k := 0; k < L; k++ {
				cm[k*n*dim+p] = logits[p*L+k]
			}
		}
		gc := make([]float32, len(logits))
		cols := s.loss(cm, x, gc, n, dim, 1, n*dim)
		noGrad := s.loss(logits, x, nil, n, dim, L, 1)
		for i, w := range wantImage {
			if got := s.loss(logits[i*dim*L:], x[i*dim:], nil, 1, dim, L, 1); math.Abs(got-w) > 1e-6*w {
				t.Fatalf("image %d: loss %v, float64 reference %v", i, got, w)
			}
		}
		if rows != cols || rows != noGrad {
			t.Fatalf("%d threads: loss %v by rows, %v channel-major, %v without gradient", threads, rows, cols, noGrad)
		}
		if math.Abs(rows-want) > 1e-6*want {
			t.Fatalf("%d threads: loss %v, float64 reference %v", threads, rows, want)
		}
		if threads == 1 {
			ref = rows
		} else if rows != ref {
			t.Fatalf("loss %v on %d threads, %v on 1", rows, threads, ref)
		}
		for p := 0; p < n*dim; p++ {
			for k := 0; k < L; k++ {
				w := wantGrad[p*L+k]
				if d := math.Abs(float64(g[p*L+k]) - w); d > 2e-7 {
					t.Fatalf("pixel %d level %d: gradient %v, reference %v", p, k, g[p*L+k], w)
				}
				if gc[k*n*dim+p] != g[p*L+k] {
					t.Fatalf("pixel %d level %d: channel-major gradient %v, by rows %v", p, k, gc[k*n*dim+p], g[p*L+k])
				}
			}
		}
	}
}

// testSpecs is every model the package builds, each at every level count
// it takes.
var testSpecs = []Spec{
	{Name: PixelCNNName}, {Name: PixelCNNName, Levels: GreyLevels},
	{Name: VAEName},
	{Name: PixelRNNName}, {Name: PixelRNNName, Levels: GreyLevels},
	{Name: AEName},
}

// greyImages is n random grey levels byte/255.
func greyImages(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.IntN(256)) / 255
	}
	return x
}

// inputImages is n pixels of the kind m takes.
func inputImages(rng *rand.Rand, m Model, n int) []float32 {
	if GreyInput(m) {
		return greyImages(rng, n)
	}
	return binaryImages(rng, n)
}

func binaryImages(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		if rng.Float64() < 0.3 {
			x[i] = 1
		}
	}
	return x
}

// directional compares <grad, v> with the finite difference of the loss
// along v over all parameters at once, and checks a few single parameters.
func checkModelGrad(t *testing.T, m Model, x []float32, n int, seed uint64) {
	t.Helper()
	lossAt := func() float64 { return m.Loss(x, n, Noise{Seed: seed}) }
	m.Grad(x, n, Noise{Seed: seed})
	grads := map[*Param][]float32{}
	for _, p := range m.Params() {
		grads[p] = append([]float32(nil), p.Grad...)
	}
	for _, p := range m.Params() {
		checkGrad(t, p.Name, p.Data, grads[p], lossAt, 1e-2, 2e-2, 12)
	}
	rng := rand.New(rand.NewPCG(seed, 1))
	var gv float64
	dirs := map[*Param][]float32{}
	for _, p := range m.Params() {
		v := randSlice(rng, len(p.Data), 1)
		dirs[p] = v
		gv += dot64(grads[p], v)
	}
	move := func(s float32) {
		for _, p := range m.Params() {
			for i, d := range dirs[p] {
				p.Data[i] += s * d
			}
		}
	}
	const eps = 1e-3
	move(eps)
	fp := lossAt()
	move(-2 * eps)
	fm := lossAt()
	move(eps)
	num := (fp - fm) / (2 * eps)
	if math.Abs(num-gv) > 1e-2*math.Max(1, math.Abs(num)) {
		t.Errorf("directional derivative: analytic %.6g, finite difference %.6g", gv, num)
	}
}

func TestPixelCNNGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	m := NewPixelCNN(6, 7, 5, 2, 2, nil)
	m.Init(rng)
	n := 2
	checkModelGrad(t, m, binaryImages(rng, n*6*7), n, 13)
}

func TestPixelCNN256Gradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	m := NewPixelCNN(5, 6, 4, 1, GreyLevels, nil)
	m.Init(rng)
	n := 2
	checkModelGrad(t, m, greyImages(rng, n*5*6), n, 23)
}

func TestAEGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(24, 25))
	m := NewAE(12, 7, 3, nil)
	m.Init(rng)
	n := 3
	checkModelGrad(t, m, greyImages(rng, n*12), n, 26)
}

func TestVAEGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(14, 15))
	m := NewVAE(12, 7, 3, nil)
	m.Init(rng)
	n := 3
	checkModelGrad(t, m, binaryImages(rng, n*12), n, 16)
}

// TestPixelCNNIsAutoregressive checks the masks end to end: the logit of a
// pixel does not change when that pixel or any later one changes.
func TestPixelCNNIsAutoregressive(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	h, w := 9, 8
	m := NewPixelCNN(h, w, 32, 3, 2, nil)
	m.Init(rng)
	x := binaryImages(rng, h*w)
	base := m.logitsAt(x, 1)
	for _, pos := range []int{0, 13, 35, 40, h*w - 1} {
		y := append([]float32(nil), x...)
		for i := pos; i < h*w; i++ {
			y[i] = 1 - y[i]
		}
		got := m.logitsAt(y, 1)
		for i := 0; i <= pos; i++ {
			if got[i] != base[i] {
				t.Fatalf("logit %d changed when pixels %d.. changed", i, pos)
			}
		}
		if pos+1 < h*w && got[pos+1] == base[pos+1] {
			t.Errorf("logit %d did not change when pixel %d changed: the mask hides too much", pos+1, pos)
		}
	}
}

// TestSampleWindowExact: the windowed logits the sampler uses equal the
// logits of a forward pass over the whole image.
func TestSampleWindowExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	m := NewPixelCNN(28, 28, 8, 6, 2, nil)
	m.Init(rng)
	n := 2
	x := binaryImages(rng, n*28*28)
	full := m.logitsAt(x, n)
	r := m.reach()
	for _, p := range [][2]int{{0, 0}, {5, 27}, {14, 14}, {27, 3}, {27, 27}, {10, 9}} {
		y, xx := p[0], p[1]
		y0 := max(0, y-r)
		x0, x1 := max(0, xx-r), min(28, xx+r+1)
		wh, ww := y-y0+1, x1-x0
		win := make([]float32, n*wh*ww)
		for b := 0; b < n; b++ {
			for yy := 0; yy < wh; yy++ {
				copy(win[(b*wh+yy)*ww:(b*wh+yy+1)*ww], x[b*784+(y0+yy)*28+x0:b*784+(y0+yy)*28+x1])
			}
		}
		m.forward(win, n, wh, ww)
		for b := 0; b < n; b++ {
			got := m.logit[b*wh*ww+(wh-1)*ww+(xx-x0)]
			want := full[b*784+y*28+xx]
			if math.Abs(float64(got-want)) > 1e-4*math.Max(1, math.Abs(float64(want))) {
				t.Errorf("pixel (%d,%d) image %d: windowed logit %v, full %v", y, xx, b, got, want)
			}
		}
	}
}

// TestThreadsBitIdentical: the gradient does not depend on the thread count.
func TestThreadsBitIdentical(t *testing.T) {
	for _, name := range testSpecs {
		var ref [][]float32
		var refLoss float64
		for _, threads := range []int{1, 2, 3} {
			pool := kernels.NewPool(threads)
			m, err := New(name, pool)
			if err != nil {
				t.Fatal(err)
			}
			m.Init(rand.New(rand.NewPCG(1, 1)))
			x := inputImages(rand.New(rand.NewPCG(2, 2)), m, 4*784)
			loss := m.Grad(x, 4, Noise{Seed: 3, First: 3})
			pool.Close()
			if threads == 1 {
				refLoss = loss
				for _, p := range m.Params() {
					ref = append(ref, append([]float32(nil), p.Grad...))
				}
				continue
			}
			if loss != refLoss {
				t.Errorf("%s: loss %v with %d threads, %v with 1", name, loss, threads, refLoss)
			}
			for i, p := range m.Params() {
				for j := range p.Grad {
					if p.Grad[j] != ref[i][j] {
						t.Fatalf("%s: %s grad[%d] = %v with %d threads, %v with 1", name, p.Name, j, p.Grad[j], threads, ref[i][j])
					}
				}
			}
		}
	}
}

func TestExpandRoundTrip(t *testing.T) {
	l := NewConv("c", 3, 4, 3, MaskB, nil)
	l.Init(rand.New(rand.NewPCG(1, 2)))
	full := l.W.Expand()
	if len(full) != 4*3*9 {
		t.Fatalf("expanded %d values", len(full))
	}
	cp := newParam("c.weight", []int{4, 3, 3, 3}, l.W.Taps)
	if err := cp.SetFromFull(full); err != nil {
		t.Fatal(err)
	}
	for i := range cp.Data {
		if cp.Data[i] != l.W.Data[i] {
			t.Fatalf("round trip differs at %d", i)
		}
	}
	if err := cp.SetFromFull(full[1:]); err == nil {
		t.Fatal("wrong length accepted")
	}
	if tt := l.W.Tensor(); tt.Shape()[0] != 4 || tt.Shape()[1] != 15 {
		t.Fatalf("tensor shape %v", tt.Shape())
	}
}

// TestGradDoesNotAllocate: once its workspaces have grown, a training step
// (forward and backward) allocates nothing.
func TestGradDoesNotAllocate(t *testing.T) {
	for _, name := range testSpecs {
		pool := kernels.NewPool(2)
		m, err := New(name, pool)
		if err != nil {
			t.Fatal(err)
		}
		m.Init(rand.New(rand.NewPCG(1, 1)))
		x := inputImages(rand.New(rand.NewPCG(2, 2)), m, 4*784)
		noise := Noise{Seed: 3, First: 3}
		m.Grad(x, 4, noise)
		if allocs := testing.AllocsPerRun(3, func() { m.Grad(x, 4, noise); m.Loss(x, 4, noise) }); allocs != 0 {
			t.Errorf("%s: %.0f allocations per step", name, allocs)
		}
		pool.Close()
	}
}

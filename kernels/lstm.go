package kernels

import "errors"

// The elementwise passes of a two-dimensional LSTM cell at one position
// (the PixelRNN's): the state at a position is computed from the cell's
// 5n outputs z, gates in the order i, f_left, f_up, o, g (n each), and
// the cells of the left and upper neighbours,
//
//	c = sig(f_left)*c_left + sig(f_up)*c_up + sig(i)*tanh(g)
//	h = sig(o)*tanh(c).
//
// Vectorised (AVX-512 or AVX2+FMA where the CPU has them, over the
// largest multiple of the vector width of the n units; the pure-Go twin
// does the rest and is the whole of the purego build). Every kernel
// performs the same float32 operations in the same order, so all give
// the same bits (see DESIGN.md, "LSTM cell").

// LSTMCell2D is the forward pass at one position for n = len(c) units.
// It adds bias to z and replaces z by the gates: Sigmoid of i, f_left,
// f_up and o, Tanh of g (act.go). Then, with the products rounded one by
// one (no fused multiply-add),
//
//	c  = (f_left*cl + f_up*cu) + i*g
//	tc = Tanh(c)
//	h  = o*tc.
//
// z and bias need 5n values, cl, cu, tc and h n (only those are read or
// written); otherwise it returns an error and writes nothing. The outputs
// must not overlap the inputs or each other.
func LSTMCell2D(z, bias, cl, cu, c, tc, h []float32) error {
	n := len(c)
	if len(z) < 5*n || len(bias) < 5*n || len(cl) < n || len(cu) < n || len(tc) < n || len(h) < n {
		return errors.New("kernels: LSTMCell2D: a slice is shorter than its gates or units")
	}
	if n > 0 {
		lstmBest.fwd(z[:5*n], bias[:5*n], cl[:n], cu[:n], c, tc[:n], h[:n])
	}
	return nil
}

// LSTMCell2DGrad is the backward pass of LSTMCell2D at one position, for
// n = len(tc) units: a holds the gates (LSTMCell2D's z after the call),
// tc = tanh(c), cl and cu the neighbours' cells. The gradient of h comes
// in three parts, dh, dhR and dhD (from the layer above and from the two
// positions that took h as an input), that of c in two, dcR and dcD (from
// those positions). With
//
//	dH = (dh + dhR) + dhD
//	dC = (dcR + dcD) + (dH*o)*(1 - tc*tc)
//
// it replaces the gates by the gradient of the pre-activations,
//
//	i: (dC*g)*(i*(1-i))      f_left: (dC*cl)*(f_left*(1-f_left))
//	o: (dH*tc)*(o*(1-o))     f_up:   (dC*cu)*(f_up*(1-f_up))
//	g: (dC*i)*(1 - g*g)
//
// and writes the gradients of cl and cu, dC*f_left and dC*f_up, into
// dcOut[:n] and dcOut[n:2n]; each product is rounded alone, as written.
// a needs 5n values, dcOut 2n, the others n; otherwise it returns an
// error and writes nothing. dcOut must not overlap the inputs.
func LSTMCell2DGrad(a, tc, cl, cu, dh, dhR, dhD, dcR, dcD, dcOut []float32) error {
	n := len(tc)
	if len(a) < 5*n || len(dcOut) < 2*n || len(cl) < n || len(cu) < n ||
		len(dh) < n || len(dhR) < n || len(dhD) < n || len(dcR) < n || len(dcD) < n {
		return errors.New("kernels: LSTMCell2DGrad: a slice is shorter than its gates or units")
	}
	if n > 0 {
		lstmBest.bwd(a[:5*n], tc, cl[:n], cu[:n], dh[:n], dhR[:n], dhD[:n], dcR[:n], dcD[:n], dcOut[:2*n])
	}
	return nil
}

// lstmKernel is one implementation of the LSTM cell's passes. Both need
// n >= 1 units and every slice of exactly its length (5n for z, bias and
// a, 2n for dcOut, n otherwise). Values of this type are read-only
// tables.
type lstmKernel struct {
	name  string
	lanes int // float32 lanes a vector (1 for Go)
	fwd   func(z, bias, cl, cu, c, tc, h []float32)
	bwd   func(a, tc, cl, cu, dh, dhR, dhD, dcR, dcD, dcOut []float32)
}

// lstmGoKernel is the pure-Go twin.
var lstmGoKernel = &lstmKernel{
	name: "go", lanes: 1,
	fwd: func(z, bias, cl, cu, c, tc, h []float32) { lstmFwdGo(z, bias, cl, cu, c, tc, h, 0, len(c)) },
	bwd: func(a, tc, cl, cu, dh, dhR, dhD, dcR, dcD, dcOut []float32) {
		lstmBwdGo(a, tc, cl, cu, dh, dhR, dhD, dcR, dcD, dcOut, 0, len(tc))
	},
}

// lstmFwdGo is LSTMCell2D for the units j0..j1-1 of n = len(c). The
// explicit conversions round each product alone: Go may otherwise fuse a
// product into the addition that follows it.
func lstmFwdGo(z, bias, cl, cu, c, tc, h []float32, j0, j1 int) {
	n := len(c)
	zi, zf, zu, zo, zg := z[:n], z[n:2*n], z[2*n:3*n], z[3*n:4*n], z[4*n:5*n]
	bi, bf, bu, bo, bg := bias[:n], bias[n:2*n], bias[2*n:3*n], bias[3*n:4*n], bias[4*n:5*n]
	cl, cu, tc, h = cl[:n], cu[:n], tc[:n], h[:n]
	for j := j0; j < j1; j++ {
		i := sigmoid32(zi[j] + bi[j])
		f := sigmoid32(zf[j] + bf[j])
		u := sigmoid32(zu[j] + bu[j])
		o := sigmoid32(zo[j] + bo[j])
		g := tanh32(zg[j] + bg[j])
		zi[j], zf[j], zu[j], zo[j], zg[j] = i, f, u, o, g
		cj := (float32(f*cl[j]) + float32(u*cu[j])) + float32(i*g)
		t := tanh32(cj)
		c[j], tc[j], h[j] = cj, t, o*t
	}
}

// lstmBwdGo is LSTMCell2DGrad for the units j0..j1-1 of n = len(tc).
func lstmBwdGo(a, tc, cl, cu, dh, dhR, dhD, dcR, dcD, dcOut []float32, j0, j1 int) {
	n := len(tc)
	ai, af, au, ao, ag := a[:n], a[n:2*n], a[2*n:3*n], a[3*n:4*n], a[4*n:5*n]
	cl, cu, dh, dhR, dhD, dcR, dcD = cl[:n], cu[:n], dh[:n], dhR[:n], dhD[:n], dcR[:n], dcD[:n]
	dcl, dcu := dcOut[:n], dcOut[n:2*n]
	for j := j0; j < j1; j++ {
		i, f, u, o, g, t := ai[j], af[j], au[j], ao[j], ag[j], tc[j]
		dH := (dh[j] + dhR[j]) + dhD[j]
		dC := (dcR[j] + dcD[j]) + float32(float32(dH*o)*(1-float32(t*t)))
		ai[j] = float32(dC*g) * float32(i*(1-i))
		af[j] = float32(dC*cl[j]) * float32(f*(1-f))
		au[j] = float32(dC*cu[j]) * float32(u*(1-u))
		ao[j] = float32(dH*t) * float32(o*(1-o))
		ag[j] = float32(dC*i) * (1 - float32(g*g))
		dcl[j] = dC * f
		dcu[j] = dC * u
	}
}

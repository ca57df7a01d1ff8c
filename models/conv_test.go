package models

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gencluster/gencluster/kernels"
)

// The explicit convolution the Conv layer used to compute: im2col into a
// (In*Taps) x (n*h*w) matrix, then plain GEMMs, and col2im for the input
// gradient. Conv now never builds that matrix; these tests hold it to the
// explicit path.

// refIm2col builds the im2col matrix of x: cols[c*T+t][b,y,x] =
// x[c][b, y+dy[t], x+dx[t]], zero outside the image.
func refIm2col(l *Conv, x []float32, n, h, w int) []float32 {
	np, hw, t := n*h*w, h*w, len(l.dy)
	cols := make([]float32, l.In*t*np)
	for c := 0; c < l.In; c++ {
		for ti := 0; ti < t; ti++ {
			row := cols[(c*t+ti)*np : (c*t+ti+1)*np]
			for b := 0; b < n; b++ {
				for yy := 0; yy < h; yy++ {
					for xx := 0; xx < w; xx++ {
						sy, sx := yy+l.dy[ti], xx+l.dx[ti]
						if sy >= 0 && sy < h && sx >= 0 && sx < w {
							row[b*hw+yy*w+xx] = x[c*np+b*hw+sy*w+sx]
						}
					}
				}
			}
		}
	}
	return cols
}

// refCol2im is the adjoint of refIm2col: dx[c][b, y+dy, x+dx] +=
// cols[c*T+t][b,y,x], summed tap after tap.
func refCol2im(l *Conv, cols []float32, n, h, w int) []float32 {
	np, hw, t := n*h*w, h*w, len(l.dy)
	dx := make([]float32, l.In*np)
	for c := 0; c < l.In; c++ {
		for ti := 0; ti < t; ti++ {
			row := cols[(c*t+ti)*np : (c*t+ti+1)*np]
			for b := 0; b < n; b++ {
				for yy := 0; yy < h; yy++ {
					for xx := 0; xx < w; xx++ {
						sy, sx := yy+l.dy[ti], xx+l.dx[ti]
						if sy >= 0 && sy < h && sx >= 0 && sx < w {
							dx[c*np+b*hw+sy*w+sx] += row[b*hw+yy*w+xx]
						}
					}
				}
			}
		}
	}
	return dx
}

type convShape struct {
	in, out, k int
	mask       MaskKind
	n, h, w    int
}

func (cs convShape) String() string {
	return fmt.Sprintf("%d->%d k%d mask%d %dx%dx%d", cs.in, cs.out, cs.k, cs.mask, cs.n, cs.h, cs.w)
}

var convShapes = []convShape{
	{1, 64, 7, MaskA, 3, 28, 28},
	{64, 64, 3, MaskB, 2, 28, 28},
	{5, 7, 3, MaskNone, 3, 5, 9},
	{3, 4, 5, MaskB, 2, 3, 4},
	{2, 3, 7, MaskA, 1, 1, 1},
	{4, 6, 3, MaskB, 1, 2, 33},
	{6, 5, 1, MaskNone, 2, 7, 7},
}

// TestConvForwardMatchesExplicit: Forward gives the bits of im2col + Sgemm
// (+ bias, ReLU), on 1, 2 and 3 threads.
func TestConvForwardMatchesExplicit(t *testing.T) {
	for _, threads := range []int{1, 2, 3} {
		pool := kernels.NewPool(threads)
		for _, cs := range convShapes {
			rng := rand.New(rand.NewPCG(7, uint64(cs.k)))
			l := NewConv("c", cs.in, cs.out, cs.k, cs.mask, pool)
			l.Init(rng)
			np := cs.n * cs.h * cs.w
			x := randSlice(rng, cs.in*np, 1)
			cols := refIm2col(l, x, cs.n, cs.h, cs.w)
			want := make([]float32, cs.out*np)
			kernels.Sgemm(pool, false, false, cs.out, np, l.Rows(), 1, l.W.Data, l.Rows(), cols, np, 0, want, np)
			for o := 0; o < cs.out; o++ {
				for i := range want[o*np : (o+1)*np] {
					want[o*np+i] = max(want[o*np+i]+l.B.Data[o], 0)
				}
			}
			y := make([]float32, cs.out*np)
			l.Forward(x, y, cs.n, cs.h, cs.w, true)
			for i := range y {
				if math.Float32bits(y[i]) != math.Float32bits(want[i]) {
					t.Fatalf("%s, %d threads: y[%d] = %v, explicit %v", cs, threads, i, y[i], want[i])
				}
			}
		}
		pool.Close()
	}
}

// TestConvBackwardMatchesExplicit: the weight gradient has the bits of
// Sgemm on the explicit im2col matrix (transposed), the bias gradient and
// the ReLU'd dy are unchanged, and the input gradient is col2im of the
// explicit product within rounding (its sums run in another order), on
// 1, 2 and 3 threads.
func TestConvBackwardMatchesExplicit(t *testing.T) {
	for _, threads := range []int{1, 2, 3} {
		pool := kernels.NewPool(threads)
		for _, cs := range convShapes {
			rng := rand.New(rand.NewPCG(8, uint64(cs.k)))
			l := NewConv("c", cs.in, cs.out, cs.k, cs.mask, pool)
			l.Init(rng)
			np := cs.n * cs.h * cs.w
			rows := l.Rows()
			x := randSlice(rng, cs.in*np, 1)
			dy := randSlice(rng, cs.out*np, 1)
			cols := refIm2col(l, x, cs.n, cs.h, cs.w)
			wantW := make([]float32, cs.out*rows)
			kernels.Sgemm(pool, false, true, cs.out, rows, np, 1, dy, np, cols, np, 0, wantW, rows)
			dcols := make([]float32, rows*np)
			kernels.Sgemm(pool, true, false, rows, np, cs.out, 1, l.W.Data, rows, dy, np, 0, dcols, np)
			wantX := refCol2im(l, dcols, cs.n, cs.h, cs.w)

			dx := make([]float32, cs.in*np)
			l.Backward(x, append([]float32(nil), dy...), dx, cs.n, cs.h, cs.w, nil)
			for i := range wantW {
				if math.Float32bits(l.W.Grad[i]) != math.Float32bits(wantW[i]) {
					t.Fatalf("%s, %d threads: dW[%d] = %v, explicit %v", cs, threads, i, l.W.Grad[i], wantW[i])
				}
			}
			// Each dx sums Out*Taps products of values in [-1, 1] times
			// weights below 1/sqrt(fan in): bound the error by that many
			// ulps of the sum of magnitudes.
			absW := make([]float32, len(l.W.Data))
			absDy := make([]float32, len(dy))
			for i, v := range l.W.Data {
				absW[i] = float32(math.Abs(float64(v)))
			}
			for i, v := range dy {
				absDy[i] = float32(math.Abs(float64(v)))
			}
			absCols := make([]float32, rows*np)
			kernels.SgemmRef(true, false, rows, np, cs.out, 1, absW, rows, absDy, np, 0, absCols, np)
			mag := refCol2im(l, absCols, cs.n, cs.h, cs.w)
			for i := range wantX {
				tol := 2 * float64(cs.out*l.Taps()+2) * math.Pow(2, -24) * float64(mag[i])
				if d := math.Abs(float64(dx[i] - wantX[i])); d > tol || math.IsNaN(float64(dx[i])) {
					t.Fatalf("%s, %d threads: dx[%d] = %v, explicit %v (tol %g)", cs, threads, i, dx[i], wantX[i], tol)
				}
			}
		}
		pool.Close()
	}
}

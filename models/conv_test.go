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
			l.Forward(x, y, cs.n, cs.h, cs.w, make([]float32, l.ColsLen(cs.n, cs.h, cs.w)), true)
			for i := range y {
				if math.Float32bits(y[i]) != math.Float32bits(want[i]) {
					t.Fatalf("%s, %d threads: y[%d] = %v, explicit %v", cs, threads, i, y[i], want[i])
				}
			}
		}
		pool.Close()
	}
}

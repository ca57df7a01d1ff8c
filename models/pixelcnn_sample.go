package models

import (
	"math/rand/v2"

	"github.com/gencluster/gencluster/kernels"
)

// Sampling a PixelCNN. Every activation at a position depends only on the
// pixels before it in raster order (the first layer's mask A hides the
// centre, the later layers' mask B only what comes after it). So when
// pixel p is about to be drawn, every layer's activations at p can be
// computed once and for all from the layers below at p and before it:
// drawing an image costs one forward pass spread over its pixels, instead
// of one (windowed) forward pass per pixel.
//
// The sampler keeps, for each layer's output, the last few rows (as many
// as the next layer's kernel reaches up, plus the current one) laid out
// position-major, [row slot][x][channel][image], so that at each pixel
// every layer is one small GEMM over the batch: its im2col is a copy of
// n-value runs, and its output lands in place in the layer's cache.

// sampler is a PixelCNN's incremental sampling state for n images.
type sampler struct {
	m    *PixelCNN
	n    int
	rows int         // row slots kept per layer
	acts [][]float32 // acts[i]: output of layers[i] (post-ReLU), [rows][width][Out][n]
	col  []float32   // im2col of one position: [In*Taps][n]
	lg   []float32   // logits of the current position: [levels or 1][n]
}

func (m *PixelCNN) newSampler(n int) *sampler {
	reach := 0
	for _, c := range m.layers[1:] {
		reach = max(reach, c.K/2)
	}
	s := &sampler{m: m, n: n, rows: reach + 1, lg: make([]float32, m.o2.Out*n)}
	cl := 0
	for _, c := range m.layers[:len(m.layers)-1] {
		s.acts = append(s.acts, make([]float32, s.rows*m.width*c.Out*n))
		cl = max(cl, c.Rows()*n)
	}
	s.col = make([]float32, cl)
	return s
}

// at is layer i's cached output at (y, x): [Out][n].
func (s *sampler) at(i, y, x int) []float32 {
	out := s.m.layers[i].Out
	o := ((y%s.rows)*s.m.width + x) * out * s.n
	return s.acts[i][o : o+out*s.n]
}

// SampleProgress is Sample calling progress(done, Rows*Cols), if not nil,
// after each pixel position (models.ProgressSampler).
func (m *PixelCNN) SampleProgress(dst []float32, n int, rng *rand.Rand, progress func(done, total int)) {
	h, w := m.height, m.width
	canvas := dst[:n*h*w]
	clear(canvas)
	if n == 0 {
		return
	}
	s := m.newSampler(n)
	last := len(m.layers) - 1
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			// The first layer reads the canvas.
			a := m.a
			for t := range a.dy {
				row := s.col[t*n : (t+1)*n]
				sy, sx := y+a.dy[t], x+a.dx[t]
				if sy < 0 || sy >= h || sx < 0 || sx >= w {
					clear(row)
					continue
				}
				for b := range row {
					row[b] = canvas[b*h*w+sy*w+sx]
				}
			}
			s.layer(0, s.col, y, x, true)
			// The hidden layers read the cache of the one below.
			for i := 1; i < last; i++ {
				s.layer(i, s.gather(i, y, x), y, x, true)
			}
			// The output layer: logits at (y, x).
			o2 := m.layers[last]
			kernels.Sgemm(m.pool, false, false, o2.Out, n, o2.Rows(), 1, o2.W.Data, o2.Rows(), s.at(last-1, y, x), n, 0, s.lg, n)
			for k := 0; k < o2.Out; k++ {
				kernels.AddBias(s.lg[k*n:(k+1)*n], o2.B.Data[k], false)
			}
			for b := 0; b < n; b++ {
				canvas[b*h*w+y*w+x] = m.draw(s.lg[b:], n, rng)
			}
			if progress != nil {
				progress(y*w+x+1, h*w)
			}
		}
	}
}

// gather returns the im2col of layer i at (y, x) from the cache of layer
// i-1: row c*Taps+t holds channel c at tap t for the n images, zero
// outside the image. A 1x1 layer reads the cache in place.
func (s *sampler) gather(i, y, x int) []float32 {
	l, n := s.m.layers[i], s.n
	if l.pointwise() {
		return s.at(i-1, y, x)
	}
	taps := len(l.dy)
	for t := range l.dy {
		sy, sx := y+l.dy[t], x+l.dx[t]
		inside := sy >= 0 && sy < s.m.height && sx >= 0 && sx < s.m.width
		var src []float32
		if inside {
			src = s.at(i-1, sy, sx)
		}
		for c := 0; c < l.In; c++ {
			row := s.col[(c*taps+t)*n : (c*taps+t+1)*n]
			if !inside {
				clear(row)
				continue
			}
			copy(row, src[c*n:(c+1)*n])
		}
	}
	return s.col[:l.Rows()*n]
}

// layer computes layer i at (y, x) from its im2col col into its cache:
// out = W x col + bias, ReLU'd if relu.
func (s *sampler) layer(i int, col []float32, y, x int, relu bool) {
	l, n := s.m.layers[i], s.n
	out := s.at(i, y, x)
	kernels.Sgemm(s.m.pool, false, false, l.Out, n, l.Rows(), 1, l.W.Data, l.Rows(), col, n, 0, out, n)
	for o := 0; o < l.Out; o++ {
		kernels.AddBias(out[o*n:(o+1)*n], l.B.Data[o], relu)
	}
}

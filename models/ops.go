package models

import (
	"math"
	"math/rand/v2"

	"github.com/gencluster/gencluster/kernels"
)

// bceWithLogits returns the summed binary cross-entropy of logits against
// targets x in {0,1} (as torch's binary_cross_entropy_with_logits with
// reduction="sum") and, when grad is not nil, writes its gradient
// sigmoid(l) - x there. It is kernels.BCEWithLogits: with e = exp(-|l|),
// the loss is max(l,0) - l*x + log1p(e) and sigmoid(l) is 1/(1+e) for
// l >= 0, e/(1+e) otherwise, each element in float32 (vectorised), the
// terms summed in float64 in an order fixed by len(logits). Each term is
// within 3e-7 relative of the exact one, each gradient within 2.4e-7.
// x (and grad, if not nil) must be at least as long as logits.
func bceWithLogits(logits, x, grad []float32) float64 {
	return kernels.BCEWithLogits(logits, x, grad)
}

// perImage sums a loss computed image by image over a batch on a pool, one
// image per task unit. Each image's loss is computed alone and the images'
// losses are added in order, so the sum does not depend on the thread
// count. The losses of models share it: bce, softmaxNLL and the
// autoencoder's squared error.
type perImage struct {
	pool   *kernels.Pool
	losses []float64
	image  func(part, i int) float64 // the loss of image i of the call in progress, on part
	fn     func(part, parts int)
}

func newPerImage(pool *kernels.Pool, image func(part, i int) float64) *perImage {
	p := &perImage{pool: pool, image: image}
	p.fn = p.part
	return p
}

// sum is the loss of images 0..n-1.
func (p *perImage) sum(n int) float64 {
	if cap(p.losses) < n {
		p.losses = make([]float64, n)
	}
	p.losses = p.losses[:n]
	p.pool.Run(n, p.fn)
	var s float64
	for _, v := range p.losses {
		s += v
	}
	return s
}

func (p *perImage) part(part, parts int) {
	i0, i1 := kernels.Span(len(p.losses), 1, part, parts)
	for i := i0; i < i1; i++ {
		p.losses[i] = p.image(part, i)
	}
}

// bce runs bceWithLogits over a batch on a pool (perImage).
type bce struct {
	images *perImage

	// arguments of the call in progress
	logits, x, grad []float32
	dim             int
}

func newBCE(pool *kernels.Pool) *bce {
	b := &bce{}
	b.images = newPerImage(pool, b.image)
	return b
}

// loss is bceWithLogits over n images of dim pixels each.
func (b *bce) loss(logits, x, grad []float32, n, dim int) float64 {
	b.logits, b.x, b.grad, b.dim = logits, x, grad, dim
	s := b.images.sum(n)
	b.logits, b.x, b.grad = nil, nil, nil
	return s
}

func (b *bce) image(_, i int) float64 {
	d := b.dim
	var g []float32
	if b.grad != nil {
		g = b.grad[i*d : (i+1)*d]
	}
	return bceWithLogits(b.logits[i*d:(i+1)*d], b.x[i*d:(i+1)*d], g)
}

func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

// level is the grey level (0..255) of a pixel given as byte/255.
func level(x float32) int {
	l := int(x*255 + 0.5)
	return min(max(l, 0), 255)
}

// softmaxNLL is the loss of models with a 256-way softmax per pixel: the
// cross-entropy of each pixel's softmax against its grey level, summed
// over the pixels of an image (torch's cross_entropy with
// reduction="sum"), and its gradient softmax - onehot. Logit k of pixel p
// of the batch is logits[p*pixStride + k*levelStride]: a channel-major
// layout ([levels][pixels], the PixelCNN's) has pixStride 1, a row per
// pixel ([pixels][levels], the PixelRNN's) has levelStride 1.
//
// Pixels go softmaxChunk at a time through a part's scratch laid out
// [level][pixel], so that every pass is a contiguous loop over the
// chunk's pixels and the exponentials one kernels.ExpNegAbs call. Each
// pixel's arithmetic does not depend on the layout, the chunk or the
// thread count: with mx = max l, exp(l[k] - mx) is ExpNegAbs(mx - l[k])
// (float32, vectorised, within 7.63e-8 relatively), the exponentials are
// summed in float64 in level order, and the loss is
// log(sum) + (mx - l[t]). An image's pixel losses are added in pixel
// order, the images' in image order.
type softmaxNLL struct {
	images *perImage
	levels int
	parts  []softmaxScratch

	// arguments of the call in progress
	logits, x, grad        []float32
	dim                    int
	pixStride, levelStride int
}

// softmaxChunk is how many pixels softmaxNLL takes at a time: its scratch
// (16 KB at 256 levels) stays in the L1 cache.
const softmaxChunk = 16

// softmaxScratch is a part's working memory.
type softmaxScratch struct {
	e   []float32 // [level][pixel of the chunk]: mx - l, then its exp
	mx  []float32 // [pixel]: the max logit
	sum []float64 // [pixel]: the sum of the exponentials
}

func newSoftmaxNLL(levels int, pool *kernels.Pool) *softmaxNLL {
	s := &softmaxNLL{levels: levels, parts: make([]softmaxScratch, pool.Threads())}
	for i := range s.parts {
		s.parts[i] = softmaxScratch{
			e:   make([]float32, levels*softmaxChunk),
			mx:  make([]float32, softmaxChunk),
			sum: make([]float64, softmaxChunk),
		}
	}
	s.images = newPerImage(pool, s.image)
	return s
}

// loss is the summed cross-entropy over n images of dim pixels, whose
// targets are x (byte/255); grad, if not nil, is laid out as logits.
func (s *softmaxNLL) loss(logits, x, grad []float32, n, dim, pixStride, levelStride int) float64 {
	s.logits, s.x, s.grad, s.dim = logits, x, grad, dim
	s.pixStride, s.levelStride = pixStride, levelStride
	sum := s.images.sum(n)
	s.logits, s.x, s.grad = nil, nil, nil
	return sum
}

func (s *softmaxNLL) image(part, i int) float64 {
	var loss float64
	for p := i * s.dim; p < (i+1)*s.dim; p += softmaxChunk {
		loss = s.chunk(&s.parts[part], p, min(softmaxChunk, (i+1)*s.dim-p), loss)
	}
	return loss
}

// chunk adds the losses of the P pixels from p0 to loss, in order, and
// returns it (and writes their gradient).
func (s *softmaxNLL) chunk(w *softmaxScratch, p0, P int, loss float64) float64 {
	ps, ks, L := s.pixStride, s.levelStride, s.levels
	l := s.logits[p0*ps:]
	e, mx, sum := w.e[:L*P], w.mx[:P], w.sum[:P]
	for j := range mx {
		mx[j] = l[j*ps]
	}
	for k := 1; k < L; k++ {
		lk := l[k*ks:]
		for j := range mx {
			if v := lk[j*ps]; v > mx[j] {
				mx[j] = v
			}
		}
	}
	for k := 0; k < L; k++ {
		lk, ek := l[k*ks:], e[k*P:(k+1)*P]
		for j, m := range mx {
			ek[j] = m - lk[j*ps]
		}
	}
	kernels.ExpNegAbs(e)
	clear(sum)
	for k := 0; k < L; k++ {
		ek := e[k*P : (k+1)*P]
		for j, v := range ek {
			sum[j] += float64(v)
		}
	}
	for j := range sum {
		t := level(s.x[p0+j])
		loss += math.Log(sum[j]) + float64(mx[j]-l[t*ks+j*ps])
	}
	if s.grad != nil {
		g := s.grad[p0*ps:]
		for j := range sum {
			sum[j] = 1 / sum[j] // now the inverse
		}
		for k := 0; k < L; k++ {
			gk, ek := g[k*ks:], e[k*P:(k+1)*P]
			for j, v := range ek {
				gk[j*ps] = float32(float64(v) * sum[j])
			}
		}
		for j := range sum {
			g[level(s.x[p0+j])*ks+j*ps]--
		}
	}
	return loss
}

// drawLevel draws a level from the softmax of the L logits l[k*ks] with
// the uniform u in [0,1): the first level whose cumulative probability
// exceeds u (the last if rounding leaves u above them all).
func drawLevel(l []float32, ks, L int, u float64) int {
	mx := l[0]
	for k := 1; k < L; k++ {
		mx = max(mx, l[k*ks])
	}
	var sum float64
	for k := 0; k < L; k++ {
		sum += math.Exp(float64(l[k*ks] - mx))
	}
	target := u * sum
	var c float64
	for k := 0; k < L; k++ {
		c += math.Exp(float64(l[k*ks] - mx))
		if target < c {
			return k
		}
	}
	return L - 1
}

// drawPixel draws a pixel of an autoregressive model from its logits
// lg[k*ks] with one uniform from rng: for 2 levels (one Bernoulli logit)
// 1 with probability sigmoid(lg[0]), else 0; for 256 a grey level/255
// from the softmax (drawLevel).
func drawPixel(lg []float32, ks, levels int, rng *rand.Rand) float32 {
	u := rng.Float64()
	if levels == BinaryLevels {
		if u < sigmoid(float64(lg[0])) {
			return 1
		}
		return 0
	}
	return float32(drawLevel(lg, ks, levels, u)) / 255
}

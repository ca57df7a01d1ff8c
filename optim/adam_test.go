package optim

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gencluster/gencluster/kernels"
)

// TestAdamMatchesTorch replays torch.optim.Adam (defaults, lr=0.1) on
// f(p) = sum(p^2)/2 with gradient p, from p = [1, -2, 0.5], in float64;
// the float32 update must follow it closely.
func TestAdamMatchesTorch(t *testing.T) {
	cfg := DefaultAdam()
	cfg.LR = 0.1
	p := []float32{1, -2, 0.5}
	ref := []float64{1, -2, 0.5}
	m := make([]float64, 3)
	v := make([]float64, 3)
	a := NewAdam(cfg, []int{3})
	g := make([]float32, 3)
	for step := 1; step <= 50; step++ {
		copy(g, p)
		if err := a.Step([][]float32{p}, [][]float32{g}, 1); err != nil {
			t.Fatal(err)
		}
		bc1 := 1 - math.Pow(0.9, float64(step))
		bc2 := 1 - math.Pow(0.999, float64(step))
		for i := range ref {
			gr := ref[i]
			m[i] = 0.9*m[i] + 0.1*gr
			v[i] = 0.999*v[i] + 0.001*gr*gr
			ref[i] -= 0.1 / bc1 * m[i] / (math.Sqrt(v[i])/math.Sqrt(bc2) + 1e-8)
		}
	}
	for i := range p {
		if math.Abs(float64(p[i])-ref[i]) > 1e-5 {
			t.Errorf("p[%d] = %v after 50 steps, reference %v", i, p[i], ref[i])
		}
	}
	if a.Steps != 50 {
		t.Errorf("steps = %d", a.Steps)
	}
}

func TestAdamFirstStepIsLR(t *testing.T) {
	// Adam's first step moves every coordinate by lr*sign(g) (up to eps).
	a := NewAdam(DefaultAdam(), []int{2})
	p := []float32{0, 0}
	if err := a.Step([][]float32{p}, [][]float32{{3, -0.01}}, 1); err != nil {
		t.Fatal(err)
	}
	if math.Abs(float64(p[0])+1e-3) > 1e-7 || math.Abs(float64(p[1])-1e-3) > 1e-6 {
		t.Fatalf("first step gave %v", p)
	}
}

func TestAdamRejectsMismatch(t *testing.T) {
	a := NewAdam(DefaultAdam(), []int{2})
	if err := a.Step([][]float32{{1, 2, 3}}, [][]float32{{1, 2, 3}}, 1); err == nil {
		t.Fatal("length mismatch accepted")
	}
	for _, c := range []AdamConfig{{LR: 0, Beta1: .9, Beta2: .999, Eps: 1e-8}, {LR: 1e-3, Beta1: 1, Beta2: .999, Eps: 1e-8}, {LR: math.NaN(), Beta1: .9, Beta2: .999, Eps: 1e-8}} {
		if c.Validate() == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

// TestAdamVectorMatchesScalar: the vector path gives the bits of the Go
// loop, on odd lengths too (the tail runs in Go).
func TestAdamVectorMatchesScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 7, 8, 9, 64, 1001} {
		mk := func(scale float64) []float32 {
			s := make([]float32, n)
			for i := range s {
				s[i] = float32(rng.NormFloat64() * scale)
			}
			return s
		}
		p, m, v, g := mk(1), mk(0.1), mk(0.01), mk(3)
		for i := range v {
			v[i] *= v[i] // second moments are non-negative
		}
		p2, m2, v2 := slices.Clone(p), slices.Clone(m), slices.Clone(v)
		args := []float32{1.0 / 128, 0.9, 0.1, 0.999, 0.001, 1e-3, 0.03, 1e-8}
		k := adamVector(p, m, v, g, args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7])
		adamScalar(p[k:], m[k:], v[k:], g[k:], args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7])
		adamScalar(p2, m2, v2, g, args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7])
		for i := range p {
			if p[i] != p2[i] || m[i] != m2[i] || v[i] != v2[i] {
				t.Fatalf("n=%d [%d] (vector %d of them): p %v/%v m %v/%v v %v/%v", n, i, k, p[i], p2[i], m[i], m2[i], v[i], v2[i])
			}
		}
		t.Logf("n=%d: %d elements on the vector path", n, k)
	}
}

// reverseRunner runs the parts one after the other, last first.
type reverseRunner int

func (r reverseRunner) Run(n int, fn func(part, parts int)) {
	parts := min(n, int(r))
	for p := parts - 1; p >= 0; p-- {
		fn(p, parts)
	}
}

// TestStepOnMatchesStep: spreading the update over threads changes no
// bit, whatever the parts' boundaries (tensors of odd lengths, parts
// cutting through them), on a real pool and on parts run out of order.
func TestStepOnMatchesStep(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	lengths := []int{7, 3 * stepChunk / 2, 1, 40000, 3, stepChunk + 5}
	mk := func() ([][]float32, [][]float32) {
		var ps, gs [][]float32
		for _, n := range lengths {
			p, g := make([]float32, n), make([]float32, n)
			for i := range p {
				p[i] = float32(rng.NormFloat64())
				g[i] = float32(rng.NormFloat64())
			}
			ps, gs = append(ps, p), append(gs, g)
		}
		return ps, gs
	}
	ps, gs := mk()
	clone := func(x [][]float32) [][]float32 {
		var out [][]float32
		for _, s := range x {
			out = append(out, slices.Clone(s))
		}
		return out
	}
	pool := kernels.NewPool(3)
	defer pool.Close()
	for _, r := range []Runner{pool, reverseRunner(2), reverseRunner(5)} {
		want, got := clone(ps), clone(ps)
		a, b := NewAdam(DefaultAdam(), lengths), NewAdam(DefaultAdam(), lengths)
		for step := 0; step < 3; step++ {
			if err := a.Step(want, gs, 0.25); err != nil {
				t.Fatal(err)
			}
			if err := b.StepOn(r, got, gs, 0.25); err != nil {
				t.Fatal(err)
			}
		}
		for i := range want {
			if !slices.Equal(want[i], got[i]) || !slices.Equal(a.M[i], b.M[i]) || !slices.Equal(a.V[i], b.V[i]) {
				t.Fatalf("runner %T: tensor %d differs from Step's", r, i)
			}
		}
		if b.Steps != 3 {
			t.Fatalf("StepOn counted %d steps", b.Steps)
		}
	}
	if err := NewAdam(DefaultAdam(), lengths).StepOn(pool, ps[:2], gs[:2], 1); err == nil {
		t.Error("StepOn accepted two tensors for six")
	}
}

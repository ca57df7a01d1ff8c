package optim

import (
	"math"
	"testing"
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

// Package optim holds the optimizers that turn gradients into parameter
// updates. They work on flat float32 slices so that any replica, given the
// same gradients, applies bit-identical updates.
package optim

import (
	"fmt"
	"math"
)

// AdamConfig is torch.optim.Adam's hyperparameters.
type AdamConfig struct {
	LR, Beta1, Beta2, Eps float64
}

// DefaultAdam is torch.optim.Adam's defaults: lr 1e-3, betas (0.9, 0.999),
// eps 1e-8, no weight decay, no amsgrad.
func DefaultAdam() AdamConfig {
	return AdamConfig{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}
}

// Validate reports hyperparameters that cannot train.
func (c AdamConfig) Validate() error {
	switch {
	case !(c.LR > 0) || math.IsInf(c.LR, 0):
		return fmt.Errorf("adam: learning rate must be a positive number, got %v", c.LR)
	case !(c.Beta1 >= 0 && c.Beta1 < 1):
		return fmt.Errorf("adam: beta1 must be in [0, 1), got %v", c.Beta1)
	case !(c.Beta2 >= 0 && c.Beta2 < 1):
		return fmt.Errorf("adam: beta2 must be in [0, 1), got %v", c.Beta2)
	case !(c.Eps > 0):
		return fmt.Errorf("adam: eps must be positive, got %v", c.Eps)
	}
	return nil
}

// Adam keeps the first and second moment estimates of a set of tensors.
// Tensor i of every Step call must be the same tensor (same length) as in
// the first call.
type Adam struct {
	Config AdamConfig
	Steps  int64       // updates applied so far (torch's state["step"])
	M, V   [][]float32 // moment estimates, one slice per tensor

	par   adamCall              // the StepOn in progress
	parFn func(part, parts int) // stepPart, built once
}

// NewAdam makes an optimizer for tensors of the given lengths.
func NewAdam(cfg AdamConfig, lengths []int) *Adam {
	a := &Adam{Config: cfg}
	for _, n := range lengths {
		a.M = append(a.M, make([]float32, n))
		a.V = append(a.V, make([]float32, n))
	}
	return a
}

// Step applies one update to params[i] from grads[i], with grads scaled by
// gradScale first (e.g. 1/batch to turn summed gradients into means). It
// follows torch.optim.Adam's single-tensor update in float32:
//
//	m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g
//	p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
func (a *Adam) Step(params, grads [][]float32, gradScale float32) error {
	if err := a.check(params, grads); err != nil {
		return err
	}
	a.Steps++
	c := a.coefficients()
	for i, p := range params {
		m, v, g := a.M[i], a.V[i], grads[i]
		k := adamVector(p, m, v, g, gradScale, c.b1, c.c1, c.b2, c.c2, c.step, c.bc2s, c.eps)
		adamScalar(p[k:], m[k:], v[k:], g[k:], gradScale, c.b1, c.c1, c.b2, c.c2, c.step, c.bc2s, c.eps)
	}
	return nil
}

// check reports params and grads that are not the optimizer's tensors.
func (a *Adam) check(params, grads [][]float32) error {
	if len(params) != len(a.M) || len(grads) != len(a.M) {
		return fmt.Errorf("adam: %d params and %d grads for %d tensors", len(params), len(grads), len(a.M))
	}
	for i := range params {
		if len(params[i]) != len(a.M[i]) || len(grads[i]) != len(a.M[i]) {
			return fmt.Errorf("adam: tensor %d has %d values and %d grads, want %d", i, len(params[i]), len(grads[i]), len(a.M[i]))
		}
	}
	return nil
}

// adamCoef is the float32 coefficients of update number Steps.
type adamCoef struct {
	b1, c1, b2, c2, step, bc2s, eps float32
}

func (a *Adam) coefficients() adamCoef {
	c := a.Config
	t := float64(a.Steps)
	bc1 := 1 - math.Pow(c.Beta1, t)
	bc2 := 1 - math.Pow(c.Beta2, t)
	b1, b2 := float32(c.Beta1), float32(c.Beta2)
	return adamCoef{
		b1: b1, c1: 1 - b1, b2: b2, c2: 1 - b2,
		step: float32(c.LR / bc1), bc2s: float32(math.Sqrt(bc2)), eps: float32(c.Eps),
	}
}

// Runner runs fn(part, parts) for part = 0..parts-1 in parallel, with
// parts at most n, and returns when all are done (kernels.Pool).
type Runner interface {
	Run(n int, fn func(part, parts int))
}

// stepChunk is the fewest values a part of StepOn updates: below it, the
// hand-off to another thread costs more than the update.
const stepChunk = 1 << 15

// StepOn is Step with the update spread over r's threads: each part
// updates a range of the values of all the tensors, taken in order.
// Every value's update is the same operations on the same inputs as in
// Step, so the result is bit-identical to Step's on any number of
// threads. r nil is Step.
func (a *Adam) StepOn(r Runner, params, grads [][]float32, gradScale float32) error {
	total := 0
	for _, p := range params {
		total += len(p)
	}
	if r == nil || total < 2*stepChunk {
		return a.Step(params, grads, gradScale)
	}
	if err := a.check(params, grads); err != nil {
		return err
	}
	a.Steps++
	a.par = adamCall{params: params, grads: grads, scale: gradScale, total: total}
	a.par.c = a.coefficients()
	if a.parFn == nil {
		a.parFn = a.stepPart
	}
	r.Run(total/stepChunk, a.parFn)
	a.par = adamCall{}
	return nil
}

// adamCall is the StepOn in progress, read by its parts.
type adamCall struct {
	params, grads [][]float32
	scale         float32
	total         int
	c             adamCoef
}

// stepPart updates values [total*part/parts, total*(part+1)/parts) of the
// tensors taken in order.
func (a *Adam) stepPart(part, parts int) {
	lo, hi := a.par.total*part/parts, a.par.total*(part+1)/parts
	off := 0
	c := a.par.c
	for i, p := range a.par.params {
		n := len(p)
		if off+n <= lo {
			off += n
			continue
		}
		if off >= hi {
			break
		}
		j0, j1 := max(lo-off, 0), min(hi-off, n)
		pp, m, v, g := p[j0:j1], a.M[i][j0:j1], a.V[i][j0:j1], a.par.grads[i][j0:j1]
		k := adamVector(pp, m, v, g, a.par.scale, c.b1, c.c1, c.b2, c.c2, c.step, c.bc2s, c.eps)
		adamScalar(pp[k:], m[k:], v[k:], g[k:], a.par.scale, c.b1, c.c1, c.b2, c.c2, c.step, c.bc2s, c.eps)
		off += n
	}
}

// adamScalar is the update of Step, element by element; adamVector (AVX on
// amd64) does the same operations in the same order, 8 elements at a time,
// and gives the same bits.
func adamScalar(p, m, v, g []float32, scale, b1, c1, b2, c2, step, bc2s, eps float32) {
	// Equal lengths (checked by Step) let the compiler drop bounds checks.
	m, v, g = m[:len(p)], v[:len(p)], g[:len(p)]
	for j := range p {
		gj := g[j] * scale
		mj := b1*m[j] + c1*gj
		vj := b2*v[j] + c2*gj*gj
		m[j], v[j] = mj, vj
		// float32(Sqrt(float64(x))) compiles to one single-precision sqrt
		// and is the correctly rounded float32 square root.
		denom := float32(math.Sqrt(float64(vj)))/bc2s + eps
		p[j] -= step * mj / denom
	}
}

package models

import (
	"math"
	"math/rand/v2"

	"github.com/gencluster/gencluster/kernels"
)

// Linear is a fully connected layer on row-major batches: y[b][out] = x[b][in] W^T + bias.
type Linear struct {
	In, Out int
	W, B    *Param
	pool    *kernels.Pool
}

// linearParams is the parameters of layers ls in order, each weight
// before its bias: the Params of a model made of Linear layers.
func linearParams(ls []*Linear) []*Param {
	ps := make([]*Param, 0, 2*len(ls))
	for _, l := range ls {
		ps = append(ps, l.W, l.B)
	}
	return ps
}

// initLinears initialises layers ls in order from rng.
func initLinears(ls []*Linear, rng *rand.Rand) {
	for _, l := range ls {
		l.Init(rng)
	}
}

// NewLinear makes an in->out layer named prefix.weight ([out,in]) / prefix.bias.
func NewLinear(prefix string, in, out int, pool *kernels.Pool) *Linear {
	return &Linear{
		In: in, Out: out, pool: pool,
		W: newParam(prefix+".weight", []int{out, in}, nil),
		B: newParam(prefix+".bias", []int{out}, nil),
	}
}

// Init draws weights and biases like torch.nn.Linear's default
// (uniform in +-1/sqrt(in)).
func (l *Linear) Init(rng *rand.Rand) {
	bound := 1 / math.Sqrt(float64(l.In))
	for i := range l.W.Data {
		l.W.Data[i] = float32((rng.Float64()*2 - 1) * bound)
	}
	for i := range l.B.Data {
		l.B.Data[i] = float32((rng.Float64()*2 - 1) * bound)
	}
}

// Forward computes y[n][Out] from x[n][In].
func (l *Linear) Forward(x, y []float32, n int) { l.forward(x, y, n, false) }

// ForwardReLU is Forward followed by a ReLU on y (applied in the bias
// pass: y = max(x W^T + bias, 0), kernels.AddBiasRows).
func (l *Linear) ForwardReLU(x, y []float32, n int) { l.forward(x, y, n, true) }

func (l *Linear) forward(x, y []float32, n int, relu bool) {
	kernels.Sgemm(l.pool, false, true, n, l.Out, l.In, 1, x, l.In, l.W.Data, l.In, 0, y, l.Out)
	if err := kernels.AddBiasRows(y[:n*l.Out], l.B.Data, relu); err != nil {
		panic("models: Linear.Forward: " + err.Error())
	}
}

// Backward overwrites W.Grad and B.Grad with the weight and bias gradients
// and, when dx is not nil, writes dLoss/dx into dx, or adds it to dx when
// addDx is set (for inputs that feed several layers).
func (l *Linear) Backward(x, dy, dx []float32, n int, addDx bool) {
	l.BackwardParams(x, dy, n)
	l.BackwardInput(dy, dx, n, addDx)
}

// BackwardParams is the first half of Backward: the weight and bias
// gradients, which are final when it returns (so a gradient hook can hand
// them on while BackwardInput runs).
func (l *Linear) BackwardParams(x, dy []float32, n int) {
	l.BackwardParamsReLU(x, dy, n, nil)
}

// BackwardParamsReLU is BackwardParams for a layer run by ForwardReLU:
// act is its output y and dy the gradient with respect to it, which is
// first multiplied in place by the ReLU's derivative (zeroed where
// act <= 0), in the same pass as the bias gradient. act nil: no ReLU.
// The bias gradient sums each column over the batch in row order
// (kernels.ReLUGradSumRows), whatever the thread count.
func (l *Linear) BackwardParamsReLU(x, dy []float32, n int, act []float32) {
	if act != nil {
		act = act[:n*l.Out]
	}
	if err := kernels.ReLUGradSumRows(l.B.Grad, dy[:n*l.Out], act); err != nil {
		panic("models: Linear.Backward: " + err.Error())
	}
	kernels.Sgemm(l.pool, true, false, l.Out, l.In, n, 1, dy, l.Out, x, l.In, 0, l.W.Grad, l.In)
}

// BackwardInput is the second half of Backward: dLoss/dx (nothing when dx
// is nil).
func (l *Linear) BackwardInput(dy, dx []float32, n int, addDx bool) {
	if dx == nil {
		return
	}
	var beta float32
	if addDx {
		beta = 1
	}
	kernels.Sgemm(l.pool, false, false, n, l.In, l.Out, 1, dy, l.Out, l.W.Data, l.In, beta, dx, l.In)
}

package models

import (
	"fmt"

	"gorgonia.org/tensor"
)

// Param is one learnable tensor of a model together with its gradient.
//
// Data holds the values the model computes with. For dense tensors that is the
// PyTorch layout (conv weights OIHW, linear [out,in]). A masked convolution
// keeps only its unmasked taps: Data is [out][in][len(Taps)] and Taps lists,
// for each kept tap, its index in the kh*kw kernel window; Expand rebuilds the
// full OIHW tensor with zeros at the masked taps.
type Param struct {
	Name  string    // the PyTorch state_dict key, e.g. "bs.0.weight"
	Shape []int     // the PyTorch shape of the full tensor
	Taps  []int     // nil for dense tensors
	Data  []float32 // values, compact layout
	Grad  []float32 // gradient of the loss with respect to Data
}

func newParam(name string, shape []int, taps []int) *Param {
	n := 1
	for _, d := range shape {
		n *= d
	}
	if taps != nil {
		n = shape[0] * shape[1] * len(taps)
	}
	return &Param{Name: name, Shape: shape, Taps: taps, Data: make([]float32, n), Grad: make([]float32, n)}
}

// Len is the number of stored values (compact layout).
func (p *Param) Len() int { return len(p.Data) }

// CompactShape is the shape of Data: Shape for dense tensors, [out, in*taps]
// for masked convolutions.
func (p *Param) CompactShape() []int {
	if p.Taps == nil {
		return append([]int(nil), p.Shape...)
	}
	return []int{p.Shape[0], p.Shape[1] * len(p.Taps)}
}

// Tensor returns a gorgonia tensor that shares Data (no copy).
func (p *Param) Tensor() *tensor.Dense {
	return tensor.New(tensor.WithShape(p.CompactShape()...), tensor.WithBacking(p.Data))
}

// GradTensor returns a gorgonia tensor that shares Grad (no copy).
func (p *Param) GradTensor() *tensor.Dense {
	return tensor.New(tensor.WithShape(p.CompactShape()...), tensor.WithBacking(p.Grad))
}

// Expand returns the full PyTorch-layout values: a copy of Data for dense
// tensors, OIHW with zeros at the masked taps for masked convolutions.
func (p *Param) Expand() []float32 {
	if p.Taps == nil {
		return append([]float32(nil), p.Data...)
	}
	out, in, win := p.Shape[0], p.Shape[1], p.Shape[2]*p.Shape[3]
	full := make([]float32, out*in*win)
	t := len(p.Taps)
	for o := 0; o < out; o++ {
		for c := 0; c < in; c++ {
			src := p.Data[(o*in+c)*t:]
			dst := full[(o*in+c)*win:]
			for i, tap := range p.Taps {
				dst[tap] = src[i]
			}
		}
	}
	return full
}

// Mask returns the 0/1 mask of a masked convolution in OIHW layout, or nil
// for a dense tensor.
func (p *Param) Mask() []float32 {
	if p.Taps == nil {
		return nil
	}
	out, in, win := p.Shape[0], p.Shape[1], p.Shape[2]*p.Shape[3]
	m := make([]float32, out*in*win)
	for oc := 0; oc < out*in; oc++ {
		for _, tap := range p.Taps {
			m[oc*win+tap] = 1
		}
	}
	return m
}

// SetFromFull loads full PyTorch-layout values into Data. Values at masked
// taps are ignored: the mask multiplies them away.
func (p *Param) SetFromFull(full []float32) error {
	n := 1
	for _, d := range p.Shape {
		n *= d
	}
	if len(full) != n {
		return fmt.Errorf("param %s: got %d values, want %d for shape %v", p.Name, len(full), n, p.Shape)
	}
	if p.Taps == nil {
		copy(p.Data, full)
		return nil
	}
	out, in, win := p.Shape[0], p.Shape[1], p.Shape[2]*p.Shape[3]
	t := len(p.Taps)
	for oc := 0; oc < out*in; oc++ {
		for i, tap := range p.Taps {
			p.Data[oc*t+i] = full[oc*win+tap]
		}
	}
	return nil
}

// ZeroGrad sets every gradient of ps to zero.
func ZeroGrad(ps []*Param) {
	for _, p := range ps {
		clear(p.Grad)
	}
}

// Count is the number of stored values of ps.
func Count(ps []*Param) int {
	n := 0
	for _, p := range ps {
		n += len(p.Data)
	}
	return n
}

// reportGrads hands parameters whose gradients are final to a model's
// gradient hook (SetGradHook), in order; nothing if hook is nil.
func reportGrads(hook func(*Param), ps ...*Param) {
	if hook == nil {
		return
	}
	for _, p := range ps {
		hook(p)
	}
}

package training

import (
	"github.com/gencluster/gencluster/models"
	"github.com/gencluster/gencluster/safetensors"
)

// ExportTensors lays out m's parameters as the PyTorch reference's
// state_dict: same keys, full OIHW conv weights (masked taps zero), [out,in]
// linear weights, plus each masked convolution's "<layer>.mask" buffer, so
// scripts/torch_reference.py's models load them even with strict=True.
func ExportTensors(m models.Model) []safetensors.Tensor {
	var ts []safetensors.Tensor
	for _, p := range m.Params() {
		ts = append(ts, safetensors.Tensor{Name: p.Name, Shape: p.Shape, Data: p.Expand()})
		if mask := p.Mask(); mask != nil {
			name := p.Name[:len(p.Name)-len(".weight")] + ".mask"
			ts = append(ts, safetensors.Tensor{Name: name, Shape: p.Shape, Data: mask})
		}
	}
	return ts
}

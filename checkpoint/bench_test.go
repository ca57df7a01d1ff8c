package checkpoint

import (
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkWrite writes a checkpoint shaped like the VAE's: its 650k
// parameters and Adam's two moments, 30 tensors, 7.8 MB.
func BenchmarkWrite(b *testing.B) {
	shapes := [][]int{{400, 784}, {400}, {20, 400}, {20}, {20, 400}, {20}, {400, 20}, {400}, {784, 400}, {784}}
	st := &State{Meta: Meta{Job: Job{Model: "vae", Dataset: "mnist", Batch: 128, TotalSteps: 1000, Seed: 1, LR: 1e-3}, Step: 100}}
	var bytes int64
	for _, group := range []string{"param", "adam.m", "adam.v"} {
		for i, sh := range shapes {
			n := 1
			for _, d := range sh {
				n *= d
			}
			d := make([]float32, n)
			for j := range d {
				d[j] = float32(j%101) * 0.01
			}
			st.Meta.Tensors = append(st.Meta.Tensors, TensorInfo{Name: fmt.Sprintf("%s/t%d", group, i), Shape: sh})
			st.Data = append(st.Data, d)
			bytes += int64(4 * n)
		}
	}
	dir := b.TempDir()
	b.SetBytes(bytes)
	for i := 0; b.Loop(); i++ {
		if _, err := Write(filepath.Join(dir, FileName(int64(i))), st); err != nil {
			b.Fatal(err)
		}
	}
}

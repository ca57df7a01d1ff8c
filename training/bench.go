package training

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/gencluster/gencluster/dataset"
	"github.com/gencluster/gencluster/kernels"
	"github.com/gencluster/gencluster/models"
	"github.com/gencluster/gencluster/optim"
	"github.com/gencluster/gencluster/sharding"
)

// ComputeBench is the result of MeasureCompute (the JSON of
// `gencluster bench compute --json`).
type ComputeBench struct {
	Model        string  `json:"model"`
	Levels       int     `json:"levels,omitempty"` // 256 for grey levels; absent for the default
	Batch        int     `json:"batch"`
	Threads      int     `json:"threads"`
	Steps        int     `json:"steps"`
	Warmup       int     `json:"warmup"`
	Seconds      float64 `json:"seconds"`
	ImagesPerSec float64 `json:"images_per_sec"`
	StepMedianMS float64 `json:"step_median_ms"`
	Loss         float64 `json:"loss"`
	// GFLOPS is the useful rate over the timed steps: the model's
	// matrix-product FLOPs of a training step (models.TrainFLOPs, masked
	// taps not counted) times the steps, over the seconds.
	GFLOPS float64 `json:"gflops"`
	// PeakGFLOPS is this machine's FMA peak on as many threads, measured
	// right after the steps with the widest register-only loop it has
	// (PeakKernel); FractionOfPeak is GFLOPS over it.
	PeakGFLOPS     float64 `json:"peak_gflops"`
	PeakKernel     string  `json:"peak_kernel"`
	FractionOfPeak float64 `json:"fraction_of_peak"`
}

// peakTime is how long MeasureCompute measures the FMA peak.
const peakTime = 500 * time.Millisecond

// MeasureCompute times full training steps (batch assembly, forward,
// backward, Adam) of model on the built-in MNIST training set, as
// scripts/torch_reference.py does: warmup untimed steps, then steps timed ones.
func MeasureCompute(ctx context.Context, model models.Spec, batch, threads, warmup, steps int) (*ComputeBench, error) {
	if batch < 1 || threads < 1 || steps < 1 || warmup < 0 {
		return nil, fmt.Errorf("bench compute: batch, threads and steps must be positive (got %d, %d, %d)", batch, threads, steps)
	}
	images, err := dataset.Open("mnist", dataset.Train)
	if err != nil {
		return nil, err
	}
	pool := kernels.NewPool(threads)
	defer pool.Close()
	model, err = model.Canonical()
	if err != nil {
		return nil, err
	}
	m, err := models.New(model, pool)
	if err != nil {
		return nil, err
	}
	m.Init(rand.New(rand.NewPCG(1, 0)))
	seq, err := sharding.NewSequence(1, images.N, batch)
	if err != nil {
		return nil, err
	}
	opt := optim.NewAdam(optim.DefaultAdam(), ParamLengths(m))
	var params, grads [][]float32
	for _, p := range m.Params() {
		params = append(params, p.Data)
		grads = append(grads, p.Grad)
	}
	dim := m.Rows() * m.Cols()
	grey := models.GreyInput(m)
	x := make([]float32, batch*dim)
	idx := make([]int, batch)
	var loss float64
	step := func(i int) error {
		seq.Global(int64(i), idx)
		for j, id := range idx {
			images.Pixels(id, x[j*dim:(j+1)*dim], grey)
		}
		loss = m.Grad(x, batch, StepNoise(2, int64(i), batch)) / float64(batch)
		return opt.StepOn(pool, params, grads, 1/float32(batch))
	}
	for i := 0; i < warmup; i++ {
		if err := step(i); err != nil {
			return nil, err
		}
	}
	times := make([]float64, steps)
	t0 := time.Now()
	for i := 0; i < steps; i++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("bench compute: %w", err)
		}
		ts := time.Now()
		if err := step(warmup + i); err != nil {
			return nil, err
		}
		times[i] = time.Since(ts).Seconds()
	}
	total := time.Since(t0).Seconds()
	slices.Sort(times)
	r := &ComputeBench{
		Model: model.Name, Levels: model.Levels, Batch: batch, Threads: threads, Steps: steps, Warmup: warmup,
		Seconds: total, ImagesPerSec: float64(batch*steps) / total,
		StepMedianMS: 1000 * times[steps/2], Loss: loss,
	}
	if f, ok := models.TrainFLOPs(m, batch); ok {
		r.GFLOPS = f * float64(steps) / total / 1e9
	}
	peak := kernels.MeasurePeak(kernels.PeakKernels()[0], threads, peakTime)
	r.PeakGFLOPS, r.PeakKernel = peak.GFLOPS, peak.Kernel
	if peak.GFLOPS > 0 {
		r.FractionOfPeak = r.GFLOPS / peak.GFLOPS
	}
	return r, nil
}

package main

import (
	"fmt"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/gencluster/gencluster/kernels"
	"github.com/gencluster/gencluster/models"
)

// peakJSON is `gencluster bench peak --json`.
type peakJSON struct {
	Threads int `json:"threads"`
	// Peaks: each register-only FMA loop this CPU has (widest first; the
	// pure-Go one last), on Threads threads.
	Peaks []kernels.Peak `json:"peaks"`
	// GEMMs: the training step's matrix products of each model at its
	// benchmark batch (pixelcnn 32, vae 128), timed with Sgemm on Threads
	// threads, against the widest loop's peak.
	GEMMs []gemmJSON `json:"gemms"`
}

type gemmJSON struct {
	Model          string  `json:"model"`
	Batch          int     `json:"batch"`
	Name           string  `json:"name"`
	M              int     `json:"m"`
	N              int     `json:"n"`
	K              int     `json:"k"`
	TransA         bool    `json:"trans_a"`
	TransB         bool    `json:"trans_b"`
	Seconds        float64 `json:"seconds"` // median of the timed runs
	GFLOPS         float64 `json:"gflops"`
	FractionOfPeak float64 `json:"fraction_of_peak"`
}

func (a *app) benchPeakCommand() *cobra.Command {
	var threads, runs int
	var seconds time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "peak [--threads T] [--json]",
		Short: "This machine's float32 FMA peak, and the rate of our SGEMM at the models' shapes against it",
		Long: `Measure the float32 FMA peak of this machine: a loop of fused multiply-adds
on registers only (no memory traffic, enough independent accumulators to
hide the latency) for each SIMD width the CPU has (avx512, avx2) and the
pure-Go loop, on --threads threads at once. Then time every matrix product
of a training step of each model (pixelcnn at batch 32, vae at batch 128:
the shapes bench compute runs) with our SGEMM on --threads threads, and
report each one's GFLOP/s and its fraction of the widest loop's peak.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if threads < 1 || runs < 1 {
				return fmt.Errorf("--threads and --runs must be positive (got %d, %d)", threads, runs)
			}
			out := peakJSON{Threads: threads, Peaks: []kernels.Peak{}, GEMMs: []gemmJSON{}}
			for _, k := range kernels.PeakKernels() {
				if err := k.Check(1000); err != nil {
					return err
				}
				out.Peaks = append(out.Peaks, kernels.MeasurePeak(k, threads, seconds))
			}
			best := out.Peaks[0].GFLOPS
			pool := kernels.NewPool(threads)
			defer pool.Close()
			for _, mb := range []struct {
				model string
				batch int
			}{{models.PixelCNNName, 32}, {models.VAEName, 128}} {
				m, err := models.New(models.Spec{Name: mb.model}, nil)
				if err != nil {
					return err
				}
				for _, g := range m.(models.GEMMLister).TrainGEMMs(mb.batch) {
					if err := cmd.Context().Err(); err != nil {
						return err
					}
					s := timeGEMM(pool, g, runs)
					gf := g.FLOPs() / s / 1e9
					out.GEMMs = append(out.GEMMs, gemmJSON{Model: mb.model, Batch: mb.batch, Name: g.Name, M: g.M, N: g.N, K: g.K,
						TransA: g.TransA, TransB: g.TransB, Seconds: s, GFLOPS: gf, FractionOfPeak: gf / best})
				}
			}
			if asJSON {
				return a.printJSON(out)
			}
			fmt.Fprintf(a.stdout, "FMA peak on %d threads (%s/%s):\n", threads, runtime.GOOS, runtime.GOARCH)
			for _, p := range out.Peaks {
				fmt.Fprintf(a.stdout, "  %-7s %2d lanes  %8.1f GFLOP/s\n", p.Kernel, p.Width, p.GFLOPS)
			}
			fmt.Fprintf(a.stdout, "SGEMM at the models' shapes (fraction of the %s peak):\n", out.Peaks[0].Kernel)
			for _, g := range out.GEMMs {
				fmt.Fprintf(a.stdout, "  %-8s %-22s %5d x %6d x %6d  %8.1f GFLOP/s  %5.1f%%\n", g.Model, g.Name, g.M, g.N, g.K, g.GFLOPS, 100*g.FractionOfPeak)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&threads, "threads", 1, "threads to run on")
	cmd.Flags().DurationVar(&seconds, "time", time.Second, "how long to run each peak loop")
	cmd.Flags().IntVar(&runs, "runs", 5, "timed runs of each matrix product (the median is reported)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: threads, peaks (kernel, width, gflops), gemms (model, name, m, n, k, gflops, fraction_of_peak)")
	return cmd
}

// timeGEMM runs g with Sgemm on pool once untimed and runs times timed,
// and returns the median seconds.
func timeGEMM(pool *kernels.Pool, g models.GEMM, runs int) float64 {
	lda, ldb := g.K, g.N
	if g.TransA {
		lda = g.M
	}
	if g.TransB {
		ldb = g.K
	}
	a := make([]float32, g.M*g.K)
	b := make([]float32, g.K*g.N)
	c := make([]float32, g.M*g.N)
	for i := range a {
		a[i] = float32(i%7) * 0.25
	}
	for i := range b {
		b[i] = float32(i%5) * 0.5
	}
	times := make([]float64, runs)
	for i := -1; i < runs; i++ {
		t := time.Now()
		kernels.Sgemm(pool, g.TransA, g.TransB, g.M, g.N, g.K, 1, a, lda, b, ldb, 0, c, g.N)
		if i >= 0 {
			times[i] = time.Since(t).Seconds()
		}
	}
	return median(times)
}

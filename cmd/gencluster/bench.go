package main

import (
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/spf13/cobra"

	"github.com/gencluster/gencluster/models"
	"github.com/gencluster/gencluster/training"
)

func (a *app) benchCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench compute|peak|allreduce|cluster ...",
		Short: "Measure speed: training images/s of one process, the FMA peak and SGEMM against it, ring all-reduce time, the cluster's overhead and recovery",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fmt.Errorf("bench needs a subcommand: compute, peak, allreduce or cluster")
		},
	}
	var profile string
	cmd.PersistentFlags().StringVar(&profile, "cpuprofile", "", "write a CPU profile of the measurement to this file (read it with go tool pprof)")
	var stop func() error
	cmd.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if err := a.setup(cmd); err != nil {
			return err
		}
		var err error
		stop, err = startCPUProfile(profile)
		return err
	}
	cmd.PersistentPostRunE = func(*cobra.Command, []string) error { return stop() }
	cmd.AddCommand(a.benchComputeCommand(), a.benchPeakCommand(), a.benchAllreduceCommand(), a.benchAllreduceMemberCommand(), a.benchClusterCommand())
	return cmd
}

// startCPUProfile starts writing a CPU profile to path ("" for none) and
// returns the function that ends it.
func startCPUProfile(path string) (func() error, error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile %s: %w", path, err)
	}
	return func() error {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			return fmt.Errorf("cpu profile %s: %w", path, err)
		}
		return nil
	}, nil
}

func (a *app) benchComputeCommand() *cobra.Command {
	var model string
	var levels, batch, threads, steps, warmup int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "compute --model M [--levels 256] --batch B --threads T [--steps N] [--json]",
		Short: "Training images/s of one process (as scripts/torch_reference.py compute measures PyTorch)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := training.MeasureCompute(cmd.Context(), models.Spec{Name: model, Levels: levels}, batch, threads, warmup, steps)
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(r)
			}
			fmt.Fprintf(a.stdout, "%s batch=%d steps=%d threads=%d images_per_s=%.1f step_median_ms=%.2f loss=%.2f gflops=%.1f peak_gflops=%.1f (%s) fraction_of_peak=%.3f\n",
				models.Spec{Name: r.Model, Levels: r.Levels}, r.Batch, r.Steps, r.Threads, r.ImagesPerSec, r.StepMedianMS, r.Loss, r.GFLOPS, r.PeakGFLOPS, r.PeakKernel, r.FractionOfPeak)
			return nil
		},
	}
	cmd.Flags().StringVar(&model, "model", "pixelcnn", "model: pixelcnn, vae, pixelrnn or ae")
	cmd.Flags().IntVar(&levels, "levels", 0, "pixel levels of pixelcnn and pixelrnn: 2 (default) or 256")
	cmd.Flags().IntVar(&batch, "batch", 32, "batch size")
	cmd.Flags().IntVar(&threads, "threads", 1, "compute threads")
	cmd.Flags().IntVar(&steps, "steps", 20, "timed steps")
	cmd.Flags().IntVar(&warmup, "warmup", 3, "untimed warm-up steps")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: images_per_sec, gflops, fraction_of_peak and the settings")
	return cmd
}

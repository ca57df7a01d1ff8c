package main

import (
	"fmt"

	"github.com/spf13/cobra"

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
	cmd.AddCommand(a.benchComputeCommand(), a.benchPeakCommand(), a.benchAllreduceCommand(), a.benchAllreduceMemberCommand(), a.benchClusterCommand())
	return cmd
}

func (a *app) benchComputeCommand() *cobra.Command {
	var model string
	var batch, threads, steps, warmup int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "compute --model M --batch B --threads T [--steps N] [--json]",
		Short: "Training images/s of one process (as scripts/torch_reference.py compute measures PyTorch)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := training.MeasureCompute(cmd.Context(), model, batch, threads, warmup, steps)
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(r)
			}
			fmt.Fprintf(a.stdout, "%s batch=%d steps=%d threads=%d images_per_s=%.1f step_median_ms=%.2f loss=%.2f gflops=%.1f peak_gflops=%.1f (%s) fraction_of_peak=%.3f\n",
				r.Model, r.Batch, r.Steps, r.Threads, r.ImagesPerSec, r.StepMedianMS, r.Loss, r.GFLOPS, r.PeakGFLOPS, r.PeakKernel, r.FractionOfPeak)
			return nil
		},
	}
	cmd.Flags().StringVar(&model, "model", "pixelcnn", "model: pixelcnn or vae")
	cmd.Flags().IntVar(&batch, "batch", 32, "batch size")
	cmd.Flags().IntVar(&threads, "threads", 1, "compute threads")
	cmd.Flags().IntVar(&steps, "steps", 20, "timed steps")
	cmd.Flags().IntVar(&warmup, "warmup", 3, "untimed warm-up steps")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: images_per_sec, gflops, fraction_of_peak and the settings")
	return cmd
}

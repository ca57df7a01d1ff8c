package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/coordinator"
)

func (a *app) submitCommand() *cobra.Command {
	var jf jobFlags
	var addrs string
	var minWorkers, keep, samples, bucketKiB int
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "submit --coordinator ADDR --model pixelcnn|vae|pixelrnn|ae [--levels 256] (--steps N | --epochs E) [flags]",
		Short: "Queue a training job on the cluster and print its id",
		Long: `Queue a training job on the cluster and print its id.

With --epochs the coordinator that takes the job sets its steps from the
data set as it reads it (as train counts them: a partial step is not run);
the steps are logged to stderr.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ms, err := jf.spec()
			if err != nil {
				return err
			}
			switch {
			case jf.steps > 0 && jf.epochs != 0:
				return errors.New("give --steps or --epochs, not both")
			case jf.steps < 1 && !(jf.epochs > 0):
				return errors.New("give --steps N (at least 1) or --epochs E (a positive number)")
			}
			spec := &pb.JobSpec{
				Model: ms.Name, Levels: int32(ms.Levels), Dataset: jf.dataset, Batch: int32(jf.batch), Steps: jf.steps, Lr: jf.lr,
				Seed: jf.seed, CheckpointEvery: jf.checkpointEvery, MinWorkers: int32(minWorkers), Keep: int32(keep),
				Samples: int32(samples), BucketKib: int32(bucketKiB),
			}
			check := proto.CloneOf(spec)
			check.Steps = max(check.Steps, 1) // set by the coordinator from --epochs
			if err := coordinator.ValidateJobSpec(check); err != nil {
				return err
			}
			return a.withCoordinators(cmd.Context(), addrs, timeout, func(ctx context.Context, c *coordinator.Client) error {
				id, steps, err := c.SubmitEpochs(ctx, spec, jf.epochs)
				if err != nil {
					return err
				}
				if jf.epochs > 0 {
					a.log.Info("job submitted", "job", id, "epochs", jf.epochs, "steps", steps)
				}
				fmt.Fprintln(a.stdout, id)
				return nil
			})
		},
	}
	jf.register(cmd)
	cmd.Flags().StringVar(&addrs, "coordinator", "", "coordinator address(es), comma-separated (required)")
	cmd.Flags().IntVar(&minWorkers, "min-workers", 1, "hold the job until this many workers are in the ring")
	cmd.Flags().IntVar(&keep, "keep", 0, "checkpoints of the job the coordinators keep (default 3)")
	cmd.Flags().IntVar(&samples, "samples", dashboardSamples, "images rank 0 samples from each checkpoint for the dashboard's grid (0: none)")
	cmd.Flags().IntVar(&bucketKiB, "bucket-kib", 0, bucketKiBUsage)
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Second, "give up when no coordinator answers within this")
	return cmd
}

// bucketKiBUsage is the help of submit's and local's --bucket-kib.
const bucketKiBUsage = "gradient bucket cap in KiB: gradients are fused, in backward's order, into buckets of at least this size, each summed over the ring as soon as backward has finished it (0: an eighth of the model's gradients, at least 64)"

// dashboardSamples is the size of the dashboard's sample grid (0.1 s of
// one core for a PixelCNN, which samples with cached activations).
const dashboardSamples = 16

func (a *app) cancelCommand() *cobra.Command {
	var addrs, reason string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "cancel --coordinator ADDR JOB",
		Short: "Remove a queued job, or stop a running one (the next queued job starts)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withCoordinators(cmd.Context(), addrs, timeout, func(ctx context.Context, c *coordinator.Client) error {
				next, err := c.Cancel(ctx, args[0], reason)
				if err != nil {
					return fmt.Errorf("cancel %s: %w", args[0], err)
				}
				if next != "" {
					fmt.Fprintf(a.stdout, "cancelled %s; %s started\n", args[0], next)
				} else {
					fmt.Fprintf(a.stdout, "cancelled %s\n", args[0])
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&addrs, "coordinator", "", "coordinator address(es), comma-separated (required)")
	cmd.Flags().StringVar(&reason, "reason", "", "why (shown by status)")
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Second, "give up when no coordinator answers within this")
	return cmd
}

package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/coordinator"
)

func (a *app) submitCommand() *cobra.Command {
	var jf jobFlags
	var addrs string
	var minWorkers, keep int
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "submit --coordinator ADDR --model pixelcnn|vae --steps N [flags]",
		Short: "Queue a training job on the cluster and print its id",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if jf.model == "" {
				return errors.New("--model is required (pixelcnn or vae)")
			}
			if jf.steps < 1 {
				return errors.New("--steps N (at least 1) is required")
			}
			spec := &pb.JobSpec{
				Model: jf.model, Dataset: jf.dataset, Batch: int32(jf.batch), Steps: jf.steps, Lr: jf.lr,
				Seed: jf.seed, CheckpointEvery: jf.checkpointEvery, MinWorkers: int32(minWorkers), Keep: int32(keep),
			}
			if err := coordinator.ValidateJobSpec(spec); err != nil {
				return err
			}
			return a.withCoordinators(cmd.Context(), addrs, timeout, func(ctx context.Context, c *coordinator.Client) error {
				id, err := c.Submit(ctx, spec)
				if err != nil {
					return err
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
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Second, "give up when no coordinator answers within this")
	return cmd
}

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

package main

import (
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/gencluster/gencluster/models"
	"github.com/gencluster/gencluster/training"
)

// jobFlags are the flags shared by train, submit and local (docs/CLI.md).
type jobFlags struct {
	model, dataset  string
	levels          int
	batch           int
	steps           int64
	epochs          float64
	lr              float64
	seed            uint64
	checkpointEvery int64
}

func (f *jobFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.model, "model", "", "model to train: pixelcnn, vae, pixelrnn or ae (required)")
	fl.IntVar(&f.levels, "levels", 0, "pixel levels of pixelcnn and pixelrnn: 2 (thresholded pixels, the default) or 256 (grey levels, a softmax each)")
	fl.StringVar(&f.dataset, "dataset", "mnist", "data set: mnist (built in) or idx:DIR")
	fl.IntVar(&f.batch, "batch", 64, "global batch size")
	fl.Int64Var(&f.steps, "steps", 0, "optimizer steps to run (or give --epochs)")
	fl.Float64Var(&f.epochs, "epochs", 0, "passes over the training set (instead of --steps)")
	fl.Float64Var(&f.lr, "lr", 1e-3, "Adam learning rate")
	fl.Uint64Var(&f.seed, "seed", 1, "seed for initialisation, data order and noise")
	fl.Int64Var(&f.checkpointEvery, "checkpoint-every", 100, "steps between checkpoints (0: only the last step)")
}

// spec is the model the flags name, checked (models.Spec.Canonical).
func (f *jobFlags) spec() (models.Spec, error) {
	if f.model == "" {
		return models.Spec{}, errors.New("--model is required (pixelcnn, vae, pixelrnn or ae)")
	}
	s, err := models.Spec{Name: f.model, Levels: f.levels}.Canonical()
	if err != nil {
		return s, fmt.Errorf("--model %s --levels %d: %w", f.model, f.levels, err)
	}
	return s, nil
}

func (a *app) trainCommand() *cobra.Command {
	var jf jobFlags
	var pf plotFlags
	var threads, keep, samples int
	var out string
	cmd := &cobra.Command{
		Use:   "train --model pixelcnn|vae|pixelrnn|ae [--levels 256] (--steps N | --epochs E) --out DIR",
		Short: "Train a model in this process (no cluster)",
		Long: `Train a model in one process. Progress (step, loss, images/s, ETA) is shown
as it goes: a bar on a terminal, a line every two seconds otherwise. DIR
receives checkpoints (ckpt-<step>.db), loss.csv, test_loss.csv (the test
split's loss, at the end or at every checkpoint: --test-loss), loss.png (both)
and samples.png. Running again with the same settings and DIR resumes from the
newest good checkpoint.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ms, err := jf.spec()
			if err != nil {
				return err
			}
			testLoss, err := pf.parse(true)
			if err != nil {
				return err
			}
			cfg := training.Config{
				Model: ms.Name, Levels: ms.Levels, Dataset: jf.dataset, Batch: jf.batch, Steps: jf.steps, Epochs: jf.epochs,
				Seed: jf.seed, LR: jf.lr, Threads: threads, Out: out, CheckpointEvery: jf.checkpointEvery,
				Keep: keep, Samples: samples, TestLoss: testLoss, LossLogScale: pf.logScale,
			}
			if cfg.Threads == 0 {
				cfg.Threads = runtime.NumCPU()
			}
			prog := a.progress("train", "steps")
			lowerGCHeadroom()
			res, err := training.Train(cmd.Context(), cfg, func(p training.Progress) {
				prog.update(p.Step, p.Total, fmt.Sprintf("loss %.3f  %.1f img/s", p.Loss, p.ImagesPerSec))
				if prog.lineDue(p.Step == p.Total) {
					fmt.Fprintln(a.stdout, trainLine(p))
				}
			}, a.log)
			prog.finish()
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "done: step %d, loss %.3f, %s; checkpoint %s\n", res.Step, res.Loss, res.Elapsed.Round(time.Second), res.Checkpoint)
			return nil
		},
	}
	jf.register(cmd)
	pf.register(cmd, true)
	cmd.Flags().IntVar(&threads, "threads", 0, "compute threads (0: all cores)")
	cmd.Flags().StringVar(&out, "out", "", "output directory (required)")
	cmd.Flags().IntVar(&keep, "keep", 3, "checkpoints to keep in --out")
	cmd.Flags().IntVar(&samples, "samples", 64, "images in the final sample grid (0: none)")
	return cmd
}

// trainLine is train's progress line when stdout is not a terminal.
func trainLine(p training.Progress) string {
	return fmt.Sprintf("step %d/%d (%.1f%%)  loss %.3f  %.1f img/s  elapsed %s  eta %s",
		p.Step, p.Total, 100*float64(p.Step)/float64(p.Total), p.Loss, p.ImagesPerSec,
		p.Elapsed.Round(time.Second), p.ETA.Round(time.Second))
}

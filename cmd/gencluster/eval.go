package main

import (
	"fmt"
	"math"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/gencluster/gencluster/dataset"
	"github.com/gencluster/gencluster/kernels"
	"github.com/gencluster/gencluster/training"
)

// evalResult is the stable JSON of `gencluster eval --json`.
type evalResult struct {
	Model      string  `json:"model"`
	Checkpoint string  `json:"checkpoint"`
	Step       int64   `json:"step"`
	Dataset    string  `json:"dataset"`
	Split      string  `json:"split"`
	Images     int     `json:"images"`
	NLLNats    float64 `json:"nll_nats"`
	BitsPerDim float64 `json:"bits_per_dim"`
}

func (a *app) evalCommand() *cobra.Command {
	var path, ds, split string
	var threads, batch int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "eval --checkpoint PATH [--dataset D] [--split test] [--json]",
		Short: "Report a checkpoint's loss (nats per image, bits/dim) on a data set",
		Long: `Report the mean loss of a checkpoint's model over a split of a data set, in
nats per image and bits per dimension (nats / (pixels * ln 2)). For the VAE it
is the negative ELBO with one noise sample per image (an upper bound on the
NLL), with fixed noise so that runs repeat. PATH is a checkpoint file or a
directory (its newest good checkpoint is used). On a terminal a bar shows the
images done.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sp, err := dataset.ParseSplit(split)
			if err != nil {
				return err
			}
			if batch < 1 {
				return fmt.Errorf("--batch must be at least 1, got %d", batch)
			}
			if threads <= 0 {
				threads = runtime.NumCPU()
			}
			pool := kernels.NewPool(threads)
			defer pool.Close()
			m, st, file, err := a.loadModel(path, pool)
			if err != nil {
				return err
			}
			if ds == "" {
				ds = st.Meta.Job.Dataset
			}
			set, err := dataset.Open(ds, sp)
			if err != nil {
				return err
			}
			if err := dataset.CheckShape(set, m.Rows(), m.Cols()); err != nil {
				return err
			}
			prog := a.progress("eval", "images")
			nats, err := training.EvaluateProgress(cmd.Context(), m, set, batch, 0, func(done, total int) {
				prog.update(int64(done), int64(total), "")
			})
			prog.finish()
			if err != nil {
				return err
			}
			r := evalResult{
				Model: m.Name(), Checkpoint: file, Step: st.Meta.Step, Dataset: ds, Split: string(sp),
				Images: set.N, NLLNats: nats, BitsPerDim: nats / (float64(m.Rows()*m.Cols()) * math.Ln2),
			}
			if asJSON {
				return a.printJSON(r)
			}
			fmt.Fprintf(a.stdout, "%s step %d on %s %s (%d images): %.3f nats/image, %.4f bits/dim\n",
				r.Model, r.Step, r.Dataset, r.Split, r.Images, r.NLLNats, r.BitsPerDim)
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "checkpoint", "", "checkpoint file or directory (required)")
	cmd.Flags().StringVar(&ds, "dataset", "", "data set: mnist or idx:DIR (default: the checkpoint's)")
	cmd.Flags().StringVar(&split, "split", "test", "split: test or train")
	cmd.Flags().IntVar(&threads, "threads", 0, "compute threads (0: all cores)")
	cmd.Flags().IntVar(&batch, "batch", 500, "images per forward pass")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: nll_nats, bits_per_dim, images, ...")
	return cmd
}

package main

import (
	"context"
	"fmt"
	"math"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/gencluster/gencluster/dataset"
	"github.com/gencluster/gencluster/kernels"
	"github.com/gencluster/gencluster/models"
	"github.com/gencluster/gencluster/training"
)

// evalResult is the stable JSON of `gencluster eval --json`. A density
// model (pixelcnn, vae, pixelrnn) reports nll_nats and bits_per_dim; the
// autoencoder, which is not one, reports l2_per_image instead, and with
// --probe the linear probe's probe_accuracy.
type evalResult struct {
	Model      string   `json:"model"`
	Levels     int      `json:"levels,omitempty"` // 256 for grey levels; absent for the default
	Checkpoint string   `json:"checkpoint"`
	Step       int64    `json:"step"`
	Dataset    string   `json:"dataset"`
	Split      string   `json:"split"`
	Images     int      `json:"images"`
	NLLNats    *float64 `json:"nll_nats,omitempty"`
	BitsPerDim *float64 `json:"bits_per_dim,omitempty"`
	L2         *float64 `json:"l2_per_image,omitempty"`
	// ProbeAccuracy is the test accuracy of a linear probe on the codes
	// (training.Probe), fitted on the train split of the data set.
	ProbeAccuracy *float64 `json:"probe_accuracy,omitempty"`
}

func (a *app) evalCommand() *cobra.Command {
	var path, ds, split string
	var threads, batch int
	var asJSON, probe bool
	cmd := &cobra.Command{
		Use:   "eval --checkpoint PATH [--dataset D] [--split test] [--probe] [--json]",
		Short: "Report a checkpoint's loss (nats per image, bits/dim; L2 for ae) on a data set",
		Long: `Report the mean loss of a checkpoint's model over a split of a data set, in
nats per image and bits per dimension (nats / (pixels * ln 2)). For the VAE it
is the negative ELBO with one noise sample per image (an upper bound on the
NLL), with fixed noise so that runs repeat. For the autoencoder (ae), which is
not a density model, it is the squared error of the reconstruction per image
(grey levels in [0,1]); --probe also fits a linear probe (logistic regression
on the 20-dimensional codes of the train split: Adam lr 0.01, 20 epochs, batch
256) and reports its accuracy on --split, which needs the data set's labels.
PATH is a checkpoint file or a directory (its newest good checkpoint is used).
On a terminal a bar shows the images done.`,
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
			if _, ok := m.(models.Encoder); probe && !ok {
				return fmt.Errorf("--probe: the %s model has no codes to probe (only ae does)", m.Name())
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
			ms := training.ModelSpec(st.Meta.Job)
			r := evalResult{
				Model: m.Name(), Levels: ms.Levels, Checkpoint: file, Step: st.Meta.Step, Dataset: ds, Split: string(sp),
				Images: set.N,
			}
			if _, ok := m.(models.Reconstructor); ok {
				r.L2 = &nats
			} else {
				bits := nats / (float64(m.Rows()*m.Cols()) * math.Ln2)
				r.NLLNats, r.BitsPerDim = &nats, &bits
			}
			if probe {
				acc, err := a.probe(cmd.Context(), m, ds, set, sp, st.Meta.Job.Seed)
				if err != nil {
					return err
				}
				r.ProbeAccuracy = &acc
			}
			if asJSON {
				return a.printJSON(r)
			}
			fmt.Fprintf(a.stdout, "%s step %d on %s %s (%d images): ", ms, r.Step, r.Dataset, r.Split, r.Images)
			if r.L2 != nil {
				fmt.Fprintf(a.stdout, "%.3f squared error/image", *r.L2)
			} else {
				fmt.Fprintf(a.stdout, "%.3f nats/image, %.4f bits/dim", *r.NLLNats, *r.BitsPerDim)
			}
			if r.ProbeAccuracy != nil {
				fmt.Fprintf(a.stdout, ", linear probe accuracy %.4f", *r.ProbeAccuracy)
			}
			fmt.Fprintln(a.stdout)
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "checkpoint", "", "checkpoint file or directory (required)")
	cmd.Flags().StringVar(&ds, "dataset", "", "data set: mnist or idx:DIR (default: the checkpoint's)")
	cmd.Flags().StringVar(&split, "split", "test", "split: test or train")
	cmd.Flags().IntVar(&threads, "threads", 0, "compute threads (0: all cores)")
	cmd.Flags().IntVar(&batch, "batch", 500, "images per forward pass")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: nll_nats, bits_per_dim (l2_per_image for ae), images, ...")
	cmd.Flags().BoolVar(&probe, "probe", false, "ae only: also report the accuracy of a linear probe on the codes (needs the data set's labels)")
	return cmd
}

// probe fits the linear probe of an autoencoder's codes on the train split
// of ds and scores it on set, the split sp.
func (a *app) probe(ctx context.Context, m models.Model, ds string, set *dataset.Images, sp dataset.Split, seed uint64) (float64, error) {
	train := set
	if sp != dataset.Train {
		var err error
		if train, err = dataset.Open(ds, dataset.Train); err != nil {
			return 0, fmt.Errorf("--probe: %w", err)
		}
	}
	trainLabels, err := dataset.Labels(ds, dataset.Train)
	if err != nil {
		return 0, fmt.Errorf("--probe needs labels: %w", err)
	}
	labels, err := dataset.Labels(ds, sp)
	if err != nil {
		return 0, fmt.Errorf("--probe needs labels: %w", err)
	}
	a.log.Info("fitting the linear probe", "train_images", train.N, "epochs", training.ProbeEpochs)
	r, err := training.Probe(ctx, m, train, set, trainLabels, labels, seed)
	if err != nil {
		return 0, err
	}
	a.log.Info("linear probe fitted", "train_loss", r.TrainLoss, "accuracy", r.Accuracy)
	return r.Accuracy, nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/gencluster/gencluster/dataset"
	"github.com/gencluster/gencluster/models"
	"github.com/gencluster/gencluster/training"
)

// plotFlags are train's and local's flags for loss.png and test_loss.csv.
type plotFlags struct {
	testLoss string
	logScale bool
}

// register adds --test-loss and --loss-log-scale; checkpoints says
// whether the command can evaluate at checkpoints (train) or only at the
// end (local, whose workers train).
func (f *plotFlags) register(cmd *cobra.Command, checkpoints bool) {
	usage := "evaluate the test split (as eval does) for test_loss.csv and loss.png: end (after the last step), checkpoints (at every checkpoint too) or none"
	if !checkpoints {
		usage = "evaluate the test split on the final checkpoint (as eval does) for test_loss.csv and loss.png: end or none"
	}
	cmd.Flags().StringVar(&f.testLoss, "test-loss", string(training.TestLossEnd), usage)
	cmd.Flags().BoolVar(&f.logScale, "loss-log-scale", false, "draw loss.png's y axis on a log scale")
}

// parse checks --test-loss.
func (f *plotFlags) parse(checkpoints bool) (training.TestLoss, error) {
	t, err := training.ParseTestLoss(f.testLoss)
	if err == nil && t == training.TestLossCheckpoints && !checkpoints {
		err = fmt.Errorf("--test-loss checkpoints: local evaluates only the final checkpoint; give end or none")
	}
	return t, err
}

// localTestLoss removes an earlier run's out/test_loss.csv and, with
// test, evaluates m, the job's final state at step, on the test split of
// dataset and writes the result as out/test_loss.csv (one row), as train
// does with --test-loss end. A data set without a test split is a
// warning, as in train.
func (a *app) localTestLoss(ctx context.Context, test bool, m models.Model, ds string, step int64, out string) error {
	path := filepath.Join(out, training.TestCurveFile)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("test loss curve: %w", err)
	}
	if !test {
		return nil
	}
	set, err := dataset.Open(ds, dataset.Test)
	if err == nil {
		err = dataset.CheckShape(set, m.Rows(), m.Cols())
	}
	if err != nil {
		a.log.Warn("no test loss: the data set has no usable test split", "err", err)
		return nil
	}
	a.log.Info("evaluating the test set", "step", step, "images", set.N)
	t0 := time.Now()
	loss, err := training.Evaluate(ctx, m, set, training.TestBatch, 0)
	if err != nil {
		return err
	}
	a.log.Info("test loss", "step", step, "nats", loss, "took", time.Since(t0).Round(time.Millisecond))
	return training.WriteTestCurve(path, []training.TestRow{{Step: step, Loss: loss}})
}

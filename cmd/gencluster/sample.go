package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/gencluster/gencluster/kernels"
	"github.com/gencluster/gencluster/training"
)

func (a *app) sampleCommand() *cobra.Command {
	var path, out string
	var n, threads int
	var seed uint64
	cmd := &cobra.Command{
		Use:   "sample --checkpoint PATH --n 64 --out grid.png",
		Short: "Draw samples from a checkpoint's model into a PNG grid",
		Long: `Draw n images from a checkpoint's model and write them as a PNG grid.
PixelCNN samples pixel by pixel in raster order (each pixel's logit computed on
the window its receptive field covers); the VAE decodes draws from its prior
and shows pixel probabilities. On a terminal a bar shows the pixel positions
done (the PixelCNN draws all images a pixel at a time).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if n < 1 || n > 4096 {
				return fmt.Errorf("--n must be between 1 and 4096, got %d", n)
			}
			if out == "" {
				return fmt.Errorf("--out FILE.png is required")
			}
			if threads <= 0 {
				threads = runtime.NumCPU()
			}
			pool := kernels.NewPool(threads)
			defer pool.Close()
			m, st, _, err := a.loadModel(path, pool)
			if err != nil {
				return err
			}
			prog := a.progress("sample", "pixels")
			err = training.SampleGridProgress(m, n, seed, st.Meta.Job.Dataset, out, func(done, total int) {
				prog.update(int64(done), int64(total), "")
			})
			prog.finish()
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "wrote %d %s samples (step %d) to %s\n", n, training.ModelSpec(st.Meta.Job), st.Meta.Step, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "checkpoint", "", "checkpoint file or directory (required)")
	cmd.Flags().IntVar(&n, "n", 64, "number of images")
	cmd.Flags().StringVar(&out, "out", "", "PNG file to write (required)")
	cmd.Flags().IntVar(&threads, "threads", 0, "compute threads (0: all cores)")
	cmd.Flags().Uint64Var(&seed, "seed", 1, "sampling seed")
	return cmd
}

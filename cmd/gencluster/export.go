package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/gencluster/gencluster/safetensors"
	"github.com/gencluster/gencluster/training"
)

func (a *app) exportCommand() *cobra.Command {
	var path, format, out string
	cmd := &cobra.Command{
		Use:   "export --checkpoint PATH --format safetensors --out model.safetensors",
		Short: "Export a checkpoint's weights for PyTorch",
		Long: `Write a checkpoint's weights as safetensors with the tensor names and layouts
of the PyTorch reference's state_dict (conv weights OIHW with zeros at masked
taps, linear [out,in], float32 little-endian, plus the masks), so that
scripts/torch_reference.py's models load them with load_state_dict.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "safetensors" {
				return fmt.Errorf("--format %q is not supported (supported: safetensors)", format)
			}
			if out == "" {
				return fmt.Errorf("--out FILE is required")
			}
			m, st, file, err := a.loadModel(path, nil)
			if err != nil {
				return err
			}
			meta := map[string]string{
				"format": "pt", "model": m.Name(), "step": strconv.FormatInt(st.Meta.Step, 10),
				"dataset": st.Meta.Job.Dataset, "source": file, "levels": strconv.Itoa(m.Levels()),
			}
			if err := safetensors.WriteFile(out, training.ExportTensors(m), meta); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "exported %s step %d to %s\n", training.ModelSpec(st.Meta.Job), st.Meta.Step, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "checkpoint", "", "checkpoint file or directory (required)")
	cmd.Flags().StringVar(&format, "format", "safetensors", "output format: safetensors")
	cmd.Flags().StringVar(&out, "out", "", "file to write (required)")
	return cmd
}

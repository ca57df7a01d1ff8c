package training

import (
	"compress/gzip"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/gencluster/gencluster/checkpoint"
)

// writeIDX writes n random 28x28 images (digit-like blobs are not needed)
// as an MNIST-layout directory and returns "idx:DIR".
func writeIDX(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(9, 9))
	for _, name := range []string{"train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		zw := gzip.NewWriter(f)
		var hdr [16]byte
		binary.BigEndian.PutUint32(hdr[0:], 0x803)
		binary.BigEndian.PutUint32(hdr[4:], uint32(n))
		binary.BigEndian.PutUint32(hdr[8:], 28)
		binary.BigEndian.PutUint32(hdr[12:], 28)
		zw.Write(hdr[:])
		pix := make([]byte, n*784)
		for i := range pix {
			if rng.Float64() < 0.2 {
				pix[i] = 255
			}
		}
		zw.Write(pix)
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	return "idx:" + dir
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestTrainLossFallsOnMNIST(t *testing.T) {
	out := t.TempDir()
	var first, last float64
	cfg := Config{Model: "vae", Dataset: "mnist", Batch: 64, Steps: 60, Seed: 1, LR: 1e-3, Threads: 2, Out: out, Keep: 2, Samples: 16}
	res, err := Train(context.Background(), cfg, nil, quiet())
	if err != nil {
		t.Fatal(err)
	}
	rows, err := ReadCurve(filepath.Join(out, "loss.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 60 {
		t.Fatalf("%d curve rows, want 60", len(rows))
	}
	first, last = rows[0].Loss, res.Loss
	// A fresh VAE starts near 784*ln2 = 543 nats; 60 steps bring it well below 300.
	if first < 450 || last > 300 {
		t.Fatalf("loss went from %.1f to %.1f", first, last)
	}
	for _, f := range []string{"loss.png", "samples.png", checkpoint.FileName(60)} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Size() == 0 {
			t.Errorf("output %s missing: %v", f, err)
		}
	}
}

// TestResumeIsBitIdentical: a run stopped at a checkpoint and resumed ends
// with exactly the parameters of an uninterrupted run.
func TestResumeIsBitIdentical(t *testing.T) {
	for _, model := range []string{"vae", "pixelcnn"} {
		t.Run(model, func(t *testing.T) {
			ds := writeIDX(t, 40)
			cfg := Config{Model: model, Dataset: ds, Batch: 8, Steps: 6, Seed: 5, LR: 1e-3, Threads: 2, Keep: 10, CheckpointEvery: 3}
			cfg.Out = t.TempDir()
			if _, err := Train(context.Background(), cfg, nil, quiet()); err != nil {
				t.Fatal(err)
			}
			want, err := checkpoint.Read(filepath.Join(cfg.Out, checkpoint.FileName(6)))
			if err != nil {
				t.Fatal(err)
			}
			// Same job again, but lose the last checkpoint: it resumes at 3.
			os.Remove(filepath.Join(cfg.Out, checkpoint.FileName(6)))
			res, err := Train(context.Background(), cfg, nil, quiet())
			if err != nil {
				t.Fatal(err)
			}
			if res.Step != 6 {
				t.Fatalf("resumed run ended at step %d", res.Step)
			}
			got, err := checkpoint.Read(filepath.Join(cfg.Out, checkpoint.FileName(6)))
			if err != nil {
				t.Fatal(err)
			}
			for i, d := range want.Data {
				for j := range d {
					if got.Data[i][j] != d[j] {
						t.Fatalf("%s[%d]: resumed %v, uninterrupted %v", want.Meta.Tensors[i].Name, j, got.Data[i][j], d[j])
					}
				}
			}
			rows, err := ReadCurve(filepath.Join(cfg.Out, "loss.csv"))
			if err != nil || len(rows) != 6 || rows[5].Step != 6 {
				t.Fatalf("resumed loss curve: %d rows, %v", len(rows), err)
			}
		})
	}
}

func TestTrainRefusesAnotherJobsDirectory(t *testing.T) {
	ds := writeIDX(t, 20)
	cfg := Config{Model: "vae", Dataset: ds, Batch: 4, Steps: 2, Seed: 1, LR: 1e-3, Threads: 1, Out: t.TempDir()}
	if _, err := Train(context.Background(), cfg, nil, quiet()); err != nil {
		t.Fatal(err)
	}
	cfg.Seed = 2
	if _, err := Train(context.Background(), cfg, nil, quiet()); err == nil {
		t.Fatal("training into a directory of another job succeeded")
	}
}

func TestTrainCancelledCheckpoints(t *testing.T) {
	ds := writeIDX(t, 20)
	ctx, cancel := context.WithCancel(context.Background())
	steps := 0
	cfg := Config{Model: "vae", Dataset: ds, Batch: 4, Steps: 1000, Seed: 1, LR: 1e-3, Threads: 1, Out: t.TempDir()}
	// The report hook runs on the training goroutine after the first step.
	_, err := Train(ctx, cfg, func(p Progress) { steps = int(p.Step); cancel() }, quiet())
	if err == nil {
		t.Fatal("cancelled training returned no error")
	}
	st, _, lerr := checkpoint.Load(cfg.Out, nil)
	if lerr != nil || st.Meta.Step != int64(steps) || steps < 1 {
		t.Fatalf("after cancel at step %d: checkpoint %v, %v", steps, st, lerr)
	}
}

func TestValidate(t *testing.T) {
	good := Config{Model: "vae", Dataset: "mnist", Batch: 4, Steps: 2, LR: 1e-3, Out: "x"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Config){
		"batch 0":       func(c *Config) { c.Batch = 0 },
		"no steps":      func(c *Config) { c.Steps = 0 },
		"steps+epochs":  func(c *Config) { c.Epochs = 1 },
		"no out":        func(c *Config) { c.Out = "" },
		"lr 0":          func(c *Config) { c.LR = 0 },
		"negative ckpt": func(c *Config) { c.CheckpointEvery = -1 },
	} {
		c := good
		mut(&c)
		if c.Validate() == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

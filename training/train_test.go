package training

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gencluster/gencluster/checkpoint"
	"github.com/gencluster/gencluster/dataset"
	"github.com/gencluster/gencluster/kernels"
	"github.com/gencluster/gencluster/models"
	"github.com/gencluster/gencluster/render"
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

// TestTrainTestLoss: with TestLoss checkpoints, test_loss.csv holds the
// test-set loss at every checkpoint step and the last, the last equal to
// what Evaluate (gencluster eval) computes from the final checkpoint, and
// loss.png marks them; evaluating does not change what training computes.
func TestTrainTestLoss(t *testing.T) {
	out := t.TempDir()
	ds := writeIDX(t, 600)
	cfg := Config{Model: "vae", Dataset: ds, Batch: 16, Steps: 25, Seed: 1, LR: 1e-3, Threads: 2, Out: out,
		Keep: 5, CheckpointEvery: 10, TestLoss: TestLossCheckpoints}
	var reports []int64
	if _, err := Train(context.Background(), cfg, func(p Progress) { reports = append(reports, p.Step) }, quiet()); err != nil {
		t.Fatal(err)
	}
	if len(reports) != 25 || reports[24] != 25 {
		t.Errorf("reported steps %v, want every step 1..25", reports)
	}
	rows, err := ReadTestCurve(filepath.Join(out, TestCurveFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || rows[0].Step != 10 || rows[1].Step != 20 || rows[2].Step != 25 {
		t.Fatalf("test_loss.csv rows %v, want steps 10, 20, 25", rows)
	}
	// A fresh VAE starts near 784 ln 2 = 543 nats; these images' pixels
	// are on with probability 0.2, 392 nats of entropy.
	if !(rows[0].Loss > rows[2].Loss) || rows[2].Loss < 380 || rows[0].Loss > 543 {
		t.Errorf("test losses %v: want falling, in (380, 543)", rows)
	}
	m := restored(t, out, "vae")
	set, err := dataset.Open(ds, dataset.Test)
	if err != nil {
		t.Fatal(err)
	}
	want, err := Evaluate(context.Background(), m, set, TestBatch, 0)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(rows[2].Loss-want) > 1e-5*want {
		t.Errorf("final test loss %v, Evaluate of the final checkpoint %v", rows[2].Loss, want)
	}

	// loss.png: the test marks' colour (the third series) in the plot.
	f, err := os.Open(filepath.Join(out, PlotFile))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != render.PlotWidth || b.Dy() != render.PlotHeight {
		t.Fatalf("loss.png is %v", b)
	}
	if n := countNear(img, color.RGBA{44, 160, 44, 255}, 10); n < 3*20 {
		t.Errorf("loss.png: %d pixels of the test marks' colour, want three filled marks", n)
	}

	// Same run without test evaluations: the same parameters, bit for bit.
	ref := cfg
	ref.Out, ref.TestLoss = t.TempDir(), ""
	if _, err := Train(context.Background(), ref, nil, quiet()); err != nil {
		t.Fatal(err)
	}
	sameCheckpoints(t, filepath.Join(ref.Out, checkpoint.FileName(25)), filepath.Join(out, checkpoint.FileName(25)))
	if _, err := os.Stat(filepath.Join(ref.Out, TestCurveFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a run without test loss left %s (%v)", TestCurveFile, err)
	}
}

// TestTrainTestLossResume: a resumed run keeps the test rows up to its
// checkpoint and evaluates the rest again, with the same results.
func TestTrainTestLossResume(t *testing.T) {
	ms := []string{"vae", "pixelcnn"}
	if raceEnabled {
		ms = ms[:1] // TestResumeIsBitIdentical resumes the PixelCNN too
	}
	for _, model := range ms {
		t.Run(model, func(t *testing.T) {
			ds := writeIDX(t, 40)
			cfg := Config{Model: model, Dataset: ds, Batch: 8, Steps: 6, Seed: 5, LR: 1e-3, Threads: 2, Keep: 10,
				CheckpointEvery: 3, TestLoss: TestLossCheckpoints, Out: t.TempDir()}
			if _, err := Train(context.Background(), cfg, nil, quiet()); err != nil {
				t.Fatal(err)
			}
			first, err := ReadTestCurve(filepath.Join(cfg.Out, TestCurveFile))
			if err != nil || len(first) != 2 || first[0].Step != 3 || first[1].Step != 6 {
				t.Fatalf("test rows %v, %v; want steps 3 and 6", first, err)
			}
			os.Remove(filepath.Join(cfg.Out, checkpoint.FileName(6)))
			if _, err := Train(context.Background(), cfg, nil, quiet()); err != nil {
				t.Fatal(err)
			}
			again, err := ReadTestCurve(filepath.Join(cfg.Out, TestCurveFile))
			if err != nil || len(again) != 2 || again[0] != first[0] || again[1] != first[1] {
				t.Fatalf("after resuming at step 3: test rows %v (%v), want %v", again, err, first)
			}
			// Resumed at the end: nothing evaluated twice.
			if _, err := Train(context.Background(), cfg, nil, quiet()); err != nil {
				t.Fatal(err)
			}
			if rows, _ := ReadTestCurve(filepath.Join(cfg.Out, TestCurveFile)); len(rows) != 2 {
				t.Errorf("after a run resumed at its last step: rows %v", rows)
			}
		})
	}
}

func TestTrainTestLossWithoutTestSplit(t *testing.T) {
	ds := writeIDX(t, 20)
	os.Remove(filepath.Join(strings.TrimPrefix(ds, "idx:"), "t10k-images-idx3-ubyte.gz"))
	var logs strings.Builder
	cfg := Config{Model: "vae", Dataset: ds, Batch: 4, Steps: 2, Seed: 1, LR: 1e-3, Threads: 1, Out: t.TempDir(), TestLoss: TestLossEnd}
	if _, err := Train(context.Background(), cfg, nil, slog.New(slog.NewTextHandler(&logs, nil))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "no test loss") {
		t.Errorf("no warning about the missing test split in %q", logs.String())
	}
	if _, err := os.Stat(filepath.Join(cfg.Out, PlotFile)); err != nil {
		t.Errorf("no loss.png: %v", err)
	}
}

func TestPlotCurve(t *testing.T) {
	dir := t.TempDir()
	var rows []CurveRow
	for i := range 300 {
		rows = append(rows, CurveRow{Step: int64(i + 1), Loss: 80 + 400/float64(i+1)})
	}
	if err := WriteCurve(filepath.Join(dir, CurveFile), rows); err != nil {
		t.Fatal(err)
	}
	plot := func(logY bool) []byte {
		t.Helper()
		if err := PlotCurve(dir, "vae", logY); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, PlotFile))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	green := color.RGBA{44, 160, 44, 255}
	noTest := plot(false)
	if n := countNear(decodePNG(t, noTest), green, 10); n != 0 {
		t.Errorf("without test_loss.csv: %d pixels of the test colour", n)
	}
	if err := WriteTestCurve(filepath.Join(dir, TestCurveFile), []TestRow{{100, 90}, {300, 85}}); err != nil {
		t.Fatal(err)
	}
	lin := plot(false)
	if n := countNear(decodePNG(t, lin), green, 10); n < 2*20 {
		t.Errorf("with two test rows: %d pixels of the test colour, want two marks", n)
	}
	if log := plot(true); bytes.Equal(log, lin) {
		t.Error("log-scale loss.png is the linear one")
	}
	// A test loss of 0 cannot go on a log axis: an error, no panic.
	if err := WriteTestCurve(filepath.Join(dir, TestCurveFile), []TestRow{{100, 0}}); err != nil {
		t.Fatal(err)
	}
	if err := PlotCurve(dir, "vae", true); err == nil || !strings.Contains(err.Error(), "log-scale") {
		t.Errorf("log scale with a zero test loss: %v, want an error", err)
	}
	// A damaged test_loss.csv is an error naming it.
	os.WriteFile(filepath.Join(dir, TestCurveFile), []byte("step,loss\n1,x\n"), 0o644)
	if err := PlotCurve(dir, "vae", false); err == nil || !strings.Contains(err.Error(), TestCurveFile) {
		t.Errorf("damaged test_loss.csv: %v", err)
	}
}

func TestEvaluateAndSampleProgress(t *testing.T) {
	ds := writeIDX(t, 23)
	set, err := dataset.Open(ds, dataset.Test)
	if err != nil {
		t.Fatal(err)
	}
	pool := kernels.NewPool(1)
	defer pool.Close()
	m, err := models.New(models.Spec{Name: "pixelcnn"}, pool)
	if err != nil {
		t.Fatal(err)
	}
	InitModel(m, 3)
	var done []int
	got, err := EvaluateProgress(context.Background(), m, set, 10, 0, func(d, total int) {
		if total != 23 {
			t.Errorf("progress total %d, want 23", total)
		}
		done = append(done, d)
	})
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := Evaluate(context.Background(), m, set, 10, 0); got != want || len(done) != 3 || done[0] != 10 || done[2] != 23 {
		t.Errorf("EvaluateProgress = %v with progress %v; Evaluate = %v", got, done, want)
	}

	// Sampling: one call per pixel position, the same images as without.
	if raceEnabled {
		t.Log("skipping the PixelCNN's sampling under the race detector (784 passes, each ~20x slower)")
		return
	}
	dir := t.TempDir()
	calls, last := 0, 0
	if err := SampleGridProgress(m, 2, 7, "mnist", filepath.Join(dir, "a.png"), func(d, total int) {
		calls, last = calls+1, d
		if total != 28*28 {
			t.Errorf("sampling progress total %d, want 784", total)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if calls != 784 || last != 784 {
		t.Errorf("sampling progress: %d calls, last %d; want 784", calls, last)
	}
	if err := SampleGrid(m, 2, 7, "mnist", filepath.Join(dir, "b.png")); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(filepath.Join(dir, "a.png"))
	b, _ := os.ReadFile(filepath.Join(dir, "b.png"))
	if !bytes.Equal(a, b) {
		t.Error("sampling with progress drew other images")
	}
}

func TestParseTestLoss(t *testing.T) {
	for _, s := range []string{"end", "checkpoints", "none"} {
		if got, err := ParseTestLoss(s); err != nil || string(got) != s {
			t.Errorf("ParseTestLoss(%q) = %q, %v", s, got, err)
		}
	}
	if _, err := ParseTestLoss("always"); err == nil || !strings.Contains(err.Error(), "end, checkpoints or none") {
		t.Errorf("ParseTestLoss(always): %v", err)
	}
	cfg := Config{Model: "vae", Dataset: "mnist", Batch: 4, Steps: 2, LR: 1e-3, Out: "x", TestLoss: "sometimes"}
	if err := cfg.Validate(); err == nil {
		t.Error("Validate accepted TestLoss sometimes")
	}
}

// restored is the model of dir's newest checkpoint.
func restored(t *testing.T, dir, model string) models.Model {
	t.Helper()
	st, _, err := checkpoint.Load(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	pool := kernels.NewPool(2)
	t.Cleanup(pool.Close)
	m, err := models.New(models.Spec{Name: model}, pool)
	if err != nil {
		t.Fatal(err)
	}
	if err := Restore(st, m, nil); err != nil {
		t.Fatal(err)
	}
	return m
}

func sameCheckpoints(t *testing.T, a, b string) {
	t.Helper()
	x, err := checkpoint.Read(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := checkpoint.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range x.Data {
		for j := range d {
			if y.Data[i][j] != d[j] {
				t.Fatalf("%s[%d]: %v in %s, %v in %s", x.Meta.Tensors[i].Name, j, d[j], a, y.Data[i][j], b)
			}
		}
	}
}

func decodePNG(t *testing.T, b []byte) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// countNear counts img's pixels within tol (RGB distance) of col.
func countNear(img image.Image, col color.RGBA, tol float64) int {
	n := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)
			dr, dg, db := float64(c.R)-float64(col.R), float64(c.G)-float64(col.G), float64(c.B)-float64(col.B)
			if math.Sqrt(dr*dr+dg*dg+db*db) <= tol {
				n++
			}
		}
	}
	return n
}

// Package training runs the single-process training loop (gencluster
// train) and the evaluation and sampling built on it, and converts between
// models, optimizers and checkpoints. The distributed worker reuses its
// pieces; it knows nothing of the network.
package training

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gencluster/gencluster/checkpoint"
	"github.com/gencluster/gencluster/dataset"
	"github.com/gencluster/gencluster/kernels"
	"github.com/gencluster/gencluster/models"
	"github.com/gencluster/gencluster/optim"
	"github.com/gencluster/gencluster/render"
	"github.com/gencluster/gencluster/sharding"
)

// Config is one training job.
type Config struct {
	Model           string
	Levels          int // pixel levels of pixelcnn and pixelrnn: 256, or 0 (the default, 2)
	Dataset         string
	Batch           int
	Steps           int64   // total steps; 0 means use Epochs
	Epochs          float64 // passes over the training set, when Steps is 0
	Seed            uint64
	LR              float64
	Threads         int
	Out             string
	CheckpointEvery int64 // steps between checkpoints; 0: only the last
	Keep            int   // checkpoints kept in Out (at least 1)
	Samples         int   // images in the final sample grid; 0: none
	// TestLoss says when to evaluate the test split for test_loss.csv and
	// loss.png; the zero value never does.
	TestLoss TestLoss
	// LossLogScale draws loss.png's y axis on a log scale.
	LossLogScale bool
}

// TestLoss says when Train evaluates the model on the test split of its
// data set (Evaluate, batch TestBatch, noise seed 0: what `gencluster
// eval` computes). Each evaluation is a row of test_loss.csv, drawn as a
// mark on loss.png. An evaluation is a forward pass over the whole split:
// on two cores 28 s for the PixelCNN on MNIST's 10,000 test images (the
// time of ~120 training steps at batch 32), 0.3 s for the VAE; so the
// command's default is once, at the end. The time spent evaluating is
// left out of the run's images/s, ETA and loss.csv's elapsed_s.
type TestLoss string

const (
	TestLossNone        TestLoss = "none"        // never (also the zero value)
	TestLossEnd         TestLoss = "end"         // after the last step
	TestLossCheckpoints TestLoss = "checkpoints" // at every checkpoint step and the last
)

// TestBatch is the batch size of Train's test-set evaluations (and the
// default of gencluster eval).
const TestBatch = 500

// ParseTestLoss checks a --test-loss value.
func ParseTestLoss(s string) (TestLoss, error) {
	switch t := TestLoss(s); t {
	case TestLossNone, TestLossEnd, TestLossCheckpoints:
		return t, nil
	}
	return "", fmt.Errorf("--test-loss %q: want end, checkpoints or none", s)
}

// Files Train writes beside its checkpoints.
const (
	CurveFile     = "loss.csv"      // step,loss,images_per_sec,elapsed_s: every step
	TestCurveFile = "test_loss.csv" // step,loss: every test-set evaluation
	PlotFile      = "loss.png"      // both, drawn by PlotCurve
	SamplesFile   = "samples.png"
)

// Progress is what the loop reports after every step.
type Progress struct {
	Step, Total  int64
	Loss         float64 // nats per image, this step's batch
	ImagesPerSec float64 // since the start of this run
	Elapsed, ETA time.Duration
}

// Result describes a finished run.
type Result struct {
	Step       int64
	Loss       float64
	Checkpoint string
	Elapsed    time.Duration
}

// Spec is the model the job trains, in canonical form (models.Spec.Canonical).
func (c *Config) Spec() (models.Spec, error) {
	return models.Spec{Name: c.Model, Levels: c.Levels}.Canonical()
}

// Validate checks the settings that do not need the data set.
func (c *Config) Validate() error {
	if _, err := c.Spec(); err != nil {
		return err
	}
	switch {
	case c.Batch < 1:
		return fmt.Errorf("--batch must be at least 1, got %d", c.Batch)
	case c.Steps < 0:
		return fmt.Errorf("--steps must not be negative, got %d", c.Steps)
	case c.Steps == 0 && !(c.Epochs > 0):
		return errors.New("give --steps N or --epochs E (a positive number)")
	case c.Steps > 0 && c.Epochs > 0:
		return errors.New("give --steps or --epochs, not both")
	case c.Out == "":
		return errors.New("--out DIR is required")
	case c.CheckpointEvery < 0:
		return fmt.Errorf("--checkpoint-every must not be negative, got %d", c.CheckpointEvery)
	case c.Threads < 0:
		return fmt.Errorf("--threads must not be negative, got %d", c.Threads)
	}
	if c.TestLoss != "" {
		if _, err := ParseTestLoss(string(c.TestLoss)); err != nil {
			return err
		}
	}
	adam := optim.DefaultAdam()
	adam.LR = c.LR
	return adam.Validate()
}

// TotalSteps resolves Steps or Epochs against a training set of n images.
func (c *Config) TotalSteps(n int) int64 {
	if c.Steps > 0 {
		return c.Steps
	}
	return sharding.EpochSteps(c.Epochs, n, c.Batch)
}

// Train runs the job, resuming from the newest good checkpoint in Out if
// one of the same job is there. It writes checkpoints, loss.csv,
// test_loss.csv (with cfg.TestLoss), loss.png and samples.png into Out,
// and calls report, if not nil, after every step. Cancelling ctx stops
// after the current step and checkpoints it.
func Train(ctx context.Context, cfg Config, report func(Progress), log *slog.Logger) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Keep < 1 {
		cfg.Keep = 1
	}
	images, err := dataset.Open(cfg.Dataset, dataset.Train)
	if err != nil {
		return nil, err
	}
	pool := kernels.NewPool(cfg.Threads)
	defer pool.Close()
	spec, err := cfg.Spec()
	if err != nil {
		return nil, err
	}
	m, err := models.New(spec, pool)
	if err != nil {
		return nil, err
	}
	if err := dataset.CheckShape(images, m.Rows(), m.Cols()); err != nil {
		return nil, err
	}
	seq, err := sharding.NewSequence(cfg.Seed, images.N, cfg.Batch)
	if err != nil {
		return nil, fmt.Errorf("dataset %s: %w", cfg.Dataset, err)
	}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	removed, err := checkpoint.CleanTemp(cfg.Out)
	if err != nil {
		return nil, fmt.Errorf("output directory: %w", err)
	}
	for _, f := range removed {
		log.Info("removed the temp file of an interrupted checkpoint write", "file", f)
	}
	job := checkpoint.Job{Model: spec.Name, Levels: spec.Levels, Dataset: cfg.Dataset, Batch: cfg.Batch, TotalSteps: cfg.TotalSteps(images.N), Seed: cfg.Seed, LR: cfg.LR}
	if job.TotalSteps < 1 {
		return nil, fmt.Errorf("%v epochs of %d images at batch %d is less than one step", cfg.Epochs, images.N, cfg.Batch)
	}
	adamCfg := optim.DefaultAdam()
	adamCfg.LR = cfg.LR
	opt := optim.NewAdam(adamCfg, ParamLengths(m))

	start, _, err := Resume(cfg.Out, job, m, opt, log)
	if err != nil {
		return nil, err
	}
	curve, err := openCurve(filepath.Join(cfg.Out, CurveFile), start)
	if err != nil {
		return nil, err
	}
	defer curve.close()
	test, err := openTestCurve(cfg, start, m, log)
	if err != nil {
		return nil, err
	}

	var params, grads [][]float32
	for _, p := range m.Params() {
		params = append(params, p.Data)
		grads = append(grads, p.Grad)
	}
	dim := m.Rows() * m.Cols()
	grey := models.GreyInput(m)
	x := make([]float32, cfg.Batch*dim)
	idx := make([]int, cfg.Batch)
	scale := 1 / float32(cfg.Batch)

	res := &Result{Step: start}
	save := func(step int64, loss float64) error {
		path := filepath.Join(cfg.Out, checkpoint.FileName(step))
		if _, err := checkpoint.Write(path, View(job, step, loss, m, opt)); err != nil { // written before the next step
			return err
		}
		res.Checkpoint = path
		log.Info("checkpoint written", "step", step, "path", path)
		return checkpoint.Prune(cfg.Out, cfg.Keep)
	}
	t0 := time.Now()
	step := start
	var loss float64
	for step < job.TotalSteps {
		if err := ctx.Err(); err != nil {
			if step > start {
				if serr := save(step, loss); serr != nil {
					return res, errors.Join(err, serr)
				}
			}
			return res, fmt.Errorf("training stopped at step %d: %w", step, err)
		}
		seq.Global(step, idx)
		for i, id := range idx {
			images.Pixels(id, x[i*dim:(i+1)*dim], grey)
		}
		loss = m.Grad(x, cfg.Batch, StepNoise(cfg.Seed, step, cfg.Batch)) / float64(cfg.Batch)
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return res, fmt.Errorf("step %d: loss is %v; lower --lr", step, loss)
		}
		if err := opt.StepOn(pool, params, grads, scale); err != nil {
			return res, err
		}
		step++
		res.Step, res.Loss = step, loss
		el := time.Since(t0)
		ips := float64(step-start) * float64(cfg.Batch) / el.Seconds()
		if err := curve.add(step, loss, ips, el); err != nil {
			return res, err
		}
		if cfg.CheckpointEvery > 0 && step%cfg.CheckpointEvery == 0 && step < job.TotalSteps {
			if err := save(step, loss); err != nil {
				return res, err
			}
			if cfg.TestLoss == TestLossCheckpoints {
				d, err := test.eval(ctx, step)
				if err != nil {
					return res, err
				}
				t0 = t0.Add(d)
			}
		}
		if report != nil {
			eta := time.Duration(float64(job.TotalSteps-step) / float64(step-start) * float64(el))
			report(Progress{Step: step, Total: job.TotalSteps, Loss: loss, ImagesPerSec: ips, Elapsed: el, ETA: eta})
		}
	}
	res.Elapsed = time.Since(t0)
	if step > start || res.Checkpoint == "" {
		if err := save(step, loss); err != nil {
			return res, err
		}
	}
	if err := curve.flush(); err != nil {
		return res, err
	}
	if cfg.TestLoss == TestLossEnd || cfg.TestLoss == TestLossCheckpoints {
		if _, err := test.eval(ctx, step); err != nil {
			return res, err
		}
	}
	if err := PlotCurve(cfg.Out, spec.String(), cfg.LossLogScale); err != nil {
		return res, err
	}
	if cfg.Samples > 0 {
		log.Info("sampling", "images", cfg.Samples)
		if err := SampleGrid(m, cfg.Samples, cfg.Seed, cfg.Dataset, filepath.Join(cfg.Out, SamplesFile)); err != nil {
			return res, err
		}
	}
	return res, nil
}

// testCurve is test_loss.csv while Train runs: the rows so far, and the
// test split (nil when the job evaluates none).
type testCurve struct {
	path string
	rows []TestRow
	set  *dataset.Images
	m    models.Model
	log  *slog.Logger
}

// openTestCurve opens the test split, when cfg evaluates it, and keeps
// the rows of test_loss.csv up to step start (the others belong to steps
// this run does again). A data set without a test split draws no test
// loss: a warning, not an error.
func openTestCurve(cfg Config, start int64, m models.Model, log *slog.Logger) (*testCurve, error) {
	c := &testCurve{path: filepath.Join(cfg.Out, TestCurveFile), m: m, log: log}
	if start > 0 {
		rows, err := ReadTestCurve(c.path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		for _, r := range rows {
			if r.Step <= start {
				c.rows = append(c.rows, r)
			}
		}
	}
	if len(c.rows) > 0 {
		if err := WriteTestCurve(c.path, c.rows); err != nil {
			return nil, err
		}
	} else if err := os.Remove(c.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("test loss curve: %w", err)
	}
	if cfg.TestLoss != TestLossEnd && cfg.TestLoss != TestLossCheckpoints {
		return c, nil
	}
	set, err := dataset.Open(cfg.Dataset, dataset.Test)
	if err == nil {
		err = dataset.CheckShape(set, m.Rows(), m.Cols())
	}
	if err != nil {
		log.Warn("no test loss: the data set has no usable test split", "err", err)
		return c, nil
	}
	c.set = set
	return c, nil
}

// eval evaluates the test split at step, unless that step has a row
// already (a run resumed from its last step), rewrites test_loss.csv and
// returns the time it took.
func (c *testCurve) eval(ctx context.Context, step int64) (time.Duration, error) {
	if c.set == nil || (len(c.rows) > 0 && c.rows[len(c.rows)-1].Step == step) {
		return 0, nil
	}
	c.log.Info("evaluating the test set", "step", step, "images", c.set.N)
	t0 := time.Now()
	loss, err := Evaluate(ctx, c.m, c.set, TestBatch, 0)
	if err != nil {
		return time.Since(t0), err
	}
	d := time.Since(t0)
	c.log.Info("test loss", "step", step, "nats", loss, "took", d.Round(time.Millisecond))
	c.rows = append(c.rows, TestRow{Step: step, Loss: loss})
	return d, WriteTestCurve(c.path, c.rows)
}

// StepNoise is the noise of global batch step of a job with seed and batch
// size batch: image j of the batch draws from stream (seed, step*batch+j),
// whichever process computes it. A rank computing images [lo,hi) of the
// batch passes Noise{Seed, First + lo}.
func StepNoise(seed uint64, step int64, batch int) models.Noise {
	return models.Noise{Seed: seed, First: uint64(step) * uint64(batch)}
}

// evalFirst offsets the noise streams of Evaluate from those of training
// steps, which start at 0.
const evalFirst = 1 << 63

// Resume restores the newest good checkpoint in dir if it belongs to job
// and returns its step and loss; without one it initialises m from the
// job's seed (InitModel) and returns step 0. A checkpoint of another job is
// an error. Training in one process and each worker of a cluster start
// this way, so that they start from the same parameters.
func Resume(dir string, job checkpoint.Job, m models.Model, opt *optim.Adam, log *slog.Logger) (step int64, loss float64, err error) {
	files, err := checkpoint.List(dir)
	if err != nil || len(files) == 0 {
		InitModel(m, job.Seed)
		return 0, 0, nil
	}
	st, file, err := checkpoint.Load(dir, func(f string, err error) {
		log.Warn("skipping bad checkpoint", "file", f, "err", err)
	})
	if err != nil {
		return 0, 0, err
	}
	if st.Meta.Job != job {
		return 0, 0, fmt.Errorf("%s holds a checkpoint of another job (%+v); choose another --out or remove it", file, st.Meta.Job)
	}
	if err := Restore(st, m, opt); err != nil {
		return 0, 0, fmt.Errorf("%s: %w", file, err)
	}
	log.Info("resuming", "checkpoint", file, "step", st.Meta.Step)
	return st.Meta.Step, st.Meta.Loss, nil
}

// InitModel draws a job's initial parameters from its seed.
func InitModel(m models.Model, seed uint64) {
	m.Init(rand.New(rand.NewPCG(seed, 0x1f1f)))
}

// curveFile appends step,loss,images_per_sec,elapsed_s rows to loss.csv.
type curveFile struct {
	f *os.File
	w *bufio.Writer
}

func openCurve(path string, start int64) (*curveFile, error) {
	if start == 0 {
		f, err := os.Create(path)
		if err != nil {
			return nil, fmt.Errorf("loss curve: %w", err)
		}
		w := bufio.NewWriter(f)
		w.WriteString(curveHeader)
		return &curveFile{f: f, w: w}, nil
	}
	// Resuming: keep the rows up to start, drop any written after it.
	rows, err := ReadCurve(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	c, err := openCurve(path, 0)
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		if r.Step <= start {
			writeRow(c.w, r)
		}
	}
	return c, nil
}

func (c *curveFile) add(step int64, loss, ips float64, el time.Duration) error {
	if err := writeRow(c.w, CurveRow{Step: step, Loss: loss, ImagesPerSec: ips, Elapsed: el.Seconds()}); err != nil {
		return fmt.Errorf("loss curve: %w", err)
	}
	return nil
}

// curveHeader and writeRow are loss.csv's format (ReadCurve reads it).
const curveHeader = "step,loss,images_per_sec,elapsed_s\n"

func writeRow(w io.Writer, r CurveRow) error {
	_, err := fmt.Fprintf(w, "%d,%.6g,%.6g,%.3f\n", r.Step, r.Loss, r.ImagesPerSec, r.Elapsed)
	return err
}

// WriteCurve writes rows as a loss.csv, as Train writes it (for a curve
// collected elsewhere, such as from a cluster's rank 0).
func WriteCurve(path string, rows []CurveRow) error {
	var b bytes.Buffer
	b.WriteString(curveHeader)
	for _, r := range rows {
		writeRow(&b, r)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("loss curve: %w", err)
	}
	return nil
}

func (c *curveFile) flush() error {
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("loss curve: %w", err)
	}
	return nil
}

func (c *curveFile) close() {
	c.w.Flush()
	c.f.Close()
}

// CurveRow is one row of loss.csv.
type CurveRow struct {
	Step         int64
	Loss         float64
	ImagesPerSec float64
	Elapsed      float64
}

// ReadCurve parses a loss.csv written by Train.
func ReadCurve(path string) ([]CurveRow, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("loss curve: %w", err)
	}
	defer f.Close()
	var rows []CurveRow
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		if line == 1 {
			continue
		}
		var r CurveRow
		fs := strings.Split(sc.Text(), ",")
		if len(fs) != 4 {
			return nil, fmt.Errorf("loss curve %s line %d: want 4 fields, got %d", path, line, len(fs))
		}
		var e1, e2, e3, e4 error
		r.Step, e1 = strconv.ParseInt(fs[0], 10, 64)
		r.Loss, e2 = strconv.ParseFloat(fs[1], 64)
		r.ImagesPerSec, e3 = strconv.ParseFloat(fs[2], 64)
		r.Elapsed, e4 = strconv.ParseFloat(fs[3], 64)
		if err := errors.Join(e1, e2, e3, e4); err != nil {
			return nil, fmt.Errorf("loss curve %s line %d: %w", path, line, err)
		}
		rows = append(rows, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("loss curve %s: %w", path, err)
	}
	return rows, nil
}

// TestRow is one row of test_loss.csv: the mean test-set loss in nats per
// image after step Step.
type TestRow struct {
	Step int64
	Loss float64
}

const testHeader = "step,loss\n"

// WriteTestCurve writes rows as test_loss.csv (atomically: a temp file
// renamed into place).
func WriteTestCurve(path string, rows []TestRow) error {
	var b bytes.Buffer
	b.WriteString(testHeader)
	for _, r := range rows {
		fmt.Fprintf(&b, "%d,%.6g\n", r.Step, r.Loss)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("test loss curve: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("test loss curve: %w", err)
	}
	return nil
}

// ReadTestCurve parses a test_loss.csv.
func ReadTestCurve(path string) ([]TestRow, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("test loss curve: %w", err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) == 0 || lines[0]+"\n" != testHeader {
		return nil, fmt.Errorf("test loss curve %s: header %q, want %q", path, lines[0], strings.TrimSpace(testHeader))
	}
	rows := make([]TestRow, 0, len(lines)-1)
	for i, l := range lines[1:] {
		step, loss, ok := strings.Cut(l, ",")
		var r TestRow
		var e1, e2 error
		r.Step, e1 = strconv.ParseInt(step, 10, 64)
		r.Loss, e2 = strconv.ParseFloat(loss, 64)
		if err := errors.Join(e1, e2); !ok || err != nil {
			return nil, fmt.Errorf("test loss curve %s line %d: want step,loss, got %q", path, i+2, l)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// PlotCurve draws dir's loss.csv as dir/loss.png: the per-step loss, its
// moving average over 100 steps and, from test_loss.csv if dir has one,
// the test loss as marks. logY puts the y axis on a log scale.
func PlotCurve(dir, model string, logY bool) error {
	rows, err := ReadCurve(filepath.Join(dir, CurveFile))
	if err != nil {
		return err
	}
	test := render.Series{Name: "test set", Marks: true}
	trows, err := ReadTestCurve(filepath.Join(dir, TestCurveFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, r := range trows {
		test.X = append(test.X, float64(r.Step))
		test.Y = append(test.Y, r.Loss)
	}
	raw := render.Series{Name: "loss per step"}
	avg := render.Series{Name: "moving average (100 steps)"}
	var window []float64
	var sum float64
	for _, r := range rows {
		raw.X = append(raw.X, float64(r.Step))
		raw.Y = append(raw.Y, r.Loss)
		window = append(window, r.Loss)
		sum += r.Loss
		if len(window) > 100 {
			sum -= window[0]
			window = window[1:]
		}
		avg.X = append(avg.X, float64(r.Step))
		avg.Y = append(avg.Y, sum/float64(len(window)))
	}
	series := []render.Series{raw, avg}
	if len(test.X) > 0 {
		series = append(series, test)
	}
	return render.LossCurveFile(filepath.Join(dir, PlotFile), model+" loss", render.Options{LogY: logY}, series...)
}

// SampleGrid draws n samples from m (Draw) and writes them as a PNG grid.
// data names the job's data set: an autoencoder's grid shows
// reconstructions of its images (PictureImages); other models ignore it.
func SampleGrid(m models.Model, n int, seed uint64, data, path string) error {
	return SampleGridProgress(m, n, seed, data, path, nil)
}

// SampleGridProgress is SampleGrid calling progress(done, total), if not
// nil, as sampling goes (see Draw).
func SampleGridProgress(m models.Model, n int, seed uint64, data, path string, progress func(done, total int)) error {
	var set *dataset.Images
	if _, ok := m.(models.Reconstructor); ok {
		var err error
		if set, err = PictureImages(data, m); err != nil {
			return err
		}
	}
	p, err := Draw(m, n, rand.New(rand.NewPCG(seed, 0x5a5a)), set, progress)
	if err != nil {
		return err
	}
	return render.GridScaledFile(path, p.Pix, p.N, p.Rows, p.Cols, 2, 2)
}

// Evaluate returns the mean loss in nats per image of m over all images of
// set, in batches of batch. Image i draws the VAE's noise from stream
// (seed, 1<<63 + i), so a result is reproducible and does not depend on
// batch.
func Evaluate(ctx context.Context, m models.Model, set *dataset.Images, batch int, seed uint64) (float64, error) {
	return EvaluateProgress(ctx, m, set, batch, seed, nil)
}

// EvaluateProgress is Evaluate calling progress(done, total), if not nil,
// after every batch with the images done and set.N.
func EvaluateProgress(ctx context.Context, m models.Model, set *dataset.Images, batch int, seed uint64, progress func(done, total int)) (float64, error) {
	dim := m.Rows() * m.Cols()
	grey := models.GreyInput(m)
	x := make([]float32, batch*dim)
	var total float64
	for lo := 0; lo < set.N; lo += batch {
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("evaluation stopped at image %d: %w", lo, err)
		}
		n := min(batch, set.N-lo)
		for i := 0; i < n; i++ {
			set.Pixels(lo+i, x[i*dim:(i+1)*dim], grey)
		}
		total += m.Loss(x, n, models.Noise{Seed: seed, First: evalFirst + uint64(lo)})
		if progress != nil {
			progress(lo+n, set.N)
		}
	}
	return total / float64(set.N), nil
}

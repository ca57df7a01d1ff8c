package worker

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/dataset"
	"github.com/gencluster/gencluster/kernels"
	"github.com/gencluster/gencluster/models"
	"github.com/gencluster/gencluster/render"
	"github.com/gencluster/gencluster/training"
)

// Sample grids. Once the coordinators hold one of rank 0's checkpoints,
// rank 0 draws JobSpec.samples images from that state and sends them as a
// small PNG (PutSample), which the dashboard shows. It runs on its own
// goroutine with one thread, latest wins (a ckptWriter: a grid still
// waiting is replaced by a newer checkpoint's), so training never waits
// for a PixelCNN drawing pixel by pixel. The final checkpoint's grid is
// drawn before the job is finished (for at most sampleTimeout), since the
// coordinators take grids only for a running job.

// sampleTimeout bounds sending one grid, and drawing the final one.
const sampleTimeout = time.Minute

// startWriter starts j's background checkpoint writer and, if the job
// asks for samples, its sampler, fed with every checkpoint the
// coordinators came to hold.
func (w *Worker) startWriter(ctx context.Context, j *job) {
	if j.spec.GetSamples() > 0 {
		j.sampler = newCkptWriter(ctx, func(ctx context.Context, s *snapshot) { w.sendSample(ctx, j.spec, j.data, s) }, func(*snapshot, error) {})
	}
	j.writer = newCkptWriter(ctx, func(ctx context.Context, s *snapshot) {
		if w.persistBackground(ctx, s) && s.st != nil && j.sampler != nil {
			j.sampler.submit(s) // the writer is done with s: it is only read from now on
		}
	}, w.checkpointDropped)
}

// finalSample draws and sends the grid of the job's final checkpoint s.
func (w *Worker) finalSample(ctx context.Context, j *job, s *snapshot) {
	if j.spec.GetSamples() <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, sampleTimeout)
	defer cancel()
	w.sendSample(ctx, j.spec, j.data, s)
}

// sendSample draws spec.samples images from s's state and sends the grid
// to the coordinators. A failure is logged: a grid is for people to look
// at, and the next checkpoint brings another. data is the job's training
// set, whose first images an autoencoder's grid reconstructs.
func (w *Worker) sendSample(ctx context.Context, spec *pb.JobSpec, data *dataset.Images, s *snapshot) {
	t := time.Now()
	png, err := drawSamples(spec, data, s)
	if err != nil {
		w.log.Warn("sample grid not drawn", "job", s.job, "step", s.step, "err", err)
		return
	}
	drawn := time.Since(t)
	sctx, cancel := context.WithTimeout(ctx, sampleTimeout)
	defer cancel()
	err = w.client.PutSample(sctx, &pb.PutSampleRequest{WorkerId: w.id, JobId: s.job, Generation: s.gen, Step: s.step, Png: png})
	switch {
	case err != nil && ctx.Err() != nil:
		w.log.Info("sample grid abandoned: the job was closed", "job", s.job, "step", s.step)
	case err != nil:
		w.log.Warn("sample grid not taken by the coordinators", "job", s.job, "step", s.step, "err", err)
	default:
		w.log.Info("sample grid sent", "job", s.job, "step", s.step, "images", spec.GetSamples(), "bytes", len(png), "draw_ms", millis(drawn))
	}
}

// drawSamples draws spec.samples images from the state in s (on one
// thread, seeded by the job's seed and the step; an autoencoder
// reconstructs the first images of data instead, training.Draw) and
// returns them as a PNG grid.
func drawSamples(spec *pb.JobSpec, data *dataset.Images, s *snapshot) ([]byte, error) {
	pool := kernels.NewPool(1)
	defer pool.Close()
	m, err := models.New(models.Spec{Name: spec.GetModel(), Levels: int(spec.GetLevels())}, pool)
	if err != nil {
		return nil, err
	}
	if err := training.Restore(s.st, m, nil); err != nil {
		return nil, fmt.Errorf("sample grid of step %d: %w", s.step, err)
	}
	p, err := training.Draw(m, int(spec.GetSamples()), rand.New(rand.NewPCG(spec.GetSeed(), uint64(s.step))), data, nil)
	if err != nil {
		return nil, fmt.Errorf("sample grid of step %d: %w", s.step, err)
	}
	var b bytes.Buffer
	if err := render.GridScaled(&b, p.Pix, p.N, p.Rows, p.Cols, 2, 2); err != nil {
		return nil, fmt.Errorf("sample grid of step %d: %w", s.step, err)
	}
	return b.Bytes(), nil
}

package worker

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"math"
	"time"

	"github.com/gencluster/gencluster/allreduce"
	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/checkpoint"
	"github.com/gencluster/gencluster/dataset"
	"github.com/gencluster/gencluster/kernels"
	"github.com/gencluster/gencluster/models"
	"github.com/gencluster/gencluster/optim"
	"github.com/gencluster/gencluster/sharding"
	"github.com/gencluster/gencluster/training"
)

// maxSteps bounds a job's steps: step counts travel through the ring as
// float32, exact up to 2^24.
const maxSteps = 1 << 24

// job is one training job's replica on this worker: the model, the
// optimizer state, the completed step count, and the buffers of a step.
type job struct {
	id    string
	spec  *pb.JobSpec
	meta  checkpoint.Job
	log   *slog.Logger
	pool  *kernels.Pool
	model models.Model
	opt   *optim.Adam
	data  *dataset.Images
	grey  bool // the model takes grey levels (models.GreyInput), not thresholded pixels
	seq   *sharding.Sequence

	params, grads [][]float32
	names         []string // of the parameters, in their order
	step          int64    // completed steps
	loss          float64  // of the last completed step
	held          int64    // step of the last checkpoint known to be held by the coordinators (-1: none)
	finalFailed   bool     // the final checkpoint could not be given to the coordinators

	// writer writes rank 0's checkpoints in the background (nil until the
	// first); it ends with the job.
	writer *ckptWriter
	// sampler draws the dashboard's sample grids from the checkpoints the
	// coordinators hold (nil if the job asks for none); it ends with the job.
	sampler *ckptWriter

	x       []float32 // this rank's images of a step
	idx     []int     // the global batch's image indices
	gather  []float32 // one step count per rank
	buckets *buckets  // the gradients (and the loss) as the step's all-reduce operations
	ops     []*allreduce.Op
	order   []*models.Param // the gradient hook's order (backward order)

	// The step in flight, for the gradient hook.
	bucketHook func(step int64, bucket int) // tests only
	stepCtx    context.Context
	stepRing   *allreduce.Generation
	stepErr    error // the hook met a gradient out of order (a *jobError)
	firstStart time.Time

	// Communication of the last step: from the first bucket's start to the
	// last one's end, and the part of it after the backward pass ended.
	comm, exposed time.Duration
	// The last step's parts: compute (the local forward and backward),
	// the optimizer's update, the whole step, the bytes it all-reduced and
	// the images this rank computed.
	compute, optimizer, stepTime time.Duration
	reduced                      int64
	images                       int

	started   time.Time
	startStep int64
}

// openJob builds the replica of an assigned job, from the newest
// checkpoint of the job in the local store or held by the coordinators
// (the assignment's), else from the job's seed (as `gencluster train`
// starts); see resume.
func (w *Worker) openJob(ctx context.Context, a *pb.Assignment) (*job, error) {
	if w.testOpenHook != nil {
		w.testOpenHook()
	}
	j, err := w.buildJob(ctx, a)
	if err != nil {
		return nil, err
	}
	if err := w.resume(ctx, j, a.GetCheckpoint()); err != nil {
		j.close()
		return nil, err
	}
	return j, nil
}

// buildJob builds the replica of an assigned job (data set, model,
// optimizer, buffers), its parameters not yet initialised.
func (w *Worker) buildJob(ctx context.Context, a *pb.Assignment) (*job, error) {
	spec := a.GetJob()
	if spec.GetSteps() > maxSteps {
		return nil, fmt.Errorf("job %s: %d steps, more than the %d a worker can count", a.GetJobId(), spec.GetSteps(), maxSteps)
	}
	images, err := dataset.Open(spec.GetDataset(), dataset.Train)
	if errors.Is(err, fs.ErrNotExist) {
		// Not on this machine: stream it from the coordinators.
		w.log.Info("data set not here; streaming it from the coordinators", "dataset", spec.GetDataset(), "err", err)
		ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		images, err = w.client.FetchDataset(ctx, spec.GetDataset())
		cancel()
		if err == nil {
			w.log.Info("data set received", "dataset", spec.GetDataset(), "images", images.N)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("job %s: %w", a.GetJobId(), err)
	}
	ms, err := models.Spec{Name: spec.GetModel(), Levels: int(spec.GetLevels())}.Canonical()
	if err != nil {
		return nil, fmt.Errorf("job %s: %w", a.GetJobId(), err)
	}
	pool := kernels.NewPool(w.cfg.Threads)
	m, err := models.New(ms, pool)
	if err == nil {
		err = dataset.CheckShape(images, m.Rows(), m.Cols())
	}
	var seq *sharding.Sequence
	if err == nil {
		seq, err = sharding.NewSequence(spec.GetSeed(), images.N, int(spec.GetBatch()))
	}
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("job %s: %w", a.GetJobId(), err)
	}
	adamCfg := optim.DefaultAdam()
	adamCfg.LR = spec.GetLr()
	j := &job{
		id: a.GetJobId(), spec: spec, pool: pool, model: m, data: images, seq: seq,
		opt:  optim.NewAdam(adamCfg, training.ParamLengths(m)),
		log:  w.log.With("job", a.GetJobId()),
		held: -1, bucketHook: w.testBucketHook,
		meta: checkpoint.Job{Model: spec.GetModel(), Levels: ms.Levels, Dataset: spec.GetDataset(), Batch: int(spec.GetBatch()),
			TotalSteps: spec.GetSteps(), Seed: spec.GetSeed(), LR: spec.GetLr()},
	}
	j.grey = models.GreyInput(m)
	j.x = make([]float32, int(spec.GetBatch())*m.Rows()*m.Cols())
	j.idx = make([]int, spec.GetBatch())
	// Learn the order in which backward finishes the gradients (on one
	// blank image), and lay the gradients out in it as buckets: a rank
	// with no images in a step starts its buckets in that order.
	m.SetGradHook(func(p *models.Param) { j.order = append(j.order, p) })
	m.Grad(j.x[:m.Rows()*m.Cols()], 1, models.Noise{})
	gradBytes := 0
	for _, p := range j.order {
		gradBytes += 4 * len(p.Grad)
	}
	capBytes := DefaultBucketBytes(gradBytes)
	if kib := spec.GetBucketKib(); kib > 0 {
		capBytes = int(kib) << 10
	}
	if j.buckets, err = newBuckets(j.order, capBytes); err != nil {
		pool.Close()
		return nil, fmt.Errorf("job %s: %w", a.GetJobId(), err)
	}
	for _, p := range m.Params() {
		j.params = append(j.params, p.Data)
		j.grads = append(j.grads, p.Grad)
		j.names = append(j.names, p.Name)
	}
	m.SetGradHook(j.onGrad)
	return j, nil
}

// close ends the job's checkpoint writer (a checkpoint in flight is
// abandoned) and its compute pool.
func (j *job) close() {
	if j.writer != nil {
		j.writer.stop()
	}
	if j.sampler != nil {
		j.sampler.stop()
	}
	j.pool.Close()
}

// sync makes every replica of the ring identical at the start of a
// generation: the ranks learn each other's completed steps, and the lowest
// rank of those furthest ahead broadcasts its parameters, optimizer state
// and step to the rest (an all-reduce to which everyone else adds zeros).
// A step that completed on some ranks and not on others before the ring
// broke is thereby completed everywhere; a new or restarted worker receives
// the current state.
func (j *job) sync(ctx context.Context, m *allreduce.Generation, a *pb.Assignment) error {
	n, rank := len(a.GetRing()), int(a.GetRank())
	j.gather = grow(j.gather, n)
	clear(j.gather)
	j.gather[rank] = float32(j.step)
	if err := m.AllReduce(ctx, j.gather); err != nil {
		return fmt.Errorf("sync steps: %w", err)
	}
	donor, top := 0, j.gather[0]
	for r, s := range j.gather {
		if s > top {
			donor, top = r, s
		}
	}
	if top < 0 || top > float32(j.spec.GetSteps()) || top != float32(int64(top)) {
		return fmt.Errorf("sync steps: rank %d reports step %v", donor, top)
	}
	// The broadcast buffer (parameters, Adam moments, step count) lives
	// only for the sync: a generation starts rarely, and it is three times
	// the model's size.
	size := 0
	for _, p := range j.params {
		size += len(p)
	}
	state := make([]float32, 3*size+1)
	if rank == donor {
		k := 0
		for i := range j.params {
			k += copy(state[k:], j.params[i])
		}
		for i := range j.params {
			k += copy(state[k:], j.opt.M[i])
		}
		for i := range j.params {
			k += copy(state[k:], j.opt.V[i])
		}
		state[k] = float32(j.opt.Steps)
	}
	if err := m.AllReduce(ctx, state); err != nil {
		return fmt.Errorf("sync state from rank %d: %w", donor, err)
	}
	k := 0
	for i := range j.params {
		k += copy(j.params[i], state[k:])
	}
	for i := range j.params {
		k += copy(j.opt.M[i], state[k:])
	}
	for i := range j.params {
		k += copy(j.opt.V[i], state[k:])
	}
	if before := j.step; before != int64(top) {
		j.log.Info("state received", "from_rank", donor, "step", int64(top), "had", before)
	}
	j.opt.Steps = int64(state[k])
	j.step = int64(top)
	return nil
}

// trainStep computes this rank's share of the next global batch, sums the
// gradients (and the loss) over the ring of generation m and applies the
// Adam step. On an error nothing has changed: the step is done again in the
// next generation. Every bucket runs in m: if the member is switched to a
// newer generation under the step, the step's remaining buckets fail with
// allreduce.ErrSuperseded and never reach the new ring.
func (j *job) trainStep(ctx context.Context, m *allreduce.Generation, a *pb.Assignment) error {
	stepStart := time.Now()
	batch := int(j.spec.GetBatch())
	lo, hi := sharding.Split(batch, int(a.GetRank()), len(a.GetRing()))
	dim := j.model.Rows() * j.model.Cols()
	j.seq.Global(j.step, j.idx)
	for i := lo; i < hi; i++ {
		j.data.Pixels(j.idx[i], j.x[(i-lo)*dim:(i-lo+1)*dim], j.grey)
	}
	// Each bucket is started by the hook as soon as backward has finished
	// its gradients (in the same order on every rank), so that summing it
	// over the ring overlaps the rest of the backward pass; the last one,
	// with the loss, once backward returns.
	j.ops, j.stepCtx, j.stepRing, j.stepErr = j.ops[:0], ctx, m, nil
	j.buckets.begin()
	var local float64
	if hi > lo {
		noise := training.StepNoise(j.spec.GetSeed(), j.step, batch)
		noise.First += uint64(lo) // the same noise as one process computing the whole batch
		local = j.model.Grad(j.x[:(hi-lo)*dim], hi-lo, noise)
	} else {
		models.ZeroGrad(j.model.Params())
		for _, p := range j.order {
			j.onGrad(p)
		}
	}
	backEnd := time.Now()
	*j.buckets.loss() = float32(local)
	first := j.stepErr
	if from, to, err := j.buckets.finish(); err != nil {
		first = cmp.Or(first, error(&jobError{err}))
	} else if first == nil {
		j.start(from, to)
	}
	for _, op := range j.ops {
		if err := op.Wait(); err != nil && first == nil {
			first = err
		}
	}
	end := time.Now()
	j.comm, j.exposed = end.Sub(j.firstStart), end.Sub(backEnd)
	j.compute, j.images = backEnd.Sub(stepStart), hi-lo
	j.reduced = 0
	if len(a.GetRing()) > 1 { // a ring of one sums nothing
		j.reduced = 4 * int64(len(j.buckets.flat))
	}
	j.stepCtx, j.stepRing = nil, nil
	if first != nil {
		return fmt.Errorf("step %d: %w", j.step+1, first)
	}
	loss := float64(*j.buckets.loss()) / float64(batch)
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return &jobError{fmt.Errorf("step %d: loss is %v; lower the learning rate", j.step+1, loss)}
	}
	// A NaN or an infinity in a summed gradient would poison the
	// parameters (and every later checkpoint): nothing is applied, and the
	// job fails (every rank sees the same sums).
	if i := optim.FirstNonFinite(j.grads); i >= 0 {
		return &jobError{fmt.Errorf("step %d: summed gradient of %s holds NaN or Inf", j.step+1, j.names[i])}
	}
	optStart := time.Now()
	if err := j.opt.StepOn(j.pool, j.params, j.grads, 1/float32(batch)); err != nil {
		return &jobError{fmt.Errorf("step %d: %w", j.step+1, err)}
	}
	j.optimizer = time.Since(optStart)
	j.stepTime = time.Since(stepStart)
	j.step++
	j.loss = loss
	return nil
}

// onGrad notes a gradient backward has just finished and starts the
// all-reduce of the buckets it completes.
func (j *job) onGrad(p *models.Param) {
	if j.stepRing == nil || j.stepErr != nil {
		return
	}
	from, to, err := j.buckets.done(p)
	if err != nil {
		// The model reported its gradients out of its own order: a bug
		// that every rank meets alike, so the job fails (trying the step
		// again in a new ring generation would meet it again).
		j.stepErr = &jobError{err}
		return
	}
	j.start(from, to)
}

// start starts the all-reduce of buckets from..to-1 of the step in flight,
// reusing the Ops of the same buckets of the last step (all of which were
// waited).
func (j *job) start(from, to int) {
	if from < to && len(j.ops) == 0 {
		j.firstStart = time.Now()
	}
	for k := from; k < to; k++ {
		if j.bucketHook != nil {
			j.bucketHook(j.step, k)
		}
		var op *allreduce.Op
		if k < cap(j.ops) {
			op = j.ops[:k+1][k]
		}
		j.ops = append(j.ops[:k], j.stepRing.StartOp(j.stepCtx, op, j.buckets.bucket(k)))
	}
}

// jobError is a failure of the job itself (not of the ring): the job is
// reported failed.
type jobError struct{ err error }

func (e *jobError) Error() string { return e.err.Error() }
func (e *jobError) Unwrap() error { return e.err }

func grow(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

// checksum is a hash of the parameters' bits, for comparing replicas.
func (j *job) checksum() string { return Checksum(j.params) }

// Checksum hashes the bits of a replica's parameters (FNV-1a over their
// little-endian float32 bits): equal replicas, equal checksums.
func Checksum(params [][]float32) string {
	h := fnv.New64a()
	var b [4]byte
	for _, p := range params {
		for _, v := range p {
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
			h.Write(b[:])
		}
	}
	return fmt.Sprintf("%016x", h.Sum64())
}

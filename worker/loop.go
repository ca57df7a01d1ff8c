package worker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/gencluster/gencluster/allreduce"
	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// progressEvery throttles rank 0's progress reports.
const progressEvery = time.Second

// phase is a state of the train loop. The loop is one state machine:
//
//	idle ──job assigned──▶ opening ──replica built──▶ entering
//	  ▲                      │ cannot build: report unfit, back to idle
//	  │                      ▼
//	  │   entering ──ring set, nobody waited for──▶ syncing ──▶ training
//	  │      │ the generation waits for ring members: idle until they are back
//	  │   training ──last step──▶ finished (rank 0 finishes the job) ──▶ idle
//	  │   training/syncing ──ring operation failed──▶ recovering ──▶ idle
//	  └── a new assignment (generation or job) at any step boundary
//
// Every phase acts on one assignment (l.a) and, from entering on, one ring
// generation (l.ring): a step's buckets and a sync run only in the
// generation they began in (allreduce.Generation).
type phase int

const (
	phaseIdle       phase = iota // wait for an assignment with a job this worker can run
	phaseOpening                 // build the job's replica
	phaseEntering                // join the assignment's ring generation (unless it waits for members)
	phaseSyncing                 // make the replicas identical in this generation
	phaseTraining                // step after step
	phaseFinished                // reached the last step; rank 0 ends the job
	phaseRecovering              // a ring operation failed: report it, wait for a newer generation
)

func (p phase) String() string {
	return [...]string{"idle", "opening", "entering", "syncing", "training", "finished", "recovering"}[p]
}

// loop is the train loop's state: the phase, what it acts on, and what it
// remembers across phases.
type loop struct {
	w     *Worker
	phase phase
	a     *pb.Assignment        // the assignment being acted on
	j     *job                  // the replica (of a.JobId once opened)
	ring  *allreduce.Generation // the generation syncing/training runs in
	err   error                 // the failure recovering handles

	skipJob    string         // job this worker will not run again: it could not build its replica, or reported it failed
	done       *pb.Assignment // the assignment in which this worker reached the job's last step
	lastReport time.Time
	waitLogged string // the hold last logged (not to repeat it)
	computes   computeWindow
}

// trainLoop follows the assignments until ctx ends; pre, if not nil, is a
// replica built before joining.
func (w *Worker) trainLoop(ctx context.Context, pre *job) error {
	l := &loop{w: w, j: pre}
	defer func() {
		if l.j != nil {
			l.j.close()
		}
	}()
	for ctx.Err() == nil {
		var err error
		switch l.phase {
		case phaseIdle:
			l.idle(ctx)
		case phaseOpening:
			l.opening(ctx)
		case phaseEntering:
			err = l.entering(ctx)
		case phaseSyncing:
			l.syncing(ctx)
		case phaseTraining:
			l.training(ctx)
		case phaseFinished:
			l.finished(ctx)
		case phaseRecovering:
			w.recover(ctx, l.a, l.err)
			l.phase = phaseIdle
		}
		if err != nil {
			return fmt.Errorf("worker %s: %w", w.id, err)
		}
	}
	return nil
}

// idle takes the current assignment if it holds a job to run, else waits
// for the next one.
func (l *loop) idle(ctx context.Context) {
	a := l.w.assign.Load()
	switch {
	case a.GetJobId() == "" || a.GetJobId() == l.skipJob:
		l.w.wait(ctx)
	case l.done != nil && l.done.GetJobId() == a.GetJobId() && l.done.GetGeneration() == a.GetGeneration():
		l.w.wait(ctx) // the job's end is up to the coordinators (or the next generation's rank 0)
	case l.j == nil || l.j.id != a.GetJobId():
		l.a, l.phase = a, phaseOpening
	default:
		l.a, l.phase = a, phaseEntering
	}
}

// opening builds the assigned job's replica and tells the coordinators it
// is ready. A worker that cannot (say, its data set has the wrong shape) is
// taken out of that job's ring with its reason, rather than failing the job
// for everyone or stalling it.
func (l *loop) opening(ctx context.Context) {
	if l.j != nil {
		l.j.close()
		l.j = nil
	}
	j, err := l.w.openJob(ctx, l.a)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		l.w.log.Error("cannot run job; asking to leave its ring", "job", l.a.GetJobId(), "err", err)
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		rerr := l.w.client.ReportUnfit(rctx, &pb.ReportUnfitRequest{WorkerId: l.w.id, JobId: l.a.GetJobId(), Reason: err.Error()})
		cancel()
		if rerr != nil {
			l.w.log.Warn("report unfit", "job", l.a.GetJobId(), "err", rerr)
		}
		l.skipJob, l.phase = l.a.GetJobId(), phaseIdle
		return
	}
	l.j, l.phase = j, phaseEntering
	// Tell the coordinators at once: the job's first generation is held
	// until every ring member has built its replica.
	l.w.setReady(j.id)
	if err := l.w.heartbeat(ctx); err != nil && ctx.Err() == nil {
		l.w.log.Debug("heartbeat after building the replica", "err", err)
	}
}

// entering sets the ring member to the assignment's generation, unless
// that generation is on hold: the job waits for min_workers, or for ring
// members that have not come back after the coordinators restarted (so
// the first worker back never runs ahead alone). Then the worker waits.
func (l *loop) entering(ctx context.Context) error {
	if r := l.a.GetWaitReason(); r != "" {
		if r != l.waitLogged {
			l.w.log.Info("generation on hold", "generation", l.a.GetGeneration(), "reason", r)
			l.waitLogged = r
		}
		l.w.wait(ctx)
		l.phase = phaseIdle
		return nil
	}
	g, err := l.w.ringFor(l.a)
	if err != nil {
		return err
	}
	if g == nil {
		l.phase = phaseIdle // stale: the heartbeat has moved the member on
		return nil
	}
	l.ring, l.phase = g, phaseSyncing
	return nil
}

func (l *loop) syncing(ctx context.Context) {
	if err := l.j.sync(ctx, l.ring, l.a); err != nil {
		l.err, l.phase = err, phaseRecovering
		return
	}
	l.j.started, l.j.startStep = time.Now(), l.j.step
	l.w.log.Info("ring ready", "job", l.j.id, "generation", l.a.GetGeneration(), "rank", l.a.GetRank(), "world", len(l.a.GetRing()), "step", l.j.step)
	l.phase = phaseTraining
}

// training runs one step, or leaves for another phase at a step boundary:
// a newer assignment, the last step, a failure.
func (l *loop) training(ctx context.Context) {
	w, j, a := l.w, l.j, l.a
	if cur := w.assign.Load(); cur.GetGeneration() != a.GetGeneration() || cur.GetJobId() != a.GetJobId() {
		l.phase = phaseIdle
		return
	}
	if j.step >= j.spec.GetSteps() {
		l.phase = phaseFinished
		return
	}
	err := j.trainStep(ctx, l.ring, a)
	var jerr *jobError
	switch {
	case errors.As(err, &jerr):
		// Every rank sees the same summed loss, so every rank reports the
		// job failed: it ends even if rank 0 dies first.
		w.log.Error("job failed", "job", j.id, "err", err)
		if ferr := w.finish(ctx, j.id, err); ferr != nil {
			w.wait(ctx) // the coordinators do not answer: the step fails the same way again
		} else {
			l.skipJob = j.id
		}
		l.phase = phaseIdle
		return
	case err != nil:
		l.err, l.phase = err, phaseRecovering
		return
	}
	w.compute.Store(math.Float64bits(l.computes.add(j.compute.Seconds())))
	if w.cfg.OnStep != nil {
		info := w.stepInfo(j, a)
		info.Params = j.params
		w.cfg.OnStep(info)
	}
	if a.GetRank() != 0 {
		return
	}
	if every := j.spec.GetCheckpointEvery(); every > 0 && j.step%every == 0 && j.step < j.spec.GetSteps() {
		w.checkpointAsync(ctx, j, a) // a copy; written and sent in the background
	}
	if time.Since(l.lastReport) >= progressEvery {
		l.lastReport = time.Now()
		w.report(ctx, j, a, false)
	}
}

// finished: this worker reached the job's last step in generation l.a.
// Rank 0 has the coordinators hold the final checkpoint and ends the job;
// every rank then waits for the coordinators to move on (if this
// generation's rank 0 dies first, the next generation's finishes it).
func (l *loop) finished(ctx context.Context) {
	w, j, a := l.w, l.j, l.a
	w.log.Info("job complete", "job", j.id, "step", j.step, "generation", a.GetGeneration(), "rank", a.GetRank(), "params_checksum", j.checksum())
	if a.GetRank() == 0 {
		w.finalCheckpoint(ctx, j, a)
		if ctx.Err() != nil {
			return
		}
		w.report(ctx, j, a, true)
		if err := w.finish(ctx, j.id, nil); err != nil {
			w.wait(ctx) // and try again
			return
		}
	}
	l.done, l.phase = a, phaseIdle
}

// finalCheckpoint has the coordinators hold the job's last step: it waits
// for the background writer to finish the checkpoints before it (so that
// the final one is committed last), then writes the final one and uploads
// it, retrying for up to holdTimeout. If the coordinators still do not
// hold it, the job is finished all the same (its replicas are complete)
// and the error is logged; it is not tried again for this job.
func (w *Worker) finalCheckpoint(ctx context.Context, j *job, a *pb.Assignment) {
	if j.held == j.step || j.finalFailed {
		return
	}
	if j.writer != nil {
		if err := j.writer.drain(ctx); err != nil {
			return // ctx ended
		}
	}
	s := j.snapshot(a)
	if err := w.holdFinal(ctx, s); err != nil {
		if ctx.Err() != nil {
			return
		}
		j.finalFailed = true
		w.log.Error("the coordinators do not hold the job's final checkpoint; finishing the job without it", "job", j.id, "step", j.step, "err", err)
		return
	}
	j.held = j.step
	w.finalSample(ctx, j, s)
}

// wait blocks until the assignment changes (or a heartbeat interval
// passes) or ctx ends.
func (w *Worker) wait(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-w.changed:
	case <-time.After(time.Second):
	}
}

func ringOf(a *pb.Assignment) allreduce.Ring {
	addrs := make([]string, len(a.GetRing()))
	for i, m := range a.GetRing() {
		addrs[i] = m.GetAddr()
	}
	return allreduce.Ring{JobID: a.GetJobId(), Generation: a.GetGeneration(), Rank: int(a.GetRank()), Addrs: addrs}
}

func (w *Worker) stepInfo(j *job, a *pb.Assignment) StepInfo {
	el := time.Since(j.started)
	ips := 0.0
	if s := el.Seconds(); s > 0 {
		ips = float64(j.step-j.startStep) * float64(j.spec.GetBatch()) / s
	}
	return StepInfo{WorkerID: w.id, JobID: j.id, Step: j.step, Total: j.spec.GetSteps(), Loss: j.loss, ImagesPerSec: ips,
		Generation: a.GetGeneration(), Rank: int(a.GetRank()), World: len(a.GetRing()), Elapsed: el,
		Comm: j.comm, Exposed: j.exposed, StepTime: j.stepTime, Compute: j.compute, Optimizer: j.optimizer,
		AllReducedBytes: j.reduced, LocalImages: j.images}
}

// report sends rank 0's progress to the coordinators. It does not hold up
// training while the coordinators elect a leader: it gives up after a
// short time (the next report carries newer progress), except for the
// last one.
func (w *Worker) report(ctx context.Context, j *job, a *pb.Assignment, last bool) {
	info := w.stepInfo(j, a)
	timeout := 500 * time.Millisecond
	if last {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := w.client.ReportProgress(ctx, &pb.ReportProgressRequest{
		WorkerId: w.id, JobId: j.id, Generation: a.GetGeneration(), Step: j.step, Loss: j.loss, ImagesPerSec: info.ImagesPerSec,
	})
	if err != nil && ctx.Err() == nil {
		w.log.Warn("report progress", "job", j.id, "step", j.step, "err", err)
	}
}

// finish tells the coordinators the job ended (failed if cause is not nil).
func (w *Worker) finish(ctx context.Context, jobID string, cause error) error {
	req := &pb.FinishJobRequest{WorkerId: w.id, JobId: jobID}
	if cause != nil {
		req.Failed, req.Message = true, cause.Error()
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	next, err := w.client.FinishJob(ctx, req)
	if err != nil {
		w.log.Error("finish job", "job", jobID, "err", err)
		return err
	}
	w.log.Info("job finished", "job", jobID, "failed", cause != nil, "next", next)
	return nil
}

// recover handles a failed ring operation in generation a and returns
// once a newer generation is assigned (or ctx ends). Only direct evidence
// names a peer: a broken connection, a peer silent past the ring timeout,
// a garbage frame. A peer that merely passed a failure on
// (allreduce.ErrPeerLeft) is alive and never blamed: the worker waits for
// the generation the direct witnesses' reports bring, and if none comes
// within two ring timeouts it reports the generation failed blaming no one
// (the coordinators then form the ring again). Either way the coordinators
// remove a blamed peer only if they find it dead themselves.
func (w *Worker) recover(ctx context.Context, a *pb.Assignment, err error) {
	if cur := w.assign.Load(); cur.GetGeneration() > a.GetGeneration() || errors.Is(err, allreduce.ErrSuperseded) || w.isClosed() {
		return
	}
	w.log.Warn("ring operation failed", "generation", a.GetGeneration(), "err", err)
	failed := ""
	var pe *allreduce.PeerError
	if !errors.Is(err, allreduce.ErrPeerLeft) && errors.As(err, &pe) && pe.Rank >= 0 && pe.Rank < len(a.GetRing()) && pe.Rank != int(a.GetRank()) {
		failed = a.GetRing()[pe.Rank].GetWorkerId()
	} else {
		wctx, cancel := context.WithTimeout(ctx, 2*w.cfg.RingTimeout)
		next := w.awaitNewer(wctx, a.GetGeneration())
		cancel()
		if next != nil || ctx.Err() != nil {
			return
		}
	}
	// Report until the coordinators take it or move on: a report lost to a
	// leader election must not leave the ring waiting for ever.
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		r, rerr := w.client.ReportFailure(rctx, &pb.ReportFailureRequest{
			ReporterId: w.id, FailedId: failed, Generation: a.GetGeneration(), Reason: truncate(err.Error(), 1000),
		})
		cancel()
		if rerr == nil {
			w.reported.Add(1)
			w.log.Info("reported the failed generation", "blamed", failed, "removed", r.GetRemoved(), "verdict", r.GetVerdict(), "new_generation", r.GetGeneration())
			break
		}
		if cur := w.assign.Load(); cur.GetGeneration() > a.GetGeneration() {
			break
		}
		w.log.Info("failure report not taken", "blamed", failed, "err", rerr)
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		next := w.awaitNewer(wctx, a.GetGeneration())
		cancel()
		if next != nil {
			return
		}
	}
	w.awaitNewer(ctx, a.GetGeneration())
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// computeWindow holds the compute times of a worker's last steps.
type computeWindow struct {
	times [16]float64
	n     int // steps seen
}

// add records one step's compute time and returns the median of the
// window.
func (c *computeWindow) add(seconds float64) float64 {
	c.times[c.n%len(c.times)] = seconds
	c.n++
	xs := c.times // a copy on the stack: no allocation in the training step
	k := min(c.n, len(c.times))
	slices.Sort(xs[:k])
	if k%2 == 1 {
		return xs[k/2]
	}
	return (xs[k/2-1] + xs[k/2]) / 2
}

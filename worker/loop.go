package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gencluster/gencluster/allreduce"
	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// progressEvery throttles rank 0's progress reports.
const progressEvery = time.Second

// peerLeftGrace is how long a worker whose peer left the generation (alive,
// failed because of another) waits for a new generation before reporting
// that peer itself.
const peerLeftGrace = 2 * time.Second

// trainLoop follows the assignments: it opens the assigned job, switches
// the ring at every new generation, makes the replicas identical, trains
// step after step and, as rank 0, reports progress, writes checkpoints and
// finishes the job. It returns when ctx ends.
func (w *Worker) trainLoop(ctx context.Context) error {
	var (
		j          *job
		ring       *allreduce.Generation // the generation this loop works in
		synced     bool                  // the replicas are identical in ring
		finished   string                // job whose last step this worker reached ...
		finishedAt uint64                // ... in this generation
		failedJob  string                // job id whose replica could not be built
		lastReport time.Time
	)
	defer func() {
		if j != nil {
			j.close()
		}
	}()
	for ctx.Err() == nil {
		a := w.assign.Load()
		done := a.GetJobId() == finished && a.GetGeneration() == finishedAt
		if a.GetJobId() == "" || done || a.GetJobId() == failedJob {
			w.wait(ctx)
			continue
		}
		if j == nil || j.id != a.GetJobId() {
			if j != nil {
				j.close()
				j = nil
			}
			nj, err := w.openJob(ctx, a)
			if err != nil {
				// Every replica is needed: a worker that cannot build one
				// (say, its data set has the wrong shape) fails the job,
				// naming itself, rather than stalling the ring.
				w.log.Error("cannot run job", "job", a.GetJobId(), "err", err)
				failedJob = a.GetJobId()
				w.finish(ctx, a.GetJobId(), fmt.Errorf("worker %s: %w", w.id, err))
				continue
			}
			j = nj
			synced = false
		}
		if ring == nil || ring.Ring().Generation != a.GetGeneration() || ring.Ring().JobID != a.GetJobId() {
			g, err := w.ringFor(a)
			if err != nil {
				return fmt.Errorf("worker %s: %w", w.id, err)
			}
			if g == nil {
				continue // a is stale: the heartbeat has moved the member on
			}
			ring, synced = g, false
		}
		gen := a.GetGeneration()
		if !synced {
			if err := j.sync(ctx, ring, a); err != nil {
				w.recover(ctx, a, err)
				continue
			}
			synced = true
			j.started, j.startStep = time.Now(), j.step
			w.log.Info("ring ready", "job", j.id, "generation", gen, "rank", a.GetRank(), "world", len(a.GetRing()), "step", j.step)
		}
		if j.step >= j.spec.GetSteps() {
			w.log.Info("job complete", "job", j.id, "step", j.step, "generation", gen, "rank", a.GetRank(), "params_checksum", j.checksum())
			if a.GetRank() == 0 {
				if err := j.save(); err != nil {
					w.log.Error("final checkpoint", "job", j.id, "err", err)
				}
				w.report(ctx, j, a, true)
				if err := w.finish(ctx, j.id, nil); err != nil {
					w.wait(ctx) // and try again
					continue
				}
			}
			// Wait for the coordinators to end the job; if this generation's
			// rank 0 dies first, the next generation's finishes it.
			finished, finishedAt = j.id, gen
			continue
		}
		err := j.trainStep(ctx, ring, a)
		var jerr *jobError
		switch {
		case errors.As(err, &jerr):
			w.log.Error("job failed", "job", j.id, "err", err)
			failedJob = j.id
			if a.GetRank() == 0 {
				if ferr := w.finish(ctx, j.id, err); ferr != nil {
					failedJob = "" // the step fails the same way again: so does the report
					w.wait(ctx)
				}
			}
			continue
		case err != nil:
			w.recover(ctx, a, err)
			synced = false
			continue
		}
		if w.cfg.OnStep != nil {
			info := w.stepInfo(j, a)
			info.Params = j.params
			w.cfg.OnStep(info)
		}
		if a.GetRank() != 0 {
			continue
		}
		if every := j.spec.GetCheckpointEvery(); every > 0 && j.step%every == 0 && j.step < j.spec.GetSteps() {
			if err := j.save(); err != nil {
				w.log.Error("checkpoint", "job", j.id, "step", j.step, "err", err)
			}
		}
		if time.Since(lastReport) >= progressEvery {
			lastReport = time.Now()
			w.report(ctx, j, a, false)
		}
	}
	return nil
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
		Comm: j.comm, Exposed: j.exposed}
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

// recover handles a failed ring operation in generation a: it reports the
// peer the error names (unless the cluster has already moved on) and waits
// for the next generation.
func (w *Worker) recover(ctx context.Context, a *pb.Assignment, err error) {
	if cur := w.assign.Load(); cur.GetGeneration() > a.GetGeneration() || errors.Is(err, allreduce.ErrSuperseded) || w.isClosed() {
		return
	}
	w.log.Warn("ring operation failed", "generation", a.GetGeneration(), "err", err)
	if errors.Is(err, allreduce.ErrPeerLeft) {
		// The peer is alive and failed because of someone else, whose
		// neighbours report it; report only if no new generation comes.
		wctx, cancel := context.WithTimeout(ctx, peerLeftGrace)
		next := w.awaitNewer(wctx, a.GetGeneration())
		cancel()
		if next != nil || ctx.Err() != nil {
			return
		}
	}
	var pe *allreduce.PeerError
	if errors.As(err, &pe) && pe.Rank >= 0 && pe.Rank < len(a.GetRing()) && pe.Rank != int(a.GetRank()) {
		failed := a.GetRing()[pe.Rank].GetWorkerId()
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		g, rerr := w.client.ReportFailure(rctx, &pb.ReportFailureRequest{
			ReporterId: w.id, FailedId: failed, Generation: a.GetGeneration(), Reason: err.Error(),
		})
		cancel()
		if rerr != nil {
			w.log.Info("failure report not taken", "failed", failed, "err", rerr)
		} else {
			w.log.Info("reported failed peer", "failed", failed, "new_generation", g)
		}
	}
	w.awaitNewer(ctx, a.GetGeneration())
}

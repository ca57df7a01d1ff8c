package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/coordinator"
	"github.com/gencluster/gencluster/localcluster"
	"github.com/gencluster/gencluster/models"
	"github.com/gencluster/gencluster/training"
	"github.com/gencluster/gencluster/worker"
)

// clusterBench is the result of `gencluster bench cluster --json`.
type clusterBench struct {
	Model   string `json:"model"`
	Batch   int    `json:"batch"`
	Steps   int    `json:"steps"`   // timed steps of the throughput runs
	Workers int    `json:"workers"` // of the throughput run (1 thread each)
	Threads int    `json:"threads"` // of the one-process run
	Rounds  int    `json:"rounds"`  // of each recovery measurement
	TLS     bool   `json:"tls"`     // the cluster ran mutual TLS (--tls)

	BucketKiB int `json:"bucket_kib"` // the job's gradient bucket cap (0: the default)

	// Throughput: --rounds rounds, each one process then the cluster; the
	// figures are medians over the rounds.
	TrainImagesPerSec float64 `json:"train_images_per_sec"` // one process, --threads
	LocalImagesPerSec float64 `json:"local_images_per_sec"` // --workers processes' worth, 1 thread each
	// LocalVsTrain is the median of the rounds' local/train ratios
	// (LocalVsTrainRounds), DistributionOverhead 1 - local/train of the
	// medians.
	LocalVsTrain         float64   `json:"local_vs_train"`
	LocalVsTrainRounds   []float64 `json:"local_vs_train_rounds"`
	DistributionOverhead float64   `json:"distribution_overhead"`
	// AllreduceMsPerStep is rank 0's all-reduce time per step (first
	// bucket started to last bucket done), ExposedMsPerStep the part of it
	// after the backward pass ended (not hidden behind it); HiddenShare =
	// 1 - exposed/all-reduce. ComputeMsPerStep is rank 0's forward and
	// backward, OptimizerMsPerStep its Adam update, StepMsPerStep the
	// whole step (medians over the timed steps of every round).
	AllreduceMsPerStep float64 `json:"allreduce_ms_per_step"`
	ExposedMsPerStep   float64 `json:"exposed_ms_per_step"`
	HiddenShare        float64 `json:"allreduce_hidden_share"`
	ComputeMsPerStep   float64 `json:"compute_ms_per_step"`
	OptimizerMsPerStep float64 `json:"optimizer_ms_per_step"`
	StepMsPerStep      float64 `json:"step_ms_per_step"`

	// Recovery: from the kill to the first step completed afterwards in a
	// new ring generation (worker kill), or to the first progress report
	// accepted by the new raft leader (leader kill).
	WorkerKillRecoverySeconds []float64 `json:"worker_kill_recovery_seconds"`
	WorkerKillRecoveryMedian  float64   `json:"worker_kill_recovery_median_seconds"`
	LeaderKillRecoverySeconds []float64 `json:"leader_kill_recovery_seconds"`
	LeaderKillRecoveryMedian  float64   `json:"leader_kill_recovery_median_seconds"`

	// Checkpoints (3 coordinators): absent with --parts without checkpoint.
	*checkpointBench
}

func (a *app) benchClusterCommand() *cobra.Command {
	var model string
	var batch, steps, workers, threads, rounds, every, ckptSteps, bucketKiB int
	var parts []string
	var asJSON, useTLS bool
	cmd := &cobra.Command{
		Use:   "cluster [--model M] [--batch B] [--steps N] [--rounds R] [--tls] [--json]",
		Short: "Cost of distribution, all-reduce hidden behind backward, recovery after kills",
		Long: `Measure what distribution costs and how fast the cluster recovers, with
coordinators and workers as real gRPC servers on loopback in this process
(the embedded cluster of gencluster local):

* throughput: a job on --workers workers of 1 thread each vs one process
  training with --threads threads (training images/s, same model and batch);
* the all-reduce time per step and the share of it hidden behind backward;
* recovery after killing a worker (3 workers; its server and connections
  close at once, as when its process dies): time to the first step of the
  new ring generation;
* recovery after killing the raft leader (3 coordinators): time to the first
  progress report the new leader accepts;
* checkpoints (3 coordinators): rank 0's step time with a checkpoint every
  --checkpoint-every steps against none (--checkpoint-steps steps, runs
  alternated --rounds times, median of the pairs), the pause to copy the
  state and the time from the copy to the manifest committed by a majority.
  The coordinators share this machine's cores with the workers.

--parts picks what to measure (throughput, recovery, checkpoint). --tls runs
the throughput and recovery clusters over mutual TLS with roles checked
(certificates from a fresh CA), to measure what TLS costs.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if batch < 1 || steps < 1 || workers < 1 || threads < 1 || rounds < 1 {
				return errors.New("--batch, --steps, --workers, --threads and --rounds must be positive")
			}
			want := map[string]bool{}
			for _, p := range parts {
				switch p {
				case "throughput", "recovery", "checkpoint":
					want[p] = true
				default:
					return fmt.Errorf("--parts: %q is not throughput, recovery or checkpoint", p)
				}
			}
			if every < 1 || ckptSteps < 1 {
				return errors.New("--checkpoint-every and --checkpoint-steps must be positive")
			}
			if bucketKiB < 0 || bucketKiB > coordinator.MaxBucketKiB {
				return fmt.Errorf("--bucket-kib must be 0..%d", coordinator.MaxBucketKiB)
			}
			reserveProcs(2*max(workers, 3) + 1) // the clusters' workers have 1 thread each
			r := &clusterBench{Model: model, Batch: batch, Steps: steps, Workers: workers, Threads: threads, Rounds: rounds, TLS: useTLS, BucketKiB: bucketKiB}
			err := a.runClusterBench(cmd.Context(), r, want)
			if err == nil && want["checkpoint"] {
				r.checkpointBench, err = measureCheckpoints(cmd.Context(), a.log, model, batch, workers, ckptSteps, every, rounds)
			}
			if err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(r)
			}
			if want["throughput"] {
				fmt.Fprintf(a.stdout, "%s batch=%d: train --threads %d %.1f img/s, local --workers %d --threads 1 %.1f img/s (medians of %d rounds; local/train %.3f, rounds %.3f)\n",
					r.Model, r.Batch, r.Threads, r.TrainImagesPerSec, r.Workers, r.LocalImagesPerSec, r.Rounds, r.LocalVsTrain, r.LocalVsTrainRounds)
				fmt.Fprintf(a.stdout, "rank 0 per step: compute %.2f ms, all-reduce %.2f ms, exposed %.2f ms (hidden %.0f%%), optimizer %.2f ms, step %.2f ms\n",
					r.ComputeMsPerStep, r.AllreduceMsPerStep, r.ExposedMsPerStep, 100*r.HiddenShare, r.OptimizerMsPerStep, r.StepMsPerStep)
			}
			if want["recovery"] {
				fmt.Fprintf(a.stdout, "recovery: worker kill median %.3f s %v, leader kill median %.3f s %v\n",
					r.WorkerKillRecoveryMedian, r.WorkerKillRecoverySeconds, r.LeaderKillRecoveryMedian, r.LeaderKillRecoverySeconds)
			}
			if c := r.checkpointBench; c != nil {
				fmt.Fprintf(a.stdout, "checkpoints every %d steps: step time %.2f ms vs %.2f ms without (overhead median %.1f%% %v); copy %.2f ms, copy to commit %.0f ms (median of %d, %d failed), %d bytes\n",
					c.Every, median(c.StepMsWith), median(c.StepMsWithout), 100*c.OverheadMedian, c.Overhead, c.CopyMsMedian, c.CommitMsMedian, c.Checkpoints, c.Failed, c.SizeBytes)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&model, "model", "pixelcnn", "model: pixelcnn or vae")
	f.IntVar(&batch, "batch", 32, "global batch size")
	f.IntVar(&steps, "steps", 40, "timed steps of the throughput runs")
	f.IntVar(&workers, "workers", 2, "workers of the throughput run")
	f.IntVar(&threads, "threads", 2, "threads of the one-process run")
	f.IntVar(&rounds, "rounds", 3, "kills of each kind, and pairs of checkpoint runs (medians reported)")
	f.IntVar(&every, "checkpoint-every", 100, "checkpoint interval of the checkpoint runs")
	f.IntVar(&ckptSteps, "checkpoint-steps", 400, "timed steps of each checkpoint run")
	f.StringSliceVar(&parts, "parts", []string{"throughput", "recovery", "checkpoint"}, "what to measure: throughput, recovery, checkpoint")
	f.BoolVar(&asJSON, "json", false, "print JSON: the figures and the settings")
	f.BoolVar(&useTLS, "tls", false, "run the throughput and recovery clusters over mutual TLS")
	f.IntVar(&bucketKiB, "bucket-kib", 0, "the jobs' gradient bucket cap in KiB (0: the workers' default, an eighth of the model's gradients, at least 64)")
	return cmd
}

func (a *app) runClusterBench(ctx context.Context, r *clusterBench, parts map[string]bool) error {
	if parts["throughput"] {
		if err := a.measureThroughput(ctx, r); err != nil {
			return err
		}
	}
	if parts["recovery"] {
		if err := a.measureRecovery(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// measureThroughput: one process against the embedded cluster, --rounds
// times in turn (so both see the same spells of a noisy machine).
func (a *app) measureThroughput(ctx context.Context, r *clusterBench) error {
	var train, local, ratios, comm, exposed, compute, opt, step []float64
	for range r.Rounds {
		one, err := training.MeasureCompute(ctx, models.Spec{Name: r.Model}, r.Batch, r.Threads, throughputWarmup, r.Steps)
		if err != nil {
			return err
		}
		ips, timed, err := a.clusterThroughput(ctx, r)
		if err != nil {
			return err
		}
		train, local, ratios = append(train, one.ImagesPerSec), append(local, ips), append(ratios, ips/one.ImagesPerSec)
		for _, s := range timed {
			comm, exposed = append(comm, ms(s.Comm)), append(exposed, ms(s.Exposed))
			compute, opt, step = append(compute, ms(s.Compute)), append(opt, ms(s.Optimizer)), append(step, ms(s.StepTime))
		}
	}
	r.TrainImagesPerSec, r.LocalImagesPerSec = median(train), median(local)
	r.LocalVsTrain, r.LocalVsTrainRounds = median(ratios), ratios
	r.DistributionOverhead = 1 - r.LocalImagesPerSec/r.TrainImagesPerSec
	r.AllreduceMsPerStep, r.ExposedMsPerStep = median(comm), median(exposed)
	if r.AllreduceMsPerStep > 0 {
		r.HiddenShare = 1 - r.ExposedMsPerStep/r.AllreduceMsPerStep
	}
	r.ComputeMsPerStep, r.OptimizerMsPerStep, r.StepMsPerStep = median(compute), median(opt), median(step)
	return nil
}

// throughputWarmup is the untimed steps of each throughput run.
const throughputWarmup = 3

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

// clusterThroughput runs one job on an embedded cluster of r.Workers
// workers and returns its training images/s over the steps after the
// warm-up, and rank 0's figures of those steps.
func (a *app) clusterThroughput(ctx context.Context, r *clusterBench) (float64, []worker.StepInfo, error) {
	var mu sync.Mutex
	var infos []worker.StepInfo
	var times []time.Time
	err := withCluster(ctx, a.log, 1, r.Workers, r.TLS, func(s worker.StepInfo) {
		if s.Rank != 0 {
			return
		}
		mu.Lock()
		s.Params = nil
		infos, times = append(infos, s), append(times, time.Now())
		mu.Unlock()
	}, func(c *localcluster.Cluster, ws []*localcluster.Worker) error {
		spec := benchJob(r.Model, r.Batch, int64(throughputWarmup+r.Steps))
		spec.BucketKib = int32(r.BucketKiB)
		id, err := c.Submit(ctx, spec)
		if err != nil {
			return err
		}
		_, err = c.AwaitJob(ctx, 30*time.Minute, id, func(j *pb.JobInfo) bool { return j.GetState() == "done" })
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	if len(infos) < throughputWarmup+r.Steps {
		return 0, nil, fmt.Errorf("bench cluster: rank 0 reported %d steps, want %d", len(infos), throughputWarmup+r.Steps)
	}
	w := throughputWarmup
	ips := float64(len(infos)-1-w) * float64(r.Batch) / times[len(times)-1].Sub(times[w]).Seconds()
	return ips, infos[w+1:], nil
}

// measureRecovery: worker and leader kills.
func (a *app) measureRecovery(ctx context.Context, r *clusterBench) error {
	model, batch := r.Model, r.Batch
	for range r.Rounds {
		d, err := workerKillRecovery(ctx, a.log, model, batch, r.TLS)
		if err != nil {
			return err
		}
		r.WorkerKillRecoverySeconds = append(r.WorkerKillRecoverySeconds, d.Seconds())
		d, err = leaderKillRecovery(ctx, a.log, model, batch, r.TLS)
		if err != nil {
			return err
		}
		r.LeaderKillRecoverySeconds = append(r.LeaderKillRecoverySeconds, d.Seconds())
	}
	r.WorkerKillRecoveryMedian = median(r.WorkerKillRecoverySeconds)
	r.LeaderKillRecoveryMedian = median(r.LeaderKillRecoverySeconds)
	return nil
}

func benchJob(model string, batch int, steps int64) *pb.JobSpec {
	return &pb.JobSpec{Model: model, Dataset: "mnist", Batch: int32(batch), Steps: steps, Lr: 1e-3, Seed: 1, MinWorkers: 1}
}

// withCluster runs fn on an embedded cluster of coords coordinators and
// workers workers (1 thread each) whose steps go to onStep.
func withCluster(ctx context.Context, log *slog.Logger, coords, workers int, useTLS bool, onStep func(worker.StepInfo), fn func(*localcluster.Cluster, []*localcluster.Worker) error) (err error) {
	return withClusterConfig(ctx, log, coords, workers, useTLS, worker.Config{Threads: 1, OnStep: onStep}, fn)
}

// withClusterConfig is withCluster with the workers configured as wc.
func withClusterConfig(ctx context.Context, log *slog.Logger, coords, workers int, useTLS bool, wc worker.Config, fn func(*localcluster.Cluster, []*localcluster.Worker) error) (err error) {
	dir, err := os.MkdirTemp("", "gencluster-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	c, err := localcluster.Start(ctx, localcluster.Config{Coordinators: coords, StateDir: dir, Lease: 3 * time.Second, Logger: log,
		Worker: wc, TLS: useTLS})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.Close()) }()
	var ws []*localcluster.Worker
	for range workers {
		w, err := c.AddWorker()
		if err != nil {
			return err
		}
		ws = append(ws, w)
	}
	if err := c.AwaitWorkers(ctx, time.Minute, workers); err != nil {
		return err
	}
	return fn(c, ws)
}

// workerKillRecovery kills one of three workers mid-job and times the first
// step completed in a later generation.
func workerKillRecovery(ctx context.Context, log *slog.Logger, model string, batch int, useTLS bool) (time.Duration, error) {
	type ev struct {
		gen uint64
		at  time.Time
	}
	evs := make(chan ev, 1<<16)
	var d time.Duration
	err := withCluster(ctx, log, 1, 3, useTLS, func(s worker.StepInfo) {
		select {
		case evs <- ev{s.Generation, time.Now()}:
		default:
		}
	}, func(c *localcluster.Cluster, ws []*localcluster.Worker) error {
		id, err := c.Submit(ctx, benchJob(model, batch, 100000))
		if err != nil {
			return err
		}
		var gen uint64
		for range 5 { // a few steps in
			select {
			case e := <-evs:
				gen = max(gen, e.gen)
			case <-time.After(time.Minute):
				return errors.New("bench cluster: no steps")
			}
		}
		for len(evs) > 0 {
			gen = max(gen, (<-evs).gen)
		}
		t0 := time.Now()
		ws[1].Kill()
		for {
			select {
			case e := <-evs:
				if e.gen > gen {
					d = e.at.Sub(t0)
					return finishJob(ctx, c, id)
				}
			case <-time.After(time.Minute):
				return errors.New("bench cluster: no step within a minute of a worker kill")
			}
		}
	})
	return d, err
}

// leaderKillRecovery kills the raft leader of three coordinators mid-job and
// times the first progress report the new leader records.
func leaderKillRecovery(ctx context.Context, log *slog.Logger, model string, batch int, useTLS bool) (time.Duration, error) {
	var d time.Duration
	err := withCluster(ctx, log, 3, 2, useTLS, nil, func(c *localcluster.Cluster, ws []*localcluster.Worker) error {
		id, err := c.Submit(ctx, benchJob(model, batch, 100000))
		if err != nil {
			return err
		}
		if _, err := c.AwaitJob(ctx, time.Minute, id, func(j *pb.JobInfo) bool { return j.GetStep() >= 3 }); err != nil {
			return err
		}
		cl, err := c.NewClient()
		if err != nil {
			return err
		}
		defer cl.Close()
		st, err := cl.Status(ctx)
		if err != nil {
			return err
		}
		leader := slices.Index(c.Addrs(), st.GetLeader())
		if leader < 0 {
			return fmt.Errorf("bench cluster: leader %q unknown", st.GetLeader())
		}
		var step int64
		for _, j := range st.GetJobs() {
			if j.GetId() == id {
				step = j.GetStep()
			}
		}
		t0 := time.Now()
		if err := c.KillCoordinator(leader); err != nil {
			return err
		}
		if _, err := c.AwaitJob(ctx, time.Minute, id, func(j *pb.JobInfo) bool { return j.GetStep() > step }); err != nil {
			return err
		}
		d = time.Since(t0)
		return finishJob(ctx, c, id)
	})
	return d, err
}

// finishJob ends a benchmark job early (as its workers would).
func finishJob(ctx context.Context, c *localcluster.Cluster, id string) error {
	cl, err := c.NewClient()
	if err != nil {
		return err
	}
	defer cl.Close()
	_, err = cl.FinishJob(ctx, &pb.FinishJobRequest{WorkerId: "bench", JobId: id})
	return err
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

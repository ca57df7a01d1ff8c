package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/checkpoint"
	"github.com/gencluster/gencluster/coordinator"
	"github.com/gencluster/gencluster/dashboard"
	"github.com/gencluster/gencluster/dataset"
	"github.com/gencluster/gencluster/kernels"
	"github.com/gencluster/gencluster/localcluster"
	"github.com/gencluster/gencluster/metrics"
	"github.com/gencluster/gencluster/models"
	"github.com/gencluster/gencluster/sharding"
	"github.com/gencluster/gencluster/training"
	"github.com/gencluster/gencluster/worker"
)

func (a *app) localCommand() *cobra.Command {
	var jf jobFlags
	var pf plotFlags
	var workers, coordinators, threads, minWorkers, samples, keep, bucketKiB int
	var out, httpAddr string
	cmd := &cobra.Command{
		Use:   "local --workers N [--coordinators 1|3] --model pixelcnn|vae|pixelrnn|ae [--levels 256] (--steps N | --epochs E) [--out DIR]",
		Short: "Train on a whole cluster started in this process (coordinators and workers on loopback)",
		Long: `Start a whole cluster in this process - coordinators (a raft group) and workers,
each a real gRPC server on loopback - submit one job to it, print its progress,
and leave the final checkpoint (ckpt-<step>.db, fetched from the coordinators,
who hold the job's checkpoints), loss.csv, loss.png and samples.png in DIR, as
train does. The cluster's state lives in a temporary directory: every run
starts the job from the beginning.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ms, err := jf.spec()
			if err != nil {
				return err
			}
			switch {
			case workers < 1 || workers > 64:
				return fmt.Errorf("--workers must be 1..64, got %d", workers)
			case coordinators != 1 && coordinators != 3:
				return fmt.Errorf("--coordinators must be 1 or 3, got %d", coordinators)
			case minWorkers < 0 || minWorkers > workers:
				return fmt.Errorf("--min-workers must be 0..--workers (%d), got %d", workers, minWorkers)
			}
			if out == "" {
				out = filepath.Join("out", jf.model)
			}
			if threads < 1 {
				threads = max(1, runtime.NumCPU()/workers)
			}
			if minWorkers == 0 {
				minWorkers = workers
			}
			steps, err := localSteps(jf)
			if err != nil {
				return err
			}
			testLoss, err := pf.parse(false)
			if err != nil {
				return err
			}
			spec := &pb.JobSpec{
				Model: ms.Name, Levels: int32(ms.Levels), Dataset: jf.dataset, Batch: int32(jf.batch), Steps: steps, Lr: jf.lr,
				Seed: jf.seed, CheckpointEvery: jf.checkpointEvery, MinWorkers: int32(minWorkers), Keep: int32(keep),
				BucketKib: int32(bucketKiB),
			}
			if httpAddr != "" {
				spec.Samples = dashboardSamples // the dashboard shows them
			}
			if err := coordinator.ValidateJobSpec(spec); err != nil {
				return err
			}
			reserveProcs(workers*(threads+1) + 1)
			lowerGCHeadroom()
			return a.runLocal(cmd.Context(), spec, workers, coordinators, threads, samples, out, httpAddr,
				localPlot{test: testLoss == training.TestLossEnd, logY: pf.logScale})
		},
	}
	jf.register(cmd)
	pf.register(cmd, false)
	f := cmd.Flags()
	f.IntVar(&workers, "workers", 2, "workers in the ring")
	f.IntVar(&coordinators, "coordinators", 1, "coordinators in the raft group: 1 or 3")
	f.IntVar(&threads, "threads", 0, "compute threads per worker (0: cores / workers)")
	f.IntVar(&minWorkers, "min-workers", 0, "hold the job until this many workers are in the ring (0: --workers)")
	f.IntVar(&samples, "samples", 64, "images in the final sample grid (0: none)")
	f.StringVar(&out, "out", "", "output directory (default out/MODEL)")
	f.IntVar(&keep, "keep", 0, "checkpoints of the job the coordinators keep (default 3)")
	f.IntVar(&bucketKiB, "bucket-kib", 0, bucketKiBUsage)
	f.StringVar(&httpAddr, "http", "", "HOST:PORT to serve the embedded cluster's dashboard at / and /metrics (and /livez, /readyz) on")
	return cmd
}

// localSteps turns --steps or --epochs into a step count.
func localSteps(jf jobFlags) (int64, error) {
	if jf.steps > 0 {
		return jf.steps, nil
	}
	if jf.epochs <= 0 {
		return 0, errors.New("give --steps N or --epochs E")
	}
	n, err := dataset.Count(jf.dataset, dataset.Train)
	if err != nil {
		return 0, err
	}
	steps := sharding.EpochSteps(jf.epochs, n, jf.batch)
	if steps < 1 {
		return 0, fmt.Errorf("%v epochs of %d images at batch %d is less than one step", jf.epochs, n, jf.batch)
	}
	return steps, nil
}

// localPlot is what local draws beside the job's loss curve.
type localPlot struct {
	test bool // evaluate the final checkpoint on the test split
	logY bool // loss.png's y axis on a log scale
}

func (a *app) runLocal(ctx context.Context, spec *pb.JobSpec, nWorkers, nCoord, threads, samples int, out, httpAddr string, lp localPlot) (err error) {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	state, err := os.MkdirTemp("", "gencluster-local-")
	if err != nil {
		return fmt.Errorf("cluster state directory: %w", err)
	}
	defer os.RemoveAll(state)

	curve := &localCurve{rows: map[int64]training.CurveRow{}}
	reg := newRegistry()
	wm := &localWorkerMetrics{reg: reg, byID: map[string]*metrics.Worker{}}
	start := time.Now()
	cl, err := localcluster.Start(ctx, localcluster.Config{
		Coordinators: nCoord, StateDir: state, Logger: a.log, Version: readVersion().label(),
		Worker: worker.Config{
			Threads: threads,
			OnStep: func(s worker.StepInfo) {
				if s.Rank == 0 {
					curve.add(s, time.Since(start))
				}
				wm.observe(s)
			},
		},
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, cl.Close()) }()
	for i := range nCoord {
		node, fsm := cl.Coordinator(i)
		metrics.NewCoordinator(prometheus.WrapRegistererWith(prometheus.Labels{"coordinator": node.ID()}, reg),
			coordinatorMetrics{node: node, fsm: fsm, svc: cl.Service(i)})
	}
	stopHTTP, err := a.serveHealth(ctx, httpAddr, func() error { return nil }, reg, dashboard.Handler(cl.Service(0), readVersion().label(), a.log))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, stopHTTP()) }()
	for range nWorkers {
		if _, err := cl.AddWorker(); err != nil {
			return err
		}
	}
	client, err := cl.NewClient()
	if err != nil {
		return err
	}
	defer client.Close()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	jobID, err := client.Submit(sctx, spec)
	cancel()
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	fmt.Fprintf(a.stdout, "cluster: %d coordinator(s) %v, %d worker(s), %d thread(s) each; job %s: %s, batch %d, %d steps\n",
		nCoord, cl.Addrs(), nWorkers, threads, jobID, spec.GetModel(), spec.GetBatch(), spec.GetSteps())

	job, err := a.watchJob(ctx, client, jobID, start)
	if err != nil {
		return err
	}
	if job.GetState() != "done" {
		return fmt.Errorf("job %s %s at step %d (the workers' log says why)", jobID, job.GetState(), job.GetStep())
	}
	file, err := a.fetchFinal(ctx, client, jobID, spec.GetSteps(), out)
	if err != nil {
		return err
	}
	return a.localOutputs(ctx, spec, curve, samples, out, file, lp)
}

// fetchFinal fetches the job's latest checkpoint from the coordinators
// into out (as ckpt-<step>.db, atomically and verified) and returns its
// path.
func (a *app) fetchFinal(ctx context.Context, c *coordinator.Client, jobID string, steps int64, out string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var file string
	hdr, err := c.GetCheckpoint(ctx, &pb.GetCheckpointRequest{JobId: jobID}, func(h *pb.CheckpointHeader) (string, error) {
		if h.GetJobId() != jobID {
			return "", fmt.Errorf("asked for job %s's checkpoint, received job %q's", jobID, h.GetJobId())
		}
		file = filepath.Join(out, checkpoint.FileName(h.GetStep()))
		return file, nil
	})
	if err != nil {
		return "", fmt.Errorf("fetch job %s's final checkpoint from the coordinators: %w", jobID, err)
	}
	if hdr.GetStep() != steps {
		a.log.Warn("the coordinators' latest checkpoint is not the job's last step (the workers' log says why)", "job", jobID, "step", hdr.GetStep(), "last_step", steps)
	}
	return file, nil
}

// watchJob shows the job's progress until it ends: a bar on a terminal, a
// line every two seconds otherwise.
func (a *app) watchJob(ctx context.Context, c *coordinator.Client, jobID string, start time.Time) (*pb.JobInfo, error) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	prog := a.progress("local", "steps")
	defer prog.finish()
	var lastStep int64 = -1
	var rate stepRate
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("job %s: %w", jobID, ctx.Err())
		case <-tick.C:
		}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := c.Status(sctx)
		cancel()
		if err != nil {
			a.log.Warn("status", "err", err)
			continue
		}
		var job *pb.JobInfo
		for _, j := range st.GetJobs() {
			if j.GetId() == jobID {
				job = j
			}
		}
		if job == nil {
			return nil, fmt.Errorf("job %s vanished from the cluster's status", jobID)
		}
		total := job.GetSpec().GetSteps()
		rate.see(time.Now(), job.GetStep())
		prog.update(job.GetStep(), total, fmt.Sprintf("loss %.3f  %.1f img/s  workers %d  generation %d",
			job.GetLoss(), job.GetImagesPerSec(), len(st.GetRing()), st.GetGeneration()))
		if job.GetStep() != lastStep && prog.lineDue(job.GetState() != "running") {
			lastStep = job.GetStep()
			fmt.Fprintln(a.stdout, localLine(job, st, time.Since(start), rate.eta(time.Now(), job.GetStep(), total)))
		}
		switch job.GetState() {
		case "done", "failed":
			return job, nil
		}
	}
}

// localLine is local's progress line when stdout is not a terminal.
func localLine(job *pb.JobInfo, st *pb.StatusResponse, elapsed time.Duration, eta string) string {
	total := job.GetSpec().GetSteps()
	return fmt.Sprintf("step %d/%d (%.1f%%)  loss %.3f  %.1f img/s  workers %d  generation %d  elapsed %s  eta %s",
		job.GetStep(), total, 100*float64(job.GetStep())/float64(total), job.GetLoss(), job.GetImagesPerSec(),
		len(st.GetRing()), st.GetGeneration(), elapsed.Round(time.Second), eta)
}

// localOutputs writes loss.csv, test_loss.csv, loss.png and samples.png
// into out from the run's progress and its final checkpoint, file.
func (a *app) localOutputs(ctx context.Context, spec *pb.JobSpec, curve *localCurve, samples int, out, file string, lp localPlot) error {
	if err := curve.write(filepath.Join(out, training.CurveFile)); err != nil {
		return err
	}
	st, err := checkpoint.Read(file)
	if err != nil {
		return fmt.Errorf("final checkpoint: %w", err)
	}
	var m models.Model
	if samples > 0 || lp.test {
		pool := kernels.NewPool(runtime.NumCPU())
		defer pool.Close()
		if m, err = models.New(models.Spec{Name: spec.GetModel(), Levels: int(spec.GetLevels())}, pool); err != nil {
			return err
		}
		if err := training.Restore(st, m, nil); err != nil {
			return err
		}
	}
	if err := a.localTestLoss(ctx, lp.test, m, spec.GetDataset(), st.Meta.Step, out); err != nil {
		return err
	}
	if err := training.PlotCurve(out, training.ModelSpec(st.Meta.Job).String(), lp.logY); err != nil {
		return err
	}
	if samples > 0 {
		if err := training.SampleGrid(m, samples, spec.GetSeed(), spec.GetDataset(), filepath.Join(out, training.SamplesFile)); err != nil {
			return err
		}
	}
	fmt.Fprintf(a.stdout, "done: step %d, loss %.3f; checkpoint %s\n", st.Meta.Step, st.Meta.Loss, file)
	return nil
}

// localCurve collects rank 0's steps; after a failure a step may be done
// again, and the later one is kept.
type localCurve struct {
	mu   sync.Mutex
	rows map[int64]training.CurveRow
}

func (c *localCurve) add(s worker.StepInfo, el time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rows[s.Step] = training.CurveRow{Step: s.Step, Loss: s.Loss, ImagesPerSec: s.ImagesPerSec, Elapsed: el.Seconds()}
}

func (c *localCurve) write(path string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	rows := slices.SortedFunc(maps.Values(c.rows), func(a, b training.CurveRow) int { return cmp.Compare(a.Step, b.Step) })
	return training.WriteCurve(path, rows)
}

// localWorkerMetrics are the embedded workers' metrics in one registry,
// each worker's series labelled with its id (registered at its first step).
type localWorkerMetrics struct {
	reg  *prometheus.Registry
	mu   sync.Mutex
	byID map[string]*metrics.Worker
}

func (m *localWorkerMetrics) observe(s worker.StepInfo) {
	m.mu.Lock()
	w := m.byID[s.WorkerID]
	if w == nil {
		w = metrics.NewWorker(prometheus.WrapRegistererWith(prometheus.Labels{"worker": s.WorkerID}, m.reg), nil)
		m.byID[s.WorkerID] = w
	}
	m.mu.Unlock()
	w.Observe(stepSample(s))
}

// stepRate estimates a job's remaining time from the steps it has made
// since it was first seen making progress.
type stepRate struct {
	t0    time.Time
	step0 int64
}

// see records an observation of the job's step.
func (r *stepRate) see(now time.Time, step int64) {
	if r.t0.IsZero() && step > 0 {
		r.t0, r.step0 = now, step
	}
}

// eta is the estimated time to step total, or "-" before there is a rate.
func (r *stepRate) eta(now time.Time, step, total int64) string {
	el := now.Sub(r.t0)
	if r.t0.IsZero() || step <= r.step0 || el <= 0 {
		return "-"
	}
	perStep := el / time.Duration(step-r.step0)
	return (perStep * time.Duration(total-step)).Round(time.Second).String()
}

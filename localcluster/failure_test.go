package localcluster

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/coordinator"
	"github.com/gencluster/gencluster/worker"
)

// failureJob is a VAE job long enough to disturb in the middle.
func failureJob(workers int) (*pb.JobSpec, int64) {
	steps, at := int64(240), int64(60)
	if raceEnabled {
		steps, at = 60, 15
	}
	return &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 24, Steps: steps, Lr: 1e-3, Seed: 5, MinWorkers: 1}, at
}

// waitStep waits until some worker has completed step s.
func (r *replicas) waitStep(t *testing.T, s int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		_, ok := r.hashes[s]
		r.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no worker reached step %d within %v", s, timeout)
}

// allIdentical checks every step any replica completed.
func (r *replicas) allIdentical(t *testing.T, total int64) {
	t.Helper()
	r.mu.Lock()
	steps := make([]int64, 0, len(r.hashes))
	for s := range r.hashes {
		steps = append(steps, s)
	}
	r.mu.Unlock()
	slices.Sort(steps)
	if len(steps) == 0 || steps[len(steps)-1] != total {
		t.Fatalf("steps seen end at %v, want %d", steps[len(steps)-1:], total)
	}
	for _, s := range steps {
		r.identicalAt(t, s)
	}
}

// runDisturbed runs a job on a cluster, calls disturb once some worker has
// completed step `at`, and checks that the job finishes at its step count
// with identical replicas after every step. It returns how long after the
// disturbance the next step completed.
// With newGen the recovery is timed to the first step of a later ring
// generation than the one running when disturb was called.
// want is how many workers must complete the last step.
func runDisturbed(t *testing.T, coords, workers, want int, newGen bool, disturb func(c *Cluster, ws []*Worker)) time.Duration {
	reps := newReplicas()
	stepAt := make(chan worker.StepInfo, 1<<16)
	c := startCluster(t, coords, worker.Config{Threads: 1, OnStep: func(s worker.StepInfo) {
		reps.onStep(s)
		s.Params = nil
		select {
		case stepAt <- s:
		default:
		}
	}})
	var ws []*Worker
	for range workers {
		w, err := c.AddWorker()
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, w)
	}
	waitWorkers(t, c, workers)
	spec, at := failureJob(workers)
	id, err := c.Submit(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	reps.waitStep(t, at, 2*time.Minute)
	var gen uint64
	for len(stepAt) > 0 {
		gen = max(gen, (<-stepAt).Generation)
	}
	t0 := time.Now()
	disturb(c, ws)
	var recovery time.Duration
	timeout := time.After(time.Minute)
	for recovery == 0 {
		select {
		case s := <-stepAt:
			if !newGen || s.Generation > gen {
				recovery = time.Since(t0)
			}
		case <-timeout:
			t.Fatal("no step completed within a minute of the disturbance")
		}
	}
	j := waitJob(t, c, id, 3*time.Minute)
	if j.GetState() != "done" || j.GetStep() != spec.GetSteps() {
		t.Fatalf("job ended %s at step %d, want done at %d", j.GetState(), j.GetStep(), spec.GetSteps())
	}
	reps.allIdentical(t, spec.GetSteps())
	if n := reps.workersAt(spec.GetSteps()); n != want {
		t.Errorf("%d workers completed the last step, want %d", n, want)
	}
	t.Logf("first step after the disturbance (in a new generation: %v) completed %v later; generations seen %d", newGen, recovery.Round(time.Millisecond), len(reps.gens))
	return recovery
}

func TestKillWorker(t *testing.T) {
	runDisturbed(t, 1, 3, 2, true, func(c *Cluster, ws []*Worker) {
		if err := ws[1].Kill(); err != nil {
			t.Logf("kill: %v", err)
		}
	})
}

func TestJoinWorkerMidJob(t *testing.T) {
	runDisturbed(t, 1, 2, 3, true, func(c *Cluster, ws []*Worker) {
		if _, err := c.AddWorker(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRestartWorker(t *testing.T) {
	runDisturbed(t, 1, 3, 3, true, func(c *Cluster, ws []*Worker) {
		id := ws[2].ID()
		ws[2].Kill()
		w, err := c.Restart(ws[2])
		if err != nil {
			t.Fatal(err)
		}
		if w.ID() != id {
			t.Errorf("restarted worker is %s, was %s", w.ID(), id)
		}
	})
}

func TestKillLeader(t *testing.T) {
	runDisturbed(t, 3, 2, 2, false, func(c *Cluster, ws []*Worker) {
		cl, err := coordinator.NewClient(c.Addrs())
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := cl.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.Index(c.Addrs(), st.GetLeader())
		if i < 0 {
			t.Fatalf("leader %q is not one of %v", st.GetLeader(), c.Addrs())
		}
		if err := c.KillCoordinator(i); err != nil {
			t.Logf("kill coordinator: %v", err)
		}
	})
}

// waitWorkers waits until n workers are registered.
func waitWorkers(t *testing.T, c *Cluster, n int) {
	t.Helper()
	if err := c.AwaitWorkers(context.Background(), 30*time.Second, n); err != nil {
		t.Fatal(err)
	}
}

// TestJobFails: a job whose loss diverges, and one whose data set the
// workers cannot read, end failed (not hanging), and the cluster then runs
// the next job.
func TestJobFails(t *testing.T) {
	c := startCluster(t, 1, worker.Config{Threads: 1})
	for range 2 {
		if _, err := c.AddWorker(); err != nil {
			t.Fatal(err)
		}
	}
	waitWorkers(t, c, 2)
	ctx := context.Background()
	diverge, err := c.Submit(ctx, &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 16, Steps: 500, Lr: 1e30, Seed: 1, MinWorkers: 2})
	if err != nil {
		t.Fatal(err)
	}
	missing, err := c.Submit(ctx, &pb.JobSpec{Model: "vae", Dataset: "idx:" + t.TempDir(), Batch: 16, Steps: 5, Lr: 1e-3, Seed: 1, MinWorkers: 2})
	if err != nil {
		t.Fatal(err)
	}
	good, err := c.Submit(ctx, &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 16, Steps: 5, Lr: 1e-3, Seed: 1, MinWorkers: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{diverge, missing} {
		if j := waitJob(t, c, id, time.Minute); j.GetState() != "failed" {
			t.Errorf("job %s ended %s, want failed", id, j.GetState())
		}
	}
	if j := waitJob(t, c, good, time.Minute); j.GetState() != "done" || j.GetStep() != 5 {
		t.Errorf("the job after the failed ones ended %s at step %d, want done at 5", j.GetState(), j.GetStep())
	}
}

// TestRestartOnlyWorker: the only worker dies and comes back on a new port
// at once. Its id is still registered at the old address; the new process
// presents the id's secret, takes the registration over at its new address
// at once (no wait for the old lease), resumes
// from its newest checkpoint and finishes the job.
func TestRestartOnlyWorker(t *testing.T) {
	reps := newReplicas()
	firstAfter := make(chan int64, 1)
	var restarted atomic.Bool
	c := startCluster(t, 1, worker.Config{Threads: 1, OnStep: func(s worker.StepInfo) {
		reps.onStep(s)
		if restarted.Load() {
			select {
			case firstAfter <- s.Step:
			default:
			}
		}
	}})
	w, err := c.AddWorker()
	if err != nil {
		t.Fatal(err)
	}
	waitWorkers(t, c, 1)
	spec, _ := failureJob(1)
	spec.CheckpointEvery = 10
	id, err := c.Submit(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	reps.waitStep(t, 25, time.Minute)
	// Rank 0 writes and sends its checkpoints in the background: kill it
	// once the coordinators hold the one at step 20 (or a later one), not
	// merely once step 25 is done (a fast step outruns the upload).
	held, err := c.AwaitJob(context.Background(), time.Minute, id, func(j *pb.JobInfo) bool {
		return j.GetLastCheckpoint().GetStep() >= 20 || j.GetState() == "done"
	})
	if err != nil {
		t.Fatal(err)
	}
	if held.GetState() == "done" {
		t.Fatal("the job ended before the worker could be killed")
	}
	w.Kill()
	restarted.Store(true)
	if _, err := c.Restart(w); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, c, id, 2*time.Minute)
	if j.GetState() != "done" || j.GetStep() != spec.GetSteps() {
		t.Fatalf("job ended %s at step %d, want done at %d", j.GetState(), j.GetStep(), spec.GetSteps())
	}
	select {
	case s := <-firstAfter:
		if s < 21 || s%10 != 1 {
			t.Errorf("first step after the restart was %d, want the one after a checkpoint at 20 or later", s)
		}
	default:
		t.Error("no step after the restart")
	}
}

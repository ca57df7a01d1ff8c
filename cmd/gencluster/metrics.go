package main

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/coordinator"
	"github.com/gencluster/gencluster/metrics"
	"github.com/gencluster/gencluster/worker"
)

// newRegistry is this process's metrics registry (package metrics).
func newRegistry() *prometheus.Registry { return metrics.NewRegistry(readVersion().label()) }

// coordinatorMetrics reads a coordinator's raft node and replicated state
// for its metrics.
type coordinatorMetrics struct {
	node *coordinator.Node
	fsm  *coordinator.FSM
	svc  *coordinator.Service // nil: no straggler count
}

func (c coordinatorMetrics) Raft() metrics.Raft {
	r := c.node.RaftStats()
	return metrics.Raft{State: r.State, Term: r.Term, CommitIndex: r.CommitIndex, AppliedIndex: r.AppliedIndex,
		LastLogIndex: r.LastLogIndex, LeaderChanges: r.LeaderChanges, HasLeader: r.HasLeader}
}

func (c coordinatorMetrics) Cluster() metrics.Cluster {
	cl := metrics.Cluster{Jobs: map[string]int{}}
	c.fsm.Read(func(st *coordinator.State) {
		cl.Generation = st.Generation()
		cl.World = len(st.Ring())
		cl.Workers = len(st.Workers())
		for _, j := range st.Jobs() {
			cl.Jobs[j.GetState()]++
		}
		if j := st.RunningJob(); j != nil {
			cl.Running, cl.Step, cl.TotalSteps, cl.ImagesPerSec = true, j.GetStep(), j.GetSpec().GetSteps(), j.GetImagesPerSec()
		}
	})
	if c.svc == nil {
		return cl
	}
	n := c.svc.Counters()
	cl.FailuresRemoved, cl.FailuresKept, cl.LeaseExpiries = n.FailuresRemoved, n.FailuresKept, n.LeaseExpiries
	cl.CheckpointsCommitted, cl.CheckpointBytes, cl.CheckpointCopies = n.CheckpointsCommitted, n.CheckpointBytes, n.CopiesStored
	if c.node.IsLeader() {
		// The leader's own status holds what it heard from the workers.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if st, err := c.svc.Status(ctx, &pb.StatusRequest{Local: true}); err == nil {
			for _, w := range st.GetWorkers() {
				if w.GetStraggler() {
					cl.Stragglers++
				}
				age := float64(w.GetHeartbeatAgeMs()) / 1000
				if w.GetHeartbeatAgeMs() < 0 {
					age = -1
				}
				cl.Leases = append(cl.Leases, metrics.Lease{Worker: w.GetId(), AgeSeconds: age, ComputeSeconds: w.GetComputeSeconds(), Straggler: w.GetStraggler()})
			}
		}
	}
	return cl
}

// lateWorker reads a worker's counters for its metrics; the worker is
// made after its metrics (its step hook feeds them), and scraped once made.
type lateWorker struct{ w **worker.Worker }

func (l lateWorker) RefusedFrames() uint64    { return (*l.w).RefusedFrames() }
func (l lateWorker) FailuresReported() uint64 { return (*l.w).FailuresReported() }

// checkpointSample is a checkpoint's outcome as package metrics takes it.
func checkpointSample(ev worker.CheckpointEvent) metrics.Checkpoint {
	c := metrics.Checkpoint{Outcome: "held", Copy: ev.Copy, Commit: ev.Commit, Size: ev.Size}
	switch {
	case errors.Is(ev.Err, worker.ErrCheckpointSkipped):
		c.Outcome = "skipped"
	case ev.Err != nil:
		c.Outcome = "failed"
	}
	return c
}

// stepSample is a worker's step as package metrics takes it.
func stepSample(s worker.StepInfo) metrics.Step {
	return metrics.Step{Job: s.JobID, Step: s.Step, Loss: s.Loss, Generation: s.Generation, Rank: s.Rank, World: s.World,
		LocalImages: s.LocalImages, AllReducedBytes: s.AllReducedBytes, StepTime: s.StepTime, Compute: s.Compute,
		AllReduce: s.Comm, Exposed: s.Exposed, Optimizer: s.Optimizer}
}

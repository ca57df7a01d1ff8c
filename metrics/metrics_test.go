package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestWorkerObserve(t *testing.T) {
	reg := NewRegistry("test")
	refused := uint64(3)
	w := NewWorker(reg, func() uint64 { return refused })
	for i := range 4 {
		w.Observe(Step{Step: int64(i + 1), LocalImages: 8, AllReducedBytes: 1000, StepTime: 20 * time.Millisecond,
			Compute: 12 * time.Millisecond, AllReduce: 9 * time.Millisecond, Exposed: 3 * time.Millisecond,
			Optimizer: 2 * time.Millisecond, World: 2, Rank: 1, Generation: 7, Loss: 0.5})
	}
	for _, c := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"steps", w.steps, 4}, {"images", w.images, 32}, {"reduced", w.reduced, 4000}, {"step", w.step, 4},
		{"world", w.world, 2}, {"generation", w.generation, 7}, {"loss", w.loss, 0.5},
	} {
		if got := testutil.ToFloat64(c.c); got != c.want {
			t.Errorf("%s = %v, want %v", c.name, got, c.want)
		}
	}
	refused = 5
	want := `
# HELP gencluster_ring_refused_frames_total Ring streams and frames this worker refused (unsigned, stale, or not from its assigned neighbour).
# TYPE gencluster_ring_refused_frames_total counter
gencluster_ring_refused_frames_total 5
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "gencluster_ring_refused_frames_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg, "gencluster_worker_step_seconds"); err != nil || n != 1 {
		t.Errorf("step_seconds series: %d, %v", n, err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

type fakeSource struct{}

func (fakeSource) Raft() Raft {
	return Raft{State: "Follower", Term: 4, CommitIndex: 90, AppliedIndex: 88, LastLogIndex: 91, LeaderChanges: 2, HasLeader: true}
}

func (fakeSource) Cluster() Cluster {
	return Cluster{Generation: 12, World: 3, Workers: 4, Jobs: map[string]int{"done": 2, "running": 1},
		Running: true, Step: 500, TotalSteps: 1000, ImagesPerSec: 321}
}

func TestCoordinatorCollect(t *testing.T) {
	reg := NewRegistry("test")
	NewCoordinator(reg, fakeSource{})
	want := `
# HELP gencluster_raft_state 1 for this coordinator's raft state, 0 for the others.
# TYPE gencluster_raft_state gauge
gencluster_raft_state{state="Candidate"} 0
gencluster_raft_state{state="Follower"} 1
gencluster_raft_state{state="Leader"} 0
gencluster_raft_state{state="Shutdown"} 0
# HELP gencluster_raft_leader_changes_total Leader changes this coordinator has seen since it started.
# TYPE gencluster_raft_leader_changes_total counter
gencluster_raft_leader_changes_total 2
# HELP gencluster_jobs Jobs by state.
# TYPE gencluster_jobs gauge
gencluster_jobs{state="cancelled"} 0
gencluster_jobs{state="done"} 2
gencluster_jobs{state="failed"} 0
gencluster_jobs{state="queued"} 0
gencluster_jobs{state="running"} 1
# HELP gencluster_job_step The running job's step, as last reported.
# TYPE gencluster_job_step gauge
gencluster_job_step 500
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"gencluster_raft_state", "gencluster_raft_leader_changes_total", "gencluster_jobs", "gencluster_job_step"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

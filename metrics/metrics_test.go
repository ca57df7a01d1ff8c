package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fakeCounters struct{ refused, reported uint64 }

func (f *fakeCounters) RefusedFrames() uint64    { return f.refused }
func (f *fakeCounters) FailuresReported() uint64 { return f.reported }

func TestWorkerObserve(t *testing.T) {
	reg := NewRegistry("test")
	src := &fakeCounters{refused: 3}
	w := NewWorker(reg, src)
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
	src.refused, src.reported = 5, 2
	w.ObserveCheckpoint(Checkpoint{Outcome: "held", Copy: 30 * time.Millisecond, Commit: 1500 * time.Millisecond, Size: 8 << 20})
	w.ObserveCheckpoint(Checkpoint{Outcome: "skipped", Copy: 20 * time.Millisecond})
	w.ObserveCheckpoint(Checkpoint{Outcome: "failed", Copy: 25 * time.Millisecond, Size: 7 << 20})
	want := `
# HELP gencluster_ring_refused_frames_total Ring streams and frames this worker refused (unsigned, stale, or not from its assigned neighbour).
# TYPE gencluster_ring_refused_frames_total counter
gencluster_ring_refused_frames_total 5
# HELP gencluster_worker_failures_reported_total Failed ring generations this worker reported (and the coordinators took).
# TYPE gencluster_worker_failures_reported_total counter
gencluster_worker_failures_reported_total 2
# HELP gencluster_worker_checkpoints_total Checkpoints this worker took as rank 0, by outcome: held by the coordinators, skipped (a newer one replaced it), failed.
# TYPE gencluster_worker_checkpoints_total counter
gencluster_worker_checkpoints_total{outcome="failed"} 1
gencluster_worker_checkpoints_total{outcome="held"} 1
gencluster_worker_checkpoints_total{outcome="skipped"} 1
# HELP gencluster_worker_checkpoint_size_bytes Size of the last checkpoint file this worker wrote.
# TYPE gencluster_worker_checkpoint_size_bytes gauge
gencluster_worker_checkpoint_size_bytes 7.340032e+06
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "gencluster_ring_refused_frames_total",
		"gencluster_worker_failures_reported_total", "gencluster_worker_checkpoints_total", "gencluster_worker_checkpoint_size_bytes"); err != nil {
		t.Error(err)
	}
	if got := testutil.CollectAndCount(w.ckptCommit); got != 1 {
		t.Errorf("commit histogram series: %d", got)
	}
	if n := histCount(t, reg, "gencluster_worker_checkpoint_commit_seconds"); n != 1 {
		t.Errorf("commit times observed: %d, want 1 (only the held checkpoint has one)", n)
	}
	if n := histCount(t, reg, "gencluster_worker_checkpoint_copy_seconds"); n != 3 {
		t.Errorf("copy times observed: %d, want 3", n)
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
		Running: true, Step: 500, TotalSteps: 1000, ImagesPerSec: 321,
		Leases:          []Lease{{Worker: "w1", AgeSeconds: 0.25, ComputeSeconds: 0.04}, {Worker: "w2", AgeSeconds: -1, ComputeSeconds: 0.2, Straggler: true}},
		FailuresRemoved: 1, FailuresKept: 4, LeaseExpiries: 2, CheckpointsCommitted: 3, CheckpointBytes: 300, CheckpointCopies: 6}
}

// histCount is the number of observations of the histogram name in reg.
func histCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("no %s", name)
	return 0
}

func TestRefusedCalls(t *testing.T) {
	reg := NewRegistry("test")
	NewRefusedCalls(reg, func() map[string]uint64 {
		return map[string]uint64{"/gencluster.v1.Coordinator/Submit": 2, "(not in the policy)": 1}
	})
	want := `
# HELP gencluster_refused_calls_total gRPC calls this process refused (no credentials, or a role the method does not allow), by method.
# TYPE gencluster_refused_calls_total counter
gencluster_refused_calls_total{method="(not in the policy)"} 1
gencluster_refused_calls_total{method="/gencluster.v1.Coordinator/Submit"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "gencluster_refused_calls_total"); err != nil {
		t.Error(err)
	}
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
	want = `
# HELP gencluster_lease_age_seconds Seconds since the leader last heard from the worker (-1: not since it was elected; on the leader only).
# TYPE gencluster_lease_age_seconds gauge
gencluster_lease_age_seconds{worker="w1"} 0.25
gencluster_lease_age_seconds{worker="w2"} -1
# HELP gencluster_worker_straggler 1 if the worker is flagged a straggler (on the leader only).
# TYPE gencluster_worker_straggler gauge
gencluster_worker_straggler{worker="w1"} 0
gencluster_worker_straggler{worker="w2"} 1
# HELP gencluster_failure_reports_total Failure reports this coordinator decided as leader: the blamed worker removed, or kept (it answered the probe).
# TYPE gencluster_failure_reports_total counter
gencluster_failure_reports_total{verdict="kept"} 4
gencluster_failure_reports_total{verdict="removed"} 1
# HELP gencluster_checkpoint_committed_bytes_total Bytes of the checkpoints counted by gencluster_checkpoint_committed_total.
# TYPE gencluster_checkpoint_committed_bytes_total counter
gencluster_checkpoint_committed_bytes_total 300
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "gencluster_lease_age_seconds", "gencluster_worker_straggler",
		"gencluster_failure_reports_total", "gencluster_checkpoint_committed_bytes_total"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Raft is a reading of a coordinator's raft state.
type Raft struct {
	State                                         string // "Leader", "Follower", "Candidate" or "Shutdown"
	Term, CommitIndex, AppliedIndex, LastLogIndex uint64
	LeaderChanges                                 uint64 // seen since the process started
	HasLeader                                     bool
}

// Cluster is a reading of the replicated state a coordinator holds.
type Cluster struct {
	Generation uint64
	World      int            // workers in the ring
	Workers    int            // registered workers
	Stragglers int            // ring members flagged slow (known on the leader only)
	Jobs       map[string]int // jobs by state (queued, running, done, failed, cancelled)
	// The running job, if any.
	Running          bool
	Step, TotalSteps int64
	ImagesPerSec     float64
	// Leases: what the leader heard from each registered worker (empty
	// elsewhere).
	Leases []Lease
	// What this coordinator's service counted since it started.
	FailuresRemoved, FailuresKept, LeaseExpiries            uint64
	CheckpointsCommitted, CheckpointBytes, CheckpointCopies uint64
}

// Lease is the leader's view of one worker.
type Lease struct {
	Worker         string
	AgeSeconds     float64 // since the leader last heard from it (-1: not since it was elected)
	ComputeSeconds float64 // its reported compute time per step (0: none yet)
	Straggler      bool
}

// CoordinatorSource is what a coordinator's metrics read at each scrape.
type CoordinatorSource interface {
	Raft() Raft
	Cluster() Cluster
}

// raftStates are the states gencluster_raft_state reports, one series
// each (1 for the current one).
func raftStates() []string { return []string{"Leader", "Follower", "Candidate", "Shutdown"} }

// jobStates are the job states gencluster_jobs reports.
func jobStates() []string { return []string{"queued", "running", "done", "failed", "cancelled"} }

// coordinator is a prometheus.Collector reading a CoordinatorSource.
type coordinator struct {
	src CoordinatorSource

	state, term, commit, applied, lastLog, leaderChanges, hasLeader *prometheus.Desc
	generation, world, workers, jobs, running, step, steps, ips     *prometheus.Desc
	stragglers                                                      *prometheus.Desc
	leaseAge, reportedCompute, straggler                            *prometheus.Desc
	failures, leaseExpiries, ckpts, ckptBytes, copies               *prometheus.Desc
}

// NewCoordinator registers a coordinator's metrics on reg; they are read
// from src when scraped.
func NewCoordinator(reg prometheus.Registerer, src CoordinatorSource) {
	d := func(sub, name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, sub, name), help, labels, nil)
	}
	reg.MustRegister(&coordinator{
		src:           src,
		state:         d("raft", "state", "1 for this coordinator's raft state, 0 for the others.", "state"),
		term:          d("raft", "term", "The raft term."),
		commit:        d("raft", "commit_index", "The highest raft log index known committed."),
		applied:       d("raft", "applied_index", "The highest raft log index applied to the state."),
		lastLog:       d("raft", "last_log_index", "The last index in this coordinator's raft log."),
		leaderChanges: d("raft", "leader_changes_total", "Leader changes this coordinator has seen since it started."),
		hasLeader:     d("raft", "has_leader", "1 if this coordinator knows a leader."),
		generation:    d("ring", "generation", "The ring generation; it grows with every membership change."),
		world:         d("ring", "world_size", "Workers in the ring."),
		workers:       d("", "workers", "Registered workers."),
		stragglers:    d("", "stragglers", "Ring members whose compute time per step exceeds the straggler factor times the other ring members' median (on the leader; 0 elsewhere)."),
		jobs:          d("", "jobs", "Jobs by state.", "state"),
		running:       d("job", "running", "1 while a job runs."),
		step:          d("job", "step", "The running job's step, as last reported."),
		steps:         d("job", "steps", "The running job's step count."),
		ips:           d("job", "images_per_second", "The running job's training throughput, as last reported."),
		leaseAge:      d("lease", "age_seconds", "Seconds since the leader last heard from the worker (-1: not since it was elected; on the leader only).", "worker"),
		reportedCompute: d("worker", "reported_compute_seconds",
			"The worker's compute time per step (median of its recent steps), as its heartbeats report it (on the leader only).", "worker"),
		straggler:     d("worker", "straggler", "1 if the worker is flagged a straggler (on the leader only).", "worker"),
		failures:      d("", "failure_reports_total", "Failure reports this coordinator decided as leader: the blamed worker removed, or kept (it answered the probe).", "verdict"),
		leaseExpiries: d("", "lease_expiries_total", "Workers this coordinator removed as leader because their lease expired."),
		ckpts:         d("checkpoint", "committed_total", "Checkpoints uploaded to this coordinator that it stored and saw committed."),
		ckptBytes:     d("checkpoint", "committed_bytes_total", "Bytes of the checkpoints counted by gencluster_checkpoint_committed_total."),
		copies:        d("checkpoint", "copies_stored_total", "Checkpoint copies this coordinator stored for another coordinator."),
	})
}

// Describe implements prometheus.Collector.
func (c *coordinator) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.state, c.term, c.commit, c.applied, c.lastLog, c.leaderChanges, c.hasLeader,
		c.generation, c.world, c.workers, c.stragglers, c.jobs, c.running, c.step, c.steps, c.ips,
		c.leaseAge, c.reportedCompute, c.straggler, c.failures, c.leaseExpiries, c.ckpts, c.ckptBytes, c.copies} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *coordinator) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	r := c.src.Raft()
	for _, s := range raftStates() {
		gauge(c.state, b2f(r.State == s), s)
	}
	gauge(c.term, float64(r.Term))
	gauge(c.commit, float64(r.CommitIndex))
	gauge(c.applied, float64(r.AppliedIndex))
	gauge(c.lastLog, float64(r.LastLogIndex))
	ch <- prometheus.MustNewConstMetric(c.leaderChanges, prometheus.CounterValue, float64(r.LeaderChanges))
	gauge(c.hasLeader, b2f(r.HasLeader))

	cl := c.src.Cluster()
	gauge(c.generation, float64(cl.Generation))
	gauge(c.world, float64(cl.World))
	gauge(c.workers, float64(cl.Workers))
	gauge(c.stragglers, float64(cl.Stragglers))
	for _, s := range jobStates() {
		gauge(c.jobs, float64(cl.Jobs[s]), s)
	}
	gauge(c.running, b2f(cl.Running))
	gauge(c.step, float64(cl.Step))
	gauge(c.steps, float64(cl.TotalSteps))
	gauge(c.ips, cl.ImagesPerSec)
	for _, l := range cl.Leases {
		gauge(c.leaseAge, l.AgeSeconds, l.Worker)
		gauge(c.reportedCompute, l.ComputeSeconds, l.Worker)
		gauge(c.straggler, b2f(l.Straggler), l.Worker)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.failures, cl.FailuresRemoved, "removed")
	counter(c.failures, cl.FailuresKept, "kept")
	counter(c.leaseExpiries, cl.LeaseExpiries)
	counter(c.ckpts, cl.CheckpointsCommitted)
	counter(c.ckptBytes, cl.CheckpointBytes)
	counter(c.copies, cl.CheckpointCopies)
}

// NewRefusedCalls registers gencluster_refused_calls_total{method}, read
// from refused (a trust.Guard's Refused) at each scrape.
func NewRefusedCalls(reg prometheus.Registerer, refused func() map[string]uint64) {
	reg.MustRegister(&refusedCalls{read: refused, desc: prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", "refused_calls_total"),
		"gRPC calls this process refused (no credentials, or a role the method does not allow), by method.", []string{"method"}, nil)})
}

type refusedCalls struct {
	read func() map[string]uint64
	desc *prometheus.Desc
}

func (r *refusedCalls) Describe(ch chan<- *prometheus.Desc) { ch <- r.desc }

func (r *refusedCalls) Collect(ch chan<- prometheus.Metric) {
	for m, n := range r.read() {
		ch <- prometheus.MustNewConstMetric(r.desc, prometheus.CounterValue, float64(n), m)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

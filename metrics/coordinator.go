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
		stragglers:    d("", "stragglers", "Ring members whose compute time per step exceeds the straggler factor times the ring's median (on the leader; 0 elsewhere)."),
		jobs:          d("", "jobs", "Jobs by state.", "state"),
		running:       d("job", "running", "1 while a job runs."),
		step:          d("job", "step", "The running job's step, as last reported."),
		steps:         d("job", "steps", "The running job's step count."),
		ips:           d("job", "images_per_second", "The running job's training throughput, as last reported."),
	})
}

// Describe implements prometheus.Collector.
func (c *coordinator) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.state, c.term, c.commit, c.applied, c.lastLog, c.leaderChanges, c.hasLeader,
		c.generation, c.world, c.workers, c.stragglers, c.jobs, c.running, c.step, c.steps, c.ips} {
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
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

package coordinator

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/sharding"
)

// SnapshotVersion is the version of the StateSnapshot layout this binary
// writes and the only one it restores.
const SnapshotVersion = 1

// CheckpointRetention is how many checkpoint manifests a job keeps (the
// newest); older ones drop off the list and their data may be collected.
const CheckpointRetention = 5

// FinishedJobRetention is how many done or failed jobs the state keeps (the
// most recently finished); older ones are forgotten.
const FinishedJobRetention = 100

// Job states as Status shows them. JobWaiting is not stored: it is how a
// running job shows while the ring has fewer workers than its min_workers.
const (
	JobQueued  = "queued"
	JobRunning = "running"
	JobWaiting = "waiting"
	JobDone    = "done"
	JobFailed  = "failed"
)

// Worker states as Status shows them: a ring member trains while a job runs
// with enough workers, else it is ready.
const (
	WorkerReady    = "ready"
	WorkerTraining = "training"
)

// State is the coordinators' replicated state: the workers in ring order,
// the ring generation, and the jobs in submission order. It is held in its
// snapshot form (a pb.StateSnapshot), so a snapshot is a deep copy and
// nothing can be forgotten when encoding it.
//
// Invariants: worker ids are unique; at most one job is running; a job is
// queued only while another runs; jobs start in submission order.
//
// Exported methods only read and return fresh copies; the mutating methods
// are unexported and called by the FSM alone.
type State struct {
	r *pb.StateSnapshot
}

func newState() *State { return &State{r: &pb.StateSnapshot{}} }

// Generation is the ring generation: 0 before any worker registered, then
// one more for every command that changed the ring.
func (s *State) Generation() uint64 { return s.r.GetGeneration() }

// Ring returns the ring members in rank order.
func (s *State) Ring() []*pb.RingMember {
	ring := make([]*pb.RingMember, len(s.r.Workers))
	for i, w := range s.r.Workers {
		ring[i] = &pb.RingMember{WorkerId: w.GetId(), Addr: w.GetAddr()}
	}
	return ring
}

// Workers returns every registered worker in ring order.
func (s *State) Workers() []*pb.WorkerInfo {
	out := make([]*pb.WorkerInfo, len(s.r.Workers))
	for i, w := range s.r.Workers {
		out[i] = s.workerInfo(w)
	}
	return out
}

// Worker returns one registered worker, or an error wrapping ErrNotFound.
func (s *State) Worker(id string) (*pb.WorkerInfo, error) {
	i := s.workerIndex(id)
	if i < 0 {
		return nil, fmt.Errorf("worker %q: %w", id, ErrNotFound)
	}
	return s.workerInfo(s.r.Workers[i]), nil
}

// Jobs returns every job the state holds: the running one first, then the
// queued ones in submission order, then the finished ones newest first.
func (s *State) Jobs() []*pb.JobInfo {
	out := make([]*pb.JobInfo, 0, len(s.r.Jobs))
	for _, j := range s.r.Jobs {
		if j.GetState() == pb.JobState_JOB_STATE_RUNNING {
			out = append(out, s.jobInfo(j))
		}
	}
	for _, j := range s.r.Jobs {
		if j.GetState() == pb.JobState_JOB_STATE_QUEUED {
			out = append(out, s.jobInfo(j))
		}
	}
	for _, j := range slices.Backward(s.r.Jobs) {
		if finished(j) {
			out = append(out, s.jobInfo(j))
		}
	}
	return out
}

// Job returns one job, or an error wrapping ErrNotFound.
func (s *State) Job(id string) (*pb.JobInfo, error) {
	j := s.job(id)
	if j == nil {
		return nil, fmt.Errorf("job %q: %w", id, ErrNotFound)
	}
	return s.jobInfo(j), nil
}

// RunningJob returns the running job (perhaps waiting for workers), or nil.
func (s *State) RunningJob() *pb.JobInfo {
	if j := s.running(); j != nil {
		return s.jobInfo(j)
	}
	return nil
}

// Checkpoints returns a job's checkpoint manifests, oldest first (at most
// CheckpointRetention), or an error wrapping ErrNotFound.
func (s *State) Checkpoints(jobID string) ([]*pb.CheckpointManifest, error) {
	j := s.job(jobID)
	if j == nil {
		return nil, fmt.Errorf("job %q: %w", jobID, ErrNotFound)
	}
	out := make([]*pb.CheckpointManifest, len(j.Checkpoints))
	for i, m := range j.Checkpoints {
		out[i] = proto.CloneOf(m)
	}
	return out, nil
}

// Assignment tells a registered worker what to do: the ring generation,
// its rank (its index in the ring) and the ring, and - when a job runs and
// the ring has at least its min_workers - the job. An unknown worker gets
// an error wrapping ErrNotFound (its lease expired: it must join again).
func (s *State) Assignment(workerID string) (*pb.Assignment, error) {
	i := s.workerIndex(workerID)
	if i < 0 {
		return nil, fmt.Errorf("worker %q: %w", workerID, ErrNotFound)
	}
	a := &pb.Assignment{Generation: s.r.GetGeneration(), Rank: int32(i), Ring: s.Ring()}
	if j := s.running(); j != nil && !s.waiting(j) {
		a.JobId = j.GetId()
		a.Job = proto.CloneOf(j.GetSpec())
	}
	return a, nil
}

// ShardRange is the part [lo, hi) of every global batch that an
// assignment's rank computes (sharding.Split over the ring); 0, 0 when the
// assignment holds no job. With more ranks than images in a batch some
// ranks get an empty range.
func ShardRange(a *pb.Assignment) (lo, hi int) {
	if a.GetJob() == nil || len(a.GetRing()) == 0 {
		return 0, 0
	}
	return sharding.Split(int(a.GetJob().GetBatch()), int(a.GetRank()), len(a.GetRing()))
}

// Encode returns the state in its snapshot encoding. Equal states encode to
// equal bytes, so replicas are compared by comparing these.
func (s *State) Encode() ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(s.snapshot())
}

// snapshot returns a deep copy of the state, stamped with SnapshotVersion.
func (s *State) snapshot() *pb.StateSnapshot {
	c := proto.CloneOf(s.r)
	c.Version = SnapshotVersion
	return c
}

// decodeState decodes and checks a snapshot; the result shares nothing.
func decodeState(b []byte) (*State, error) {
	r := &pb.StateSnapshot{}
	if err := proto.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("decode state snapshot (%d bytes): %w: %w", len(b), err, ErrCorrupt)
	}
	switch v := r.GetVersion(); {
	case v > SnapshotVersion:
		return nil, fmt.Errorf("state snapshot version %d is newer than this binary's %d: %w", v, SnapshotVersion, ErrUnsupportedVersion)
	case v < SnapshotVersion:
		return nil, fmt.Errorf("state snapshot version %d is not %d: %w", v, SnapshotVersion, ErrCorrupt)
	}
	r.Version = 0 // the live state carries no version; snapshot() stamps it
	s := &State{r: r}
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("state snapshot: %w", err)
	}
	return s, nil
}

// check verifies the invariants of a decoded state.
func (s *State) check() error {
	for i, w := range s.r.Workers {
		if w.GetId() == "" || s.workerIndex(w.GetId()) != i {
			return fmt.Errorf("worker %d: id %q empty or repeated: %w", i, w.GetId(), ErrCorrupt)
		}
	}
	running, queued := 0, 0
	for i, j := range s.r.Jobs {
		if j.GetId() == "" || s.job(j.GetId()) != j || j.GetSpec() == nil {
			return fmt.Errorf("job %d: id %q empty or repeated, or no spec: %w", i, j.GetId(), ErrCorrupt)
		}
		switch j.GetState() {
		case pb.JobState_JOB_STATE_RUNNING:
			running++
		case pb.JobState_JOB_STATE_QUEUED:
			queued++
		case pb.JobState_JOB_STATE_DONE, pb.JobState_JOB_STATE_FAILED:
		default:
			return fmt.Errorf("job %q: state %v: %w", j.GetId(), j.GetState(), ErrCorrupt)
		}
	}
	if running > 1 || queued > 0 && running == 0 {
		return fmt.Errorf("%d running and %d queued jobs: %w", running, queued, ErrCorrupt)
	}
	return nil
}

// registerWorker adds a worker at the end of the ring and bumps the
// generation. It returns the generation after the command.
func (s *State) registerWorker(nowMs int64, c *pb.RegisterWorker) (uint64, error) {
	if i := s.workerIndex(c.GetWorkerId()); i >= 0 {
		w := s.r.Workers[i]
		if w.GetAddr() == c.GetAddr() {
			return s.r.Generation, nil // a re-join of a registered worker
		}
		return s.r.Generation, fmt.Errorf("worker id %q is held by another worker at %s: %w",
			c.GetWorkerId(), w.GetAddr(), ErrAlreadyExists)
	}
	s.r.Workers = append(s.r.Workers, &pb.WorkerRecord{Id: c.GetWorkerId(), Addr: c.GetAddr(), JoinedUnixMs: nowMs})
	s.r.Generation++
	return s.r.Generation, nil
}

// removeWorkers takes the named workers out of the ring, keeping the order
// of the rest; unknown ids are skipped. The generation bumps once if any
// worker went. It returns the generation after the command.
func (s *State) removeWorkers(c *pb.RemoveWorkers) (uint64, error) {
	if g := c.GetGeneration(); g != 0 && g != s.r.Generation {
		return s.r.Generation, fmt.Errorf("remove workers %q (%s) seen in generation %d, ring is at %d: %w",
			c.GetWorkerIds(), c.GetReason(), g, s.r.Generation, ErrStaleGeneration)
	}
	gone := make(map[string]bool, len(c.GetWorkerIds())) // looked up only, never iterated
	for _, id := range c.GetWorkerIds() {
		gone[id] = true
	}
	n := len(s.r.Workers)
	s.r.Workers = slices.DeleteFunc(s.r.Workers, func(w *pb.WorkerRecord) bool { return gone[w.GetId()] })
	if len(s.r.Workers) != n {
		s.r.Generation++
	}
	return s.r.Generation, nil
}

// submitJob queues a job named "job-<n>" (n counts submissions from 1) and
// starts it if none runs. It returns the job's id.
func (s *State) submitJob(nowMs int64, c *pb.SubmitJob) (string, error) {
	if rid := c.GetRequestId(); rid != "" {
		for _, j := range s.r.Jobs {
			if j.GetRequestId() == rid {
				return j.GetId(), nil // a retried submit: the job is already queued
			}
		}
	}
	s.r.JobsSubmitted++
	id := fmt.Sprintf("job-%d", s.r.JobsSubmitted)
	s.r.Jobs = append(s.r.Jobs, &pb.JobRecord{
		Id:              id,
		Spec:            proto.CloneOf(c.GetSpec()),
		State:           pb.JobState_JOB_STATE_QUEUED,
		SubmittedUnixMs: nowMs,
		RequestId:       c.GetRequestId(),
	})
	if s.running() == nil {
		s.startNext(nowMs)
	}
	return id, nil
}

// reportProgress records a completed step of the running job. Within one
// generation the step never goes back; a report from a newer generation may
// go back as far as the latest checkpoint (the ring resumed from it).
func (s *State) reportProgress(c *pb.ReportProgress) error {
	j, err := s.runningJob(c.GetJobId())
	if err != nil {
		return err
	}
	switch g := c.GetGeneration(); {
	case g < s.r.Generation:
		return fmt.Errorf("progress of job %q from generation %d, ring is at %d: %w", j.GetId(), g, s.r.Generation, ErrStaleGeneration)
	case g > s.r.Generation:
		return fmt.Errorf("progress of job %q from generation %d, ahead of the ring's %d: %w", j.GetId(), g, s.r.Generation, ErrInvalid)
	}
	step := c.GetStep()
	if step > j.GetSpec().GetSteps() {
		return fmt.Errorf("progress of job %q: step %d is past its %d steps: %w", j.GetId(), step, j.GetSpec().GetSteps(), ErrInvalid)
	}
	if c.GetGeneration() == j.GetProgressGeneration() && step < j.GetStep() {
		return fmt.Errorf("progress of job %q: step %d goes back from %d: %w", j.GetId(), step, j.GetStep(), ErrInvalid)
	}
	if cp := latest(j); cp != nil && step < cp.GetStep() {
		return fmt.Errorf("progress of job %q: step %d is behind its checkpoint at step %d: %w", j.GetId(), step, cp.GetStep(), ErrInvalid)
	}
	j.Step, j.Loss, j.ImagesPerSec, j.ProgressGeneration = step, c.GetLoss(), c.GetImagesPerSec(), c.GetGeneration()
	return nil
}

// finishJob ends the running job and starts the next queued one, whose id
// it returns ("" if none). Finishing a job again in the same state is a
// no-op (a retried proposal).
func (s *State) finishJob(nowMs int64, c *pb.FinishJob) (string, error) {
	j := s.job(c.GetJobId())
	switch {
	case j == nil:
		return "", fmt.Errorf("finish job %q: %w", c.GetJobId(), ErrNotFound)
	case j.GetState() == c.GetState():
		return "", nil
	case j.GetState() != pb.JobState_JOB_STATE_RUNNING:
		return "", fmt.Errorf("finish job %q: it is %s: %w", j.GetId(), stateName(j.GetState()), ErrNotRunning)
	}
	j.State, j.FinishedUnixMs, j.Message = c.GetState(), nowMs, c.GetMessage()
	next := s.startNext(nowMs)
	s.forgetOldJobs()
	return next, nil
}

// recordCheckpoint adds a manifest to a started job's list, keeping the
// newest CheckpointRetention. Steps never go back; a manifest for the
// latest step replaces it (that checkpoint was written again), an identical
// one is a no-op.
func (s *State) recordCheckpoint(c *pb.RecordCheckpoint) error {
	m := c.GetManifest()
	j := s.job(m.GetJobId())
	switch {
	case j == nil:
		return fmt.Errorf("checkpoint of job %q: %w", m.GetJobId(), ErrNotFound)
	case j.GetState() == pb.JobState_JOB_STATE_QUEUED:
		return fmt.Errorf("checkpoint of job %q: it is queued: %w", j.GetId(), ErrNotRunning)
	case m.GetStep() > j.GetSpec().GetSteps():
		return fmt.Errorf("checkpoint of job %q: step %d is past its %d steps: %w", j.GetId(), m.GetStep(), j.GetSpec().GetSteps(), ErrInvalid)
	}
	if last := latest(j); last != nil {
		switch {
		case m.GetStep() < last.GetStep():
			return fmt.Errorf("checkpoint of job %q: step %d is behind its latest checkpoint at step %d: %w", j.GetId(), m.GetStep(), last.GetStep(), ErrInvalid)
		case m.GetStep() == last.GetStep():
			j.Checkpoints[len(j.Checkpoints)-1] = proto.CloneOf(m)
			return nil
		}
	}
	j.Checkpoints = append(j.Checkpoints, proto.CloneOf(m))
	if n := len(j.Checkpoints) - CheckpointRetention; n > 0 {
		j.Checkpoints = slices.Delete(j.Checkpoints, 0, n)
	}
	return nil
}

// startNext starts the first queued job, if any, and returns its id.
func (s *State) startNext(nowMs int64) string {
	for _, j := range s.r.Jobs {
		if j.GetState() == pb.JobState_JOB_STATE_QUEUED {
			j.State, j.StartedUnixMs = pb.JobState_JOB_STATE_RUNNING, nowMs
			return j.GetId()
		}
	}
	return ""
}

// forgetOldJobs drops the oldest finished jobs beyond FinishedJobRetention.
// Jobs run one at a time in submission order, so the first finished jobs in
// the list are the oldest.
func (s *State) forgetOldJobs() {
	n := 0
	for _, j := range s.r.Jobs {
		if finished(j) {
			n++
		}
	}
	drop := n - FinishedJobRetention
	s.r.Jobs = slices.DeleteFunc(s.r.Jobs, func(j *pb.JobRecord) bool {
		if drop > 0 && finished(j) {
			drop--
			return true
		}
		return false
	})
}

// runningJob returns the job if it runs with enough workers.
func (s *State) runningJob(id string) (*pb.JobRecord, error) {
	j := s.job(id)
	switch {
	case j == nil:
		return nil, fmt.Errorf("job %q: %w", id, ErrNotFound)
	case j.GetState() != pb.JobState_JOB_STATE_RUNNING:
		return nil, fmt.Errorf("job %q is %s: %w", id, stateName(j.GetState()), ErrNotRunning)
	case s.waiting(j):
		return nil, fmt.Errorf("job %q waits for workers (%d of min_workers %d in the ring): %w",
			id, len(s.r.Workers), j.GetSpec().GetMinWorkers(), ErrNotRunning)
	}
	return j, nil
}

func (s *State) workerIndex(id string) int {
	return slices.IndexFunc(s.r.Workers, func(w *pb.WorkerRecord) bool { return w.GetId() == id })
}

func (s *State) job(id string) *pb.JobRecord {
	if i := slices.IndexFunc(s.r.Jobs, func(j *pb.JobRecord) bool { return j.GetId() == id }); i >= 0 {
		return s.r.Jobs[i]
	}
	return nil
}

func (s *State) running() *pb.JobRecord {
	for _, j := range s.r.Jobs {
		if j.GetState() == pb.JobState_JOB_STATE_RUNNING {
			return j
		}
	}
	return nil
}

// waiting reports whether a running job lacks workers.
func (s *State) waiting(j *pb.JobRecord) bool {
	return len(s.r.Workers) < int(j.GetSpec().GetMinWorkers())
}

func (s *State) workerInfo(w *pb.WorkerRecord) *pb.WorkerInfo {
	st := WorkerReady
	if j := s.running(); j != nil && !s.waiting(j) {
		st = WorkerTraining
	}
	return &pb.WorkerInfo{Id: w.GetId(), Addr: w.GetAddr(), State: st, JoinedUnixMs: w.GetJoinedUnixMs()}
}

func (s *State) jobInfo(j *pb.JobRecord) *pb.JobInfo {
	info := &pb.JobInfo{
		Id:              j.GetId(),
		Spec:            proto.CloneOf(j.GetSpec()),
		State:           stateName(j.GetState()),
		Step:            j.GetStep(),
		Loss:            j.GetLoss(),
		ImagesPerSec:    j.GetImagesPerSec(),
		SubmittedUnixMs: j.GetSubmittedUnixMs(),
	}
	if j.GetState() == pb.JobState_JOB_STATE_RUNNING && s.waiting(j) {
		info.State = JobWaiting
	}
	if cp := latest(j); cp != nil {
		info.LastCheckpoint = &pb.CheckpointInfo{Step: cp.GetStep(), TimeUnixMs: cp.GetTimeUnixMs(), Checksum: cp.GetChecksum()}
	}
	return info
}

func latest(j *pb.JobRecord) *pb.CheckpointManifest {
	if n := len(j.GetCheckpoints()); n > 0 {
		return j.GetCheckpoints()[n-1]
	}
	return nil
}

func finished(j *pb.JobRecord) bool {
	return j.GetState() == pb.JobState_JOB_STATE_DONE || j.GetState() == pb.JobState_JOB_STATE_FAILED
}

func stateName(s pb.JobState) string {
	switch s {
	case pb.JobState_JOB_STATE_QUEUED:
		return JobQueued
	case pb.JobState_JOB_STATE_RUNNING:
		return JobRunning
	case pb.JobState_JOB_STATE_DONE:
		return JobDone
	case pb.JobState_JOB_STATE_FAILED:
		return JobFailed
	}
	return s.String()
}

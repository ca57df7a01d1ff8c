package coordinator

import (
	"bytes"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/sharding"
	"github.com/gencluster/gencluster/trust"
)

// SnapshotVersion is the version of the StateSnapshot layout this binary
// writes and the only one it restores.
const SnapshotVersion = 1

// DefaultKeep is how many checkpoints a job keeps (the newest) when its
// spec does not say (JobSpec.keep 0); older ones drop off its manifest
// list and every coordinator deletes their files.
const DefaultKeep = 3

// MaxKeep bounds JobSpec.keep.
const MaxKeep = 1000

// MaxHolders bounds a manifest's holders (the coordinators of a group).
const MaxHolders = 64

// FinishedJobRetention is how many done or failed jobs the state keeps (the
// most recently finished); older ones are forgotten.
const FinishedJobRetention = 100

// Job states as Status shows them. JobWaiting is not stored: it is how a
// running job shows while the ring has fewer workers than its min_workers.
const (
	JobQueued    = "queued"
	JobRunning   = "running"
	JobWaiting   = "waiting"
	JobDone      = "done"
	JobFailed    = "failed"
	JobCancelled = "cancelled"
)

// Worker states as Status shows them: a ring member trains while a job runs
// with enough workers, else it is ready; a worker that cannot build the
// running job's replica is unfit (out of that job's ring).
const (
	WorkerReady    = "ready"
	WorkerTraining = "training"
	WorkerUnfit    = "unfit"
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

// Ring returns the ring members in rank order: the registered workers in
// registration order, less those unfit for the running job.
func (s *State) Ring() []*pb.RingMember {
	ring := make([]*pb.RingMember, 0, len(s.r.Workers))
	for _, w := range s.r.Workers {
		if s.inRing(w) {
			ring = append(ring, &pb.RingMember{WorkerId: w.GetId(), Addr: w.GetAddr()})
		}
	}
	return ring
}

// inRing reports whether a registered worker is in the ring: it is unless
// it could not build the running job's replica.
func (s *State) inRing(w *pb.WorkerRecord) bool {
	j := s.running()
	return j == nil || w.GetUnfitJob() != j.GetId()
}

// ringSize is len(s.Ring()) without building it.
func (s *State) ringSize() int {
	n := 0
	for _, w := range s.r.Workers {
		if s.inRing(w) {
			n++
		}
	}
	return n
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
// its keep), or an error wrapping ErrNotFound.
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
	w := s.r.Workers[i]
	ring := s.Ring()
	a := &pb.Assignment{Generation: s.r.GetGeneration(), Rank: -1, Ring: ring}
	if !s.inRing(w) {
		a.UnfitReason = w.GetUnfitReason()
		return a, nil
	}
	a.Rank = int32(slices.IndexFunc(ring, func(m *pb.RingMember) bool { return m.GetWorkerId() == workerID }))
	if j := s.running(); j != nil {
		a.JobId = j.GetId()
		a.Job = proto.CloneOf(j.GetSpec())
		if cp := latest(j); cp != nil {
			a.Checkpoint = proto.CloneOf(cp)
		}
		if s.waiting(j) {
			// Build the replica, but start no generation yet.
			a.WaitReason = s.waitingReason(j)
		}
	}
	// The key the predecessor signs its ring hello with, and the one the
	// successor answers ours with (a ring of one opens no streams).
	if n := len(ring); n > 1 {
		prev := ring[(int(a.Rank)+n-1)%n].GetWorkerId()
		if x := s.identity(prev); x != nil && len(x.GetSecretSha256()) > 0 {
			a.PrevRingKey = trust.RingKey(x.GetSecretSha256(), a.GetJobId(), a.GetGeneration())
		}
		next := ring[(int(a.Rank)+1)%n].GetWorkerId()
		if x := s.identity(next); x != nil && len(x.GetSecretSha256()) > 0 {
			a.NextAcceptKey = trust.RingAcceptKey(x.GetSecretSha256(), a.GetJobId(), a.GetGeneration())
		}
	}
	return a, nil
}

// ShardRange is the part [lo, hi) of every global batch that an
// assignment's rank computes (sharding.Split over the ring); 0, 0 when the
// assignment holds no job or its job waits. With more ranks than images in a batch some
// ranks get an empty range.
func ShardRange(a *pb.Assignment) (lo, hi int) {
	if a.GetJob() == nil || len(a.GetRing()) == 0 || a.GetWaitReason() != "" || a.GetRank() < 0 {
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
	for i, id := range s.r.Identities {
		if id.GetId() == "" || slices.IndexFunc(s.r.Identities, func(x *pb.WorkerIdentity) bool { return x.GetId() == id.GetId() }) != i {
			return fmt.Errorf("identity %d: id %q empty or repeated: %w", i, id.GetId(), ErrCorrupt)
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
		case pb.JobState_JOB_STATE_DONE, pb.JobState_JOB_STATE_FAILED, pb.JobState_JOB_STATE_CANCELLED:
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
// generation. A registered id at a new address is the same worker
// restarted elsewhere if it proves it with the id's secret: it keeps its
// place in the ring (ranks keep their order, so a whole-cluster restart
// sums in the same order as before) at the new address, in a new
// generation. It returns the generation after the command.
func (s *State) registerWorker(nowMs int64, c *pb.RegisterWorker) (uint64, error) {
	id := c.GetWorkerId()
	ident := s.identity(id)
	switch {
	case ident != nil && c.GetIssued():
		return s.r.Generation, fmt.Errorf("worker id %q already belongs to a data dir that holds its secret: %w", id, ErrNotOwner)
	case ident != nil && len(ident.GetSecretSha256()) > 0 && !bytes.Equal(ident.GetSecretSha256(), c.GetSecretSha256()):
		return s.r.Generation, fmt.Errorf("worker id %q: the secret presented is not the one issued to it: %w", id, ErrNotOwner)
	}
	if i := s.workerIndex(id); i >= 0 {
		w := s.r.Workers[i]
		switch {
		case w.GetAddr() == c.GetAddr():
			s.remember(nowMs, id, c.GetSecretSha256()) // a re-join of a registered worker
			return s.r.Generation, nil
		case ident == nil || len(ident.GetSecretSha256()) == 0:
			return s.r.Generation, fmt.Errorf("worker id %q is held by another worker at %s: %w", id, w.GetAddr(), ErrAlreadyExists)
		}
		w.Addr, w.JoinedUnixMs = c.GetAddr(), nowMs
		s.remember(nowMs, id, c.GetSecretSha256())
		if s.inRing(w) {
			s.r.Generation++
		}
		return s.r.Generation, nil
	}
	s.r.Workers = append(s.r.Workers, &pb.WorkerRecord{Id: id, Addr: c.GetAddr(), JoinedUnixMs: nowMs})
	s.remember(nowMs, id, c.GetSecretSha256())
	s.r.Generation++
	return s.r.Generation, nil
}

// identity returns the identity of a worker id, or nil.
func (s *State) identity(id string) *pb.WorkerIdentity {
	if i := slices.IndexFunc(s.r.Identities, func(x *pb.WorkerIdentity) bool { return x.GetId() == id }); i >= 0 {
		return s.r.Identities[i]
	}
	return nil
}

// remember records a registration of id (with its secret's hash, if the id
// had none), keeping at most MaxIdentities: past that, the least recently
// registered ids that are not registered now are forgotten.
func (s *State) remember(nowMs int64, id string, hash []byte) {
	if x := s.identity(id); x != nil {
		x.RegisteredUnixMs = nowMs
		if len(x.GetSecretSha256()) == 0 && len(hash) > 0 {
			x.SecretSha256 = slices.Clone(hash)
		}
		// Most recently registered last.
		i := slices.Index(s.r.Identities, x)
		s.r.Identities = append(slices.Delete(s.r.Identities, i, i+1), x)
		return
	}
	s.r.Identities = append(s.r.Identities, &pb.WorkerIdentity{Id: id, SecretSha256: slices.Clone(hash), RegisteredUnixMs: nowMs})
	for over := len(s.r.Identities) - MaxIdentities; over > 0; {
		i := slices.IndexFunc(s.r.Identities, func(x *pb.WorkerIdentity) bool { return s.workerIndex(x.GetId()) < 0 })
		if i < 0 {
			break
		}
		s.r.Identities = slices.Delete(s.r.Identities, i, i+1)
		over--
	}
}

// renewRing starts a new generation with the same members, if the ring is
// still at the generation the command names.
func (s *State) renewRing(c *pb.RenewRing) (uint64, error) {
	if g := c.GetGeneration(); g != s.r.Generation {
		return s.r.Generation, fmt.Errorf("renew ring (%s) seen in generation %d, ring is at %d: %w", c.GetReason(), g, s.r.Generation, ErrStaleGeneration)
	}
	s.r.Generation++
	return s.r.Generation, nil
}

// setWorkerUnfit takes a worker out of the running job's ring (it cannot
// build the job's replica); the generation bumps if it was in the ring.
// When no registered worker is left in the ring, the job fails.
func (s *State) setWorkerUnfit(nowMs int64, c *pb.SetWorkerUnfit) (uint64, error) {
	i := s.workerIndex(c.GetWorkerId())
	if i < 0 {
		return s.r.Generation, fmt.Errorf("worker %q: %w", c.GetWorkerId(), ErrNotFound)
	}
	if _, err := s.startedJob(c.GetJobId()); err != nil {
		return s.r.Generation, err
	}
	w := s.r.Workers[i]
	was := s.inRing(w)
	w.UnfitJob, w.UnfitReason = c.GetJobId(), c.GetReason()
	if was && !s.inRing(w) {
		s.r.Generation++
	}
	if s.ringSize() == 0 {
		// No registered worker can run it: the job fails (with the last
		// reason) rather than waiting for ever.
		j := s.job(c.GetJobId())
		s.endRunning(nowMs, j, pb.JobState_JOB_STATE_FAILED, "no worker can run it: "+c.GetWorkerId()+": "+c.GetReason())
	}
	return s.r.Generation, nil
}

// startedJob returns the running job named id (waiting for workers or not).
func (s *State) startedJob(id string) (*pb.JobRecord, error) {
	j := s.job(id)
	switch {
	case j == nil:
		return nil, fmt.Errorf("job %q: %w", id, ErrNotFound)
	case j.GetState() != pb.JobState_JOB_STATE_RUNNING:
		return nil, fmt.Errorf("job %q is %s: %w", id, stateName(j.GetState()), ErrNotRunning)
	}
	return j, nil
}

// cancelJob ends a queued or running job as cancelled; a running one's
// successor starts. It returns the id of the job that started ("" if none).
func (s *State) cancelJob(nowMs int64, c *pb.CancelJob) (string, error) {
	j := s.job(c.GetJobId())
	switch {
	case j == nil:
		return "", fmt.Errorf("cancel job %q: %w", c.GetJobId(), ErrNotFound)
	case j.GetState() == pb.JobState_JOB_STATE_CANCELLED:
		return "", nil // a retried cancel
	case finished(j):
		return "", fmt.Errorf("cancel job %q: it is already %s: %w", j.GetId(), stateName(j.GetState()), ErrNotRunning)
	}
	msg := "cancelled"
	if r := c.GetReason(); r != "" {
		msg += ": " + r
	}
	if j.GetState() == pb.JobState_JOB_STATE_QUEUED {
		j.State, j.FinishedUnixMs, j.Message = pb.JobState_JOB_STATE_CANCELLED, nowMs, msg
		s.forgetOldJobs()
		return "", nil
	}
	return s.endRunning(nowMs, j, pb.JobState_JOB_STATE_CANCELLED, msg), nil
}

// endRunning ends the running job j in state, starts the next queued job
// and returns its id. Workers that were unfit for j are back in the ring
// (a new generation if there were any).
func (s *State) endRunning(nowMs int64, j *pb.JobRecord, state pb.JobState, msg string) string {
	before := s.Ring()
	j.State, j.FinishedUnixMs, j.Message = state, nowMs, msg
	for _, w := range s.r.Workers {
		if w.GetUnfitJob() == j.GetId() {
			w.UnfitJob, w.UnfitReason = "", ""
		}
	}
	next := s.startNext(nowMs)
	if !slices.EqualFunc(before, s.Ring(), func(a, b *pb.RingMember) bool { return proto.Equal(a, b) }) {
		s.r.Generation++
	}
	s.forgetOldJobs()
	return next
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
	before := s.ringSize()
	n := len(s.r.Workers)
	s.r.Workers = slices.DeleteFunc(s.r.Workers, func(w *pb.WorkerRecord) bool { return gone[w.GetId()] })
	if s.ringSize() != before {
		s.r.Generation++
	}
	if j := s.running(); j != nil && len(s.r.Workers) != n && c.GetJobWarning() != "" {
		j.Warnings = append(j.Warnings, c.GetJobWarning())
		if over := len(j.Warnings) - MaxJobWarnings; over > 0 {
			j.Warnings = slices.Delete(j.Warnings, 0, over)
		}
	}
	return s.r.Generation, nil
}

// submitJob queues a job named "job-<n>-<nonce>" (n counts submissions
// from 1; the proposer drew the nonce) and starts it if none runs. It
// returns the job's id.
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
	if n := c.GetNonce(); n != "" {
		id += "-" + n
	}
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

// fromRing returns the running job jobID for a report (what) that a ring
// member made in generation gen about step: an error unless the job runs,
// gen is the current generation and step is within the job's steps.
func (s *State) fromRing(what, jobID string, gen uint64, step int64) (*pb.JobRecord, error) {
	j, err := s.runningJob(jobID)
	if err != nil {
		return nil, err
	}
	switch {
	case gen < s.r.Generation:
		return nil, fmt.Errorf("%s of job %q from generation %d, ring is at %d: %w", what, j.GetId(), gen, s.r.Generation, ErrStaleGeneration)
	case gen > s.r.Generation:
		return nil, fmt.Errorf("%s of job %q from generation %d, ahead of the ring's %d: %w", what, j.GetId(), gen, s.r.Generation, ErrInvalid)
	case step > j.GetSpec().GetSteps():
		return nil, fmt.Errorf("%s of job %q: step %d is past its %d steps: %w", what, j.GetId(), step, j.GetSpec().GetSteps(), ErrInvalid)
	}
	return j, nil
}

// reportProgress records a completed step of the running job. Within one
// generation the step never goes back; a report from a newer generation may
// go back as far as the latest checkpoint (the ring resumed from it).
func (s *State) reportProgress(nowMs int64, c *pb.ReportProgress) error {
	j, err := s.fromRing("progress", c.GetJobId(), c.GetGeneration(), c.GetStep())
	if err != nil {
		return err
	}
	step := c.GetStep()
	if c.GetGeneration() == j.GetProgressGeneration() && step < j.GetStep() {
		return fmt.Errorf("progress of job %q: step %d goes back from %d: %w", j.GetId(), step, j.GetStep(), ErrInvalid)
	}
	if cp := latest(j); cp != nil && step < cp.GetStep() {
		return fmt.Errorf("progress of job %q: step %d is behind its checkpoint at step %d: %w", j.GetId(), step, cp.GetStep(), ErrInvalid)
	}
	j.Step, j.Loss, j.ImagesPerSec, j.ProgressGeneration = step, c.GetLoss(), c.GetImagesPerSec(), c.GetGeneration()
	addLossPoint(j, &pb.LossPoint{Step: step, Loss: c.GetLoss(), TimeUnixMs: nowMs})
	return nil
}

// addLossPoint adds a reported loss to j's history: points at least
// loss_stride steps apart, at most MaxLossHistory of them (when full, every
// other one goes and the stride doubles), so the history spans the whole
// job evenly in bounded space. A report behind the last point (the ring
// resumed from a checkpoint) first drops the points past it.
func addLossPoint(j *pb.JobRecord, p *pb.LossPoint) {
	h := j.GetLossHistory()
	resumed := false
	for len(h) > 0 && h[len(h)-1].GetStep() >= p.GetStep() {
		h, resumed = h[:len(h)-1], true
	}
	stride := max(j.GetLossStride(), 1)
	if !resumed && len(h) > 0 && p.GetStep()-h[len(h)-1].GetStep() < stride {
		j.LossHistory = h
		return
	}
	h = append(h, p)
	if len(h) >= MaxLossHistory {
		kept := h[:0]
		for i, q := range h {
			if i%2 == 0 {
				kept = append(kept, q)
			}
		}
		clear(h[len(kept):])
		h, stride = kept, 2*stride
	}
	j.LossHistory, j.LossStride = h, stride
}

// recordSample keeps the running job's sample grid. It comes from a ring
// member of the current generation (the service checks who sent it); a
// grid of an older step than the one kept is ignored, one of the same or
// a newer step replaces it.
func (s *State) recordSample(c *pb.RecordSample) error {
	j, err := s.fromRing("sample", c.GetJobId(), c.GetGeneration(), c.GetStep())
	if err != nil {
		return err
	}
	switch {
	case !slices.ContainsFunc(s.Ring(), func(m *pb.RingMember) bool { return m.GetWorkerId() == c.GetWorkerId() }):
		return fmt.Errorf("sample of job %q from worker %q, which is not in the ring: %w", j.GetId(), c.GetWorkerId(), ErrNotInRing)
	case c.GetStep() < j.GetSampleStep():
		return nil
	}
	j.SamplePng, j.SampleStep = slices.Clone(c.GetPng()), c.GetStep()
	return nil
}

// LossHistory returns a job's loss history (nil if none).
func (s *State) LossHistory(jobID string) []*pb.LossPoint {
	j := s.job(jobID)
	if j == nil {
		return nil
	}
	out := make([]*pb.LossPoint, len(j.GetLossHistory()))
	for i, p := range j.GetLossHistory() {
		out[i] = proto.CloneOf(p)
	}
	return out
}

// Sample returns the latest sample grid of a job (nil if it has none).
func (s *State) Sample(jobID string) (step int64, png []byte) {
	j := s.job(jobID)
	if j == nil || len(j.GetSamplePng()) == 0 {
		return 0, nil
	}
	return j.GetSampleStep(), slices.Clone(j.GetSamplePng())
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
	if c.GetState() == pb.JobState_JOB_STATE_DONE {
		// Done means every step ran: a worker reports it when its replica
		// reached the last one. Its last progress report may have been
		// refused (the ring moved to a new generation while it finished
		// in the old one), so the recorded step is set here.
		j.Step = j.GetSpec().GetSteps()
	}
	return s.endRunning(nowMs, j, c.GetState(), c.GetMessage()), nil
}

// recordCheckpoint adds a manifest to a started job's list, keeping the
// newest keep (the newest is never dropped: keep is at least 1). Steps
// never go back. A manifest for a recorded step with the same checksum adds
// its holders (a coordinator caught up); with another checksum it changes
// nothing (the first recorded stays: both hold the same step's state). A
// manifest older than the list's oldest is refused. It returns the
// manifest as recorded.
func (s *State) recordCheckpoint(c *pb.RecordCheckpoint) (*pb.CheckpointManifest, error) {
	m := c.GetManifest()
	j := s.job(m.GetJobId())
	switch {
	case j == nil:
		return nil, fmt.Errorf("checkpoint of job %q: %w", m.GetJobId(), ErrNotFound)
	case j.GetState() == pb.JobState_JOB_STATE_QUEUED:
		return nil, fmt.Errorf("checkpoint of job %q: it is queued: %w", j.GetId(), ErrNotRunning)
	case m.GetStep() > j.GetSpec().GetSteps():
		return nil, fmt.Errorf("checkpoint of job %q: step %d is past its %d steps: %w", j.GetId(), m.GetStep(), j.GetSpec().GetSteps(), ErrInvalid)
	}
	if i := slices.IndexFunc(j.Checkpoints, func(o *pb.CheckpointManifest) bool { return o.GetStep() == m.GetStep() }); i >= 0 {
		have := j.Checkpoints[i]
		if have.GetChecksum() == m.GetChecksum() {
			for _, h := range m.GetHolders() {
				if !slices.Contains(have.Holders, h) && len(have.Holders) < MaxHolders {
					have.Holders = append(have.Holders, h)
				}
			}
			slices.Sort(have.Holders)
		}
		return proto.CloneOf(have), nil
	}
	if c.GetAddHolders() {
		return nil, nil // that step is no longer kept (or was never recorded)
	}
	if last := latest(j); last != nil && m.GetStep() < last.GetStep() {
		return nil, fmt.Errorf("checkpoint of job %q: step %d is behind its latest checkpoint at step %d: %w", j.GetId(), m.GetStep(), last.GetStep(), ErrInvalid)
	}
	add := proto.CloneOf(m)
	slices.Sort(add.Holders)
	add.Holders = slices.Compact(add.Holders)
	j.Checkpoints = append(j.Checkpoints, add)
	if n := len(j.Checkpoints) - keepOf(j.GetSpec()); n > 0 {
		j.Checkpoints = slices.Delete(j.Checkpoints, 0, n)
	}
	return proto.CloneOf(add), nil
}

// keepOf is how many checkpoints a job keeps.
func keepOf(spec *pb.JobSpec) int {
	if k := int(spec.GetKeep()); k > 0 {
		return k
	}
	return DefaultKeep
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
	j, err := s.startedJob(id)
	if err != nil {
		return nil, err
	}
	if s.waiting(j) {
		return nil, fmt.Errorf("job %q %s: %w", id, s.waitingReason(j), ErrNotRunning)
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
	return s.ringSize() < int(j.GetSpec().GetMinWorkers())
}

// waitingReason says why a waiting job waits.
func (s *State) waitingReason(j *pb.JobRecord) string {
	return fmt.Sprintf("waits for workers: %d in the ring, min_workers is %d", s.ringSize(), j.GetSpec().GetMinWorkers())
}

func (s *State) workerInfo(w *pb.WorkerRecord) *pb.WorkerInfo {
	info := &pb.WorkerInfo{Id: w.GetId(), Addr: w.GetAddr(), State: WorkerReady, JoinedUnixMs: w.GetJoinedUnixMs()}
	switch j := s.running(); {
	case !s.inRing(w):
		info.State, info.Reason = WorkerUnfit, w.GetUnfitReason()
	case j != nil && !s.waiting(j):
		info.State = WorkerTraining
	}
	return info
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
		Warnings:        slices.Clone(j.GetWarnings()),
		Message:         j.GetMessage(),
		StartedUnixMs:   j.GetStartedUnixMs(),
		FinishedUnixMs:  j.GetFinishedUnixMs(),
		SampleStep:      j.GetSampleStep(),
	}
	switch {
	case j.GetState() == pb.JobState_JOB_STATE_RUNNING && s.waiting(j):
		info.State = JobWaiting
		info.WaitingReason = s.waitingReason(j)
	case j.GetState() == pb.JobState_JOB_STATE_QUEUED:
		if r := s.running(); r != nil {
			info.WaitingReason = "queued behind " + r.GetId()
		}
	}
	if cp := latest(j); cp != nil {
		info.LastCheckpoint = &pb.CheckpointInfo{Step: cp.GetStep(), TimeUnixMs: cp.GetTimeUnixMs(), Checksum: cp.GetChecksum(),
			SizeBytes: cp.GetSizeBytes(), Holders: slices.Clone(cp.GetHolders())}
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
	switch j.GetState() {
	case pb.JobState_JOB_STATE_DONE, pb.JobState_JOB_STATE_FAILED, pb.JobState_JOB_STATE_CANCELLED:
		return true
	}
	return false
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
	case pb.JobState_JOB_STATE_CANCELLED:
		return JobCancelled
	}
	return s.String()
}

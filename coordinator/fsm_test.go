package coordinator

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// t0 is the leader's stamp of the first command in these tests.
const t0 = int64(1_700_000_000_000)

func newTestFSM(t testing.TB) *FSM {
	return NewFSM(slog.New(slog.NewTextHandler(t.Output(), nil)))
}

func spec() *pb.JobSpec {
	return &pb.JobSpec{Model: "pixelcnn", Dataset: "mnist", Batch: 64, Steps: 1000, Lr: 1e-3, Seed: 1, CheckpointEvery: 100, MinWorkers: 1}
}

func envelope(body any) *pb.Command {
	c := &pb.Command{Version: CommandVersion, TimeUnixMs: t0}
	switch b := body.(type) {
	case *pb.RegisterWorker:
		c.Body = &pb.Command_RegisterWorker{RegisterWorker: b}
	case *pb.RemoveWorkers:
		c.Body = &pb.Command_RemoveWorkers{RemoveWorkers: b}
	case *pb.SubmitJob:
		c.Body = &pb.Command_SubmitJob{SubmitJob: b}
	case *pb.ReportProgress:
		c.Body = &pb.Command_ReportProgress{ReportProgress: b}
	case *pb.FinishJob:
		c.Body = &pb.Command_FinishJob{FinishJob: b}
	case *pb.RecordCheckpoint:
		c.Body = &pb.Command_RecordCheckpoint{RecordCheckpoint: b}
	case *pb.CheckpointManifest:
		c.Body = &pb.Command_RecordCheckpoint{RecordCheckpoint: &pb.RecordCheckpoint{Manifest: b}}
	case *pb.RenewRing:
		c.Body = &pb.Command_RenewRing{RenewRing: b}
	case *pb.SetWorkerUnfit:
		c.Body = &pb.Command_SetWorkerUnfit{SetWorkerUnfit: b}
	case *pb.CancelJob:
		c.Body = &pb.Command_CancelJob{CancelJob: b}
	case *pb.RecordSample:
		c.Body = &pb.Command_RecordSample{RecordSample: b}
	case nil:
	default:
		panic(fmt.Sprintf("envelope: %T", body))
	}
	return c
}

func register(id, addr string) *pb.RegisterWorker {
	return &pb.RegisterWorker{WorkerId: id, Addr: addr}
}
func remove(reason string, ids ...string) *pb.RemoveWorkers {
	return &pb.RemoveWorkers{WorkerIds: ids, Reason: reason}
}
func submit(s *pb.JobSpec) *pb.SubmitJob { return &pb.SubmitJob{Spec: s} }
func progress(job string, gen uint64, step int64) *pb.ReportProgress {
	return &pb.ReportProgress{JobId: job, Generation: gen, Step: step, Loss: 90.5, ImagesPerSec: 1200}
}
func finish(job string, st pb.JobState, msg string) *pb.FinishJob {
	return &pb.FinishJob{JobId: job, State: st, Message: msg}
}
func manifest(job string, step int64, sum string) *pb.CheckpointManifest {
	return &pb.CheckpointManifest{JobId: job, Step: step, Checksum: sum, TimeUnixMs: t0 + step, SizeBytes: 1 << 20, Generation: 1, WorldSize: 2, WriterId: "w1", Key: fmt.Sprintf("%s/%08d", job, step)}
}

// applyRaw applies bytes as the next log entry.
func applyRaw(f *FSM, data []byte) ApplyResult {
	return f.Apply(&raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: data}).(ApplyResult)
}

// applyBody wraps body in a current command, encodes it without validating
// (Apply must validate on its own) and applies it.
func applyBody(t testing.TB, f *FSM, body any) ApplyResult {
	t.Helper()
	b, err := proto.Marshal(envelope(body))
	if err != nil {
		t.Fatal(err)
	}
	return applyRaw(f, b)
}

// mustApply applies body and fails the test on an error.
func mustApply(t testing.TB, f *FSM, body any) any {
	t.Helper()
	r := applyBody(t, f, body)
	if r.Err != nil {
		t.Fatalf("apply %T: %v", body, r.Err)
	}
	return r.Value
}

// wantErr applies body, checks the error, and checks that the state did not
// change.
func wantErr(t testing.TB, f *FSM, body any, target error, contains string) {
	t.Helper()
	before := encoded(t, f)
	r := applyBody(t, f, body)
	if !errors.Is(r.Err, target) {
		t.Fatalf("apply %T: err %v, want %v", body, r.Err, target)
	}
	if !strings.Contains(r.Err.Error(), contains) {
		t.Fatalf("apply %T: err %q does not say %q", body, r.Err, contains)
	}
	if after := encoded(t, f); !bytes.Equal(before, after) {
		t.Fatalf("apply %T: refused command changed the state", body)
	}
}

func encoded(t testing.TB, f *FSM) []byte {
	t.Helper()
	var b []byte
	var err error
	f.Read(func(s *State) { b, err = s.Encode() })
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func generation(f *FSM) (g uint64) {
	f.Read(func(s *State) { g = s.Generation() })
	return g
}

func ringIDs(f *FSM) []string {
	var ids []string
	f.Read(func(s *State) {
		for _, m := range s.Ring() {
			ids = append(ids, m.GetWorkerId())
		}
	})
	return ids
}

func job(t testing.TB, f *FSM, id string) *pb.JobInfo {
	t.Helper()
	var j *pb.JobInfo
	var err error
	f.Read(func(s *State) { j, err = s.Job(id) })
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func assignment(t testing.TB, f *FSM, worker string) *pb.Assignment {
	t.Helper()
	var a *pb.Assignment
	var err error
	f.Read(func(s *State) { a, err = s.Assignment(worker) })
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
	failWrite         bool
}

func (s *memSink) Write(p []byte) (int, error) {
	if s.failWrite {
		return 0, errors.New("disk full")
	}
	return s.Buffer.Write(p)
}
func (s *memSink) ID() string            { return "test-snap" }
func (s *memSink) Cancel() error         { s.cancelled = true; return nil }
func (s *memSink) Close() error          { s.closed = true; return nil }
func (s *memSink) Reader() io.ReadCloser { return io.NopCloser(bytes.NewReader(s.Bytes())) }

func persist(t testing.TB, snap raft.FSMSnapshot) []byte {
	t.Helper()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed %v, cancelled %v", sink.closed, sink.cancelled)
	}
	snap.Release()
	return sink.Bytes()
}

func snapshotBytes(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return persist(t, snap)
}

func TestCommandValidate(t *testing.T) {
	mod := func(m func(s *pb.JobSpec)) *pb.SubmitJob { s := spec(); m(s); return submit(s) }
	valid := []any{
		register("w1", "10.0.0.1:7001"),
		register("worker-é", "[::1]:7001"),
		register("w1", "host.example:65535"),
		remove("lease", "w1", "w2"),
		submit(spec()),
		mod(func(s *pb.JobSpec) { s.Model, s.Dataset = "vae", "idx:/data/mnist" }),
		mod(func(s *pb.JobSpec) { s.CheckpointEvery, s.MinWorkers, s.Batch = 0, 1024, 65536 }),
		progress("job-1", 1, 0),
		finish("job-1", pb.JobState_JOB_STATE_FAILED, "loss diverged\nat step 7"),
		manifest("job-1", 100, strings.Repeat("ab", 32)),
	}
	for _, b := range valid {
		if err := ValidateCommand(envelope(b)); err != nil {
			t.Errorf("%T %v: %v", b, b, err)
		}
	}

	invalid := []struct {
		body  any
		field string
	}{
		{mod(func(s *pb.JobSpec) { s.Model = "gan" }), "model"},
		{mod(func(s *pb.JobSpec) { s.Dataset = "" }), "dataset"},
		{mod(func(s *pb.JobSpec) { s.Dataset = "idx:" }), "dataset"},
		{mod(func(s *pb.JobSpec) { s.Dataset = "cifar" }), "dataset"},
		{mod(func(s *pb.JobSpec) { s.Batch = 0 }), "batch"},
		{mod(func(s *pb.JobSpec) { s.Batch = 65537 }), "batch"},
		{mod(func(s *pb.JobSpec) { s.Steps = 0 }), "steps"},
		{mod(func(s *pb.JobSpec) { s.Lr = 0 }), "lr"},
		{mod(func(s *pb.JobSpec) { s.Lr = -1e-3 }), "lr"},
		{mod(func(s *pb.JobSpec) { s.Lr = math.NaN() }), "lr"},
		{mod(func(s *pb.JobSpec) { s.Lr = math.Inf(1) }), "lr"},
		{mod(func(s *pb.JobSpec) { s.CheckpointEvery = -1 }), "checkpoint_every"},
		{mod(func(s *pb.JobSpec) { s.MinWorkers = 0 }), "min_workers"},
		{mod(func(s *pb.JobSpec) { s.MinWorkers = 1025 }), "min_workers"},
		{submit(nil), "job spec: missing"},
		{register("", "h:1"), "worker_id: empty"},
		{register(strings.Repeat("w", 129), "h:1"), "worker_id"},
		{register("w 1", "h:1"), "worker_id"},
		{register("w\x001", "h:1"), "worker_id"},
		{register("w\xff", "h:1"), "worker_id"},
		{register("w1", "nohost"), "addr"},
		{register("w1", ":7000"), "addr"},
		{register("w1", "h:0"), "addr"},
		{register("w1", "h:65536"), "addr"},
		{register("w1", "h:http"), "addr"},
		{remove("lease"), "worker_ids"},
		{remove("", "w1"), "reason"},
		{remove("lease", "w1", ""), "worker_ids"},
		{progress("", 1, 1), "job_id"},
		{progress("job-1", 0, 1), "generation"},
		{progress("job-1", 1, -1), "step"},
		{&pb.ReportProgress{JobId: "job-1", Generation: 1, Loss: math.NaN()}, "loss"},
		{&pb.ReportProgress{JobId: "job-1", Generation: 1, ImagesPerSec: -1}, "images_per_sec"},
		{finish("job-1", pb.JobState_JOB_STATE_QUEUED, ""), "state"},
		{finish("job-1", pb.JobState_JOB_STATE_DONE, strings.Repeat("x", MaxTextLen+1)), "message"},
		{manifest("job-1", -1, "ab"), "step"},
		{manifest("job-1", 1, ""), "checksum"},
		{&pb.RecordCheckpoint{}, "manifest"},
		{nil, "no body"},
	}
	for _, c := range invalid {
		err := ValidateCommand(envelope(c.body))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%T %v: err %v, want ErrInvalid naming %q", c.body, c.body, err, c.field)
		}
	}

	c := envelope(submit(spec()))
	c.Version = 0
	if err := ValidateCommand(c); !errors.Is(err, ErrInvalid) {
		t.Errorf("version 0: %v", err)
	}
	c.Version = CommandVersion + 1
	if err := ValidateCommand(c); !errors.Is(err, ErrUnsupportedVersion) || !strings.Contains(err.Error(), "newer") {
		t.Errorf("future version: %v", err)
	}
	c = envelope(submit(spec()))
	c.TimeUnixMs = 0
	if err := ValidateCommand(c); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "time_unix_ms") {
		t.Errorf("unstamped: %v", err)
	}
	if err := ValidateCommand(nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil: %v", err)
	}
}

func TestCommandEncodeDecode(t *testing.T) {
	c := envelope(submit(spec()))
	b, err := EncodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	d, err := DecodeCommand(b)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(c, d) {
		t.Fatalf("round trip: %v != %v", d, c)
	}
	if _, err := EncodeCommand(envelope(register("w1", "nohost"))); !errors.Is(err, ErrInvalid) {
		t.Fatalf("encode of an invalid command: %v", err)
	}
	if _, err := DecodeCommand([]byte{0xff, 0xff, 0xff}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("decode of garbage: %v", err)
	}
}

func TestFSMRegisterWorker(t *testing.T) {
	f := newTestFSM(t)
	if g := mustApply(t, f, register("w1", "h1:7001")); g != uint64(1) {
		t.Fatalf("first worker: generation %v, want 1", g)
	}
	before := encoded(t, f)
	if g := mustApply(t, f, register("w1", "h1:7001")); g != uint64(1) {
		t.Fatalf("re-join: generation %v, want 1", g)
	}
	if !bytes.Equal(before, encoded(t, f)) {
		t.Fatal("re-join at the same address changed the state")
	}
	wantErr(t, f, register("w1", "h9:7001"), ErrAlreadyExists, `worker id "w1" is held by another worker at h1:7001`)

	mustApply(t, f, register("w2", "h2:7001"))
	mustApply(t, f, register("w3", "h3:7001"))
	if g := generation(f); g != 3 {
		t.Fatalf("generation %d, want 3", g)
	}
	if got := ringIDs(f); !equal(got, "w1", "w2", "w3") {
		t.Fatalf("ring %v", got)
	}

	// Lease expired: w1 may come back at another address, at the ring's end.
	if g := mustApply(t, f, remove("lease", "w1")); g != uint64(4) {
		t.Fatalf("remove: generation %v, want 4", g)
	}
	if g := mustApply(t, f, register("w1", "h9:7001")); g != uint64(5) {
		t.Fatalf("re-register: generation %v, want 5", g)
	}
	if got := ringIDs(f); !equal(got, "w2", "w3", "w1") {
		t.Fatalf("ring %v", got)
	}
	a := assignment(t, f, "w1")
	if a.GetRank() != 2 || a.GetGeneration() != 5 || a.GetRing()[2].GetAddr() != "h9:7001" || a.GetJobId() != "" {
		t.Fatalf("assignment %v", a)
	}
	var w *pb.WorkerInfo
	var err error
	f.Read(func(s *State) { w, err = s.Worker("w1") })
	if err != nil || w.GetJoinedUnixMs() != t0 || w.GetState() != WorkerReady {
		t.Fatalf("worker w1: %v, %v", w, err)
	}
	f.Read(func(s *State) { _, err = s.Assignment("w7") })
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("assignment of an unknown worker: %v", err)
	}
}

func TestFSMRemoveWorkers(t *testing.T) {
	f := newTestFSM(t)
	for _, id := range []string{"w1", "w2", "w3", "w4"} {
		mustApply(t, f, register(id, id+":7001"))
	}
	before := encoded(t, f)
	if g := mustApply(t, f, remove("leave", "w9", "w8")); g != uint64(4) {
		t.Fatalf("removing unknown ids: generation %v, want 4", g)
	}
	if !bytes.Equal(before, encoded(t, f)) {
		t.Fatal("removing unknown ids changed the state")
	}
	if g := mustApply(t, f, remove("lease", "w9", "w1", "w3", "w3")); g != uint64(5) {
		t.Fatalf("removing two: generation %v, want 5 (one bump per command)", g)
	}
	if got := ringIDs(f); !equal(got, "w2", "w4") {
		t.Fatalf("ring %v", got)
	}
	if a := assignment(t, f, "w4"); a.GetRank() != 1 {
		t.Fatalf("w4 rank %d, want 1", a.GetRank())
	}

	stale := remove("failure reported by w2", "w4")
	stale.Generation = 4
	wantErr(t, f, stale, ErrStaleGeneration, "generation 4, ring is at 5")
	stale.Generation = 5
	mustApply(t, f, stale)
	if got := ringIDs(f); !equal(got, "w2") || generation(f) != 6 {
		t.Fatalf("ring %v generation %d", got, generation(f))
	}
}

func TestFSMJobQueue(t *testing.T) {
	f := newTestFSM(t)
	mustApply(t, f, register("w1", "h1:1"))
	if id := mustApply(t, f, submit(spec())); id != "job-1" {
		t.Fatalf("first job id %v", id)
	}
	s2 := spec()
	s2.Model = "vae"
	if id := mustApply(t, f, submit(s2)); id != "job-2" {
		t.Fatalf("second job id %v", id)
	}
	if j := job(t, f, "job-1"); j.GetState() != JobRunning || j.GetSubmittedUnixMs() != t0 {
		t.Fatalf("job-1: %v", j)
	}
	if j := job(t, f, "job-2"); j.GetState() != JobQueued || j.GetSpec().GetModel() != "vae" {
		t.Fatalf("job-2: %v", j)
	}
	if a := assignment(t, f, "w1"); a.GetJobId() != "job-1" || a.GetJob().GetModel() != "pixelcnn" {
		t.Fatalf("assignment %v", a)
	}

	wantErr(t, f, finish("job-2", pb.JobState_JOB_STATE_DONE, ""), ErrNotRunning, "queued")
	wantErr(t, f, finish("job-7", pb.JobState_JOB_STATE_DONE, ""), ErrNotFound, "job-7")

	if next := mustApply(t, f, finish("job-1", pb.JobState_JOB_STATE_DONE, "")); next != "job-2" {
		t.Fatalf("next job %v", next)
	}
	if j := job(t, f, "job-2"); j.GetState() != JobRunning {
		t.Fatalf("job-2 after job-1 finished: %v", j)
	}
	// A retried FinishJob in the same state is a no-op; another is refused.
	before := encoded(t, f)
	if next := mustApply(t, f, finish("job-1", pb.JobState_JOB_STATE_DONE, "")); next != "" {
		t.Fatalf("retried finish started %v", next)
	}
	if !bytes.Equal(before, encoded(t, f)) {
		t.Fatal("retried finish changed the state")
	}
	wantErr(t, f, finish("job-1", pb.JobState_JOB_STATE_FAILED, ""), ErrNotRunning, "done")

	if next := mustApply(t, f, finish("job-2", pb.JobState_JOB_STATE_FAILED, "out of memory")); next != "" {
		t.Fatalf("next job %v", next)
	}
	if id := mustApply(t, f, submit(spec())); id != "job-3" || job(t, f, "job-3").GetState() != JobRunning {
		t.Fatalf("job-3 (%v) did not start at once", id)
	}
	var order []string
	f.Read(func(s *State) {
		for _, j := range s.Jobs() {
			order = append(order, j.GetId()+":"+j.GetState())
		}
	})
	if !equal(order, "job-3:running", "job-2:failed", "job-1:done") {
		t.Fatalf("jobs %v", order)
	}
}

func TestFSMFinishedJobRetention(t *testing.T) {
	f := newTestFSM(t)
	for i := 1; i <= FinishedJobRetention+3; i++ {
		id := mustApply(t, f, submit(spec())).(string)
		mustApply(t, f, finish(id, pb.JobState_JOB_STATE_DONE, ""))
	}
	var n int
	var err error
	f.Read(func(s *State) { n = len(s.Jobs()); _, err = s.Job("job-3") })
	if n != FinishedJobRetention || !errors.Is(err, ErrNotFound) {
		t.Fatalf("%d jobs kept (want %d), job-3: %v", n, FinishedJobRetention, err)
	}
	job(t, f, "job-4")
}

func TestFSMMinWorkersWaiting(t *testing.T) {
	f := newTestFSM(t)
	s := spec()
	s.MinWorkers, s.Batch = 3, 10
	mustApply(t, f, register("w1", "h1:1"))
	mustApply(t, f, register("w2", "h2:1"))
	mustApply(t, f, submit(s))
	if j := job(t, f, "job-1"); j.GetState() != JobWaiting {
		t.Fatalf("job with 2 of 3 workers: %v", j)
	}
	if a := assignment(t, f, "w1"); a.GetJobId() != "job-1" || a.GetWaitReason() != "waits for workers: 2 in the ring, min_workers is 3" {
		t.Fatalf("waiting job not assigned as waiting: %v", a)
	}
	if lo, hi := ShardRange(assignment(t, f, "w1")); lo != 0 || hi != 0 {
		t.Fatalf("shard of no job: [%d, %d)", lo, hi)
	}
	wantErr(t, f, progress("job-1", 2, 1), ErrNotRunning, "waits for workers")

	mustApply(t, f, register("w3", "h3:1"))
	if j := job(t, f, "job-1"); j.GetState() != JobRunning {
		t.Fatalf("job with 3 of 3 workers: %v", j)
	}
	covered := 0
	for i, id := range []string{"w1", "w2", "w3"} {
		a := assignment(t, f, id)
		lo, hi := ShardRange(a)
		if a.GetJobId() != "job-1" || int(a.GetRank()) != i || lo != covered || hi <= lo {
			t.Fatalf("%s: %v, shard [%d, %d)", id, a, lo, hi)
		}
		covered = hi
	}
	if covered != 10 {
		t.Fatalf("shards cover %d of the batch of 10", covered)
	}
	var w *pb.WorkerInfo
	f.Read(func(s *State) { w, _ = s.Worker("w2") })
	if w.GetState() != WorkerTraining {
		t.Fatalf("w2 %v", w)
	}
	mustApply(t, f, remove("lease", "w2"))
	if j := job(t, f, "job-1"); j.GetState() != JobWaiting {
		t.Fatalf("job after losing a worker: %v", j)
	}
}

func TestFSMReportProgress(t *testing.T) {
	f := newTestFSM(t)
	mustApply(t, f, register("w1", "h1:1"))
	mustApply(t, f, register("w2", "h2:1"))
	mustApply(t, f, submit(spec()))
	mustApply(t, f, submit(spec()))

	mustApply(t, f, progress("job-1", 2, 10))
	if j := job(t, f, "job-1"); j.GetStep() != 10 || j.GetLoss() != 90.5 || j.GetImagesPerSec() != 1200 {
		t.Fatalf("job-1 %v", j)
	}
	mustApply(t, f, progress("job-1", 2, 10)) // a repeated report
	wantErr(t, f, progress("job-1", 1, 11), ErrStaleGeneration, "generation 1, ring is at 2")
	wantErr(t, f, progress("job-1", 3, 11), ErrInvalid, "ahead")
	wantErr(t, f, progress("job-9", 2, 11), ErrNotFound, "job-9")
	wantErr(t, f, progress("job-2", 2, 11), ErrNotRunning, "queued")
	wantErr(t, f, progress("job-1", 2, 9), ErrInvalid, "goes back")
	wantErr(t, f, progress("job-1", 2, 1001), ErrInvalid, "past")
	mustApply(t, f, progress("job-1", 2, 250))
	mustApply(t, f, manifest("job-1", 200, "aa"))

	// The whole ring restarted from the checkpoint at step 200: a newer
	// generation may go back to it, not further.
	mustApply(t, f, remove("lease", "w1", "w2"))
	mustApply(t, f, register("w1", "h1:2"))
	g := generation(f)
	wantErr(t, f, progress("job-1", g, 199), ErrInvalid, "checkpoint at step 200")
	mustApply(t, f, progress("job-1", g, 201))
	if j := job(t, f, "job-1"); j.GetStep() != 201 {
		t.Fatalf("job-1 %v", j)
	}
	mustApply(t, f, finish("job-1", pb.JobState_JOB_STATE_DONE, ""))
	wantErr(t, f, progress("job-1", g, 1000), ErrNotRunning, "done")
}

func TestFSMRecordCheckpoint(t *testing.T) {
	f := newTestFSM(t)
	mustApply(t, f, submit(spec()))
	mustApply(t, f, submit(spec()))
	wantErr(t, f, manifest("job-2", 100, "aa"), ErrNotRunning, "queued")
	wantErr(t, f, manifest("job-9", 100, "aa"), ErrNotFound, "job-9")
	wantErr(t, f, manifest("job-1", 1001, "aa"), ErrInvalid, "past")

	for step := int64(100); step <= 800; step += 100 {
		mustApply(t, f, manifest("job-1", step, fmt.Sprintf("sum%d", step)))
	}
	var cps []*pb.CheckpointManifest
	f.Read(func(s *State) { cps, _ = s.Checkpoints("job-1") })
	if len(cps) != DefaultKeep || cps[0].GetStep() != 600 || cps[2].GetStep() != 800 {
		t.Fatalf("kept %v", cps)
	}
	wantErr(t, f, manifest("job-1", 650, "sum650"), ErrInvalid, "behind its latest checkpoint at step 800")

	before := encoded(t, f)
	mustApply(t, f, manifest("job-1", 800, "sum800"))
	if !bytes.Equal(before, encoded(t, f)) {
		t.Fatal("an identical manifest changed the state")
	}
	// Another checksum at a recorded step: the first one stays.
	mustApply(t, f, manifest("job-1", 800, "rewritten"))
	if !bytes.Equal(before, encoded(t, f)) {
		t.Fatal("a second checkpoint of a recorded step replaced the first")
	}
	// Holders of a recorded step accumulate, sorted and without repeats.
	m := manifest("job-1", 800, "sum800")
	m.Holders = []string{"c3", "c1"}
	mustApply(t, f, m)
	m.Holders = []string{"c2", "c1"}
	mustApply(t, f, m)
	j := job(t, f, "job-1")
	if lc := j.GetLastCheckpoint(); lc.GetStep() != 800 || lc.GetChecksum() != "sum800" || !slices.Equal(lc.GetHolders(), []string{"c1", "c2", "c3"}) {
		t.Fatalf("last checkpoint %v", lc)
	}
	// An older step than any recorded is refused, as is one between.
	wantErr(t, f, manifest("job-1", 100, "sum100"), ErrInvalid, "behind")
	f.Read(func(s *State) { cps, _ = s.Checkpoints("job-1") })
	if len(cps) != DefaultKeep {
		t.Fatalf("kept %d", len(cps))
	}

	// A checkpoint written after the job finished is still recorded.
	mustApply(t, f, finish("job-1", pb.JobState_JOB_STATE_DONE, ""))
	mustApply(t, f, manifest("job-1", 1000, "final"))
}

// populate applies a little of everything.
func populate(t testing.TB, f *FSM) {
	mustApply(t, f, register("w1", "h1:1"))
	mustApply(t, f, register("w2", "h2:1"))
	mustApply(t, f, register("w3", "h3:1"))
	mustApply(t, f, remove("lease", "w2"))
	mustApply(t, f, submit(spec()))
	mustApply(t, f, submit(spec()))
	mustApply(t, f, progress("job-1", 4, 100))
	mustApply(t, f, manifest("job-1", 100, "aa"))
	mustApply(t, f, finish("job-1", pb.JobState_JOB_STATE_DONE, "ok"))
	mustApply(t, f, submit(spec()))
}

func TestFSMSnapshotRoundTrip(t *testing.T) {
	f := newTestFSM(t)
	populate(t, f)
	want := encoded(t, f)

	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Apply goes on while the snapshot is persisted: the snapshot holds
	// the state as it was.
	mustApply(t, f, register("w4", "h4:1"))
	b := persist(t, snap)

	g := newTestFSM(t)
	if err := g.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	if got := encoded(t, g); !bytes.Equal(got, want) {
		t.Fatal("restored state differs from the snapshotted one")
	}
	if !bytes.Equal(snapshotBytes(t, g), b) {
		t.Fatal("snapshot of the restored state differs")
	}
	if gen := generation(g); gen != 4 {
		t.Fatalf("generation %d", gen)
	}
	if got := ringIDs(g); !equal(got, "w1", "w3") {
		t.Fatalf("ring %v", got)
	}
	if j := job(t, g, "job-1"); j.GetState() != JobDone || j.GetLastCheckpoint().GetChecksum() != "aa" {
		t.Fatalf("job-1 %v", j)
	}
	if j := job(t, g, "job-2"); j.GetState() != JobRunning {
		t.Fatalf("job-2 %v", j)
	}
	// The counter came along: the next job is job-4.
	if id := mustApply(t, g, submit(spec())); id != "job-4" {
		t.Fatalf("next job id %v", id)
	}
}

func TestFSMPersistCancelsOnError(t *testing.T) {
	f := newTestFSM(t)
	populate(t, f)
	snap, _ := f.Snapshot()
	sink := &memSink{failWrite: true}
	if err := snap.Persist(sink); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("persist to a failing sink: %v", err)
	}
	if !sink.cancelled || sink.closed {
		t.Fatalf("sink cancelled %v, closed %v", sink.cancelled, sink.closed)
	}
}

func TestFSMRestoreReplaces(t *testing.T) {
	a := newTestFSM(t)
	populate(t, a)
	b := newTestFSM(t)
	mustApply(t, b, register("other", "o:1"))
	for range 7 {
		mustApply(t, b, submit(spec()))
	}
	if err := b.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, a)))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(encoded(t, a), encoded(t, b)) {
		t.Fatal("restore did not replace the state")
	}
	var err error
	b.Read(func(s *State) { _, err = s.Worker("other") })
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("old worker survived the restore: %v", err)
	}
}

func TestFSMRestoreRefuses(t *testing.T) {
	good := newTestFSM(t)
	populate(t, good)
	snap := good.state.snapshot()

	edit := func(m func(*pb.StateSnapshot)) []byte {
		c := proto.CloneOf(snap)
		m(c)
		b, err := proto.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"garbage", []byte{0xff, 0xff, 0xff, 0x01}, ErrCorrupt},
		{"empty", nil, ErrCorrupt},
		{"future version", edit(func(s *pb.StateSnapshot) { s.Version = SnapshotVersion + 1 }), ErrUnsupportedVersion},
		{"two running", edit(func(s *pb.StateSnapshot) {
			for _, j := range s.Jobs {
				j.State = pb.JobState_JOB_STATE_RUNNING
			}
		}), ErrCorrupt},
		{"repeated worker", edit(func(s *pb.StateSnapshot) { s.Workers = append(s.Workers, s.Workers[0]) }), ErrCorrupt},
		{"job without spec", edit(func(s *pb.StateSnapshot) { s.Jobs[0].Spec = nil }), ErrCorrupt},
	}
	for _, c := range cases {
		f := newTestFSM(t)
		populate(t, f)
		mustApply(t, f, register("w9", "h9:1"))
		before := encoded(t, f)
		err := f.Restore(io.NopCloser(bytes.NewReader(c.data)))
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
		if !bytes.Equal(before, encoded(t, f)) {
			t.Errorf("%s: refused restore changed the state", c.name)
		}
	}
}

func TestFSMGarbageAndFutureVersion(t *testing.T) {
	f := newTestFSM(t)
	populate(t, f)
	before := encoded(t, f)

	if r := applyRaw(f, []byte{0x0a, 0xff, 0xff}); !errors.Is(r.Err, ErrCorrupt) {
		t.Fatalf("garbage: %v", r.Err)
	}
	future := envelope(register("w9", "h9:1"))
	future.Version = CommandVersion + 1
	b, _ := proto.Marshal(future)
	r := applyRaw(f, b)
	if !errors.Is(r.Err, ErrUnsupportedVersion) || !strings.Contains(r.Err.Error(), "newer than this binary") {
		t.Fatalf("future version: %v", r.Err)
	}
	if r := applyRaw(f, nil); !errors.Is(r.Err, ErrInvalid) {
		t.Fatalf("empty entry: %v", r.Err)
	}
	// A future command with a body this binary does not know: field 99.
	unknown := append(b[:0:0], b...)
	unknown = append(unknown, 0x9a, 0x06, 0x00)
	if r := applyRaw(f, unknown); r.Err == nil {
		t.Fatal("unknown body accepted")
	}
	if !bytes.Equal(before, encoded(t, f)) {
		t.Fatal("refused entries changed the state")
	}
	// Entries of other types are not commands.
	if r := f.Apply(&raft.Log{Type: raft.LogNoop, Data: []byte("x")}).(ApplyResult); r.Err != nil || r.Value != nil {
		t.Fatalf("noop: %v", r)
	}
}

// randomCommands draws n log entries from a seeded generator, mostly valid
// commands about a few workers and jobs, some refused, some garbage. It
// applies them to f as it goes so that generations and job ids are often
// the current ones.
func randomCommands(t testing.TB, f *FSM, seed uint64, n int) [][]byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	workers := []string{"w0", "w1", "w2", "w3", "w4", "w5"}
	pick := func() string { return workers[rng.IntN(len(workers))] }
	var out [][]byte
	jobs := 0
	for i := range n {
		g := generation(f)
		jobID := fmt.Sprintf("job-%d", 1+rng.IntN(jobs+1))
		var body any
		switch rng.IntN(10) {
		case 0, 1:
			r := register(pick(), fmt.Sprintf("h%d:%d", rng.IntN(2), 7000+rng.IntN(2)))
			switch r.SecretSha256 = secretHash(r.GetWorkerId()); rng.IntN(8) {
			case 0:
				r.SecretSha256 = nil
			case 1:
				r.SecretSha256 = secretHash("wrong")
			case 2:
				r.Issued = true
			}
			body = r
		case 2:
			r := remove("lease", pick(), pick())
			if rng.IntN(3) == 0 {
				r.Generation = g - uint64(rng.IntN(2))
			}
			body = r
		case 3:
			s := spec()
			s.MinWorkers = int32(1 + rng.IntN(3))
			s.Steps = int64(50 + rng.IntN(100))
			if rng.IntN(8) == 0 {
				s.Batch = 0
			}
			body = submit(s)
			jobs++
		case 4, 5, 6:
			// Mostly the running job at the current generation, a step or
			// so on from its last; sometimes anything.
			var step int64
			f.Read(func(s *State) {
				if j := s.RunningJob(); j != nil && rng.IntN(4) != 0 {
					jobID, step = j.GetId(), j.GetStep()+int64(rng.IntN(4))-1
				} else {
					step = int64(rng.IntN(120))
				}
			})
			if rng.IntN(5) == 0 {
				g--
			}
			p := progress(jobID, g, step)
			p.Loss = rng.Float64() * 100
			body = p
		case 7:
			body = finish(jobID, pb.JobState(3+rng.IntN(2)), "")
		case 8:
			switch rng.IntN(4) {
			case 0:
				body = manifest(jobID, int64(rng.IntN(120)), fmt.Sprintf("%x", rng.Uint64()))
			case 1:
				body = &pb.RenewRing{Generation: g - uint64(rng.IntN(2)), Reason: "peer slow"}
			case 2:
				u := &pb.SetWorkerUnfit{WorkerId: pick(), JobId: jobID, Reason: "no data"}
				f.Read(func(s *State) {
					if j := s.RunningJob(); j != nil {
						u.JobId = j.GetId()
					}
				})
				body = u
			case 3:
				body = &pb.CancelJob{JobId: jobID}
			}
		case 9:
			b := make([]byte, rng.IntN(12))
			for k := range b {
				b[k] = byte(rng.Uint32())
			}
			out = append(out, b)
			applyRaw(f, b)
			continue
		}
		c := envelope(body)
		c.TimeUnixMs = t0 + int64(i)*1000
		if rng.IntN(50) == 0 {
			c.Version = CommandVersion + 1
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
		applyRaw(f, b)
	}
	return out
}

func TestFSMDeterministic(t *testing.T) {
	a := newTestFSM(t)
	log := randomCommands(t, a, 42, 500)
	b := newTestFSM(t)
	accepted := 0
	kinds := map[string]int{}
	for _, e := range log {
		if r := applyRaw(b, e); r.Err == nil {
			accepted++
			c, _ := DecodeCommand(e)
			kinds[fmt.Sprintf("%T", c.GetBody())]++
		}
	}
	if accepted < len(log)/3 || len(kinds) != 9 {
		t.Fatalf("only %d of %d random entries accepted, of kinds %v: the test exercises little", accepted, len(log), kinds)
	}
	sa, sb := snapshotBytes(t, a), snapshotBytes(t, b)
	if !bytes.Equal(sa, sb) {
		t.Fatal("two FSMs fed the same log differ")
	}
	if err := b.state.check(); err != nil {
		t.Fatalf("invariants: %v", err)
	}
	var jobs int
	b.Read(func(s *State) { jobs = len(s.Jobs()) })
	t.Logf("%d entries, %d accepted %v, generation %d, %d jobs, snapshot %d bytes", len(log), accepted, kinds, generation(b), jobs, len(sb))

	// Replaying against a restored prefix gives the same state too.
	c := newTestFSM(t)
	for _, e := range log[:250] {
		applyRaw(c, e)
	}
	d := newTestFSM(t)
	if err := d.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, c)))); err != nil {
		t.Fatal(err)
	}
	for _, e := range log[250:] {
		applyRaw(d, e)
	}
	if !bytes.Equal(snapshotBytes(t, d), sa) {
		t.Fatal("snapshot + rest of the log differs from the whole log")
	}
}

func TestFSMConcurrentReads(t *testing.T) {
	src := newTestFSM(t)
	log := randomCommands(t, src, 9, 600)

	f := newTestFSM(t)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for r := range 4 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				f.Read(func(s *State) {
					for _, w := range s.Workers() {
						if a, err := s.Assignment(w.GetId()); err == nil {
							ShardRange(a)
						}
					}
					for _, j := range s.Jobs() {
						_, _ = s.Checkpoints(j.GetId())
					}
				})
				if r == 0 {
					snap, err := f.Snapshot()
					if err != nil {
						t.Error(err)
						return
					}
					if err := snap.Persist(&memSink{}); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	for _, e := range log {
		applyRaw(f, e)
	}
	close(done)
	wg.Wait()
	if !bytes.Equal(encoded(t, f), encoded(t, src)) {
		t.Fatal("state differs")
	}
}

// FuzzDecodeCommand applies arbitrary bytes: Apply never panics, and the
// state changes only if the bytes decode into a valid command.
func FuzzDecodeCommand(f *testing.F) {
	for _, body := range []any{
		register("w4", "h4:1"), register("w1", "h9:1"), remove("leave", "w1"),
		submit(spec()), progress("job-2", 4, 200), finish("job-2", pb.JobState_JOB_STATE_DONE, ""),
		manifest("job-2", 300, "bb"),
	} {
		b, err := EncodeCommand(envelope(body))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x02})

	base := newTestFSM(f)
	populate(f, base)
	snap := snapshotBytes(f, base)

	f.Fuzz(func(t *testing.T, data []byte) {
		fsm := NewFSM(slog.New(slog.DiscardHandler))
		if err := fsm.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
			t.Fatal(err)
		}
		before := encoded(t, fsm)
		r, ok := fsm.Apply(&raft.Log{Type: raft.LogCommand, Data: data}).(ApplyResult)
		if !ok {
			t.Fatal("Apply returned no ApplyResult")
		}
		after := encoded(t, fsm)
		c, err := DecodeCommand(data)
		if err == nil {
			err = ValidateCommand(c)
		}
		if err != nil && r.Err == nil {
			t.Fatalf("invalid entry (%v) accepted", err)
		}
		if r.Err != nil && !bytes.Equal(before, after) {
			t.Fatalf("refused entry (%v) changed the state", r.Err)
		}
		fsm.Read(func(s *State) {
			if err := s.check(); err != nil {
				t.Fatalf("invariants broken: %v", err)
			}
		})
	})
}

func equal(got []string, want ...string) bool { return slices.Equal(got, want) }

func secretHash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// TestFSMWorkerSecret: a registered worker restarted at a new address
// takes its place in the ring at once with its secret, and only with it.
func TestFSMWorkerSecret(t *testing.T) {
	f := newTestFSM(t)
	w1 := &pb.RegisterWorker{WorkerId: "w1", Addr: "h1:7001", SecretSha256: secretHash("s1"), Issued: true}
	mustApply(t, f, w1)
	mustApply(t, f, &pb.RegisterWorker{WorkerId: "w2", Addr: "h2:7001", SecretSha256: secretHash("s2"), Issued: true})
	if g := generation(f); g != 2 {
		t.Fatalf("generation %d, want 2", g)
	}
	// Issuing another secret for a known id is refused (a lost join reply
	// is not a new identity).
	wantErr(t, f, &pb.RegisterWorker{WorkerId: "w1", Addr: "h9:7001", SecretSha256: secretHash("other"), Issued: true}, ErrNotOwner, "already belongs")
	// Without the secret, or with another one: refused.
	wantErr(t, f, register("w1", "h9:7001"), ErrNotOwner, "not the one issued")
	wantErr(t, f, &pb.RegisterWorker{WorkerId: "w1", Addr: "h9:7001", SecretSha256: secretHash("s2")}, ErrNotOwner, "not the one issued")
	// With it: the same rank at the new address, a new generation.
	if g := mustApply(t, f, &pb.RegisterWorker{WorkerId: "w1", Addr: "h9:7001", SecretSha256: secretHash("s1")}); g != uint64(3) {
		t.Fatalf("take-over: generation %v, want 3", g)
	}
	a := assignment(t, f, "w1")
	if a.GetRank() != 0 || a.GetRing()[0].GetAddr() != "h9:7001" || len(a.GetRing()) != 2 {
		t.Fatalf("after the take-over: %v", a)
	}
	// The identity outlives the registration: after a lease expiry only the
	// secret's holder gets the id back.
	mustApply(t, f, remove("lease", "w1"))
	wantErr(t, f, register("w1", "h5:7001"), ErrNotOwner, "not the one issued")
	mustApply(t, f, &pb.RegisterWorker{WorkerId: "w1", Addr: "h5:7001", SecretSha256: secretHash("s1")})
	if got := ringIDs(f); !equal(got, "w2", "w1") {
		t.Fatalf("ring %v", got)
	}
	// A registration made before secrets existed: the first secret shown
	// is kept (trust on first use), then required.
	mustApply(t, f, register("w3", "h3:7001"))
	mustApply(t, f, &pb.RegisterWorker{WorkerId: "w3", Addr: "h3:7001", SecretSha256: secretHash("s3")})
	wantErr(t, f, &pb.RegisterWorker{WorkerId: "w3", Addr: "h4:7001", SecretSha256: secretHash("x")}, ErrNotOwner, "")
	// Identities survive a snapshot.
	g := newTestFSM(t)
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, f)))); err != nil {
		t.Fatal(err)
	}
	wantErr(t, g, register("w1", "h6:7001"), ErrNotOwner, "")
}

// TestFSMRenewUnfitCancel: RenewRing, SetWorkerUnfit and CancelJob.
func TestFSMRenewUnfitCancel(t *testing.T) {
	f := newTestFSM(t)
	for _, id := range []string{"w1", "w2", "w3"} {
		mustApply(t, f, register(id, id+":7000"))
	}
	if g := mustApply(t, f, &pb.RenewRing{Generation: 3, Reason: "slow peer"}); g != uint64(4) {
		t.Fatalf("renew: generation %v, want 4", g)
	}
	wantErr(t, f, &pb.RenewRing{Generation: 3, Reason: "again"}, ErrStaleGeneration, "")
	if got := ringIDs(f); !equal(got, "w1", "w2", "w3") {
		t.Fatalf("renew changed the ring: %v", got)
	}
	wantErr(t, f, &pb.SetWorkerUnfit{WorkerId: "w2", JobId: "job-1", Reason: "no data"}, ErrNotFound, "")
	a := mustApply(t, f, submit(spec())).(string)
	b := mustApply(t, f, submit(spec())).(string)
	if g := mustApply(t, f, &pb.SetWorkerUnfit{WorkerId: "w2", JobId: a, Reason: "idx:/data: no such directory"}); g != uint64(5) {
		t.Fatalf("unfit: generation %v, want 5", g)
	}
	if got := ringIDs(f); !equal(got, "w1", "w3") {
		t.Fatalf("ring with w2 unfit: %v", got)
	}
	if as := assignment(t, f, "w3"); as.GetRank() != 1 || as.GetJobId() != a {
		t.Fatalf("w3: %v", as)
	}
	if as := assignment(t, f, "w2"); as.GetJobId() != "" || as.GetRank() != -1 || !strings.Contains(as.GetUnfitReason(), "no such directory") {
		t.Fatalf("unfit w2: %v", as)
	}
	var w *pb.WorkerInfo
	f.Read(func(s *State) { w, _ = s.Worker("w2") })
	if w.GetState() != WorkerUnfit || w.GetReason() == "" {
		t.Fatalf("status of w2: %v", w)
	}
	if info := job(t, f, b); info.GetWaitingReason() != "queued behind "+a {
		t.Fatalf("queued job: %v", info)
	}
	// Cancelling the running job starts the next; w2 is back in the ring.
	if next := mustApply(t, f, &pb.CancelJob{JobId: a, Reason: "by the operator"}); next != b {
		t.Fatalf("cancel: next %v, want %s", next, b)
	}
	if got := ringIDs(f); !equal(got, "w1", "w2", "w3") || generation(f) != 6 {
		t.Fatalf("after cancel: ring %v generation %d", got, generation(f))
	}
	if info := job(t, f, a); info.GetState() != JobCancelled || info.GetMessage() != "cancelled: by the operator" {
		t.Fatalf("cancelled job: %v", info)
	}
	if next := mustApply(t, f, &pb.CancelJob{JobId: a}); next != "" {
		t.Fatalf("retried cancel: %v", next)
	}
	wantErr(t, f, finish(a, pb.JobState_JOB_STATE_DONE, ""), ErrNotRunning, "")
	// A queued job can be cancelled without touching the running one.
	c := mustApply(t, f, submit(spec())).(string)
	mustApply(t, f, &pb.CancelJob{JobId: c})
	if info := job(t, f, b); info.GetState() != JobRunning {
		t.Fatalf("running job after cancelling a queued one: %v", info)
	}
	mustApply(t, f, finish(b, pb.JobState_JOB_STATE_DONE, ""))
	wantErr(t, f, &pb.CancelJob{JobId: b}, ErrNotRunning, "already done")
	// A job no worker can run fails; the next one starts with everyone.
	e := mustApply(t, f, submit(spec())).(string)
	for _, id := range []string{"w1", "w2"} {
		mustApply(t, f, &pb.SetWorkerUnfit{WorkerId: id, JobId: e, Reason: "idx:/x: missing"})
	}
	if info := job(t, f, e); info.GetState() != JobRunning {
		t.Fatalf("job with one fit worker left: %v", info)
	}
	mustApply(t, f, &pb.SetWorkerUnfit{WorkerId: "w3", JobId: e, Reason: "idx:/x: missing"})
	if info := job(t, f, e); info.GetState() != JobFailed || !strings.Contains(info.GetMessage(), "no worker can run it") {
		t.Fatalf("job no worker can run: %v", info)
	}
	if got := ringIDs(f); !equal(got, "w1", "w2", "w3") {
		t.Fatalf("ring after the unrunnable job: %v", got)
	}
	// A removal that lets a job go on without workers leaves a warning.
	d := mustApply(t, f, submit(spec())).(string)
	mustApply(t, f, &pb.RemoveWorkers{WorkerIds: []string{"w3"}, Reason: "lease", JobWarning: "went on without w3"})
	if info := job(t, f, d); !slices.Equal(info.GetWarnings(), []string{"went on without w3"}) {
		t.Fatalf("warnings: %v", info.GetWarnings())
	}
}

// A job finished done records its last step even when the last progress
// reports were refused (the worker finished in a generation the ring had
// just left): "done" means every step ran.
func TestFSMDoneRecordsLastStep(t *testing.T) {
	f := newTestFSM(t)
	mustApply(t, f, register("w1", "127.0.0.1:9001"))
	mustApply(t, f, submit(spec()))
	mustApply(t, f, progress("job-1", 1, 825))
	mustApply(t, f, register("w2", "127.0.0.1:9002")) // generation 2
	wantErr(t, f, progress("job-1", 1, 1000), ErrStaleGeneration, "generation")
	mustApply(t, f, finish("job-1", pb.JobState_JOB_STATE_DONE, ""))
	var j *pb.JobInfo
	var err error
	f.Read(func(st *State) { j, err = st.Job("job-1") })
	if err != nil || j.GetState() != JobDone || j.GetStep() != 1000 {
		t.Errorf("job after done: %v at step %d (%v), want done at 1000", j.GetState(), j.GetStep(), err)
	}
}

package worker

import (
	"context"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gencluster/gencluster/allreduce"
	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/checkpoint"
	"github.com/gencluster/gencluster/ckptstore"
	"github.com/gencluster/gencluster/optim"
	"github.com/gencluster/gencluster/training"
)

// waitGoroutines waits until at most n goroutines run (a stopped writer's
// goroutine is gone), or fails.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCkptWriterPendingSlot: while the writer is busy, a newer snapshot
// replaces the one waiting (which is reported skipped), the busy one is
// not disturbed, and drain returns once the newest is written.
func TestCkptWriterPendingSlot(t *testing.T) {
	var (
		mu      sync.Mutex
		written []int64
		dropped []int64
		started = make(chan int64, 10)
		release = make(chan struct{})
	)
	persist := func(ctx context.Context, s *snapshot) {
		started <- s.step
		if s.step == 1 {
			<-release
		}
		mu.Lock()
		written = append(written, s.step)
		mu.Unlock()
	}
	drop := func(s *snapshot, why error) {
		if !errors.Is(why, ErrCheckpointSkipped) {
			t.Errorf("step %d dropped: %v, want skipped", s.step, why)
		}
		mu.Lock()
		dropped = append(dropped, s.step)
		mu.Unlock()
	}
	before := runtime.NumGoroutine()
	cw := newCkptWriter(context.Background(), persist, drop)
	cw.submit(&snapshot{step: 1})
	if s := <-started; s != 1 {
		t.Fatalf("writer started on step %d", s)
	}
	cw.submit(&snapshot{step: 2}) // waits
	cw.submit(&snapshot{step: 3}) // replaces 2
	cw.submit(&snapshot{step: 4}) // replaces 3
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if err := cw.drain(ctx); err == nil {
		t.Error("drain returned while the writer was busy")
	}
	cancel()
	close(release)
	if err := cw.drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if !slices.Equal(written, []int64{1, 4}) || !slices.Equal(dropped, []int64{2, 3}) {
		t.Errorf("written %v, dropped %v; want [1 4], [2 3]", written, dropped)
	}
	mu.Unlock()
	// Idle again: another checkpoint is written at once.
	cw.submit(&snapshot{step: 5})
	if err := cw.drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	cw.stop()
	mu.Lock()
	if !slices.Equal(written, []int64{1, 4, 5}) {
		t.Errorf("written %v, want [1 4 5]", written)
	}
	mu.Unlock()
	waitGoroutines(t, before)
}

// TestCkptWriterStops: stopping the writer (the job closed) cancels the
// upload in flight, drops the pending snapshot and ends the goroutine; a
// snapshot submitted afterwards is dropped, and drain does not hang.
func TestCkptWriterStops(t *testing.T) {
	before := runtime.NumGoroutine()
	inFlight := make(chan struct{})
	var cancelled atomic.Bool
	var dropped []int64
	var mu sync.Mutex
	cw := newCkptWriter(context.Background(), func(ctx context.Context, s *snapshot) {
		close(inFlight)
		<-ctx.Done() // an upload honours its context
		cancelled.Store(true)
	}, func(s *snapshot, why error) {
		if !errors.Is(why, context.Canceled) && !errors.Is(why, ErrCheckpointSkipped) {
			t.Errorf("step %d dropped: %v", s.step, why)
		}
		mu.Lock()
		dropped = append(dropped, s.step)
		mu.Unlock()
	})
	cw.submit(&snapshot{step: 10})
	<-inFlight
	cw.submit(&snapshot{step: 20})
	stopped := make(chan struct{})
	go func() { cw.stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("stop did not return")
	}
	if !cancelled.Load() {
		t.Error("the upload in flight did not see its context cancelled")
	}
	cw.submit(&snapshot{step: 30})
	if err := cw.drain(context.Background()); err != nil {
		t.Errorf("drain after stop: %v", err)
	}
	mu.Lock()
	if !slices.Equal(dropped, []int64{20, 30}) {
		t.Errorf("dropped %v, want [20 30]", dropped)
	}
	mu.Unlock()
	waitGoroutines(t, before)

	// The parent context ending stops it too.
	ctx, cancel := context.WithCancel(context.Background())
	cw = newCkptWriter(ctx, func(ctx context.Context, s *snapshot) { <-ctx.Done() }, func(*snapshot, error) {})
	cw.submit(&snapshot{step: 1})
	cancel()
	select {
	case <-cw.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the writer outlived its context")
	}
	waitGoroutines(t, before)
}

// vaeJob builds a VAE replica (not initialised) on a worker with no
// coordinators: the tests below drive its pieces directly.
func vaeJob(t *testing.T, w *Worker, id string, steps int64) (*job, *pb.Assignment) {
	t.Helper()
	a := &pb.Assignment{JobId: id, Generation: 1, Ring: []*pb.RingMember{{WorkerId: w.id, Addr: "127.0.0.1:1"}},
		Job: &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 8, Steps: steps, Lr: 1e-3, Seed: 5, CheckpointEvery: 10}}
	j, err := w.buildJob(context.Background(), a)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(j.close)
	return j, a
}

// storeWorker is a Worker with a local store and no coordinators.
func storeWorker(t *testing.T) *Worker {
	t.Helper()
	st, err := ckptstore.Open(filepath.Join(t.TempDir(), checkpointsDir), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	return &Worker{id: "w-test", cfg: Config{Threads: 1}, log: testLogger(), store: st}
}

// fakeCoordinators stands in for the coordinators' checkpoint RPCs: it
// keeps what it is sent (copies of the files) and serves them back.
type fakeCoordinators struct {
	mu    sync.Mutex
	dir   string
	held  map[int64]*pb.CheckpointHeader
	files map[int64]string
	fail  int // fail this many calls with Unavailable first
	calls int
	gets  int // of calls, fetches
}

func newFakeCoordinators(t *testing.T) *fakeCoordinators {
	return &fakeCoordinators{dir: t.TempDir(), held: map[int64]*pb.CheckpointHeader{}, files: map[int64]string{}}
}

func (f *fakeCoordinators) put(ctx context.Context, path string, hdr *pb.CheckpointHeader) (*pb.CheckpointManifest, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail > 0 {
		f.fail--
		return nil, status.Error(codes.Unavailable, "no majority")
	}
	dst := filepath.Join(f.dir, filepath.Base(path))
	if err := copyFile(path, dst); err != nil {
		return nil, err
	}
	fi, _ := os.Stat(dst)
	h := &pb.CheckpointHeader{JobId: hdr.GetJobId(), Step: hdr.GetStep(), Checksum: hdr.GetChecksum(), SizeBytes: fi.Size(),
		Generation: hdr.GetGeneration(), WorldSize: hdr.GetWorldSize(), WriterId: hdr.GetWriterId(), TimeUnixMs: hdr.GetTimeUnixMs()}
	f.held[h.Step], f.files[h.Step] = h, dst
	return &pb.CheckpointManifest{JobId: h.JobId, Step: h.Step, Checksum: h.Checksum, SizeBytes: h.SizeBytes, Holders: []string{"c0", "c1"},
		Generation: h.Generation, WorldSize: h.WorldSize, WriterId: h.WriterId, TimeUnixMs: h.TimeUnixMs}, nil
}

func (f *fakeCoordinators) get(ctx context.Context, req *pb.GetCheckpointRequest, dest func(*pb.CheckpointHeader) (string, error)) (*pb.CheckpointHeader, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.gets++
	if f.fail > 0 {
		f.fail--
		return nil, status.Error(codes.Unavailable, "no coordinator answers")
	}
	step := req.GetStep()
	if step == 0 {
		for s := range f.held {
			step = max(step, s)
		}
	}
	h, ok := f.held[step]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no checkpoint of job %s at step %d", req.GetJobId(), req.GetStep())
	}
	p, err := dest(h)
	if err != nil {
		return nil, err
	}
	return h, copyFile(f.files[step], p)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestPersistAndResume: rank 0's checkpoints go to the local store (the
// newest two kept) and to the coordinators with their header; a replica
// built later resumes from the newest good local one (a damaged newer one
// is skipped), or from the coordinators' when theirs is newer; one the
// coordinators hold but cannot give is an error naming the job and step.
func TestPersistAndResume(t *testing.T) {
	w := storeWorker(t)
	fc := newFakeCoordinators(t)
	w.putCheckpoint, w.getCheckpoint = fc.put, fc.get
	var events []CheckpointEvent
	w.cfg.OnCheckpoint = func(ev CheckpointEvent) { events = append(events, ev) }
	j, a := vaeJob(t, w, "job-1-abc", 40)
	training.InitModel(j.model, 5)
	sums := map[int64]string{}
	for _, step := range []int64{10, 20, 30} {
		j.step, j.loss = step, float64(step)
		j.params[0][0] = float32(step) // a different state each time
		w.persistBackground(context.Background(), j.snapshot(a))
		sums[step] = Checksum(j.params)
	}
	if len(events) != 3 {
		t.Fatalf("%d checkpoint events, want 3", len(events))
	}
	for _, ev := range events {
		if ev.Err != nil || ev.Size == 0 || ev.Commit < ev.Copy || len(ev.Holders) != 2 || ev.JobID != "job-1-abc" {
			t.Errorf("event %+v", ev)
		}
	}
	h := fc.held[30]
	if h.GetWriterId() != "w-test" || h.GetGeneration() != 1 || h.GetWorldSize() != 1 || h.GetTimeUnixMs() == 0 || len(h.GetChecksum()) != 64 {
		t.Errorf("header sent: %v", h)
	}
	ents, err := w.store.List()
	if err != nil {
		t.Fatal(err)
	}
	var steps []int64
	for _, e := range ents {
		steps = append(steps, e.Step)
	}
	if slices.Sort(steps); !slices.Equal(steps, []int64{20, 30}) {
		t.Errorf("local store holds steps %v, want the newest two, [20 30]", steps)
	}

	// Resume from the local store: the newest good one.
	resumed := func(m *pb.CheckpointManifest) (*job, error) {
		t.Helper()
		j2, _ := vaeJob(t, w, "job-1-abc", 40)
		err := w.resume(context.Background(), j2, m)
		if j2.writer != nil {
			// A local state the coordinators do not hold is being sent
			// again in the background: let it end before looking on.
			if derr := j2.writer.drain(context.Background()); derr != nil {
				t.Fatal(derr)
			}
			j2.writer.stop()
		}
		return j2, err
	}
	j2, err := resumed(nil)
	if err != nil || j2.step != 30 || Checksum(j2.params) != sums[30] || j2.opt.Steps != j.opt.Steps {
		t.Fatalf("resumed at step %d (%v), checksum %s, want step 30, %s", j2.step, err, Checksum(j2.params), sums[30])
	}
	// A damaged newest file is skipped for the one before.
	p30, _ := w.store.Path(ckptstore.Key("job-1-abc", 30, fc.held[30].GetChecksum()))
	b, err := os.ReadFile(p30)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p30, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if j2, err = resumed(nil); err != nil || j2.step != 20 || Checksum(j2.params) != sums[20] {
		t.Fatalf("with step 30 damaged: resumed at step %d (%v), want 20", j2.step, err)
	}
	// The coordinators hold a newer one (30): fetched and resumed from,
	// replacing the damaged file.
	m30 := &pb.CheckpointManifest{JobId: "job-1-abc", Step: 30, Checksum: fc.held[30].GetChecksum()}
	if j2, err = resumed(m30); err != nil || j2.step != 30 || Checksum(j2.params) != sums[30] || j2.held != 30 {
		t.Fatalf("with the coordinators at step 30: resumed at step %d, held %d (%v), want 30", j2.step, j2.held, err)
	}
	if _, err := checkpoint.Read(p30); err != nil {
		t.Errorf("the fetched checkpoint did not replace the damaged file: %v", err)
	}
	// A manifest no newer than the local one is not fetched; the local
	// state the coordinators do not hold is sent to them.
	gets, calls := fc.gets, fc.calls
	if j2, err = resumed(&pb.CheckpointManifest{JobId: "job-1-abc", Step: 20, Checksum: fc.held[20].GetChecksum()}); err != nil || j2.step != 30 || fc.gets != gets {
		t.Fatalf("manifest at 20, local at 30: resumed at %d (%v), %d fetches", j2.step, err, fc.gets-gets)
	}
	if fc.calls-calls != 1 {
		t.Errorf("manifest at 20, local at 30: %d uploads, want 1 (of step 30)", fc.calls-calls)
	}
	// One the coordinators no longer keep: their latest is fetched.
	for _, e := range must(w.store.List()) {
		w.store.Remove(e.Key)
	}
	if j2, err = resumed(&pb.CheckpointManifest{JobId: "job-1-abc", Step: 25, Checksum: "ab"}); err != nil || j2.step != 30 {
		t.Fatalf("manifest at a step no longer kept: resumed at %d (%v), want their latest, 30", j2.step, err)
	}
	// Newer on the coordinators but out of reach: an error naming the
	// job and the step, not a start from scratch.
	fc.fail = 1 << 30
	j3, _ := vaeJob(t, w, "job-1-abc", 40)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	err = w.resume(ctx, j3, &pb.CheckpointManifest{JobId: "job-1-abc", Step: 40, Checksum: "cd"})
	if err == nil || !strings.Contains(err.Error(), "job-1-abc") || !strings.Contains(err.Error(), "step 40") {
		t.Fatalf("unreachable newer checkpoint: %v", err)
	}
	// A new job's replica removes the other job's local files.
	j4, _ := vaeJob(t, w, "job-2-def", 40)
	if err := w.resume(context.Background(), j4, nil); err != nil || j4.step != 0 {
		t.Fatalf("new job: step %d, %v", j4.step, err)
	}
	if ents := must(w.store.List()); len(ents) != 0 {
		t.Errorf("another job's checkpoints left in the local store: %v", ents)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestFinalCheckpointRetries: the final checkpoint is retried until the
// coordinators hold it; the job is not finished before.
func TestFinalCheckpointRetries(t *testing.T) {
	w := storeWorker(t)
	fc := newFakeCoordinators(t)
	fc.fail = 2
	w.putCheckpoint = fc.put
	var final []CheckpointEvent
	w.cfg.OnCheckpoint = func(ev CheckpointEvent) { final = append(final, ev) }
	j, a := vaeJob(t, w, "job-3-abc", 12)
	training.InitModel(j.model, 5)
	j.step = 12
	w.finalCheckpoint(context.Background(), j, a)
	if j.held != 12 || fc.calls != 3 || fc.held[12] == nil {
		t.Fatalf("held %d after %d uploads; want 12 after 3", j.held, fc.calls)
	}
	if len(final) != 1 || !final[0].Final || final[0].Err != nil {
		t.Errorf("events %+v", final)
	}
	w.finalCheckpoint(context.Background(), j, a) // again (FinishJob failed): nothing to do
	if fc.calls != 3 {
		t.Errorf("the final checkpoint was sent again")
	}
	// A refusal that retrying cannot change ends the retries at once.
	w.putCheckpoint = func(context.Context, string, *pb.CheckpointHeader) (*pb.CheckpointManifest, error) {
		return nil, status.Error(codes.InvalidArgument, "step behind the latest")
	}
	j2, a2 := vaeJob(t, w, "job-4-abc", 12)
	training.InitModel(j2.model, 5)
	j2.step = 12
	start := time.Now()
	w.finalCheckpoint(context.Background(), j2, a2)
	if j2.held == 12 || !j2.finalFailed || time.Since(start) > 10*time.Second {
		t.Errorf("refused final checkpoint: held %d, failed %v after %v", j2.held, j2.finalFailed, time.Since(start))
	}
}

// TestNonFiniteGradientFailsStep: a NaN or an infinity in a summed
// gradient fails the step as a job error naming the parameter, and
// nothing is applied (parameters, Adam state and step unchanged).
func TestNonFiniteGradientFailsStep(t *testing.T) {
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(-1))} {
		w := &Worker{id: "w-test", cfg: Config{Threads: 1}, log: testLogger()}
		j, a := vaeJob(t, w, "job-5-abc", 10)
		training.InitModel(j.model, 5)
		member, err := allreduce.NewMember(allreduce.Config{}, grpc.NewServer())
		if err != nil {
			t.Fatal(err)
		}
		g, err := member.SetRing(ringOf(a))
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if err := j.trainStep(ctx, g, a); err != nil { // one good step
			t.Fatal(err)
		}
		before, adam, steps := Checksum(j.params), Checksum(append(slices.Clone(j.opt.M), j.opt.V...)), j.opt.Steps
		const poisoned = 1 // the second bucket: gradients backward has just finished
		if j.buckets.count() <= poisoned {
			t.Fatalf("%d buckets", j.buckets.count())
		}
		j.bucketHook = func(step int64, bucket int) {
			if bucket == poisoned {
				j.buckets.first[poisoned].Grad[7] = bad
			}
		}
		err = j.trainStep(ctx, g, a)
		var jerr *jobError
		name := j.buckets.first[poisoned].Name
		if !errors.As(err, &jerr) || !strings.Contains(err.Error(), "step 2") || !strings.Contains(err.Error(), "gradient of "+name+" holds NaN or Inf") {
			t.Errorf("%v in %s: step error %v", bad, name, err)
		}
		if Checksum(j.params) != before || Checksum(append(slices.Clone(j.opt.M), j.opt.V...)) != adam || j.opt.Steps != steps || j.step != 1 {
			t.Errorf("%v in %s: the step was applied", bad, name)
		}
		member.Close()
	}
}

// BenchmarkFiniteCheck: the NaN/Inf check of the summed gradients, on the
// VAE's (652k values) and the PixelCNN's.
func BenchmarkFiniteCheck(b *testing.B) {
	for _, model := range []string{"vae", "pixelcnn"} {
		b.Run(model, func(b *testing.B) {
			w := &Worker{cfg: Config{Threads: 1}, log: testLogger()}
			a := &pb.Assignment{JobId: "j", Job: &pb.JobSpec{Model: model, Dataset: "mnist", Batch: 1, Steps: 1, Lr: 1e-3}}
			j, err := w.buildJob(context.Background(), a)
			if err != nil {
				b.Fatal(err)
			}
			defer j.close()
			n := 0
			for _, g := range j.grads {
				n += len(g)
			}
			b.SetBytes(int64(4 * n))
			for b.Loop() {
				if optim.FirstNonFinite(j.grads) >= 0 {
					b.Fatal("non-finite")
				}
			}
			b.ReportMetric(float64(n), "values")
		})
	}
}

// BenchmarkSnapshot: the copy rank 0's train loop makes for a checkpoint
// (the pause the ring sees).
func BenchmarkSnapshot(b *testing.B) {
	for _, model := range []string{"vae", "pixelcnn"} {
		b.Run(model, func(b *testing.B) {
			w := &Worker{cfg: Config{Threads: 1}, log: testLogger()}
			a := &pb.Assignment{JobId: "j", Job: &pb.JobSpec{Model: model, Dataset: "mnist", Batch: 1, Steps: 1, Lr: 1e-3}}
			j, err := w.buildJob(context.Background(), a)
			if err != nil {
				b.Fatal(err)
			}
			defer j.close()
			for b.Loop() {
				j.snapshot(a)
			}
		})
	}
}

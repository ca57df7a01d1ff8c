package worker

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/ckptstore"
	"github.com/gencluster/gencluster/coordinator"
)

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// startCoordinator runs a one-node coordinator group on loopback (holding
// checkpoints in its own store) and returns its address and client.
func startCoordinator(t *testing.T) (string, *coordinator.Client) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	srv := grpc.NewServer()
	fsm := coordinator.NewFSM(testLogger())
	dir := filepath.Join(t.TempDir(), "c1")
	node, err := coordinator.NewNode(context.Background(), coordinator.NodeConfig{
		ID: "c1", Addr: addr, DataDir: dir,
		Peers: []coordinator.Peer{{ID: "c1", Addr: addr}}, FSM: fsm, Logger: testLogger(),
	}, srv)
	if err != nil {
		t.Fatal(err)
	}
	store, err := ckptstore.Open(filepath.Join(dir, "checkpoints"), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	svc := coordinator.NewService(coordinator.ServiceConfig{Node: node, FSM: fsm, Lease: 3 * time.Second, Logger: testLogger(), Checkpoints: store})
	pb.RegisterCoordinatorServer(srv, svc)
	go srv.Serve(lis)
	cl, err := coordinator.NewClient([]string{addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cl.Close()
		srv.Stop()
		svc.Close()
		node.Close(context.Background())
	})
	return addr, cl
}

// runWorker starts a worker on loopback and runs it until the test ends
// (ring timeout 30 s; see runWorkerWith). Its
// ring timeout is long: under the race detector on a loaded machine a sync
// can stall for seconds, and these tests are not about timeouts.
func runWorker(t *testing.T, coord string, onStep func(StepInfo), hook func(w *Worker) func(int64, int)) *Worker {
	t.Helper()
	return runWorkerWith(t, coord, 30*time.Second, onStep, hook, nil)
}

// runWorkerWith is runWorker with a ring timeout and a hook run before
// each replica is built.
func runWorkerWith(t *testing.T, coord string, ringTimeout time.Duration, onStep func(StepInfo), hook func(w *Worker) func(int64, int), openHook func()) *Worker {
	t.Helper()
	w, err := New(Config{Coordinators: []string{coord}, Listen: "127.0.0.1:0", DataDir: t.TempDir(),
		Threads: 1, RingTimeout: ringTimeout, Logger: testLogger(), OnStep: onStep})
	if err != nil {
		t.Fatal(err)
	}
	if hook != nil {
		w.testBucketHook = hook(w)
	}
	w.testOpenHook = openHook
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(ctx); err != nil {
			t.Errorf("worker %s: %v", w.ID(), err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		w.Close()
	})
	return w
}

// TestSwitchUnderStep forces the interleaving that evicted healthy workers:
// rank 0 is held inside step `at`, between two gradient buckets, while a
// third worker joins; the other rank moves to the new generation and
// begins its sync, and rank 0's ring member is switched to the new
// generation under the held step. Released, the step must end (nothing
// applied), and rank 0 must sync in the new generation: no frame refused,
// no worker removed, every replica identical and every step done once.
func TestSwitchUnderStep(t *testing.T) {
	coord, cl := startCoordinator(t)
	const at, steps = 4, 12
	var (
		mu     sync.Mutex
		sums   = map[int64]map[string]bool{}   // step -> checksums
		seen   = map[string][]int64{}          // worker -> steps in order
		gens   = map[string]map[int64]uint64{} // worker -> step -> generation it completed in
		held   = make(chan struct{})
		resume = make(chan struct{})
		once   sync.Once
	)
	onStep := func(s StepInfo) {
		mu.Lock()
		defer mu.Unlock()
		if sums[s.Step] == nil {
			sums[s.Step] = map[string]bool{}
		}
		sums[s.Step][Checksum(s.Params)] = true
		seen[s.WorkerID] = append(seen[s.WorkerID], s.Step)
		if gens[s.WorkerID] == nil {
			gens[s.WorkerID] = map[int64]uint64{}
		}
		gens[s.WorkerID][s.Step] = s.Generation
	}
	a := runWorker(t, coord, onStep, func(w *Worker) func(int64, int) {
		return func(step int64, bucket int) {
			if step == at && bucket == 1 {
				once.Do(func() {
					close(held)
					<-resume
				})
			}
		}
	})
	b := runWorker(t, coord, onStep, nil)
	ctx := context.Background()
	awaitStatus(t, cl, "two workers", func(s *pb.StatusResponse) bool { return len(s.GetWorkers()) == 2 })
	if _, err := cl.Submit(ctx, &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 16, Steps: steps, Lr: 1e-3, Seed: 3, MinWorkers: 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-time.After(time.Minute):
		t.Fatal("rank 0 never reached the held step")
	}
	st, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := st.GetGeneration()
	c := runWorker(t, coord, onStep, nil)
	st = awaitStatus(t, cl, "the third worker's generation", func(s *pb.StatusResponse) bool { return s.GetGeneration() > before })
	joined := st.GetGeneration()
	// Switch rank 0's ring under the held step, as its heartbeat would.
	if err := a.heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	if g := a.currentRing(); g == nil || g.Ring().Generation != joined {
		t.Fatalf("rank 0's ring member is not in generation %d after the heartbeat", joined)
	}
	close(resume)
	st = awaitStatus(t, cl, "the job done", func(s *pb.StatusResponse) bool {
		return len(s.GetJobs()) > 0 && s.GetJobs()[0].GetState() == coordinator.JobDone
	})
	if st.GetGeneration() != joined || len(st.GetWorkers()) != 3 {
		t.Errorf("ring ended at generation %d with %d workers; want %d with 3 (a worker was removed)", st.GetGeneration(), len(st.GetWorkers()), joined)
	}
	for _, w := range []*Worker{a, b, c} {
		if n := w.member.Refused(); n != 0 {
			t.Errorf("worker %s refused %d frames or streams", w.ID(), n)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for s := int64(1); s <= steps; s++ {
		if len(sums[s]) != 1 {
			t.Errorf("step %d: %d distinct replicas", s, len(sums[s]))
		}
	}
	for id, ss := range seen {
		for i := 1; i < len(ss); i++ {
			if ss[i] != ss[i-1]+1 {
				t.Errorf("worker %s: step %d followed by %d", id, ss[i-1], ss[i])
			}
		}
	}
	// The held step (at+1) ended without being applied and was done
	// again in the new generation.
	if g, ok := gens[a.ID()][at+1]; !ok || g != joined {
		t.Errorf("rank 0 completed step %d in generation %d (ok %v), want %d", at+1, g, ok, joined)
	}
	if last := seen[a.ID()]; len(last) == 0 || last[len(last)-1] != steps {
		t.Errorf("rank 0 did not train to the end: steps %v", last)
	}
}

func awaitStatus(t *testing.T, cl *coordinator.Client, what string, cond func(*pb.StatusResponse) bool) *pb.StatusResponse {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := cl.Status(context.Background())
		if err == nil && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: last status %v, %v", what, st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestJobWaitsForReplicas: at a job's start, a member that takes longer
// than the ring timeout to build its replica is waited for: the first
// generation starts when every member is ready, with no failed generation
// (before, the others' sync timed out and the ring was formed again, once
// per timeout, until the slow one was ready).
func TestJobWaitsForReplicas(t *testing.T) {
	coord, cl := startCoordinator(t)
	const ringTimeout = time.Second
	steps := map[string]int64{}
	var mu sync.Mutex
	onStep := func(s StepInfo) {
		mu.Lock()
		defer mu.Unlock()
		steps[s.WorkerID] = s.Step
	}
	runWorkerWith(t, coord, ringTimeout, onStep, nil, nil)
	runWorkerWith(t, coord, ringTimeout, onStep, nil, func() { time.Sleep(3 * ringTimeout) })
	awaitStatus(t, cl, "two workers", func(s *pb.StatusResponse) bool { return len(s.GetWorkers()) == 2 })
	st, err := cl.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	before := st.GetGeneration()
	if _, err := cl.Submit(context.Background(), &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 16, Steps: 6, Lr: 1e-3, Seed: 3, MinWorkers: 1}); err != nil {
		t.Fatal(err)
	}
	st = awaitStatus(t, cl, "the job done", func(s *pb.StatusResponse) bool {
		return len(s.GetJobs()) > 0 && s.GetJobs()[0].GetState() == coordinator.JobDone
	})
	if st.GetGeneration() != before {
		t.Errorf("generation went from %d to %d: a generation failed while the slow worker built its replica", before, st.GetGeneration())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(steps) != 2 {
		t.Errorf("workers that trained: %v, want both", steps)
	}
	for id, s := range steps {
		if s != 6 {
			t.Errorf("worker %s ended at step %d", id, s)
		}
	}
}

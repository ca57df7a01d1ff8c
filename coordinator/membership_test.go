package coordinator

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

// aliveWorker serves the health service the leader probes, as a worker's
// gRPC server does.
func aliveWorker(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// deadWorker is an address where nothing listens any more.
func deadWorker(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// pausedWorker accepts connections and never answers, as a SIGSTOPped
// process whose kernel still completes the TCP handshake.
func pausedWorker(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return lis.Addr().String()
}

func ringOf(t *testing.T, m *svcMember) (uint64, []string) {
	t.Helper()
	st, err := m.client.Status(context.Background(), &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range st.GetRing() {
		ids = append(ids, r.GetWorkerId())
	}
	return st.GetGeneration(), ids
}

// TestReportFailureProbes: a blamed worker is removed only if the leader
// finds it dead (refused, or silent past the probe timeout); a live one
// keeps its place and the ring is formed again, unless its peers blame it
// for accusationLimit failed generations in a row.
func TestReportFailureProbes(t *testing.T) {
	ms := startServiceGroupWith(t, 1, ServiceConfig{Lease: 5 * time.Second, ProbeTimeout: 300 * time.Millisecond})
	l := leaderOf(t, ms)
	ctx := context.Background()
	alive, other, dead, paused := aliveWorker(t), aliveWorker(t), deadWorker(t), pausedWorker(t)
	join(t, ctx, l, "wa", alive)
	join(t, ctx, l, "wb", other)
	join(t, ctx, l, "wd", dead)
	join(t, ctx, l, "wp", paused)
	report := func(failed string) *pb.ReportFailureResponse {
		t.Helper()
		g, _ := ringOf(t, l)
		r, err := l.client.ReportFailure(ctx, &pb.ReportFailureRequest{ReporterId: "wb", FailedId: failed, Generation: g, Reason: "test"})
		if err != nil {
			t.Fatalf("report %s: %v", failed, err)
		}
		if r.GetGeneration() != g+1 {
			t.Fatalf("report %s: generation %d, want %d", failed, r.GetGeneration(), g+1)
		}
		return r
	}
	if r := report("wa"); r.GetRemoved() || !strings.Contains(r.GetVerdict(), "alive") {
		t.Fatalf("live worker: %v", r)
	}
	if _, ring := ringOf(t, l); !slices.Equal(ring, []string{"wa", "wb", "wd", "wp"}) {
		t.Fatalf("ring after blaming a live worker: %v", ring)
	}
	if r := report("wd"); !r.GetRemoved() {
		t.Fatalf("dead worker: %v", r)
	}
	start := time.Now()
	if r := report("wp"); !r.GetRemoved() || time.Since(start) > 3*time.Second {
		t.Fatalf("paused worker: %v after %v", r, time.Since(start))
	}
	if r := report(""); r.GetRemoved() {
		t.Fatalf("nobody blamed: %v", r)
	}
	// wa was blamed once above; twice more in a row and it goes.
	if r := report("wa"); r.GetRemoved() {
		t.Fatalf("second accusation: %v", r)
	}
	if r := report("wa"); !r.GetRemoved() || !strings.Contains(r.GetVerdict(), "in a row") {
		t.Fatalf("third accusation: %v", r)
	}
	if _, ring := ringOf(t, l); !slices.Equal(ring, []string{"wb"}) {
		t.Fatalf("ring at the end: %v", ring)
	}
	// A report from an old generation changes nothing.
	g, _ := ringOf(t, l)
	if _, err := l.client.ReportFailure(ctx, &pb.ReportFailureRequest{ReporterId: "wb", FailedId: "wb", Generation: g - 1}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("stale report: %v", err)
	}
}

// TestLeaderHoldsInterruptedRing: a job's first generation waits until
// every member has built the job's replica. A new leader has heard from no
// worker.
// A running job's generation is held (the workers it has not heard from
// are listed, by the leader and by a follower's status) until they check
// in; one that never does is removed after the rejoin wait, and the job
// goes on with a warning.
func TestLeaderHoldsInterruptedRing(t *testing.T) {
	ms := startServiceGroupWith(t, 3, ServiceConfig{Lease: time.Second, RejoinWait: 3 * time.Second})
	l := leaderOf(t, ms)
	ctx := context.Background()
	join(t, ctx, l, "w1", "127.0.0.1:9001")
	join(t, ctx, l, "w2", "127.0.0.1:9002")
	join(t, ctx, l, "w3", "127.0.0.1:9003")
	sub, err := l.client.Submit(ctx, &pb.SubmitRequest{Job: &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 8, Steps: 10, Lr: 1e-3, Seed: 1, MinWorkers: 1}})
	if err != nil {
		t.Fatal(err)
	}
	// A job's first generation waits until every member has built the
	// job's replica (the heartbeat says so).
	if a := heartbeat(t, l, "w1"); !slices.Equal(a.GetWaitingFor(), []string{"w2", "w3"}) || !strings.Contains(a.GetWaitReason(), "build the job's replica") {
		t.Fatalf("w1 ready, w2 and w3 not yet: %v", a)
	}
	heartbeat(t, l, "w2")
	heartbeat(t, l, "w3")
	if a := heartbeat(t, l, "w1"); a.GetJobId() != sub.GetJobId() || a.GetWaitReason() != "" {
		t.Fatalf("before the leader change: %v", a)
	}
	// The leader dies; the survivors elect another.
	for i, m := range ms {
		if m == l {
			m.stop()
			ms[i] = nil
		}
	}
	l2 := leaderOf(t, ms)
	f := followerOf(ms, l2)
	if a := heartbeat(t, f, "w1"); !slices.Equal(a.GetWaitingFor(), []string{"w2", "w3"}) || a.GetWaitReason() == "" {
		t.Fatalf("first heartbeat after the election: %v", a)
	}
	st, err := f.client.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if j := st.GetJobs()[0]; j.GetState() != JobWaiting || !slices.Equal(j.GetWaitingFor(), []string{"w2", "w3"}) {
		t.Fatalf("status through a follower: %v", j)
	}
	if a := heartbeat(t, l2, "w2"); !slices.Equal(a.GetWaitingFor(), []string{"w3"}) {
		t.Fatalf("after w2 checked in: %v", a)
	}
	// w3 never comes back: after the rejoin wait it is removed and the
	// ring goes on without it, with a warning.
	deadline := time.Now().Add(10 * time.Second)
	for {
		a1, a2 := heartbeat(t, l2, "w1"), heartbeat(t, l2, "w2")
		if len(a1.GetRing()) == 2 && a1.GetWaitReason() == "" && a2.GetWaitReason() == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("w3 still held for: %v", a1)
		}
		time.Sleep(200 * time.Millisecond)
	}
	st, err = l2.client.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if j := st.GetJobs()[0]; j.GetState() != JobRunning || len(j.GetWarnings()) != 1 || !strings.Contains(j.GetWarnings()[0], "w3") {
		t.Fatalf("job after going on without w3: %v", j)
	}
}

// heartbeat heartbeats a worker through m (retrying while leadership
// moves) and returns its assignment. The worker says it has built the
// replica of the job the state runs (as a worker does once it has).
func heartbeat(t *testing.T, m *svcMember, id string) *pb.Assignment {
	t.Helper()
	var a *pb.Assignment
	eventually(t, 5*time.Second, "heartbeat "+id, func() error {
		var ready string
		m.svc.fsm.Read(func(s *State) { ready = s.RunningJob().GetId() })
		r, err := m.client.Heartbeat(context.Background(), &pb.HeartbeatRequest{WorkerId: id, ReadyJob: ready})
		if err != nil && status.Code(err) != codes.Unavailable {
			t.Fatalf("heartbeat %s: %v", id, err)
		}
		a = r.GetAssignment()
		return err
	})
	return a
}

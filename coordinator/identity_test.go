package coordinator

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
	"github.com/gencluster/gencluster/trust"
)

// A worker acts only for itself and blames only its ring neighbours: a
// call for worker B carrying A's id and secret, B's id with a wrong secret,
// or (with RequireWorkerSecret) no credentials at all is refused, through
// the leader and through a follower, and so is a failure report naming a
// worker that is not the reporter's neighbour. None of them changes the
// state.
func TestWorkerActsOnlyForItself(t *testing.T) {
	ms := startServiceGroupWith(t, 3, ServiceConfig{Lease: 5 * time.Second, RequireWorkerSecret: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leader := leaderOf(t, ms)
	follower := followerOf(ms, leader)
	secrets := map[string]string{}
	for i, id := range []string{"wa", "wb", "wc", "wd"} {
		secrets[id] = join(t, ctx, leader, id, "127.0.0.1:"+string(rune('1'+i))+"901").GetSecret()
	}
	gen := func() uint64 {
		var g uint64
		leader.svc.fsm.Read(func(st *State) { g = st.Generation() })
		return g
	}
	before := gen()
	as := func(id, secret string) context.Context { return withWorker(ctx, id, secret) }

	for _, m := range []*svcMember{leader, follower} {
		for _, c := range []struct {
			what string
			ctx  context.Context
			want codes.Code
		}{
			{"wa's credentials for wb", as("wa", secrets["wa"]), codes.PermissionDenied},
			{"wb's id with a wrong secret", as("wb", "guess"), codes.PermissionDenied},
			{"wb's id with wa's secret", as("wb", secrets["wa"]), codes.PermissionDenied},
			{"no credentials", ctx, codes.Unauthenticated},
		} {
			_, err := m.client.Heartbeat(c.ctx, &pb.HeartbeatRequest{WorkerId: "wb", Addr: "127.0.0.1:2901"})
			if status.Code(err) != c.want {
				t.Errorf("heartbeat for wb through %s with %s: %v, want %v", m.id, c.what, err, c.want)
			}
			_, err = m.client.Leave(c.ctx, &pb.LeaveRequest{WorkerId: "wb"})
			if status.Code(err) != c.want {
				t.Errorf("leave for wb through %s with %s: %v, want %v", m.id, c.what, err, c.want)
			}
			_, err = m.client.ReportFailure(c.ctx, &pb.ReportFailureRequest{ReporterId: "wb", FailedId: "wa", Generation: before})
			if status.Code(err) != c.want {
				t.Errorf("failure report by wb through %s with %s: %v, want %v", m.id, c.what, err, c.want)
			}
			_, err = m.client.FinishJob(c.ctx, &pb.FinishJobRequest{WorkerId: "wb", JobId: "job-1"})
			if status.Code(err) != c.want {
				t.Errorf("wb finishing a job through %s with %s: %v, want %v", m.id, c.what, err, c.want)
			}
			_, err = m.client.ReportProgress(c.ctx, &pb.ReportProgressRequest{WorkerId: "wb", JobId: "job-1", Generation: before, Step: 1})
			if status.Code(err) != c.want {
				t.Errorf("progress by wb through %s with %s: %v, want %v", m.id, c.what, err, c.want)
			}
		}
		// An id nobody joined as, without credentials, may not report a
		// generation failed (which re-forms the ring) or end a job.
		_, err := m.client.ReportFailure(ctx, &pb.ReportFailureRequest{ReporterId: "nobody", Generation: before})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("failure report by an unregistered id through %s: %v, want Unauthenticated", m.id, err)
		}
		_, err = m.client.FinishJob(ctx, &pb.FinishJobRequest{WorkerId: "nobody", JobId: "job-1"})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("an unregistered id finishing a job through %s: %v, want Unauthenticated", m.id, err)
		}
		// wb itself may heartbeat.
		if _, err := m.client.Heartbeat(as("wb", secrets["wb"]), &pb.HeartbeatRequest{WorkerId: "wb", Addr: "127.0.0.1:2901"}); err != nil {
			t.Errorf("wb's own heartbeat through %s: %v", m.id, err)
		}
	}
	// wb's assignment carries the key its predecessor wa signs its ring
	// hello with, derived from wa's secret: only wa (and the coordinators)
	// can compute it.
	hb, err := leader.client.Heartbeat(as("wb", secrets["wb"]), &pb.HeartbeatRequest{WorkerId: "wb", Addr: "127.0.0.1:2901"})
	if err != nil {
		t.Fatal(err)
	}
	a := hb.GetAssignment()
	if want := trust.RingKey(trust.SecretHash(secrets["wa"]), a.GetJobId(), a.GetGeneration()); !bytes.Equal(a.GetPrevRingKey(), want) {
		t.Errorf("wb's prev_ring_key %x, want wa's ring key %x", a.GetPrevRingKey(), want)
	}
	// ... and the key its successor wc answers wb's hello with, which is
	// not wc's ring key (wb must not be able to sign wc's hellos).
	if want := trust.RingAcceptKey(trust.SecretHash(secrets["wc"]), a.GetJobId(), a.GetGeneration()); !bytes.Equal(a.GetNextAcceptKey(), want) {
		t.Errorf("wb's next_accept_key %x, want wc's accept key %x", a.GetNextAcceptKey(), want)
	}
	if bytes.Equal(a.GetNextAcceptKey(), trust.RingKey(trust.SecretHash(secrets["wc"]), a.GetJobId(), a.GetGeneration())) {
		t.Error("wb's next_accept_key is wc's ring key")
	}
	// The ring is wa, wb, wc, wd: wa's neighbours are wb and wd, not wc.
	_, err = follower.client.ReportFailure(as("wa", secrets["wa"]), &pb.ReportFailureRequest{ReporterId: "wa", FailedId: "wc", Generation: before})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("wa reporting non-neighbour wc failed: %v, want PermissionDenied", err)
	}
	if g := gen(); g != before {
		t.Errorf("refused calls moved the generation from %d to %d", before, g)
	}
	var workers int
	leader.svc.fsm.Read(func(st *State) { workers = len(st.Workers()) })
	if workers != 4 {
		t.Errorf("%d workers after the refused calls, want 4", workers)
	}
	// A neighbour may be blamed (the leader then probes it: nobody serves
	// at its address, so it is removed).
	r, err := leader.client.ReportFailure(as("wa", secrets["wa"]), &pb.ReportFailureRequest{ReporterId: "wa", FailedId: "wd", Generation: before})
	if err != nil || !r.GetRemoved() {
		t.Errorf("wa reporting neighbour wd failed: %v, %v", r, err)
	}

	// A worker out of the running job's ring (it could not build the
	// replica) may not report the job's progress or end it, though its
	// credentials are its own.
	sub, err := leader.client.Submit(ctx, &pb.SubmitRequest{Job: &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 64, Steps: 10, Lr: 1e-3, MinWorkers: 1}})
	if err != nil {
		t.Fatal(err)
	}
	job := sub.GetJobId()
	u, err := leader.client.ReportUnfit(as("wc", secrets["wc"]), &pb.ReportUnfitRequest{WorkerId: "wc", JobId: job, Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*svcMember{follower, leader} {
		_, err = m.client.FinishJob(as("wc", secrets["wc"]), &pb.FinishJobRequest{WorkerId: "wc", JobId: job})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("wc, out of the ring, finishing the job through %s: %v, want PermissionDenied", m.id, err)
		}
		_, err = m.client.ReportProgress(as("wc", secrets["wc"]), &pb.ReportProgressRequest{WorkerId: "wc", JobId: job, Generation: u.GetGeneration(), Step: 5})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("wc, out of the ring, reporting progress through %s: %v, want PermissionDenied", m.id, err)
		}
	}
	var state string
	var step int64
	leader.svc.fsm.Read(func(st *State) {
		if j, err := st.Job(job); err == nil {
			state, step = j.GetState(), j.GetStep()
		}
	})
	if state != JobRunning || step != 0 {
		t.Errorf("after wc's refused calls the job is %v at step %d, want running at 0", state, step)
	}
	// A ring member may.
	if _, err := follower.client.FinishJob(as("wb", secrets["wb"]), &pb.FinishJobRequest{WorkerId: "wb", JobId: job}); err != nil {
		t.Errorf("wb, in the ring, finishing the job: %v", err)
	}
}

// The queue and the registry are bounded: past their limits a submit and
// a new worker's join are refused with ResourceExhausted, saying why; a
// registered worker may still join again.
func TestLimits(t *testing.T) {
	ms := startServiceGroupWith(t, 1, ServiceConfig{Lease: 5 * time.Second, QueueLimit: 2, WorkerLimit: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l := leaderOf(t, ms)
	spec := &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 64, Steps: 10, Lr: 1e-3, Seed: 1, MinWorkers: 5}
	// The first runs (waiting for workers); two more queue; a fourth is refused.
	for i := range 3 {
		if _, err := l.client.Submit(ctx, &pb.SubmitRequest{Job: spec}); err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
	}
	_, err := l.client.Submit(ctx, &pb.SubmitRequest{Job: spec})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "2 jobs are queued") {
		t.Errorf("submit past the queue limit: %v", err)
	}
	a := join(t, ctx, l, "wa", "127.0.0.1:1901")
	join(t, ctx, l, "wb", "127.0.0.1:1902")
	_, err = l.client.Join(ctx, &pb.JoinRequest{WorkerId: "wc", Addr: "127.0.0.1:1903"})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "2 workers are registered") {
		t.Errorf("join past the worker limit: %v", err)
	}
	if _, err := l.client.Join(ctx, &pb.JoinRequest{WorkerId: "wa", Addr: "127.0.0.1:1901", Secret: a.GetSecret()}); err != nil {
		t.Errorf("a registered worker joining again: %v", err)
	}
}

// Data-set streams are bounded: with one slot, a second stream while the
// first runs is refused with ResourceExhausted, and once the first ends
// another is served whole.
func TestDatasetStreamsBounded(t *testing.T) {
	ms := startServiceGroupWith(t, 1, ServiceConfig{Lease: 5 * time.Second, DatasetStreams: 1})
	l := leaderOf(t, ms)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first, err := l.client.FetchDataset(ctx, &pb.FetchDatasetRequest{Dataset: "mnist"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Recv(); err != nil { // the stream runs (and stalls: not read further)
		t.Fatal(err)
	}
	second, err := l.client.FetchDataset(ctx, &pb.FetchDatasetRequest{Dataset: "mnist"})
	if err == nil {
		_, err = second.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "data sets already") {
		t.Fatalf("a second data-set stream: %v, want ResourceExhausted", err)
	}
	cancel()
	cl, err := NewClient([]string{l.addr})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var images int
	// A whole MNIST stream (47 MB) takes ~9 s under the race detector
	// alone, and longer beside other packages' tests: the deadlines bound
	// a hang, not the transfer.
	eventually(t, time.Minute, "a data-set stream after the first ended", func() error {
		fctx, fcancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer fcancel()
		im, err := cl.FetchDataset(fctx, "mnist")
		if err != nil {
			return err
		}
		images = im.N
		return nil
	})
	if images != 60000 {
		t.Errorf("fetched %d images, want 60000", images)
	}
}

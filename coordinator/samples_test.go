package coordinator

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

func history(f *FSM, job string) (h []*pb.LossPoint, stride int64) {
	f.Read(func(s *State) {
		h = s.LossHistory(job)
		if j := s.job(job); j != nil {
			stride = j.GetLossStride()
		}
	})
	return h, stride
}

// The loss history stays within MaxLossHistory points, evenly spaced over
// the whole job, and a report behind it (a ring resumed from a checkpoint)
// drops the points past it.
func TestLossHistoryBounded(t *testing.T) {
	f := newTestFSM(t)
	mustApply(t, f, register("w1", "h1:1"))
	s := spec()
	s.Steps = 100_000
	mustApply(t, f, submit(s))
	const last = 5000
	for step := int64(1); step <= last; step++ {
		p := progress("job-1", 1, step)
		p.Loss = 500 / float64(step)
		mustApply(t, f, p)
	}
	h, stride := history(f, "job-1")
	if len(h) >= MaxLossHistory || len(h) < MaxLossHistory/4 {
		t.Fatalf("%d points after %d reports, want fewer than %d but not far fewer", len(h), last, MaxLossHistory)
	}
	if h[0].GetStep() != 1 || h[len(h)-1].GetStep() < last-stride {
		t.Fatalf("history spans steps %d..%d (stride %d), want 1..~%d", h[0].GetStep(), h[len(h)-1].GetStep(), stride, last)
	}
	for i := 1; i < len(h); i++ {
		if d := h[i].GetStep() - h[i-1].GetStep(); d < stride/2 || d > stride {
			t.Fatalf("points %d and %d are %d steps apart, stride %d: not evenly spaced", i-1, i, d, stride)
		}
		if h[i].GetLoss() != 500/float64(h[i].GetStep()) || h[i].GetTimeUnixMs() != t0 {
			t.Fatalf("point %d: %v, not the report of its step", i, h[i])
		}
	}
	// A newer generation resumes from a checkpoint behind the history.
	mustApply(t, f, register("w2", "h2:1")) // generation 2
	mustApply(t, f, progress("job-1", 2, 3000))
	h2, _ := history(f, "job-1")
	if got := h2[len(h2)-1].GetStep(); got != 3000 {
		t.Fatalf("after a report of step 3000, the history ends at %d", got)
	}
	for _, p := range h2[:len(h2)-1] {
		if p.GetStep() >= 3000 {
			t.Fatalf("point of step %d kept past the resumed step 3000", p.GetStep())
		}
	}
	// Snapshots carry it.
	g := newTestFSM(t)
	if err := g.Restore(nopCloser{bytes.NewReader(snapshotBytes(t, f))}); err != nil {
		t.Fatal(err)
	}
	if h3, _ := history(g, "job-1"); len(h3) != len(h2) {
		t.Fatalf("restored history has %d points, want %d", len(h3), len(h2))
	}
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

func tinyPNG(t testing.TB) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, image.NewGray(image.Rect(0, 0, 4, 4))); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestRecordSample(t *testing.T) {
	f := newTestFSM(t)
	mustApply(t, f, register("w1", "h1:1"))
	mustApply(t, f, submit(spec()))
	img := tinyPNG(t)
	mustApply(t, f, &pb.RecordSample{JobId: "job-1", Generation: 1, Step: 200, Png: img, WorkerId: "w1"})
	mustApply(t, f, &pb.RecordSample{JobId: "job-1", Generation: 1, Step: 100, Png: []byte(pngSignature + "older"), WorkerId: "w1"}) // ignored
	var step int64
	var got []byte
	f.Read(func(s *State) { step, got = s.Sample("job-1") })
	if step != 200 || !bytes.Equal(got, img) {
		t.Fatalf("sample of step %d (%d bytes), want step 200's", step, len(got))
	}
	if j := job(t, f, "job-1"); j.GetSampleStep() != 200 {
		t.Fatalf("status says sample step %d", j.GetSampleStep())
	}
	wantErr(t, f, &pb.RecordSample{JobId: "job-1", Generation: 1, Step: 5000, Png: img, WorkerId: "w1"}, ErrInvalid, "past its")
	mustApply(t, f, register("w2", "h2:1")) // generation 2
	wantErr(t, f, &pb.RecordSample{JobId: "job-1", Generation: 1, Step: 300, Png: img, WorkerId: "w1"}, ErrStaleGeneration, "generation 1")
	wantErr(t, f, &pb.RecordSample{JobId: "job-9", Generation: 2, Step: 300, Png: img, WorkerId: "w1"}, ErrNotFound, "job-9")
	wantErr(t, f, &pb.RecordSample{JobId: "job-1", Generation: 2, Step: 300, Png: img, WorkerId: "w7"}, ErrNotInRing, "w7")
	for _, c := range []struct {
		r     *pb.RecordSample
		field string
	}{
		{&pb.RecordSample{Generation: 2, Step: 1, Png: img, WorkerId: "w1"}, "job_id"},
		{&pb.RecordSample{JobId: "job-1", Generation: 2, Step: 1, Png: img}, "worker_id"},
		{&pb.RecordSample{JobId: "job-1", Step: 1, Png: img, WorkerId: "w1"}, "generation"},
		{&pb.RecordSample{JobId: "job-1", Generation: 2, Png: img, WorkerId: "w1"}, "step"},
		{&pb.RecordSample{JobId: "job-1", Generation: 2, Step: 1, Png: []byte("GIF89a"), WorkerId: "w1"}, "not a PNG"},
		{&pb.RecordSample{JobId: "job-1", Generation: 2, Step: 1, Png: append([]byte(pngSignature), make([]byte, MaxSampleBytes)...), WorkerId: "w1"}, "over"},
	} {
		wantErr(t, f, c.r, ErrInvalid, c.field)
	}
	mustApply(t, f, finish("job-1", pb.JobState_JOB_STATE_DONE, ""))
	wantErr(t, f, &pb.RecordSample{JobId: "job-1", Generation: 2, Step: 300, Png: img, WorkerId: "w1"}, ErrNotRunning, "")
	f.Read(func(s *State) { step, got = s.Sample("job-1") })
	if step != 200 || got == nil {
		t.Fatal("a finished job lost its sample grid")
	}
}

// Through the service: only a ring member's grid of a real PNG is taken;
// submit --epochs counts the steps from the data set; Status carries the
// version and, when asked, the loss history.
func TestServiceSamplesEpochsHistory(t *testing.T) {
	ms := startServiceGroupWith(t, 3, ServiceConfig{Lease: 10 * time.Second, Version: "test"})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f := followerOf(ms, leaderOf(t, ms))
	gen := join(t, ctx, f, "w1", "127.0.0.1:9001").GetAssignment().GetGeneration()
	r, err := f.client.Submit(ctx, &pb.SubmitRequest{Job: &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 64, Lr: 1e-3, MinWorkers: 1}, Epochs: 2})
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(2 * 60000 / 64); r.GetSteps() != want {
		t.Fatalf("2 epochs of mnist at batch 64: %d steps, want %d", r.GetSteps(), want)
	}
	for _, bad := range []*pb.SubmitRequest{
		{Job: &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 64, Steps: 5, Lr: 1e-3, MinWorkers: 1}, Epochs: 1},
		{Job: &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 64, Lr: 1e-3, MinWorkers: 1}, Epochs: -1},
		{Job: &pb.JobSpec{Model: "vae", Dataset: "mnist", Batch: 64, Lr: 1e-3, MinWorkers: 1}, Epochs: 1e-9},
	} {
		if _, err := f.client.Submit(ctx, bad); status.Code(err) != codes.InvalidArgument {
			t.Errorf("submit %v: %v, want InvalidArgument", bad, err)
		}
	}
	if _, err := f.client.Submit(ctx, &pb.SubmitRequest{Job: &pb.JobSpec{Model: "vae", Dataset: "idx:" + t.TempDir(), Batch: 64, Lr: 1e-3, MinWorkers: 1}, Epochs: 1}); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "count its images") {
		t.Errorf("epochs of a data set the coordinator lacks: %v", err)
	}
	job := r.GetJobId()
	img := tinyPNG(t)
	if _, err := f.client.PutSample(ctx, &pb.PutSampleRequest{WorkerId: "w9", JobId: job, Generation: gen, Step: 10, Png: img}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a sample from a worker not in the ring: %v", err)
	}
	if _, err := f.client.PutSample(ctx, &pb.PutSampleRequest{WorkerId: "w1", JobId: job, Generation: gen, Step: 10, Png: []byte(pngSignature + "junk")}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a sample that is not a PNG: %v", err)
	}
	if _, err := f.client.PutSample(ctx, &pb.PutSampleRequest{WorkerId: "w1", JobId: job, Generation: gen, Step: 10, Png: img}); err != nil {
		t.Fatal(err)
	}
	for step := int64(1); step <= 3; step++ {
		if _, err := f.client.ReportProgress(ctx, &pb.ReportProgressRequest{WorkerId: "w1", JobId: job, Generation: gen, Step: step, Loss: 100 - float64(step)}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 5*time.Second, "version and sample step in status, history in the follower's replica", func() error {
		st, err := f.client.Status(ctx, &pb.StatusRequest{})
		if err != nil {
			return err
		}
		h := f.svc.LossHistory(job)
		return yet(st.GetVersion() == "test" && st.GetJobs()[0].GetSampleStep() == 10 && len(h) == 3 && h[2].GetLoss() == 97)
	})
	eventually(t, 5*time.Second, "the follower's replica has the sample", func() error {
		step, b := f.svc.Sample(job)
		return yet(step == 10 && bytes.Equal(b, img))
	})
}

package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	pb "github.com/gencluster/gencluster/api/genclusterpb"
)

type fakeSource struct {
	st      *pb.StatusResponse
	err     error
	cps     []*pb.CheckpointManifest
	png     []byte
	asked   *pb.StatusRequest
	listed  string
	history string
}

func (f *fakeSource) Status(_ context.Context, req *pb.StatusRequest) (*pb.StatusResponse, error) {
	f.asked = req
	return f.st, f.err
}

func (f *fakeSource) ListCheckpoints(_ context.Context, req *pb.ListCheckpointsRequest) (*pb.ListCheckpointsResponse, error) {
	f.listed = req.GetJobId()
	return &pb.ListCheckpointsResponse{Checkpoints: f.cps}, nil
}

func (f *fakeSource) LossHistory(job string) []*pb.LossPoint {
	f.history = job
	if job != "job-2" {
		return nil
	}
	return []*pb.LossPoint{{Step: 1, Loss: 540}, {Step: 200, Loss: 120}, {Step: 390, Loss: 102}}
}

func (f *fakeSource) Sample(job string) (int64, []byte) {
	if job != "job-2" || f.png == nil {
		return 0, nil
	}
	return 400, f.png
}

func cluster() *fakeSource {
	spec := &pb.JobSpec{Model: "vae", Batch: 100, Steps: 1000}
	return &fakeSource{
		st: &pb.StatusResponse{
			Leader: "c1:7000", Version: "v9", Generation: 7,
			Coordinators: []*pb.CoordinatorInfo{{Id: "c0", Addr: "c0:7000", State: "follower", Voter: true}, {Id: "c1", Addr: "c1:7000", State: "leader", Voter: true}},
			Workers: []*pb.WorkerInfo{
				{Id: "wz", Addr: "h3:1", State: "unfit", Reason: "no data set", HeartbeatAgeMs: 50},
				{Id: "wb", Addr: "h2:1", State: "training", HeartbeatAgeMs: 120, ComputeSeconds: 0.05, Straggler: true},
				{Id: "wa", Addr: "h1:1", State: "training", HeartbeatAgeMs: 80, ComputeSeconds: 0.02},
			},
			Ring: []*pb.RingMember{{WorkerId: "wa", Addr: "h1:1"}, {WorkerId: "wb", Addr: "h2:1"}},
			Jobs: []*pb.JobInfo{
				{Id: "job-2", Spec: spec, State: "running", Step: 400, Loss: 101.5, ImagesPerSec: 1000, SampleStep: 400,
					LastCheckpoint: &pb.CheckpointInfo{Step: 400}},
				{Id: "job-3", Spec: spec, State: "queued", WaitingReason: "queued behind job-2"},
				{Id: "job-1", Spec: spec, State: "failed", Step: 17, Message: "loss diverged at step 17"},
			},
		},
		cps: []*pb.CheckpointManifest{{JobId: "job-2", Step: 200, Holders: []string{"c0", "c1"}}, {JobId: "job-2", Step: 400, Holders: []string{"c1"}}},
		png: []byte("\x89PNG\r\n\x1a\nfake"),
	}
}

func TestRead(t *testing.T) {
	src := cluster()
	now := time.UnixMilli(1_800_000_000_000)
	v, err := Read(context.Background(), src, "dash", now)
	if err != nil {
		t.Fatal(err)
	}
	if src.listed != "job-2" || src.history != "job-2" {
		t.Fatalf("asked checkpoints of %q and the history of %q: want the running job's", src.listed, src.history)
	}
	if v.Version != "dash" || v.Coordinator != "v9" || v.TimeUnixMs != now.UnixMilli() || v.Generation != 7 {
		t.Fatalf("header: %+v", v)
	}
	if !v.Coordinators[1].Leader || v.Coordinators[0].Leader {
		t.Fatalf("leader marks: %+v", v.Coordinators)
	}
	var order []string
	for _, w := range v.Workers {
		order = append(order, w.ID)
	}
	if strings.Join(order, ",") != "wa,wb,wz" || v.Workers[0].Rank != 0 || v.Workers[1].Rank != 1 || v.Workers[2].Rank != -1 {
		t.Fatalf("workers %v: want ring order, then those outside it (rank -1)", v.Workers)
	}
	if !v.Workers[1].Straggler || v.Workers[1].ComputeMs != 50 || v.Workers[0].HeartbeatAgeMs != 80 {
		t.Fatalf("worker wb: %+v", v.Workers[1])
	}
	j := v.Job
	if j == nil || j.ID != "job-2" {
		t.Fatalf("job shown: %+v, want the running job-2", j)
	}
	if j.ETASeconds != 60 { // 600 steps of 100 images at 1000 images/s
		t.Fatalf("eta %v s, want 60", j.ETASeconds)
	}
	if len(j.LossHistory) != 4 || j.LossHistory[3] != [2]float64{400, 101.5} || j.Loss != 101.5 {
		t.Fatalf("loss %v, history %v: want the history and the latest report", j.Loss, j.LossHistory)
	}
	if len(j.Checkpoints) != 2 || j.Checkpoints[0].Step != 400 {
		t.Fatalf("checkpoints %v: want newest first", j.Checkpoints)
	}
	if len(v.Jobs) != 3 || v.Jobs[2].Message != "loss diverged at step 17" || v.Jobs[1].WaitingReason == "" || v.Jobs[1].ETASeconds != -1 {
		t.Fatalf("queue: %+v", v.Jobs)
	}

	// With no job running, the newest finished one is shown; a stale
	// answer hides heartbeat ages (they are not the leader's).
	src.st.Jobs = src.st.Jobs[2:]
	src.st.StaleReason = "cut off"
	if v, err = Read(context.Background(), src, "dash", now); err != nil {
		t.Fatal(err)
	}
	if v.Job == nil || v.Job.ID != "job-1" || v.Job.State != "failed" || v.Workers[0].HeartbeatAgeMs != -1 {
		t.Fatalf("finished job shown: %+v, workers %+v", v.Job, v.Workers)
	}
}

func get(t *testing.T, srv *httptest.Server, path string) (int, http.Header, string) {
	t.Helper()
	r, err := srv.Client().Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return r.StatusCode, r.Header, string(b)
}

func TestHandler(t *testing.T) {
	src := cluster()
	srv := httptest.NewServer(Handler(src, "dash", nil))
	defer srv.Close()

	code, h, body := get(t, srv, "/")
	if code != 200 || !strings.Contains(h.Get("Content-Type"), "text/html") || !strings.Contains(body, `id="job-step"`) {
		t.Fatalf("GET /: %d %s", code, h.Get("Content-Type"))
	}
	// Everything the page loads comes from this server: no CDN.
	for _, m := range regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(body, -1) {
		if !strings.HasPrefix(m[1], "/static/") {
			t.Errorf("the page loads %s, not from /static/", m[1])
		}
		if c, _, _ := get(t, srv, m[1]); c != 200 {
			t.Errorf("GET %s: %d", m[1], c)
		}
	}
	for _, f := range []string{"/static/dashboard.js", "/static/dashboard.css"} {
		_, _, b := get(t, srv, f)
		for _, u := range regexp.MustCompile(`https?://[^\s"')]+`).FindAllString(b, -1) {
			if u != "http://www.w3.org/2000/svg" {
				t.Errorf("%s refers to %s", f, u)
			}
		}
	}

	code, h, body = get(t, srv, "/api/status")
	var v View
	if code != 200 || h.Get("Content-Type") != "application/json" || json.Unmarshal([]byte(body), &v) != nil || v.Job == nil || v.Job.Step != 400 {
		t.Fatalf("GET /api/status: %d %s %.200s", code, h.Get("Content-Type"), body)
	}
	code, h, body = get(t, srv, "/api/sample.png?job=job-2")
	if code != 200 || h.Get("Content-Type") != "image/png" || body != string(src.png) || h.Get("X-Sample-Step") != "400" {
		t.Fatalf("GET sample: %d %v", code, h)
	}
	if code, _, _ = get(t, srv, "/api/sample.png?job=job-1"); code != 404 {
		t.Fatalf("sample of a job without one: %d", code)
	}
	if code, _, _ = get(t, srv, "/nothing-here"); code != 404 {
		t.Fatalf("unknown path: %d", code)
	}
	src.err = errors.New("no leader")
	if code, _, body = get(t, srv, "/api/status"); code != 503 || !strings.Contains(body, "no leader") {
		t.Fatalf("status with the source failing: %d %q", code, body)
	}
}
